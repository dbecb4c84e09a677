//! `caffe-rs time` end to end: Caffe's report format in CPU and GPU mode, and in GPU mode per-layer
//! times from device timestamps that add up to the measured pass.
//!
//! The GPU cases need a GPU adapter (Mesa's lavapipe will do:
//! `apt-get install mesa-vulkan-drivers libvulkan1`).
use std::path::{Path, PathBuf};
use std::process::Command;

const FALLBACK: &str = "has no timestamp queries";

fn net() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/lenet_train/net.prototxt")
}

const LAYERS: [&str; 10] = [
    "data", "label", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss",
];

/// Runs `time` on LeNet's training net and returns its log (stderr); panics when it fails.
fn time(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["-phase", "TRAIN"];
    all.extend(args);
    time_model(&net(), &all, env)
}

/// Runs `time -model model` with `args` and `env`; its log, or a panic when it fails.
fn time_model(model: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_caffe-rs"));
    cmd.args(["time", "-model", model.to_str().unwrap()])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run caffe-rs");
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "time failed:\n{log}");
    log
}

/// The message of a log line after glog's `] ` prefix.
fn messages(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_once("] ").map(|(_, m)| m))
        .collect()
}

fn ms(s: &str) -> f64 {
    s.trim()
        .strip_suffix(" ms.")
        .unwrap_or_else(|| panic!("not a time: {s:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

struct Report {
    /// (layer, forward ms, backward ms) in log order.
    layers: Vec<(String, f64, f64)>,
    forward: f64,
    backward: f64,
}

/// Parses Caffe's report, checking its exact line shapes on the way.
fn report(log: &str) -> Report {
    let msgs = messages(log);
    let start = msgs
        .iter()
        .position(|m| *m == "Average time per layer: ")
        .unwrap_or_else(|| panic!("no per-layer section:\n{log}"));
    let mut layers = Vec::new();
    let mut i = start + 1;
    while let Some((name, f)) = msgs[i].split_once("\tforward: ") {
        let (bname, b) = msgs[i + 1]
            .split_once("\tbackward: ")
            .unwrap_or_else(|| panic!("no backward line after {:?}", msgs[i]));
        assert_eq!(name, bname);
        // Caffe pads the name to 10 columns (std::setw(10)).
        assert!(name.len() >= 10, "name not padded: {name:?}");
        layers.push((name.trim_start().to_string(), ms(f), ms(b)));
        i += 2;
    }
    let value = |prefix: &str| {
        let m = msgs
            .iter()
            .find_map(|m| m.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{log}"));
        ms(m)
    };
    let r = Report {
        layers,
        forward: value("Average Forward pass: "),
        backward: value("Average Backward pass: "),
    };
    value("Average Forward-Backward: ");
    value("Total Time: ");
    assert!(msgs.contains(&"*** Benchmark ends ***"));
    assert_eq!(
        msgs.iter()
            .filter(|m| m.starts_with("Iteration: ") && m.contains(" forward-backward time: "))
            .count(),
        2,
        "one line per iteration:\n{log}"
    );
    r
}

fn check_layers(r: &Report) {
    let names: Vec<&str> = r.layers.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(names, LAYERS);
    for (name, f, b) in &r.layers {
        assert!(*f >= 0.0 && *b >= 0.0, "{name}: negative time");
    }
}

/// The per-layer times of a pass add up to the pass measured around them: never more (they are
/// parts of it), and not much less (only the host's recording and submission are outside them).
fn check_sum(what: &str, parts: f64, whole: f64) {
    assert!(
        parts <= whole * 1.01 + 0.05,
        "{what}: layers sum to {parts} ms, more than the pass ({whole} ms)"
    );
    assert!(
        parts >= whole * 0.6,
        "{what}: layers sum to {parts} ms, far less than the pass ({whole} ms)"
    );
}

#[test]
fn gpu_time_reports_every_layer_from_timestamps() {
    let log = time(&["-gpu", "0", "-iterations", "2"], &[]);
    assert!(
        !log.contains(FALLBACK),
        "lavapipe has timestamp queries:\n{log}"
    );
    let r = report(&log);
    check_layers(&r);
    let fwd: f64 = r.layers.iter().map(|l| l.1).sum();
    let bwd: f64 = r.layers.iter().map(|l| l.2).sum();
    check_sum("forward", fwd, r.forward);
    check_sum("backward", bwd, r.backward);
    // The convolutions do real work on the device.
    let conv1 = r.layers.iter().find(|l| l.0 == "conv1").unwrap();
    assert!(conv1.1 > 0.0 && conv1.2 > 0.0, "{log}");
}

#[test]
fn gpu_time_without_timestamps_waits_for_each_layer_and_says_so_once() {
    let log = time(
        &["-gpu", "0", "-iterations", "2"],
        &[("CAFFE_RS_NO_TIMESTAMPS", "1")],
    );
    assert_eq!(log.matches(FALLBACK).count(), 1, "{log}");
    let r = report(&log);
    check_layers(&r);
    let fwd: f64 = r.layers.iter().map(|l| l.1).sum();
    check_sum("forward", fwd, r.forward);
}

#[test]
fn cpu_time_reports_every_layer() {
    let log = time(&["-iterations", "2"], &[]);
    assert!(!log.contains(FALLBACK), "{log}");
    let r = report(&log);
    check_layers(&r);
    let fwd: f64 = r.layers.iter().map(|l| l.1).sum();
    check_sum("forward", fwd, r.forward);
}

/// A convolution and the in-place ReLU after it run as one (the ReLU is the convolution's
/// epilogue), timed on the convolution; CAFFE_RS_NO_FUSION=1 runs and times them one by one.
#[test]
fn cpu_time_fuses_a_convolution_with_its_relu_unless_told_not_to() {
    let dir = std::env::temp_dir().join(format!("caffe_rs_time_fusion_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("net.prototxt");
    std::fs::write(
        &model,
        r#"name: "conv_relu"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"#,
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| time_model(&model, &["-iterations", "2"], env);
    let relu_forward = |log: &str| -> f64 {
        let line = messages(log)
            .into_iter()
            .find(|m| m.trim_start().starts_with("relu\tforward: "))
            .unwrap_or_else(|| panic!("no relu forward line:\n{log}"));
        ms(line.split_once("forward: ").unwrap().1)
    };
    let fused = run(&[]);
    assert!(
        messages(&fused)
            .iter()
            .any(|m| m.starts_with("1 runs of in-place point-wise layers")),
        "{fused}"
    );
    assert_eq!(relu_forward(&fused), 0.0, "{fused}");
    let apart = run(&[("CAFFE_RS_NO_FUSION", "1")]);
    assert!(!apart.contains("runs of in-place"), "{apart}");
    assert!(relu_forward(&apart) >= 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cpu_time_runs_a_batchnorm_scale_relu_backward_as_one_pass() {
    let dir = std::env::temp_dir().join(format!("caffe_rs_time_bwd_fusion_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("net.prototxt");
    std::fs::write(
        &model,
        r#"name: "conv_bn_scale_relu"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"#,
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| time_model(&model, &["-iterations", "2"], env);
    let backward = |log: &str, layer: &str| -> f64 {
        let prefix = format!("{layer}\tbackward: ");
        let line = messages(log)
            .into_iter()
            .find(|m| m.trim_start().starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {layer} backward line:\n{log}"));
        ms(line.split_once("backward: ").unwrap().1)
    };
    let fused = run(&[]);
    assert!(
        messages(&fused).iter().any(|m| m.starts_with(
            "1 runs of in-place layers (BatchNorm, Scale, ReLU) run backward as one pass each"
        )),
        "{fused}"
    );
    // The run's time is on its last layer, the ReLU.
    assert_eq!(backward(&fused, "bn"), 0.0, "{fused}");
    assert_eq!(backward(&fused, "scale"), 0.0, "{fused}");
    let apart = run(&[("CAFFE_RS_NO_FUSION", "1")]);
    assert!(!apart.contains("run backward as one pass"), "{apart}");
    assert!(backward(&apart, "scale") > 0.0, "{apart}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `-forward_only` times forwards alone, as `forward` and `test` run them: every layer's forward
/// line, the average forward pass and one line per iteration, and no backward lines.
#[test]
fn cpu_time_forward_only_reports_forwards_only() {
    let log = time(&["-iterations", "2", "-forward_only"], &[]);
    let msgs = messages(&log);
    assert!(
        msgs.contains(&"Testing for 2 iterations. Forward only: nothing is kept for a backward."),
        "{log}"
    );
    let forwards: Vec<&str> = msgs
        .iter()
        .filter_map(|m| {
            m.split_once("\tforward: ")
                .map(|(name, _)| name.trim_start())
        })
        .collect();
    assert_eq!(forwards, LAYERS);
    for absent in [
        "\tbackward: ",
        "Average Backward pass",
        "Forward-Backward",
        "Performing Backward",
    ] {
        assert!(!log.contains(absent), "{absent:?} in\n{log}");
    }
    let per_iteration = msgs
        .iter()
        .filter(|m| m.starts_with("Iteration: ") && m.contains(" forward time: "))
        .count();
    assert_eq!(per_iteration, 2, "{log}");
    let forward = msgs
        .iter()
        .find_map(|m| m.strip_prefix("Average Forward pass: "))
        .unwrap_or_else(|| panic!("no average forward line:\n{log}"));
    let layers: f64 = msgs
        .iter()
        .filter_map(|m| m.split_once("\tforward: ").map(|(_, t)| ms(t)))
        .sum();
    check_sum("forward", layers, ms(forward));
}
