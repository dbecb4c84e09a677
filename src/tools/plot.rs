//! `caffe-rs plot`: training curves from a `caffe train` log — ours or real Caffe's — as Caffe's
//! tools/extra/parse_log.py and plot_training_log.py do: the training loss (with a smoothed line),
//! the learning rate and every test net output against iteration (or seconds), drawn as one
//! self-contained SVG; optionally parse_log.py's CSV tables (`<prefix>.train`, `<prefix>.test`).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// What the horizontal axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XAxis {
    /// Solver iterations (as plot_training_log.py's "vs. Iters" charts).
    #[default]
    Iterations,
    /// Seconds since `Solving <net>`, from the glog timestamps ("vs. Seconds").
    Seconds,
}

impl FromStr for XAxis {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "iterations" | "iteration" | "iters" | "iter" => Ok(XAxis::Iterations),
            "seconds" | "second" | "secs" | "time" => Ok(XAxis::Seconds),
            _ => bail!("unknown x axis '{s}' (expected iterations or seconds)"),
        }
    }
}

/// The `plot` command's arguments.
#[derive(Debug, Clone)]
pub struct PlotArgs {
    /// The log: the stderr of `caffe train` or `caffe-rs train`.
    pub log: PathBuf,
    /// The picture: `.svg`, or `.png` (rasterised by `rsvg-convert` when it is installed).
    pub output: PathBuf,
    /// Also write parse_log.py's tables to `<prefix>.train` and `<prefix>.test`.
    pub csv: Option<PathBuf>,
    pub x_axis: XAxis,
}

/// One logged value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub iteration: u64,
    /// Seconds since the `Solving <net>` line (or the first timestamped line); `None` for lines
    /// without a glog prefix.
    pub seconds: Option<f64>,
    pub value: f64,
}

/// The values of one named net output, in log order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    /// The line carried Caffe's `(* w = v loss)` suffix: the output is a loss.
    pub is_loss: bool,
    pub points: Vec<Point>,
}

impl Series {
    pub fn values(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.value).collect()
    }
    pub fn iterations(&self) -> Vec<u64> {
        self.points.iter().map(|p| p.iteration).collect()
    }
}

/// The outputs of one test net (`Iteration N, Testing net (#index)`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestNet {
    pub index: usize,
    pub outputs: Vec<Series>,
}

/// Everything `plot` reads from a training log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingLog {
    /// From `Solving <net>`.
    pub net_name: Option<String>,
    /// From `Learning Rate Policy: <policy>`.
    pub lr_policy: Option<String>,
    /// From the solver parameters Caffe prints (`average_loss: 4`), when present.
    pub average_loss: Option<u32>,
    /// `Iteration N (… iter/s, …), loss = L` and the closing `Iteration N, loss = L`: the loss Caffe
    /// displays (averaged over `average_loss` iterations).
    pub loss: Vec<Point>,
    /// `Iteration N, lr = r`.
    pub lr: Vec<Point>,
    /// `Train net output #k: name = v`, one series per name.
    pub train_outputs: Vec<Series>,
    /// `Test net output #k: name = v`, per test net, one series per name.
    pub test_nets: Vec<TestNet>,
}

impl TrainingLog {
    /// No training progress at all (no loss, lr or output lines).
    pub fn is_empty(&self) -> bool {
        self.loss.is_empty()
            && self.lr.is_empty()
            && self.train_outputs.is_empty()
            && self.test_nets.is_empty()
    }

    pub fn train_output(&self, name: &str) -> Option<&Series> {
        self.train_outputs.iter().find(|s| s.name == name)
    }

    pub fn test_output(&self, net: usize, name: &str) -> Option<&Series> {
        self.test_nets
            .iter()
            .find(|t| t.index == net)?
            .outputs
            .iter()
            .find(|s| s.name == name)
    }

    /// The highest iteration any line mentions.
    pub fn last_iteration(&self) -> Option<u64> {
        self.all_points().map(|p| p.iteration).max()
    }

    /// Whether every point carries a timestamp (needed for `XAxis::Seconds`).
    pub fn has_timestamps(&self) -> bool {
        let mut any = false;
        for p in self.all_points() {
            if p.seconds.is_none() {
                return false;
            }
            any = true;
        }
        any
    }

    fn all_points(&self) -> impl Iterator<Item = &Point> {
        self.loss
            .iter()
            .chain(&self.lr)
            .chain(self.train_outputs.iter().flat_map(|s| &s.points))
            .chain(
                self.test_nets
                    .iter()
                    .flat_map(|t| t.outputs.iter().flat_map(|s| &s.points)),
            )
    }

    fn all_points_mut(&mut self) -> impl Iterator<Item = &mut Point> {
        self.loss
            .iter_mut()
            .chain(&mut self.lr)
            .chain(self.train_outputs.iter_mut().flat_map(|s| &mut s.points))
            .chain(
                self.test_nets
                    .iter_mut()
                    .flat_map(|t| t.outputs.iter_mut().flat_map(|s| &mut s.points)),
            )
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Reads a training log: Caffe's glog lines (`I20261123 01:47:38.528004 24881 solver.cpp:218] …` or
/// the older `I1123 01:47:38.528004 …`), with anything else (shell prompts, other tools' output,
/// the solver parameter dump) skipped. Lines are matched as parse_log.py matches them.
pub fn parse_log(text: &str) -> TrainingLog {
    let mut parser = Parser::default();
    for line in text.lines() {
        parser.line(line);
    }
    parser.finish()
}

#[derive(Default)]
struct Parser {
    log: TrainingLog,
    iteration: Option<u64>,
    test_net: usize,
    clock: Clock,
    /// The day of the first timestamp: times are kept as seconds since its midnight.
    first_day: Option<i64>,
    first_time: Option<f64>,
    start_time: Option<f64>,
}

impl Parser {
    fn line(&mut self, line: &str) {
        let trimmed = line.trim();
        let time = glog_timestamp(trimmed).map(|ts| {
            let (day, secs) = self.clock.day_and_seconds(ts);
            let first = *self.first_day.get_or_insert(day);
            (day - first) as f64 * 86400.0 + secs
        });
        if let Some(t) = time {
            self.first_time.get_or_insert(t);
        }
        let msg = match time {
            Some(_) => trimmed.split_once("] ").map_or("", |(_, m)| m),
            None => trimmed,
        };

        if let Some(name) = msg.strip_prefix("Solving ") {
            if self.start_time.is_none() {
                self.start_time = time;
            }
            self.log
                .net_name
                .get_or_insert_with(|| name.trim().to_string());
            return;
        }
        if let Some(policy) = msg.strip_prefix("Learning Rate Policy: ") {
            self.log
                .lr_policy
                .get_or_insert_with(|| policy.trim().to_string());
            return;
        }
        if time.is_none() {
            // The solver parameters Caffe prints at start-up (no glog prefix on continuation lines).
            if let Some(n) = msg
                .strip_prefix("average_loss: ")
                .and_then(|v| v.trim().parse().ok())
            {
                self.log.average_loss.get_or_insert(n);
            }
        }

        if let Some((iteration, rest)) = find_iteration(msg) {
            self.iteration = Some(iteration);
            let point = |value| Point {
                iteration,
                seconds: time,
                value,
            };
            if let Some(v) = rest.strip_prefix(", lr = ") {
                if let Some(value) = parse_value(v) {
                    self.log.lr.push(point(value));
                }
            } else if let Some(net) = rest.strip_prefix(", Testing net (#") {
                self.test_net = leading_number(net).map_or(0, |(n, _)| n as usize);
            } else if let Some(v) = rest.strip_prefix(", loss = ") {
                if let Some(value) = parse_value(v) {
                    self.log.loss.push(point(value));
                }
            } else if rest.starts_with(" (")
                && let Some(at) = rest.find("), loss = ")
                && let Some(value) = parse_value(&rest[at + "), loss = ".len()..])
            {
                self.log.loss.push(point(value));
            }
            return;
        }

        let Some(iteration) = self.iteration else {
            return;
        };
        if let Some((name, value, is_loss)) = net_output(msg, "Train net output #") {
            let point = Point {
                iteration,
                seconds: time,
                value,
            };
            push_series(&mut self.log.train_outputs, name, is_loss, point);
        } else if let Some((name, value, is_loss)) = net_output(msg, "Test net output #") {
            let point = Point {
                iteration,
                seconds: time,
                value,
            };
            let index = self.test_net;
            let net = match self.log.test_nets.iter().position(|t| t.index == index) {
                Some(i) => &mut self.log.test_nets[i],
                None => {
                    self.log.test_nets.push(TestNet {
                        index,
                        outputs: Vec::new(),
                    });
                    self.log.test_nets.last_mut().expect("just pushed")
                }
            };
            push_series(&mut net.outputs, name, is_loss, point);
        }
    }

    fn finish(mut self) -> TrainingLog {
        let origin = self.start_time.or(self.first_time);
        for p in self.log.all_points_mut() {
            p.seconds = match (p.seconds, origin) {
                (Some(t), Some(o)) => Some(((t - o) * 1e6).round() / 1e6),
                _ => None,
            };
        }
        self.log.test_nets.sort_by_key(|t| t.index);
        self.log
    }
}

fn push_series(list: &mut Vec<Series>, name: &str, is_loss: bool, point: Point) {
    match list.iter_mut().find(|s| s.name == name) {
        Some(s) => {
            s.is_loss |= is_loss;
            s.points.push(point);
        }
        None => list.push(Series {
            name: name.to_string(),
            is_loss,
            points: vec![point],
        }),
    }
}

/// `Iteration N<rest>` anywhere in the message.
fn find_iteration(msg: &str) -> Option<(u64, &str)> {
    const KEY: &str = "Iteration ";
    let at = msg.find(KEY)?;
    let (n, rest) = leading_number(&msg[at + KEY.len()..])?;
    Some((n, rest))
}

fn leading_number(s: &str) -> Option<(u64, &str)> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// `<key>k: name = v[ (* w = x loss)]` → (name, v, is a loss).
fn net_output<'a>(msg: &'a str, key: &str) -> Option<(&'a str, f64, bool)> {
    let at = msg.find(key)?;
    let (_, rest) = leading_number(&msg[at + key.len()..])?;
    let rest = rest.strip_prefix(": ")?;
    let (name, value) = rest.split_once(" = ")?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let value = parse_value(value)?;
    let is_loss = rest.trim_end().ends_with(" loss)");
    Some((name, value, is_loss))
}

/// The first token as a number; Caffe may print `nan`, `-nan` or `inf`.
fn parse_value(s: &str) -> Option<f64> {
    let token = s.split_whitespace().next()?.trim_end_matches(',');
    match token.to_ascii_lowercase().trim_start_matches(['-', '+']) {
        "nan" => Some(f64::NAN),
        _ => token.parse().ok(),
    }
}

/// A glog timestamp: (year if the prefix has one, month, day, seconds of the day).
type Stamp = (Option<i64>, u32, u32, f64);

/// glog's prefix `I20261123 01:47:38.528004 …` (or `I1123 01:47:38.528004 …` before glog 0.6).
fn glog_timestamp(line: &str) -> Option<Stamp> {
    let rest = line.strip_prefix(['I', 'W', 'E', 'F'])?;
    let (date, rest) = rest.split_once(' ')?;
    if !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, md) = match date.len() {
        8 => (Some(date[..4].parse().ok()?), &date[4..]),
        4 => (None, date),
        _ => return None,
    };
    let month: u32 = md[..2].parse().ok()?;
    let day: u32 = md[2..].parse().ok()?;
    let clock = rest.split_whitespace().next()?;
    let mut parts = clock.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
    {
        return None;
    }
    Some((year, month, day, f64::from(h * 3600 + m * 60) + s))
}

/// Turns timestamps into absolute seconds; for year-less prefixes it assumes consecutive lines and
/// moves to the next year when the month goes backwards (as extract_seconds.py does).
#[derive(Default)]
struct Clock {
    year: i64,
    last_month: u32,
}

impl Clock {
    /// (days since 1970, seconds of that day).
    fn day_and_seconds(&mut self, (year, month, day, secs): Stamp) -> (i64, f64) {
        let year = match year {
            Some(y) => y,
            None => {
                if self.year == 0 {
                    self.year = 2001;
                } else if month < self.last_month {
                    self.year += 1;
                }
                self.year
            }
        };
        self.last_month = month;
        (days_from_civil(year, month, day), secs)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

// ---------------------------------------------------------------------------------------------
// CSV (parse_log.py)
// ---------------------------------------------------------------------------------------------

/// parse_log.py's tables: `NumIters,Seconds,LearningRate,<output>…`, one row per iteration with
/// net outputs. Returns the train table and one test table per test net (by index). The learning
/// rate of a row is the one logged for that iteration (or the latest before it).
pub fn csv_tables(log: &TrainingLog) -> (String, Vec<(usize, String)>) {
    let train = csv_table(log, &log.train_outputs);
    let tests = log
        .test_nets
        .iter()
        .map(|t| (t.index, csv_table(log, &t.outputs)))
        .collect();
    (train, tests)
}

fn csv_table(log: &TrainingLog, outputs: &[Series]) -> String {
    // Rows keyed by iteration, in order of first appearance.
    let mut rows: Vec<(u64, Option<f64>, Vec<Option<f64>>)> = Vec::new();
    for (col, series) in outputs.iter().enumerate() {
        for p in &series.points {
            let row = match rows.iter().position(|r| r.0 == p.iteration) {
                Some(i) => i,
                None => {
                    rows.push((p.iteration, p.seconds, vec![None; outputs.len()]));
                    rows.len() - 1
                }
            };
            rows[row].2[col] = Some(p.value);
        }
    }
    let mut out = String::from("NumIters,Seconds,LearningRate");
    for s in outputs {
        out.push(',');
        out.push_str(&s.name);
    }
    out.push('\n');
    for (iteration, seconds, values) in rows {
        let lr = lr_at(&log.lr, iteration);
        let _ = write!(out, "{iteration},{},{}", opt_num(seconds), opt_num(lr));
        for v in values {
            out.push(',');
            out.push_str(&opt_num(v));
        }
        out.push('\n');
    }
    out
}

fn lr_at(lr: &[Point], iteration: u64) -> Option<f64> {
    lr.iter()
        .filter(|p| p.iteration <= iteration)
        .max_by_key(|p| p.iteration)
        .or(lr.first())
        .map(|p| p.value)
}

/// Python's `repr(float)` closely enough: `2.0`, `0.00992565`, `nan`.
fn opt_num(v: Option<f64>) -> String {
    match v {
        None => String::new(),
        Some(v) if v.is_nan() => "nan".into(),
        Some(v) if v.is_infinite() => if v > 0.0 { "inf" } else { "-inf" }.into(),
        Some(v) if v == v.trunc() && v.abs() < 1e16 => format!("{v:.1}"),
        Some(v) => format!("{v}"),
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `<prefix>.train` and `<prefix>.test` (`<prefix>.test1`, … for further test nets);
/// returns the paths written.
pub fn write_csv(log: &TrainingLog, prefix: &Path) -> Result<Vec<PathBuf>> {
    let (train, tests) = csv_tables(log);
    let mut written = Vec::new();
    let path = with_suffix(prefix, ".train");
    std::fs::write(&path, train).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    if tests.is_empty() {
        let path = with_suffix(prefix, ".test");
        std::fs::write(&path, "NumIters,Seconds,LearningRate\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    for (index, table) in tests {
        let path = with_suffix(
            prefix,
            &if index == 0 {
                ".test".to_string()
            } else {
                format!(".test{index}")
            },
        );
        std::fs::write(&path, table).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------------------------

/// How to draw the figure.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// The figure's title (the log file's name).
    pub title: String,
    pub x_axis: XAxis,
}

const PANEL_W: f64 = 500.0;
const PANEL_H: f64 = 290.0;
const MARGIN_L: f64 = 66.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 32.0;
const MARGIN_B: f64 = 46.0;
const PAD: f64 = 14.0;
const HEADER: f64 = 62.0;
const MAX_MARKERS: usize = 60;
/// Fewer points than this get no moving average: it would only blur a sparse curve.
const MIN_SMOOTHED: usize = 15;
/// A loss spanning this factor or more is drawn on a log scale.
const LOG_LOSS_RATIO: f64 = 100.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#ff7f0e";
const GREEN: &str = "#2ca02c";
const RED: &str = "#d62728";
const PURPLE: &str = "#9467bd";
const BROWN: &str = "#8c564b";
const PINK: &str = "#e377c2";
const TEAL: &str = "#17becf";
const PALETTE: [&str; 6] = [RED, PURPLE, BROWN, PINK, TEAL, GREEN];

struct Line {
    label: String,
    color: &'static str,
    width: f64,
    markers: bool,
    /// Draw as a staircase (the value holds until the next point): step lr policies.
    step: bool,
    pts: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    /// Small text at the top right (last / best values).
    note: String,
    y_label: String,
    lines: Vec<Line>,
    log_y: bool,
}

impl Line {
    fn new(
        label: impl Into<String>,
        color: &'static str,
        width: f64,
        pts: Vec<(f64, f64)>,
    ) -> Self {
        let markers = pts.len() <= MAX_MARKERS;
        Line {
            label: label.into(),
            color,
            width,
            markers,
            step: false,
            pts,
        }
    }
}

fn xy(points: &[Point], axis: XAxis) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter_map(|p| {
            let x = match axis {
                XAxis::Iterations => p.iteration as f64,
                XAxis::Seconds => p.seconds?,
            };
            Some((x, p.value))
        })
        .collect()
}

/// A centred moving average over `window` points (shrinking at the ends), skipping non-finite values.
fn moving_average(pts: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(pts.len());
            let finite: Vec<f64> = pts[lo..hi]
                .iter()
                .map(|p| p.1)
                .filter(|v| v.is_finite())
                .collect();
            let mean = if finite.is_empty() {
                f64::NAN
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            };
            (pts[i].0, mean)
        })
        .collect()
}

fn smoothing_window(n: usize) -> usize {
    ((n / 10).max(3) | 1).min(101)
}

fn differs(a: &[Point], b: &[Point]) -> bool {
    a.iter().any(|p| {
        b.iter()
            .find(|q| q.iteration == p.iteration)
            .is_some_and(|q| {
                (p.value - q.value).abs() > 1e-5 * p.value.abs().max(q.value.abs()).max(1e-12)
            })
    })
}

fn last_and_best(values: &[f64], lower_is_better: bool) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let Some(&last) = values.last() else {
        return String::new();
    };
    let best = if lower_is_better {
        finite.iter().copied().fold(f64::INFINITY, f64::min)
    } else {
        finite.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    if finite.len() < 2 {
        return format!("last {}", fmt_g(last, 4));
    }
    let word = if lower_is_better { "min" } else { "max" };
    format!("last {} · {word} {}", fmt_g(last, 4), fmt_g(best, 4))
}

/// All values positive (non-finite ones aside) and max / min at least `ratio`.
fn spans_decades(values: impl Iterator<Item = f64>, ratio: f64) -> bool {
    let mut lo = f64::INFINITY;
    let mut hi = 0.0f64;
    for v in values.filter(|v| v.is_finite()) {
        if v <= 0.0 {
            return false;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    hi > 0.0 && hi / lo >= ratio
}

fn build_panels(log: &TrainingLog, axis: XAxis) -> Vec<Panel> {
    let mut panels = Vec::new();

    // Training loss, with a smoothed line. When Caffe averaged the displayed loss (average_loss > 1)
    // the raw per-iteration loss is the single loss train output, and Caffe's average is the
    // smoothed line; otherwise we smooth the displayed loss with a moving average.
    let loss_outputs: Vec<&Series> = log.train_outputs.iter().filter(|s| s.is_loss).collect();
    let raw = match (loss_outputs.as_slice(), log.train_outputs.len()) {
        ([single], 1) if !log.loss.is_empty() && differs(&single.points, &log.loss) => {
            Some(*single)
        }
        _ => None,
    };
    if !log.loss.is_empty() || raw.is_some() {
        let mut lines = Vec::new();
        match raw {
            Some(raw) => {
                lines.push(Line::new(
                    format!("{} (this iteration)", raw.name),
                    BLUE,
                    1.2,
                    xy(&raw.points, axis),
                ));
                let label = match log.average_loss {
                    Some(k) => format!("smoothed: Caffe's average over {k} iterations"),
                    None => "smoothed: loss as Caffe displays it".to_string(),
                };
                let mut avg = Line::new(label, ORANGE, 2.4, xy(&log.loss, axis));
                avg.markers = false;
                lines.push(avg);
            }
            None => {
                let pts = xy(&log.loss, axis);
                if pts.len() >= MIN_SMOOTHED {
                    let w = smoothing_window(pts.len());
                    let smooth = moving_average(&pts, w);
                    lines.push(Line::new("loss", BLUE, 1.2, pts));
                    let mut avg = Line::new(
                        format!("smoothed (moving average of {w})"),
                        ORANGE,
                        2.4,
                        smooth,
                    );
                    avg.markers = false;
                    lines.push(avg);
                } else {
                    lines.push(Line::new("loss", BLUE, 1.5, pts));
                }
            }
        }
        let values: Vec<f64> = log.loss.iter().map(|p| p.value).collect();
        let log_y = spans_decades(
            lines.iter().flat_map(|l| l.pts.iter().map(|p| p.1)),
            LOG_LOSS_RATIO,
        );
        let title = if log_y {
            "Training loss (log scale)"
        } else {
            "Training loss"
        };
        panels.push(Panel {
            title: title.into(),
            note: last_and_best(&values, true),
            y_label: "loss".into(),
            lines,
            log_y,
        });
    }

    if !log.lr.is_empty() {
        let values: Vec<f64> = log.lr.iter().map(|p| p.value).collect();
        let log_y = spans_decades(values.iter().copied(), 10.0);
        let policy = log.lr_policy.clone().unwrap_or_default();
        let mut line = Line::new("lr", GREEN, 1.8, xy(&log.lr, axis));
        line.step = matches!(policy.as_str(), "step" | "multistep" | "fixed");
        let mut title = "Learning rate".to_string();
        if log_y {
            title.push_str(" (log scale)");
        }
        let note = match policy.as_str() {
            "" => format!("last {}", fmt_g(*values.last().unwrap_or(&f64::NAN), 4)),
            p => format!(
                "policy {p} · last {}",
                fmt_g(*values.last().unwrap_or(&f64::NAN), 4)
            ),
        };
        panels.push(Panel {
            title,
            note,
            y_label: "learning rate".into(),
            lines: vec![line],
            log_y,
        });
    }

    // Train outputs other than the one the loss panel already shows.
    let extra_train = log.train_outputs.len() > 1 || log.train_outputs.iter().any(|s| !s.is_loss);
    if extra_train {
        for (i, s) in log.train_outputs.iter().enumerate() {
            let log_y = s.is_loss && spans_decades(s.values().into_iter(), LOG_LOSS_RATIO);
            let title = format!("Train net: {}", s.name);
            panels.push(Panel {
                title: if log_y {
                    format!("{title} (log scale)")
                } else {
                    title
                },
                note: last_and_best(&s.values(), s.is_loss),
                y_label: s.name.clone(),
                lines: vec![Line::new(
                    s.name.clone(),
                    PALETTE[(i + 2) % PALETTE.len()],
                    1.6,
                    xy(&s.points, axis),
                )],
                log_y,
            });
        }
    }

    let loss_log = panels
        .first()
        .is_some_and(|p: &Panel| p.log_y && p.y_label == "loss");
    let several_nets = log.test_nets.len() > 1;
    for net in &log.test_nets {
        for (i, s) in net.outputs.iter().enumerate() {
            let title = if several_nets {
                format!("Test net #{}: {}", net.index, s.name)
            } else {
                format!("Test: {}", s.name)
            };
            let color = if s.is_loss {
                RED
            } else if i == 0 && net.index == 0 {
                PURPLE
            } else {
                PALETTE[(i + net.index) % PALETTE.len()]
            };
            // Test losses follow the training loss onto a log scale, so the two compare at a glance.
            let log_y = s.is_loss
                && spans_decades(
                    s.values().into_iter(),
                    if loss_log { 1.0 } else { LOG_LOSS_RATIO },
                );
            panels.push(Panel {
                title: if log_y {
                    format!("{title} (log scale)")
                } else {
                    title
                },
                note: last_and_best(&s.values(), s.is_loss),
                y_label: s.name.clone(),
                lines: vec![Line::new(s.name.clone(), color, 1.8, xy(&s.points, axis))],
                log_y,
            });
        }
    }
    panels
}

/// Draws the log as an SVG figure: a title, then a grid of panels (training loss and its smoothed
/// line, learning rate, each train output when there are several, each test output), all sharing
/// the same horizontal range.
pub fn render_svg(log: &TrainingLog, opts: &RenderOptions) -> String {
    let panels = build_panels(log, opts.x_axis);
    let cols = if panels.len() <= 1 { 1 } else { 2 };
    let rows = panels.len().div_ceil(cols).max(1);
    let width = PAD * 2.0 + cols as f64 * PANEL_W;
    let height = HEADER + rows as f64 * PANEL_H + PAD;

    // Shared horizontal range.
    let xs = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.pts.iter().map(|q| q.0)));
    let (mut x_lo, mut x_hi) = min_max(xs).unwrap_or((0.0, 1.0));
    if x_hi <= x_lo {
        x_lo -= 1.0;
        x_hi += 1.0;
    }
    let x_pad = (x_hi - x_lo) * 0.02;
    let x_domain = (x_lo - x_pad, x_hi + x_pad);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}">"#,
        w = width,
        h = height
    );
    let _ = writeln!(svg, "<title>{}</title>", esc(&opts.title));
    let _ = writeln!(svg, "<desc>Training curves drawn by caffe-rs plot</desc>");
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{PAD}" y="30" font-size="19" font-weight="bold" fill="#222222">{}</text>"##,
        esc(&opts.title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{PAD}" y="50" font-size="12" fill="#666666">{}</text>"##,
        esc(&subtitle(log, opts.x_axis, width - 2.0 * PAD))
    );
    if panels.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-size="13" fill="#666666" text-anchor="middle">no training progress in this log</text>"##,
            width / 2.0,
            HEADER + PANEL_H / 2.0
        );
    }
    for (i, panel) in panels.iter().enumerate() {
        let ox = PAD + (i % cols) as f64 * PANEL_W;
        let oy = HEADER + (i / cols) as f64 * PANEL_H;
        draw_panel(&mut svg, i, panel, ox, oy, x_domain, opts.x_axis);
    }
    svg.push_str("</svg>\n");
    svg
}

/// One line under the title: net, iterations, policy, final values — as many as fit in `width`.
fn subtitle(log: &TrainingLog, axis: XAxis, width: f64) -> String {
    let mut parts = Vec::new();
    if let Some(net) = &log.net_name {
        parts.push(format!("net {net}"));
    }
    if let Some(last) = log.last_iteration() {
        parts.push(format!("{last} iterations"));
    }
    if let Some(p) = &log.lr_policy {
        parts.push(format!("lr policy {p}"));
    }
    if let Some(l) = log.loss.last() {
        parts.push(format!("final loss {}", fmt_g(l.value, 6)));
    }
    for net in &log.test_nets {
        for s in net.outputs.iter().filter(|s| !s.is_loss) {
            if let Some(p) = s.points.last() {
                let which = if log.test_nets.len() > 1 {
                    format!(" (#{})", net.index)
                } else {
                    String::new()
                };
                parts.push(format!(
                    "final test {}{which} {}",
                    s.name,
                    fmt_g(p.value, 4)
                ));
            }
        }
    }
    if axis == XAxis::Seconds {
        parts.insert(0, "x: seconds since Solving".into());
    }
    let max_chars = (width / 6.7) as usize;
    let mut line = String::new();
    for part in parts {
        let sep = if line.is_empty() { "" } else { "  ·  " };
        if line.chars().count() + sep.len() + part.chars().count() > max_chars {
            break;
        }
        line.push_str(sep);
        line.push_str(&part);
    }
    line
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Maps data to pixels on one axis (linear or log10).
#[derive(Clone, Copy)]
struct Scale {
    d0: f64,
    d1: f64,
    p0: f64,
    p1: f64,
    log: bool,
}

impl Scale {
    fn map(&self, v: f64) -> Option<f64> {
        let v = if self.log {
            if v <= 0.0 {
                return None;
            }
            v.log10()
        } else {
            v
        };
        if !v.is_finite() {
            return None;
        }
        Some(self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0))
    }
}

fn y_domain(panel: &Panel) -> (f64, f64) {
    let values = panel.lines.iter().flat_map(|l| l.pts.iter().map(|p| p.1));
    if panel.log_y {
        let (lo, hi) = min_max(values.filter(|v| *v > 0.0).map(f64::log10)).unwrap_or((-3.0, -1.0));
        let pad = ((hi - lo) * 0.06).max(0.05);
        return (lo - pad, hi + pad);
    }
    let (lo, hi) = min_max(values).unwrap_or((0.0, 1.0));
    if hi > lo {
        let pad = (hi - lo) * 0.07;
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

fn nice_step(range: f64, target: f64) -> f64 {
    let raw = range / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Ticks at multiples of a 1-2-5 step, and the step.
fn linear_ticks(lo: f64, hi: f64, target: f64, min_step: f64) -> (Vec<f64>, f64) {
    let step = nice_step(hi - lo, target).max(min_step);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect();
    (ticks, step)
}

/// Ticks for a log10 domain, as values: decades, plus 2 and 5 multiples when it spans few decades.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades: Vec<i32> = ((lo.ceil() as i32)..=(hi.floor() as i32)).collect();
    let mut ticks: Vec<f64> = decades.iter().map(|&d| 10f64.powi(d)).collect();
    if decades.len() < 3 {
        for d in (lo.floor() as i32)..=(hi.ceil() as i32) {
            for m in [2.0, 5.0] {
                let v = m * 10f64.powi(d);
                if (lo..=hi).contains(&v.log10()) {
                    ticks.push(v);
                }
            }
        }
        ticks.sort_by(f64::total_cmp);
    }
    ticks
}

fn draw_panel(
    svg: &mut String,
    index: usize,
    panel: &Panel,
    ox: f64,
    oy: f64,
    x_domain: (f64, f64),
    x_axis: XAxis,
) {
    // Iterations are whole numbers: no ticks between them.
    let (x_label, x_min_step) = match x_axis {
        XAxis::Iterations => ("iteration", 1.0),
        XAxis::Seconds => ("seconds", 0.0),
    };
    let (px0, px1) = (ox + MARGIN_L, ox + PANEL_W - MARGIN_R);
    let (py0, py1) = (oy + MARGIN_T, oy + PANEL_H - MARGIN_B);
    let (yd0, yd1) = y_domain(panel);
    let xs = Scale {
        d0: x_domain.0,
        d1: x_domain.1,
        p0: px0,
        p1: px1,
        log: false,
    };
    let ys = Scale {
        d0: yd0,
        d1: yd1,
        p0: py1,
        p1: py0,
        log: panel.log_y,
    };

    let _ = writeln!(
        svg,
        r#"<g class="panel" data-title="{}">"#,
        esc(&panel.title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{px0:.1}" y="{:.1}" font-size="13" font-weight="bold" fill="#222222">{}</text>"##,
        py0 - 10.0,
        esc(&panel.title)
    );
    if !panel.note.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{px1:.1}" y="{:.1}" font-size="11" fill="#666666" text-anchor="end">{}</text>"##,
            py0 - 10.0,
            esc(&panel.note)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{px0:.1}" y="{py0:.1}" width="{:.1}" height="{:.1}" fill="#fbfbfc" stroke="none"/>"##,
        px1 - px0,
        py1 - py0
    );

    // Grid and tick labels.
    let (x_ticks, x_step) = linear_ticks(x_domain.0, x_domain.1, 6.0, x_min_step);
    for &t in &x_ticks {
        let Some(x) = xs.map(t) else { continue };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}" stroke="#e3e6ea" stroke-width="1"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{py1:.1}" x2="{x:.1}" y2="{:.1}" stroke="#555555" stroke-width="1"/>"##,
            py1 + 4.0
        );
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" fill="#444444" text-anchor="middle">{}</text>"##,
            py1 + 16.0,
            esc(&fmt_tick(t, x_step))
        );
    }
    let (y_ticks, y_step) = if panel.log_y {
        (log_ticks(yd0, yd1), 0.0)
    } else {
        linear_ticks(yd0, yd1, 5.0, 0.0)
    };
    let y_labels: Vec<String> = y_ticks
        .iter()
        .map(|&t| {
            if panel.log_y {
                fmt_g(t, 3)
            } else {
                fmt_tick(t, y_step)
            }
        })
        .collect();
    for (&t, label) in y_ticks.iter().zip(&y_labels) {
        let Some(y) = ys.map(t) else { continue };
        let _ = writeln!(
            svg,
            r##"<line x1="{px0:.1}" y1="{y:.1}" x2="{px1:.1}" y2="{y:.1}" stroke="#e3e6ea" stroke-width="1"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{px0:.1}" y2="{y:.1}" stroke="#555555" stroke-width="1"/>"##,
            px0 - 4.0
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{y:.1}" dy="0.35em" font-size="11" fill="#444444" text-anchor="end">{}</text>"##,
            px0 - 7.0,
            esc(label)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{px0:.1}" y="{py0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#555555" stroke-width="1"/>"##,
        px1 - px0,
        py1 - py0
    );
    // Axis labels.
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#666666" text-anchor="middle">{x_label}</text>"##,
        (px0 + px1) / 2.0,
        py1 + 33.0
    );
    // The vertical label sits left of the widest tick label.
    let widest = y_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1) as f64;
    let (lx, ly) = (
        (px0 - 7.0 - widest * 6.6 - 9.0).max(ox + 2.0),
        (py0 + py1) / 2.0,
    );
    let _ = writeln!(
        svg,
        r##"<text x="{lx:.1}" y="{ly:.1}" font-size="11" fill="#666666" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"##,
        esc(&panel.y_label)
    );

    // Data, clipped to the plot area.
    let _ = writeln!(
        svg,
        r#"<clipPath id="plot{index}"><rect x="{px0:.1}" y="{py0:.1}" width="{:.1}" height="{:.1}"/></clipPath>"#,
        px1 - px0,
        py1 - py0
    );
    let _ = writeln!(svg, r#"<g clip-path="url(#plot{index})">"#);
    let mut pixel_points: Vec<(f64, f64)> = Vec::new();
    for line in &panel.lines {
        let d = path_data(line, &xs, &ys, px1 - px0);
        let _ = writeln!(
            svg,
            r#"<path class="series" data-name="{}" data-points="{}" d="{d}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round"/>"#,
            esc(&line.label),
            line.pts.len(),
            line.color,
            line.width
        );
        for &(x, y) in &line.pts {
            if let (Some(px), Some(py)) = (xs.map(x), ys.map(y)) {
                pixel_points.push((px, py));
                if line.markers {
                    let _ = writeln!(
                        svg,
                        r##"<circle cx="{px:.1}" cy="{py:.1}" r="2.6" fill="{}" stroke="#ffffff" stroke-width="0.8"/>"##,
                        line.color
                    );
                }
            }
        }
    }
    svg.push_str("</g>\n");
    if panel.lines.len() > 1 {
        draw_legend(svg, &panel.lines, (px0, py0, px1, py1), &pixel_points);
    }
    svg.push_str("</g>\n");
}

/// The path of one line: subpaths break at non-finite values and where the x value goes back (a
/// resumed run logging the same iterations again); huge series are thinned to min/max per pixel.
fn path_data(line: &Line, xs: &Scale, ys: &Scale, plot_width: f64) -> String {
    let mapped: Vec<Option<(f64, f64)>> = line
        .pts
        .iter()
        .map(|&(x, y)| Some((xs.map(x)?, ys.map(y)?)))
        .collect();
    let mapped = if line.step || mapped.len() <= (plot_width * 3.0) as usize {
        mapped
    } else {
        thin(&mapped)
    };
    let mut d = String::new();
    let mut prev: Option<(f64, f64)> = None;
    for p in mapped {
        match (p, prev) {
            (Some((x, y)), Some((px, py))) if x >= px - 1e-9 => {
                if line.step {
                    let _ = write!(d, "L{x:.1} {py:.1}");
                }
                let _ = write!(d, "L{x:.1} {y:.1}");
                prev = Some((x, y));
            }
            (Some((x, y)), _) => {
                let _ = write!(d, "M{x:.1} {y:.1}");
                prev = Some((x, y));
            }
            (None, _) => prev = None,
        }
    }
    if d.is_empty() {
        d.push_str("M0 0");
    }
    d
}

/// Keeps the first, minimum, maximum and last point of every pixel column.
fn thin(points: &[Option<(f64, f64)>]) -> Vec<Option<(f64, f64)>> {
    let mut out = Vec::new();
    let mut bucket: Vec<(f64, f64)> = Vec::new();
    let flush = |bucket: &mut Vec<(f64, f64)>, out: &mut Vec<Option<(f64, f64)>>| {
        if bucket.is_empty() {
            return;
        }
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in bucket.iter().enumerate() {
            if p.1 < bucket[lo].1 {
                lo = i;
            }
            if p.1 > bucket[hi].1 {
                hi = i;
            }
        }
        let mut keep = vec![0, lo, hi, bucket.len() - 1];
        keep.sort_unstable();
        keep.dedup();
        out.extend(keep.into_iter().map(|i| Some(bucket[i])));
        bucket.clear();
    };
    for p in points {
        match p {
            Some(q) => {
                if bucket
                    .last()
                    .is_some_and(|b| q.0.floor() != b.0.floor() || q.0 < b.0)
                {
                    flush(&mut bucket, &mut out);
                }
                bucket.push(*q);
            }
            None => {
                flush(&mut bucket, &mut out);
                out.push(None);
            }
        }
    }
    flush(&mut bucket, &mut out);
    out
}

/// A legend box in the corner of the plot area that covers the fewest data points.
fn draw_legend(
    svg: &mut String,
    lines: &[Line],
    (px0, py0, px1, py1): (f64, f64, f64, f64),
    pts: &[(f64, f64)],
) {
    let row = 17.0;
    let chars = lines
        .iter()
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let w = (chars * 6.3 + 40.0).min(px1 - px0 - 16.0);
    let h = lines.len() as f64 * row + 8.0;
    let inset = 8.0;
    let corners = [
        (px1 - inset - w, py0 + inset),
        (px0 + inset, py0 + inset),
        (px1 - inset - w, py1 - inset - h),
        (px0 + inset, py1 - inset - h),
        ((px0 + px1 - w) / 2.0, py0 + inset),
    ];
    let covered = |&(x, y): &(f64, f64)| {
        pts.iter()
            .filter(|p| {
                p.0 >= x - 4.0 && p.0 <= x + w + 4.0 && p.1 >= y - 4.0 && p.1 <= y + h + 4.0
            })
            .count()
    };
    let (x, y) = corners
        .iter()
        .copied()
        .min_by_key(|c| covered(c))
        .unwrap_or(corners[0]);
    let _ = writeln!(
        svg,
        r##"<g class="legend"><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="3" fill="#ffffff" fill-opacity="0.9" stroke="#cfd4da"/>"##
    );
    for (i, l) in lines.iter().enumerate() {
        let cy = y + 4.0 + row * (i as f64 + 0.5);
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{}" stroke-width="{}" stroke-linecap="round"/>"#,
            x + 8.0,
            x + 28.0,
            l.color,
            l.width.max(1.5)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{cy:.1}" dy="0.35em" font-size="11" fill="#333333">{}</text>"##,
            x + 34.0,
            esc(&l.label)
        );
    }
    svg.push_str("</g>\n");
}

/// A tick label for a linear axis with ticks `step` apart.
fn fmt_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().max(step.abs());
    if !(1e-4..1e6).contains(&mag) {
        return fmt_g(v, 3);
    }
    // The fewest decimals that write the step exactly (1-2-5 steps: one per power of ten below 1).
    let decimals = (0..12)
        .find(|&d| {
            let scaled = step.abs() * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(12) as usize;
    // Thousands as "5k", "10k" on axes stepping by thousands.
    if step >= 1000.0 && step % 1000.0 == 0.0 && v % 1000.0 == 0.0 && v.abs() < 1e6 {
        return format!("{}k", v / 1000.0);
    }
    format!("{v:.decimals$}")
}

/// C's `%g` with `precision` significant digits, trailing zeros removed (as Caffe prints numbers).
fn fmt_g(v: f64, precision: usize) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let p = precision.max(1);
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mantissa);
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

/// Reads and parses a log file; errors name the file when it is empty or shows no training.
pub fn read_log(path: &Path) -> Result<TrainingLog> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.trim().is_empty() {
        bail!(
            "{}: the log is empty (expected the stderr of `caffe train` or `caffe-rs train`)",
            path.display()
        );
    }
    let log = parse_log(&text);
    if log.is_empty() {
        bail!(
            "{}: no training progress found: no Caffe lines like 'Iteration N (…), loss = L', 'Iteration N, lr = r' \
             or 'Test net output #k: name = v' (expected the stderr of `caffe train` or `caffe-rs train`, \
             e.g. `caffe-rs train -solver s.prototxt 2> train.log`)",
            path.display()
        );
    }
    Ok(log)
}

/// `caffe-rs plot`: writes the picture (and the CSV tables with `csv`); returns a report for stderr.
pub fn run(args: &PlotArgs) -> Result<String> {
    let log = read_log(&args.log)?;
    if args.x_axis == XAxis::Seconds && !log.has_timestamps() {
        bail!(
            "{}: -x seconds needs glog timestamps (I20261123 01:47:38.528004 …) on every line; use -x iterations",
            args.log.display()
        );
    }
    let title = args.log.file_name().map_or_else(
        || args.log.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let svg = render_svg(
        &log,
        &RenderOptions {
            title,
            x_axis: args.x_axis,
        },
    );
    let ext = args
        .output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "svg" => std::fs::write(&args.output, &svg)
            .with_context(|| format!("cannot write {}", args.output.display()))?,
        "png" => write_png(&svg, &args.output)?,
        _ => bail!(
            "cannot write {}: unknown picture format '{ext}' (use -o curves.svg, or -o curves.png with rsvg-convert installed)",
            args.output.display()
        ),
    }
    let mut report = format!("Wrote {}: {}", args.output.display(), summary(&log));
    if let Some(prefix) = &args.csv {
        let written = write_csv(&log, prefix)?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        let _ = write!(report, "\nWrote {}", names.join(", "));
    }
    Ok(report)
}

fn summary(log: &TrainingLog) -> String {
    let mut parts = vec![
        format!("{} loss points", log.loss.len()),
        format!("{} lr points", log.lr.len()),
    ];
    for s in &log.train_outputs {
        parts.push(format!("train {} {}", s.name, s.points.len()));
    }
    for net in &log.test_nets {
        for s in &net.outputs {
            parts.push(format!("test #{} {} {}", net.index, s.name, s.points.len()));
        }
    }
    parts.join(", ")
}

/// PNG through `rsvg-convert` (librsvg), which caffe-rs does not bundle.
fn write_png(svg: &str, output: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let spawned = Command::new("rsvg-convert")
        .args(["--format", "png", "--background-color", "white", "--output"])
        .arg(output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot write {}: PNG output needs rsvg-convert (Debian/Ubuntu: apt-get install librsvg2-bin), which is not \
             installed; write an SVG instead (-o {}) and open it in a browser or convert it",
            output.display(),
            output.with_extension("svg").display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot run rsvg-convert for {}", output.display()));
        }
    };
    child
        .stdin
        .take()
        .context("rsvg-convert has no stdin")?
        .write_all(svg.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "cannot write {}: rsvg-convert failed: {}",
            output.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_printf_g() {
        assert_eq!(fmt_g(0.00992565, 6), "0.00992565");
        assert_eq!(fmt_g(1e-5, 3), "1e-05");
        assert_eq!(fmt_g(2.3656, 4), "2.366");
        assert_eq!(fmt_g(1000.0, 4), "1000");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(fmt_tick(250.0, 50.0), "250");
        assert_eq!(fmt_tick(20000.0, 5000.0), "20k");
        assert_eq!(fmt_tick(5000.0, 5000.0), "5k");
        assert_eq!(fmt_tick(500.0, 500.0), "500");
    }

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }
}
