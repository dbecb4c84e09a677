//! The command line as a user runs it: Caffe's flag spellings, inspect on every model of Caffe's own
//! repository, upgrade, forward, and clear errors on bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

fn caffe_rs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caffe-rs"))
        .args(args)
        .output()
        .expect("run caffe-rs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file path in this test process's temp directory; the file is removed when the value is
/// dropped (at the end of the test). The directory stays: tests running in parallel share it.
struct TmpFile(PathBuf);

impl std::ops::Deref for TmpFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tmp(name: &str) -> TmpFile {
    let dir = std::env::temp_dir().join(format!("caffe-rs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TmpFile(dir.join(name))
}

fn prototxts(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            prototxts(&p, out);
        } else if p.extension().is_some_and(|x| x == "prototxt")
            && !p.to_string_lossy().contains("solver")
        {
            out.push(p);
        }
    }
}

#[test]
fn inspect_lists_every_layer_of_every_caffe_model() {
    let mut files = Vec::new();
    prototxts(&shared().join("caffe_models"), &mut files);
    assert!(files.len() >= 9);
    for f in files {
        let net = caffe_rs::format::read_net_prototxt(&f).unwrap();
        for phase in ["TRAIN", "TEST"] {
            let o = caffe_rs(&["inspect", "-model", f.to_str().unwrap(), "-phase", phase]);
            assert!(o.status.success(), "{}: {}", f.display(), stderr(&o));
            let table = stdout(&o);
            let state = caffe_rs::net::state::make_state(
                &net,
                if phase == "TRAIN" {
                    caffe_rs::proto::Phase::Train
                } else {
                    caffe_rs::proto::Phase::Test
                },
                0,
                &[],
            );
            let kept = caffe_rs::net::state::filter_net(&net, &state).unwrap();
            for layer in &kept.layer {
                assert!(
                    table.contains(layer.name()),
                    "{} ({phase}) misses layer {}",
                    f.display(),
                    layer.name()
                );
            }
            assert!(table.contains("totals:"), "{}", f.display());
        }
    }
}

#[test]
fn deploy_nets_have_full_shapes_and_totals() {
    let f = shared().join("caffe_models/models/bvlc_reference_caffenet/deploy.prototxt");
    let o = caffe_rs(&["inspect", "--model", f.to_str().unwrap()]);
    let t = stdout(&o);
    assert!(t.contains("10x96x55x55"), "{t}");
    assert!(t.contains("4096x9216"), "{t}");
    assert!(!t.contains(" ? "), "{t}");
    // 60965224 parameters in CaffeNet.
    assert!(t.contains("60965224 parameters"), "{t}");
}

#[test]
fn inspect_json_and_dot() {
    let f = shared().join("caffe_models/examples/mnist/lenet.prototxt");
    let o = caffe_rs(&[
        "inspect",
        &format!("-model={}", f.display()),
        "-format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 9);
    assert_eq!(v["layers"][1]["type"], "Convolution");
    assert_eq!(
        v["layers"][1]["top_shapes"][0],
        serde_json::json!([64, 20, 24, 24])
    );
    let o = caffe_rs(&[
        "inspect",
        &format!("--model={}", f.display()),
        "--format=dot",
    ]);
    let dot = stdout(&o);
    assert!(
        dot.starts_with("digraph") && dot.contains("conv1") && dot.contains("->"),
        "{dot}"
    );
}

#[test]
fn inspect_with_weights_shows_the_fine_tuning_plan() {
    let model = shared().join("golden/lenet/net.prototxt");
    let weights = shared().join("golden/lenet/weights.caffemodel");
    let o = caffe_rs(&[
        "inspect",
        "-model",
        model.to_str().unwrap(),
        "-weights",
        weights.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("loaded"), "{}", stdout(&o));
    // The flickr fine-tuning recipe against CaffeNet-shaped weights: fc8_flickr is new.
    let flickr = shared().join("caffe_models/models/finetune_flickr_style/deploy.prototxt");
    let net = caffe_rs::format::read_net_prototxt(&flickr).unwrap();
    let graph = caffe_rs::net::NetGraph::build(
        &net,
        &caffe_rs::net::state::make_state(&net, caffe_rs::proto::Phase::Test, 0, &[]),
        caffe_rs::net::Strictness::Strict,
    )
    .unwrap();
    let mut caffenet = caffe_rs::proto::NetParameter::default();
    for node in &graph.layers {
        if node.param_defs.is_empty() || node.name() == "fc8_flickr" {
            continue;
        }
        let mut layer = caffe_rs::proto::LayerParameter {
            name: Some(node.name().into()),
            ..Default::default()
        };
        for d in &node.param_defs {
            layer
                .blobs
                .push(caffe_rs::proto::BlobProto::from_shape_data(
                    &d.shape,
                    vec![0.0; d.shape.iter().product()],
                ));
        }
        caffenet.layer.push(layer);
    }
    caffenet.layer.push(caffe_rs::proto::LayerParameter {
        name: Some("fc8".into()),
        blobs: vec![caffe_rs::proto::BlobProto::from_shape_data(
            &[2, 2],
            vec![0.0; 4],
        )],
        ..Default::default()
    });
    let w = tmp("caffenet_like.caffemodel");
    caffe_rs::format::caffemodel::write_net_binary(&w, &caffenet).unwrap();
    let o = caffe_rs(&[
        "inspect",
        "-model",
        flickr.to_str().unwrap(),
        "-weights",
        w.to_str().unwrap(),
    ]);
    let t = stdout(&o);
    assert!(t.contains("initialised by gaussian"), "{t}");
    assert!(t.contains("ignores: fc8"), "{t}");
}

#[test]
fn upgrade_v1_matches_caffes_own_tool() {
    let legacy = shared().join("golden/legacy_v1");
    let out = tmp("upgraded.prototxt");
    let o = caffe_rs(&[
        "upgrade",
        legacy.join("net.prototxt").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = caffe_rs::format::read_net_prototxt(&out).unwrap();
    let caffes =
        caffe_rs::format::read_net_prototxt(&legacy.join("upgraded_by_caffe.prototxt")).unwrap();
    assert_eq!(ours, caffes);
    let out = tmp("upgraded.caffemodel");
    let o = caffe_rs(&[
        "upgrade",
        legacy.join("weights.caffemodel").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        caffe_rs::format::caffemodel::read_net_binary_raw(&out).unwrap(),
        caffe_rs::format::caffemodel::read_net_binary_raw(
            &legacy.join("upgraded_by_caffe.caffemodel")
        )
        .unwrap()
    );
}

#[test]
fn forward_writes_the_golden_outputs() {
    let case = shared().join("golden/lenet_train");
    let out = tmp("lenet_train_out.safetensors");
    let o = caffe_rs(&[
        "forward",
        "-model",
        case.join("net.prototxt").to_str().unwrap(),
        "-weights",
        case.join("weights.caffemodel").to_str().unwrap(),
        "-input",
        case.join("data.safetensors").to_str().unwrap(),
        "-output",
        out.to_str().unwrap(),
        "-phase",
        "TRAIN",
        "-backward",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = caffe_rs::format::tensors::read_tensors(&out).unwrap();
    let golden = caffe_rs::format::tensors::read_tensors(&case.join("data.safetensors")).unwrap();
    for key in ["output.ip2", "bottom_diff.data", "param_diff.conv1.0"] {
        let (a, b) = (&ours[key].1, &golden[key].1);
        let max_ref = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * max_ref + 1e-3 * y.abs(),
                "{key}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn errors_name_the_file_and_what_was_expected() {
    let bad = tmp("bad.prototxt");
    std::fs::write(
        &bad,
        "name: \"x\"\nlayer {\n  name: \"a\"\n  insanity_param { }\n}\n",
    )
    .unwrap();
    let o = caffe_rs(&["inspect", "-model", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.starts_with("error: "), "{e}");
    assert!(
        e.contains("bad.prototxt:4:3") && e.contains("insanity_param"),
        "{e}"
    );

    let o = caffe_rs(&["inspect", "-model", "/nonexistent/net.prototxt"]);
    assert!(
        stderr(&o).contains("/nonexistent/net.prototxt"),
        "{}",
        stderr(&o)
    );

    let unknown = tmp("unknown_type.prototxt");
    std::fs::write(&unknown, "layer { name: \"d\" type: \"Input\" top: \"d\" input_param { shape { dim: 1 } } }\nlayer { name: \"c\" type: \"Convolutoin\" bottom: \"d\" top: \"c\" }\n").unwrap();
    let o = caffe_rs(&[
        "forward",
        "-model",
        unknown.to_str().unwrap(),
        "-output",
        tmp("o.safetensors").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("layer 'c'") && e.contains("Convolution"), "{e}");

    let o = caffe_rs(&["inspect", "-modle", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--model"), "{}", stderr(&o));

    let truncated = tmp("truncated.caffemodel");
    let bytes = std::fs::read(shared().join("golden/lenet/weights.caffemodel")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = caffe_rs(&[
        "inspect",
        "-model",
        shared().join("golden/lenet/net.prototxt").to_str().unwrap(),
        "-weights",
        truncated.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("truncated.caffemodel") && e.contains("byte"),
        "{e}"
    );
}

#[test]
fn help_lists_the_commands() {
    let o = caffe_rs(&["help"]);
    let t = stdout(&o);
    for c in [
        "train",
        "test",
        "time",
        "device_query",
        "forward",
        "inspect",
        "convert",
        "upgrade",
    ] {
        assert!(t.contains(c), "help misses {c}: {t}");
    }
}
