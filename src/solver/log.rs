//! Caffe's log lines: glog-style prefixes and C++ iostream number formatting, so scripts written for
//! Caffe's logs (parse_log.py, plot_training_log.py) read ours.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// A float as C++ `std::ostream << x` prints it (6 significant digits, %g style).
pub fn fmt_g(x: f64) -> String {
    fmt_g_precision(x, 6)
}

pub fn fmt_g_precision(x: f64, precision: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let p = precision.max(1);
    let sci = format!("{:.*e}", p - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mantissa);
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, x)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

static PROGRESS_SHOWN: AtomicBool = AtomicBool::new(false);

/// On a terminal, replaces the one-line progress display (never on a pipe or file, so logs stay
/// exactly Caffe's). Log lines clear it first, so it never breaks them.
pub fn progress(message: &str) {
    let mut err = std::io::stderr();
    if !err.is_terminal() {
        return;
    }
    let _ = write!(err, "\r\x1b[2K{message}");
    let _ = err.flush();
    PROGRESS_SHOWN.store(true, Ordering::Relaxed);
}

/// Ends a progress display (the next output starts on a clean line).
pub fn clear_progress_line() {
    clear_progress(&mut std::io::stderr());
}

fn clear_progress(err: &mut std::io::Stderr) {
    if PROGRESS_SHOWN.swap(false, Ordering::Relaxed) {
        let _ = write!(err, "\r\x1b[2K");
    }
}

/// Writes `I<yyyymmdd> <hh:mm:ss.uuuuuu> <pid> <file>] <message>` to stderr, as glog does.
pub fn info(file: &str, message: &str) {
    emit('I', file, message);
}

pub fn warn(file: &str, message: &str) {
    emit('W', file, message);
}

fn emit(level: char, file: &str, message: &str) {
    let line = format!("{}{message}\n", prefix(level, file));
    let mut err = std::io::stderr();
    clear_progress(&mut err);
    let _ = err.write_all(line.as_bytes());
}

fn prefix(level: char, file: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (year_day_secs, days) = (secs.rem_euclid(86_400), secs.div_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{level}{year:04}{month:02}{day:02} {:02}:{:02}:{:02}.{:06} {} {file}] ",
        year_day_secs / 3600,
        (year_day_secs / 60) % 60,
        year_day_secs % 60,
        now.subsec_micros(),
        std::process::id()
    )
}

/// Days since 1970-01-01 -> (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_iostream() {
        assert_eq!(fmt_g(2.3025899), "2.30259");
        assert_eq!(fmt_g(0.01), "0.01");
        assert_eq!(fmt_g(1e-5), "1e-05");
        assert_eq!(fmt_g(0.0001), "0.0001");
        assert_eq!(fmt_g(100000.0), "100000");
        assert_eq!(fmt_g(1000000.0), "1e+06");
        assert_eq!(fmt_g(1.98809), "1.98809");
        assert_eq!(fmt_g(0.5), "0.5");
        assert_eq!(fmt_g(3.0), "3");
        assert_eq!(fmt_g(-0.000123456789), "-0.000123457");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }
}
