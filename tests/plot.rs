//! `caffe-rs plot`: parsing real Caffe's and our training logs (parse_log.py's reading), the SVG
//! figure, the CSV tables, and clear errors for logs without training progress.

use std::path::{Path, PathBuf};

use caffe_rs::tools::plot::{PlotArgs, RenderOptions, XAxis, parse_log, render_svg};

const CAFFE_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/golden/solver_sgd_step/caffe_train_cli.log"
);

/// A log as `caffe-rs train` writes it (the README demo's solver: test_interval 250, display 100),
/// with the other tools' output around it, as the demo prints it.
const OUR_LOG: &str = "\
== train -solver lenet_digits_solver.prototxt
I20261123 01:49:56.827674 26055 caffe.cpp:248] Using CPU (2 threads)
I20261123 01:49:56.836345 26055 solver.cpp:57] Solver scaffolding done.
I20261123 01:49:56.836377 26055 caffe.cpp:252] Starting Optimization
I20261123 01:49:56.836382 26055 solver.cpp:292] Solving LeNetDigits
I20261123 01:49:56.836390 26055 solver.cpp:293] Learning Rate Policy: inv
I20261123 01:49:56.836396 26055 solver.cpp:347] Iteration 0, Testing net (#0)
I20261123 01:49:56.978046 26055 solver.cpp:384]     Test net output #0: accuracy = 0.111111
I20261123 01:49:56.978078 26055 solver.cpp:384]     Test net output #1: loss = 2.2789 (* 1 = 2.2789 loss)
I20261123 01:49:57.061615 26055 solver.cpp:218] Iteration 0 (0 iter/s, 0.225217s/100 iters), loss = 2.31181
I20261123 01:49:57.061651 26055 solver.cpp:237]     Train net output #0: loss = 2.31181 (* 1 = 2.31181 loss)
I20261123 01:49:57.061673 26055 sgd_solver.cpp:128] Iteration 0, lr = 0.01
I20261123 01:49:58.407229 26055 solver.cpp:218] Iteration 100 (74.3178 iter/s, 1.34557s/100 iters), loss = 0.388676
I20261123 01:49:58.407266 26055 solver.cpp:237]     Train net output #0: loss = 0.388676 (* 1 = 0.388676 loss)
I20261123 01:49:58.407273 26055 sgd_solver.cpp:128] Iteration 100, lr = 0.00992565
I20261123 01:49:59.505638 26055 solver.cpp:218] Iteration 200 (91.0445 iter/s, 1.09836s/100 iters), loss = 0.108965
I20261123 01:49:59.505670 26055 solver.cpp:237]     Train net output #0: loss = 0.108965 (* 1 = 0.108965 loss)
I20261123 01:49:59.505677 26055 sgd_solver.cpp:128] Iteration 200, lr = 0.00985258
I20261123 01:49:59.948281 26055 solver.cpp:347] Iteration 250, Testing net (#0)
I20261123 01:49:59.960340 26055 solver.cpp:384]     Test net output #0: accuracy = 0.95
I20261123 01:49:59.960363 26055 solver.cpp:384]     Test net output #1: loss = 0.116793 (* 1 = 0.116793 loss)
I20261123 01:50:00.259980 26055 solver.cpp:218] Iteration 300 (132.573 iter/s, 0.754303s/100 iters), loss = 0.0218017
I20261123 01:50:00.260015 26055 solver.cpp:237]     Train net output #0: loss = 0.0218018 (* 1 = 0.0218018 loss)
I20261123 01:50:00.260023 26055 sgd_solver.cpp:128] Iteration 300, lr = 0.00978075
I20261123 01:50:00.820665 26055 solver.cpp:218] Iteration 400 (178.365 iter/s, 0.560647s/100 iters), loss = 0.020227
I20261123 01:50:00.820695 26055 solver.cpp:237]     Train net output #0: loss = 0.020227 (* 1 = 0.020227 loss)
I20261123 01:50:00.820701 26055 sgd_solver.cpp:128] Iteration 400, lr = 0.00971013
I20261123 01:50:01.369220 26055 solver.cpp:347] Iteration 500, Testing net (#0)
I20261123 01:50:01.380960 26055 solver.cpp:384]     Test net output #0: accuracy = 0.983333
I20261123 01:50:01.380982 26055 solver.cpp:384]     Test net output #1: loss = 0.0563371 (* 1 = 0.0563371 loss)
I20261123 01:50:01.386495 26055 solver.cpp:218] Iteration 500 (176.741 iter/s, 0.5658s/100 iters), loss = 0.031146
I20261123 01:50:01.386515 26055 solver.cpp:237]     Train net output #0: loss = 0.0311461 (* 1 = 0.0311461 loss)
I20261123 01:50:01.386522 26055 sgd_solver.cpp:128] Iteration 500, lr = 0.00964069
I20261123 01:50:05.571497 26055 solver.cpp:327] Iteration 600, loss = 0.0153481
I20261123 01:50:05.571516 26055 solver.cpp:347] Iteration 600, Testing net (#0)
I20261123 01:50:05.591282 26055 solver.cpp:384]     Test net output #0: accuracy = 0.980556
I20261123 01:50:05.591312 26055 solver.cpp:384]     Test net output #1: loss = 0.0566548 (* 1 = 0.0566548 loss)
I20261123 01:50:05.591318 26055 solver.cpp:332] Optimization Done.
I20261123 01:50:05.591322 26055 caffe.cpp:263] Optimization Done.
== convert lenet_digits_iter_600.caffemodel lenet_digits.safetensors
";

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caffe_rs_plot_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Tags open and close in order (self-closing tags aside), and nothing but the root at the top.
fn assert_balanced(svg: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unterminated tag") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
        } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
            let name = tag.split_whitespace().next().unwrap().to_string();
            if stack.is_empty() {
                roots += 1;
            }
            stack.push(name);
        }
        // Quotes in attributes are balanced.
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    assert_eq!(roots, 1, "one root element");
    assert!(svg.trim_start().starts_with("<svg "), "starts with <svg");
    // No raw '&' except entities.
    for (i, _) in svg.match_indices('&') {
        let entity = &svg[i..(i + 6).min(svg.len())];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "raw & at {i}: {entity}"
        );
    }
}

/// `data-points` of the series path labelled `name`.
fn series_points(svg: &str, name: &str) -> Option<usize> {
    let key = format!(r#"class="series" data-name="{name}" data-points=""#);
    let at = svg.find(&key)? + key.len();
    svg[at..].split('"').next()?.parse().ok()
}

fn panel_titles(svg: &str) -> Vec<String> {
    svg.match_indices(r#"<g class="panel" data-title=""#)
        .map(|(i, k)| svg[i + k.len()..].split('"').next().unwrap().to_string())
        .collect()
}

#[test]
fn parses_real_caffe_log() {
    let text = std::fs::read_to_string(CAFFE_LOG).unwrap();
    let log = parse_log(&text);
    assert_eq!(log.net_name.as_deref(), Some("digits_net"));
    assert_eq!(log.lr_policy.as_deref(), Some("step"));
    assert_eq!(log.average_loss, Some(4));

    // 20 display lines (display: 1) and the closing `Iteration 20, loss = 1.98809`.
    assert_eq!(log.loss.len(), 21);
    assert_eq!(
        log.loss.iter().map(|p| p.iteration).collect::<Vec<_>>(),
        (0..=20).collect::<Vec<_>>()
    );
    assert!(close(log.loss[0].value, 2.3656));
    assert!(close(log.loss[1].value, 2.40862));
    assert!(close(log.loss[19].value, 2.00868));
    assert!(close(log.loss[20].value, 1.98809));

    // Step policy: 0.05 for 0..6, 0.025 for 7..13, 0.0125 from 14.
    assert_eq!(log.lr.len(), 20);
    for p in &log.lr {
        let want = 0.05 * 0.5f64.powi((p.iteration / 7) as i32);
        assert!(
            close(p.value, want),
            "lr at {}: {} vs {want}",
            p.iteration,
            p.value
        );
    }

    let raw = log.train_output("loss").expect("train output loss");
    assert!(raw.is_loss);
    assert_eq!(raw.points.len(), 20);
    assert!(close(raw.points[1].value, 2.45164));
    assert!(close(raw.points[19].value, 1.92113));
    assert!(log.test_nets.is_empty());

    // Seconds since `Solving digits_net` (07:36:01.559369).
    let s0 = log.loss[0].seconds.unwrap();
    assert!((s0 - (0.559683 - 0.559369)).abs() < 1e-6, "{s0}");
    let s_end = log.loss[20].seconds.unwrap();
    assert!((s_end - (0.563750 - 0.559369)).abs() < 1e-6, "{s_end}");
    assert!(log.has_timestamps());
    assert_eq!(log.last_iteration(), Some(20));
}

#[test]
fn parses_our_log() {
    let log = parse_log(OUR_LOG);
    assert_eq!(log.net_name.as_deref(), Some("LeNetDigits"));
    assert_eq!(log.lr_policy.as_deref(), Some("inv"));
    assert_eq!(log.average_loss, None);
    assert_eq!(
        log.loss.iter().map(|p| p.iteration).collect::<Vec<_>>(),
        [0, 100, 200, 300, 400, 500, 600]
    );
    assert!(close(log.loss[6].value, 0.0153481));
    assert_eq!(log.lr.len(), 6);
    assert!(close(log.lr[1].value, 0.00992565));

    assert_eq!(log.test_nets.len(), 1);
    let acc = log.test_output(0, "accuracy").unwrap();
    assert!(!acc.is_loss);
    assert_eq!(acc.iterations(), [0, 250, 500, 600]);
    assert_eq!(acc.values(), [0.111111, 0.95, 0.983333, 0.980556]);
    let loss = log.test_output(0, "loss").unwrap();
    assert!(loss.is_loss);
    assert_eq!(loss.values(), [2.2789, 0.116793, 0.0563371, 0.0566548]);
    // Seconds from the Solving line (01:49:56.836382).
    let s = acc.points[1].seconds.unwrap();
    assert!((s - (59.960340 - 56.836382)).abs() < 1e-6, "{s}");
}

#[test]
fn parses_old_glog_prefix_several_test_nets_and_nan() {
    // glog before 0.6 printed no year; a run over New Year goes on counting.
    let text = "\
I1231 23:59:59.500000  1234 solver.cpp:228] Solving Net
I1231 23:59:59.600000  1234 solver.cpp:404] Iteration 0, Testing net (#0)
I1231 23:59:59.700000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.1
I1231 23:59:59.800000  1234 solver.cpp:404] Iteration 0, Testing net (#1)
I1231 23:59:59.900000  1234 solver.cpp:404]     Test net output #0: accuracy = 0.2
I0101 00:00:00.500000  1234 solver.cpp:228] Iteration 10, loss = nan
I0101 00:00:00.600000  1234 solver.cpp:244]     Train net output #0: loss = -nan (* 1 = -nan loss)
I0101 00:00:00.600000  1234 solver.cpp:244]     Train net output #1: top-1 = 0.25
I0101 00:00:00.700000  1234 sgd_solver.cpp:106] Iteration 10, lr = 1e-05
";
    let log = parse_log(text);
    assert_eq!(log.test_nets.len(), 2);
    assert_eq!(log.test_output(0, "accuracy").unwrap().values(), [0.1]);
    assert_eq!(log.test_output(1, "accuracy").unwrap().values(), [0.2]);
    assert!(log.loss[0].value.is_nan());
    assert!((log.loss[0].seconds.unwrap() - 1.0).abs() < 1e-6);
    assert!(log.train_output("loss").unwrap().points[0].value.is_nan());
    assert_eq!(log.train_output("top-1").unwrap().values(), [0.25]);
    assert!(close(log.lr[0].value, 1e-5));

    let svg = render_svg(
        &log,
        &RenderOptions {
            title: "old & new.log".into(),
            x_axis: XAxis::Iterations,
        },
    );
    assert_balanced(&svg);
    assert!(svg.contains("<title>old &amp; new.log</title>"));
    let titles = panel_titles(&svg);
    assert!(
        titles.contains(&"Test net #0: accuracy".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Test net #1: accuracy".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Train net: top-1".to_string()),
        "{titles:?}"
    );
}

#[test]
fn renders_real_caffe_log() {
    let log = parse_log(&std::fs::read_to_string(CAFFE_LOG).unwrap());
    let svg = render_svg(
        &log,
        &RenderOptions {
            title: "caffe_train_cli.log".into(),
            x_axis: XAxis::Iterations,
        },
    );
    assert_balanced(&svg);
    assert!(svg.contains("<title>caffe_train_cli.log</title>"));
    assert_eq!(panel_titles(&svg), ["Training loss", "Learning rate"]);
    // average_loss: 4, so the raw per-iteration loss is drawn and Caffe's average is the smoothed line.
    assert_eq!(series_points(&svg, "loss (this iteration)"), Some(20));
    assert_eq!(
        series_points(&svg, "smoothed: Caffe&apos;s average over 4 iterations"),
        Some(21)
    );
    assert_eq!(series_points(&svg, "lr"), Some(20));
    assert!(svg.contains("policy step"));
    assert!(svg.contains("net digits_net"));
    // A legend on the loss panel, no log scale for a lr spanning a factor of 4.
    assert!(svg.contains(r#"<g class="legend">"#));
    assert!(!svg.contains("(log scale)"));
}

#[test]
fn renders_our_log() {
    let log = parse_log(OUR_LOG);
    let svg = render_svg(
        &log,
        &RenderOptions {
            title: "ours.log".into(),
            x_axis: XAxis::Iterations,
        },
    );
    assert_balanced(&svg);
    assert_eq!(
        panel_titles(&svg),
        [
            "Training loss (log scale)",
            "Learning rate",
            "Test: accuracy",
            "Test: loss (log scale)"
        ]
    );
    // The loss falls from 2.3 to 0.015: a log scale, and too few points for a moving average.
    assert_eq!(series_points(&svg, "loss"), Some(7));
    assert!(!svg.contains("smoothed"));
    assert_eq!(series_points(&svg, "lr"), Some(6));
    assert_eq!(series_points(&svg, "accuracy"), Some(4));
    assert!(svg.contains("final test accuracy 0.9806"));
    // 4 test points per test panel, drawn as markers.
    assert!(svg.matches("<circle").count() >= 7 + 6 + 4 + 4);

    // Seconds on the x axis.
    let svg = render_svg(
        &log,
        &RenderOptions {
            title: "ours.log".into(),
            x_axis: XAxis::Seconds,
        },
    );
    assert_balanced(&svg);
    assert!(svg.contains(">seconds</text>"));
}

#[test]
fn lr_spanning_decades_is_log_scale() {
    let mut text =
        String::from("I20260101 00:00:00.000000 1 solver.cpp:1] Learning Rate Policy: exp\n");
    for i in 0..50u32 {
        let lr = 0.1 * 0.9f64.powi(i as i32);
        text.push_str(&format!(
            "I20260101 00:00:{:02}.000000 1 sgd_solver.cpp:1] Iteration {}, lr = {lr}\n",
            i,
            i * 10
        ));
        text.push_str(&format!(
            "I20260101 00:00:{:02}.000000 1 solver.cpp:1] Iteration {} (1 iter/s, 1s/10 iters), loss = {}\n",
            i,
            i * 10,
            1.0 / (1.0 + f64::from(i))
        ));
    }
    let log = parse_log(&text);
    assert_eq!(log.lr.len(), 50);
    let svg = render_svg(
        &log,
        &RenderOptions {
            title: "exp.log".into(),
            x_axis: XAxis::Iterations,
        },
    );
    assert_balanced(&svg);
    assert!(svg.contains("Learning rate (log scale)"));
    assert_eq!(
        series_points(&svg, "smoothed (moving average of 5)"),
        Some(50)
    );
}

#[test]
fn run_writes_svg_and_csv() {
    let dir = tmp_dir("run");
    let log_path = dir.join("train.log");
    std::fs::write(&log_path, OUR_LOG).unwrap();
    let args = PlotArgs {
        log: log_path.clone(),
        output: dir.join("curves.svg"),
        csv: Some(dir.join("train_log")),
        x_axis: XAxis::Iterations,
    };
    let report = caffe_rs::tools::plot::run(&args).unwrap();
    assert!(report.contains("curves.svg"), "{report}");
    let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(svg.contains("<title>train.log</title>"));
    assert_balanced(&svg);

    let train = std::fs::read_to_string(dir.join("train_log.train")).unwrap();
    let lines: Vec<&str> = train.lines().collect();
    assert_eq!(lines[0], "NumIters,Seconds,LearningRate,loss");
    assert_eq!(lines.len(), 1 + 6);
    assert!(
        lines[1].starts_with("0,0.225269,0.01,2.31181"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("100,") && lines[2].ends_with(",0.00992565,0.388676"),
        "{}",
        lines[2]
    );
    let test = std::fs::read_to_string(dir.join("train_log.test")).unwrap();
    let lines: Vec<&str> = test.lines().collect();
    assert_eq!(lines[0], "NumIters,Seconds,LearningRate,accuracy,loss");
    assert_eq!(lines.len(), 1 + 4);
    assert!(
        lines[2].starts_with("250,") && lines[2].ends_with(",0.00985258,0.95,0.116793"),
        "{}",
        lines[2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_png_uses_rsvg_convert_or_says_what_to_do() {
    let dir = tmp_dir("png");
    let args = PlotArgs {
        log: PathBuf::from(CAFFE_LOG),
        output: dir.join("curves.png"),
        csv: None,
        x_axis: XAxis::Iterations,
    };
    let have_rsvg = std::process::Command::new("rsvg-convert")
        .arg("--version")
        .output()
        .is_ok();
    match caffe_rs::tools::plot::run(&args) {
        Ok(_) => {
            assert!(have_rsvg);
            let png = std::fs::read(dir.join("curves.png")).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!have_rsvg, "{msg}");
            assert!(
                msg.contains("curves.png") && msg.contains("rsvg-convert") && msg.contains(".svg"),
                "{msg}"
            );
        }
    }
    let bad = PlotArgs {
        output: dir.join("curves.pdf"),
        ..args
    };
    let msg = format!("{:#}", caffe_rs::tools::plot::run(&bad).unwrap_err());
    assert!(msg.contains("curves.pdf") && msg.contains(".svg"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_err(dir: &Path, name: &str, contents: &str) -> String {
    let log = dir.join(name);
    std::fs::write(&log, contents).unwrap();
    let args = PlotArgs {
        log,
        output: dir.join("out.svg"),
        csv: None,
        x_axis: XAxis::Iterations,
    };
    let err = caffe_rs::tools::plot::run(&args).expect_err("should fail");
    assert!(!dir.join("out.svg").exists(), "no picture for a bad log");
    format!("{err:#}")
}

#[test]
fn bad_logs_give_clear_errors() {
    let dir = tmp_dir("bad");
    let msg = run_err(&dir, "empty.log", "");
    assert!(msg.contains("empty.log") && msg.contains("empty"), "{msg}");
    let msg = run_err(&dir, "blank.log", "\n  \n");
    assert!(msg.contains("blank.log") && msg.contains("empty"), "{msg}");

    let msg = run_err(
        &dir,
        "no_iterations.log",
        "I20261122 07:36:01.557183 19087 caffe.cpp:197] Use CPU.\nF20261122 07:36:01.6 19087 net.cpp:1] Check failed\n",
    );
    assert!(
        msg.contains("no_iterations.log") && msg.contains("no training progress"),
        "{msg}"
    );
    assert!(msg.contains("Iteration N"), "{msg}");

    let missing = dir.join("missing.log");
    let args = PlotArgs {
        log: missing,
        output: dir.join("out.svg"),
        csv: None,
        x_axis: XAxis::Iterations,
    };
    let msg = format!("{:#}", caffe_rs::tools::plot::run(&args).unwrap_err());
    assert!(msg.contains("missing.log"), "{msg}");

    // -x seconds on a log without timestamps.
    let log = dir.join("plain.log");
    std::fs::write(&log, "Iteration 0, loss = 1\nIteration 1, loss = 0.5\n").unwrap();
    let args = PlotArgs {
        log,
        output: dir.join("plain.svg"),
        csv: None,
        x_axis: XAxis::Seconds,
    };
    let msg = format!("{:#}", caffe_rs::tools::plot::run(&args).unwrap_err());
    assert!(
        msg.contains("plain.log") && msg.contains("timestamps"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resumed_run_starts_a_new_line() {
    // A log of a run resumed from the iteration-40 snapshot repeats iterations 40.. .
    let mut text = String::new();
    for it in (0..60).step_by(10).chain((40..100).step_by(10)) {
        text.push_str(&format!(
            "I20261123 10:00:00.000000 1 solver.cpp:218] Iteration {it} (1 iter/s, 1s/10 iters), loss = {}\n",
            1.0 / (1.0 + f64::from(it))
        ));
    }
    let log = parse_log(&text);
    assert_eq!(log.loss.len(), 12);
    let svg = render_svg(
        &log,
        &RenderOptions {
            title: "resumed.log".into(),
            x_axis: XAxis::Iterations,
        },
    );
    assert_balanced(&svg);
    let at = svg.find(r#"data-name="loss""#).unwrap();
    let d = svg[at..]
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(d.matches('M').count(), 2, "{d}");
    // Whole-number iteration ticks only, even for a single point.
    let one = parse_log(
        "I20261123 10:00:00.000000 1 solver.cpp:218] Iteration 5 (1 iter/s), loss = 0.7\n",
    );
    let svg = render_svg(&one, &RenderOptions::default());
    assert_balanced(&svg);
    assert!(!svg.contains(">4.5<") && svg.contains(">5<"), "{svg}");
}
