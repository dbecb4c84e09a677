//! Golden conformance of the neuron, element-wise and normalisation layers (ReLU, PReLU, ELU,
//! Sigmoid, TanH, AbsVal, BNLL, Power, Exp, Log, Threshold, Clip, Swish, Dropout, Eltwise, Scale,
//! Bias, BatchNorm, LRN, MVN) against real Caffe: each single-layer case of ../shared/golden is run
//! through `run_layer` on the CPU engine and every stored tensor is compared (outputs, bottom
//! diffs, param diffs and BatchNorm's updated statistics).
use std::path::{Path, PathBuf};

use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::format::tensors::{TensorMap, read_tensors};
use caffe_rs::format::transcode::parse_text;
use caffe_rs::layers::testing::{LayerCase, run_layer};
use caffe_rs::proto::{NetParameter, Phase};
use prost::Message;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

/// The case's tensors, read with the library's safetensors reader.
struct Tensors(TensorMap);

impl Tensors {
    fn get(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        self.0.get(name).cloned()
    }
}

#[derive(Clone, Copy)]
struct Tol {
    rtol: f32,
    atol: f32,
}

fn tol(json: &serde_json::Value, which: &str) -> Tol {
    let t = &json["tolerances"][which];
    Tol {
        rtol: t["rtol"].as_f64().unwrap_or(1e-4) as f32,
        atol: t["atol"].as_f64().unwrap_or(1e-5) as f32,
    }
}

/// |got - want| <= atol + rtol * |want| element-wise with the case's tolerances (unscaled, even
/// where a case's note allows scaling atol by max|want|). Returns the largest absolute error.
fn compare(what: &str, got: &[f32], want: &[f32], t: Tol) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let mut worst = 0f32;
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        let err = (a - e).abs();
        assert!(
            err <= t.atol + t.rtol * e.abs(),
            "{what}[{i}]: got {a}, expected {e} (error {err})"
        );
        worst = worst.max(err);
    }
    worst
}

fn run_case(name: &str) {
    let dir = golden().join(name);
    let src = std::fs::read_to_string(dir.join("net.prototxt")).unwrap();
    let net: NetParameter = parse_text(&src, "net.prototxt", "caffe.NetParameter").unwrap();
    let layer = net
        .layer
        .iter()
        .find(|l| l.r#type() != "Input")
        .expect("a non-Input layer")
        .clone();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let phase = if json["phase"] == "TRAIN" {
        Phase::Train
    } else {
        Phase::Test
    };
    let tensors = Tensors(read_tensors(&dir.join("data.safetensors")).unwrap());
    let bottoms: Vec<(Vec<usize>, Vec<f32>)> = layer
        .bottom
        .iter()
        .map(|b| {
            tensors
                .get(&format!("input.{b}"))
                .unwrap_or_else(|| panic!("{name}: no input.{b}"))
        })
        .collect();
    let weights = std::fs::read(dir.join("weights.caffemodel"))
        .ok()
        .map(|bytes| {
            let w = NetParameter::decode(&bytes[..]).unwrap();
            let l = w
                .layer
                .iter()
                .find(|l| l.name == layer.name)
                .expect("the layer in the caffemodel")
                .clone();
            // A 0-axis blob (PReLU's shared slope) is written without any shape field; Caffe reads
            // that back as shape () (Blob::ShapeEquals), not (1).
            let dims = |b: &caffe_rs::proto::BlobProto| {
                let legacy = b.num.is_some()
                    || b.channels.is_some()
                    || b.height.is_some()
                    || b.width.is_some();
                if b.shape.is_none() && !legacy {
                    vec![]
                } else {
                    b.dims()
                }
            };
            l.blobs
                .iter()
                .map(|b| (dims(b), b.values_f32()))
                .collect::<Vec<_>>()
        });
    let params = weights
        .as_ref()
        .map(|w| w.iter().map(|(_, v)| v.clone()).collect());
    let case = LayerCase {
        param: layer.clone(),
        phase,
        bottoms,
        params,
    };
    let backward = json["backward"].as_bool().unwrap_or(false);
    let top_diffs: Option<Vec<Vec<f32>>> = backward.then(|| {
        layer
            .top
            .iter()
            .map(|t| {
                tensors
                    .get(&format!("top_diff.{t}"))
                    .unwrap_or_else(|| panic!("{name}: no top_diff.{t}"))
                    .1
            })
            .collect()
    });
    let run = run_layer(&mut CpuEngine::new(), &case, top_diffs.as_deref(), None)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));

    let (ft, bt) = (tol(&json, "forward"), tol(&json, "backward"));
    let mut worst = (0f32, 0f32);
    // Parameter shapes must equal the caffemodel's.
    if let Some(w) = &weights {
        assert_eq!(run.params.len(), w.len(), "{name}: number of param blobs");
        for (i, ((got, _), (want, _))) in run.params.iter().zip(w).enumerate() {
            assert_eq!(got, want, "{name}: shape of param {i}");
        }
    }
    for (i, t) in layer.top.iter().enumerate() {
        let (shape, want) = tensors.get(&format!("output.{t}")).unwrap();
        assert_eq!(run.tops[i].0, shape, "{name}: shape of top {t}");
        worst.0 = worst.0.max(compare(
            &format!("{name} output.{t}"),
            &run.tops[i].1,
            &want,
            ft,
        ));
    }
    for (i, (_, got)) in run.params.iter().enumerate() {
        if let Some((_, want)) = tensors.get(&format!("param_after_forward.{}.{i}", layer.name())) {
            worst.0 = worst.0.max(compare(
                &format!("{name} param_after_forward.{i}"),
                got,
                &want,
                ft,
            ));
        }
    }
    if backward {
        let mut checked = 0;
        for (i, b) in layer.bottom.iter().enumerate() {
            if let Some((_, want)) = tensors.get(&format!("bottom_diff.{b}")) {
                worst.1 = worst.1.max(compare(
                    &format!("{name} bottom_diff.{b}"),
                    &run.bottom_diffs[i],
                    &want,
                    bt,
                ));
                checked += 1;
            }
        }
        for (i, got) in run.param_diffs.iter().enumerate() {
            let key = format!("param_diff.{}.{i}", layer.name());
            let (_, want) = tensors
                .get(&key)
                .unwrap_or_else(|| panic!("{name}: no {key}"));
            worst.1 = worst
                .1
                .max(compare(&format!("{name} {key}"), got, &want, bt));
            checked += 1;
        }
        assert!(checked > 0, "{name}: backward ran but nothing was compared");
    }
    eprintln!(
        "{name}: max error forward {:e}, backward {:e}",
        worst.0, worst.1
    );
}

macro_rules! golden_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

golden_cases! {
    relu, relu_leaky, prelu, prelu_shared, elu, elu_alpha05, sigmoid, tanh, absval, bnll, power,
    power_2_scale_shift, exp, log, threshold, clip, swish, dropout_test, eltwise_sum_coeff,
    eltwise_prod, eltwise_max, eltwise_sum3, eltwise_prod3, scale_bias, scale_2bottom,
    scale_axis0_all, bias, bias_2bottom, batchnorm_train, batchnorm_test, batchnorm_train_maf,
    lrn_across, lrn_within, lrn_large_k, mvn, mvn_across_nomvar,
}

/// Every golden case of this family is listed above.
#[test]
fn all_family_cases_are_covered() {
    let prefixes = [
        "relu",
        "prelu",
        "elu",
        "power",
        "eltwise_",
        "scale_",
        "bias",
        "batchnorm_",
        "lrn_",
        "mvn",
    ];
    let exact = [
        "sigmoid",
        "tanh",
        "absval",
        "bnll",
        "exp",
        "log",
        "threshold",
        "clip",
        "swish",
        "dropout_test",
    ];
    let mut missing = vec![];
    for entry in std::fs::read_dir(golden()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let ours = exact.contains(&name.as_str()) || prefixes.iter().any(|p| name.starts_with(p));
        if ours && !CASES.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "golden cases not covered: {missing:?}");
}
