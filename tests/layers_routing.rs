//! Golden cases of the softmax / loss / metric / routing layers, each layer run alone through
//! `layers::testing::run_layer` against the tensors real BVLC Caffe produced (../shared/golden).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::format::transcode::parse_text;
use caffe_rs::layers::testing::{LayerCase, run_layer};
use caffe_rs::proto::{LayerParameter, NetParameter, Phase};
use prost::Message;

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

struct Golden {
    name: String,
    case: serde_json::Value,
    net: NetParameter,
    weights: Option<NetParameter>,
    data: Tensors,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

fn load(name: &str) -> Golden {
    let dir = golden_dir().join(name);
    let case =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let src = std::fs::read_to_string(dir.join("net.prototxt")).unwrap();
    let net: NetParameter = parse_text(&src, "net.prototxt", "caffe.NetParameter").unwrap();
    let weights = std::fs::read(dir.join("weights.caffemodel"))
        .ok()
        .map(|b| NetParameter::decode(&b[..]).unwrap());
    let bytes = std::fs::read(dir.join("data.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut data = Tensors::new();
    for (key, view) in st.tensors() {
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        data.insert(key.to_string(), (view.shape().to_vec(), values));
    }
    Golden {
        name: name.to_string(),
        case,
        net,
        weights,
        data,
    }
}

impl Golden {
    fn layer(&self, name: &str) -> &LayerParameter {
        self.net
            .layer
            .iter()
            .find(|l| l.name() == name)
            .unwrap_or_else(|| panic!("{}: no layer {name}", self.name))
    }
    fn phase(&self) -> Phase {
        if self.case["phase"] == "TRAIN" {
            Phase::Train
        } else {
            Phase::Test
        }
    }
    fn tol(&self, which: &str) -> (f32, f32) {
        let t = &self.case["tolerances"][which];
        (
            t["rtol"].as_f64().unwrap() as f32,
            t["atol"].as_f64().unwrap() as f32,
        )
    }
    /// The values of a blob: fed (`input.`) or produced (`output.`).
    fn blob(&self, blob: &str) -> (Vec<usize>, Vec<f32>) {
        self.data
            .get(&format!("input.{blob}"))
            .or_else(|| self.data.get(&format!("output.{blob}")))
            .unwrap_or_else(|| panic!("{}: no values for blob {blob}", self.name))
            .clone()
    }
    fn params(&self, layer: &str) -> Option<Vec<Vec<f32>>> {
        let w = self.weights.as_ref()?;
        let l = w.layer.iter().find(|l| l.name() == layer)?;
        Some(l.blobs.iter().map(|b| b.values_f32()).collect())
    }
    /// The name of the Parameter layer producing `blob`, if any.
    fn parameter_producer(&self, blob: &str) -> Option<String> {
        self.net
            .layer
            .iter()
            .find(|l| l.r#type() == "Parameter" && l.top.iter().any(|t| t == blob))
            .map(|l| l.name().to_string())
    }
}

/// Caffe-conformance comparison: |a - b| <= atol * max(1, max|ref|) + rtol * |b|. Returns the max error.
fn compare(what: &str, got: &[f32], want: &[f32], (rtol, atol): (f32, f32)) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let max_ref = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs();
        assert!(
            err <= atol * max_ref + rtol * b.abs(),
            "{what}[{i}]: got {a}, expected {b}"
        );
        worst = worst.max(err);
    }
    worst
}

/// Runs `layer` of the case alone and compares its tops and the gradients of its bottoms.
/// Returns the largest error seen.
fn check(name: &str, layer: &str) -> f32 {
    let g = load(name);
    let lp = g.layer(layer).clone();
    let bottoms: Vec<_> = lp.bottom.iter().map(|b| g.blob(b)).collect();
    let case = LayerCase {
        param: lp.clone(),
        phase: g.phase(),
        bottoms,
        params: g.params(layer),
    };
    let backward = g.case["backward"].as_bool().unwrap();
    let losses: Vec<String> = g.case["loss_blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut eng = CpuEngine::new();
    let first = run_layer(&mut eng, &case, None, None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let top_diffs: Vec<Vec<f32>> = lp
        .top
        .iter()
        .zip(&first.tops)
        .map(
            |(t, (shape, _))| match g.data.get(&format!("top_diff.{t}")) {
                Some((_, d)) => d.clone(),
                None if losses.contains(t) => vec![1.0],
                None => vec![0.0; shape.iter().product()],
            },
        )
        .collect();
    let run = if backward {
        run_layer(&mut eng, &case, Some(&top_diffs), None)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
    } else {
        first
    };
    let mut worst = 0f32;
    let mut compared = 0;
    for (t, (shape, values)) in lp.top.iter().zip(&run.tops) {
        if let Some((want_shape, want)) = g.data.get(&format!("output.{t}")) {
            let n: usize = want_shape.iter().product();
            if lp.r#type() == "Filter" {
                // Tops are allocated at their largest size; the kept items come first.
                assert_eq!(shape[1..], want_shape[1..], "{name}: top {t} shape");
                worst = worst.max(compare(
                    &format!("{name} output.{t}"),
                    &values[..n],
                    want,
                    g.tol("forward"),
                ));
            } else {
                assert_eq!(shape, want_shape, "{name}: top {t} shape");
                worst = worst.max(compare(
                    &format!("{name} output.{t}"),
                    values,
                    want,
                    g.tol("forward"),
                ));
            }
            compared += 1;
        }
    }
    if backward {
        for (i, b) in lp.bottom.iter().enumerate() {
            let key = match g.data.get(&format!("bottom_diff.{b}")) {
                Some(_) => format!("bottom_diff.{b}"),
                None => match g.parameter_producer(b) {
                    Some(p) if g.data.contains_key(&format!("param_diff.{p}.0")) => {
                        format!("param_diff.{p}.0")
                    }
                    _ => continue,
                },
            };
            let want = &g.data[&key].1;
            worst = worst.max(compare(
                &format!("{name} {key}"),
                &run.bottom_diffs[i],
                want,
                g.tol("backward"),
            ));
            compared += 1;
        }
    }
    assert!(compared > 0, "{name}: nothing compared");
    eprintln!("{name}: {compared} tensors, max error {worst:e}");
    worst
}

macro_rules! golden {
    ($($test:ident => $layer:literal),* $(,)?) => {
        $(#[test] fn $test() { check(stringify!($test), $layer); })*
    };
}

golden! {
    softmax => "prob",
    softmax_4d => "prob",
    softmax_axis2 => "prob",
    softmax_loss => "loss",
    softmax_loss_ignore => "loss",
    softmax_loss_spatial_batch => "loss",
    softmax_loss_spatial_full => "loss",
    euclidean_loss => "loss",
    sigmoid_ce_loss => "loss",
    hinge_loss_l1 => "loss",
    hinge_loss_l2 => "loss",
    infogain_loss => "loss",
    multinomial_logistic_loss => "loss",
    contrastive_loss => "loss",
    contrastive_loss_legacy => "loss",
    accuracy_top1 => "acc",
    accuracy_top3 => "acc",
    accuracy_per_class => "acc",
    argmax => "am",
    argmax_axis_topk_maxval => "am",
    concat => "cat",
    concat_axis0 => "cat",
    concat_axis2 => "cat",
    slice => "slice",
    slice_points_axis2 => "slice",
    flatten => "flat",
    flatten_axis_end => "flat",
    reshape => "rs",
    reshape_0_neg1 => "rs",
    crop => "crop",
    crop_axis1_offsets => "crop",
    tile => "tile",
    tile_axis0 => "tile",
    reduction_mean => "red",
    reduction_mean_coeff => "red",
    reduction_sum_all => "red",
    silence => "silence",
    filter => "filter",
    batch_reindex => "reidx",
}

/// Parameter: its blob is its top; the gradient it receives is the Eltwise PROD's
/// top_diff * (other input).
#[test]
fn parameter() {
    let g = load("parameter");
    let lp = g.layer("p").clone();
    let params = g.params("p");
    assert!(params.is_some());
    let case = LayerCase {
        param: lp,
        phase: g.phase(),
        bottoms: vec![],
        params,
    };
    let (_, td) = &g.data["top_diff.prod"];
    let (_, x) = &g.data["input.data"];
    let p_diff: Vec<f32> = td.iter().zip(x).map(|(a, b)| a * b).collect();
    let run = run_layer(&mut CpuEngine::new(), &case, Some(&[p_diff]), None).unwrap();
    let (shape, want) = &g.data["output.p"];
    assert_eq!(&run.tops[0].0, shape);
    compare("parameter output.p", &run.tops[0].1, want, g.tol("forward"));
    compare(
        "parameter param_diff.p.0",
        &run.param_diffs[0],
        &g.data["param_diff.p.0"].1,
        g.tol("backward"),
    );
}

#[test]
fn dummydata_const() {
    let g = load("dummydata_const");
    let case = LayerCase {
        param: g.layer("dummy").clone(),
        phase: g.phase(),
        bottoms: vec![],
        params: None,
    };
    let run = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
    for (i, t) in ["d0", "d1"].iter().enumerate() {
        let (shape, want) = &g.data[&format!("output.{t}")];
        assert_eq!(&run.tops[i].0, shape);
        compare(
            &format!("dummydata_const output.{t}"),
            &run.tops[i].1,
            want,
            g.tol("forward"),
        );
    }
}
