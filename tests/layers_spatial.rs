//! Golden conformance of the spatial layers (Convolution, Deconvolution, Pooling, SPP,
//! InnerProduct, Embed) against real Caffe: each single-layer case of ../shared/golden is run
//! through `run_layer` on the CPU engine and every stored tensor is compared.
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

/// Compares with |a - e| <= atol * max(1, max|e|) + rtol * |e|; returns the largest |a - e|.
fn compare(what: &str, got: &[f32], want: &[f32], t: Tol) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        let err = (a - e).abs();
        assert!(
            err <= t.atol * scale + t.rtol * e.abs(),
            "{what}[{i}]: got {a}, expected {e}"
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
    let params = match std::fs::read(dir.join("weights.caffemodel")) {
        Ok(bytes) => {
            let weights = NetParameter::decode(&bytes[..]).unwrap();
            let l = weights
                .layer
                .iter()
                .find(|l| l.name == layer.name)
                .expect("the layer in the caffemodel");
            Some(l.blobs.iter().map(|b| b.values_f32()).collect())
        }
        Err(_) => None,
    };
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
    };
}

golden_cases! {
    conv_1x1,
    conv_3x3_pad1_bias,
    conv_5x5_s2_p2_nobias,
    conv_depthwise,
    conv_dilation,
    conv_group,
    conv_nobias_group_dil_stride,
    conv_nonsquare,
    conv3d,
    deconv_group_pad,
    deconv_stride2,
    pool_ave_pad,
    pool_global,
    pool_max_ceil,
    pool_max_pad,
    pool_round_floor,
    pool_stride_gt_kernel_ave,
    pool_stride_gt_kernel_max,
    spp_ave,
    spp_max,
    ip_5d_axis2,
    ip_axis,
    ip_bias,
    ip_nobias,
    ip_transpose,
    embed,
    embed_bias,
}

/// Every golden case of these layer types is listed above.
#[test]
fn all_spatial_cases_covered() {
    let listed = [
        "conv_1x1",
        "conv_3x3_pad1_bias",
        "conv_5x5_s2_p2_nobias",
        "conv_depthwise",
        "conv_dilation",
        "conv_group",
        "conv_nobias_group_dil_stride",
        "conv_nonsquare",
        "conv3d",
        "deconv_group_pad",
        "deconv_stride2",
        "pool_ave_pad",
        "pool_global",
        "pool_max_ceil",
        "pool_max_pad",
        "pool_round_floor",
        "pool_stride_gt_kernel_ave",
        "pool_stride_gt_kernel_max",
        "spp_ave",
        "spp_max",
        "ip_5d_axis2",
        "ip_axis",
        "ip_bias",
        "ip_nobias",
        "ip_transpose",
        "embed",
        "embed_bias",
    ];
    let types = [
        "Convolution",
        "Deconvolution",
        "Pooling",
        "SPP",
        "InnerProduct",
        "Embed",
        "Im2col",
    ];
    for entry in std::fs::read_dir(golden()).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(src) = std::fs::read_to_string(dir.join("net.prototxt")) else {
            continue;
        };
        let Ok(net) = parse_text::<NetParameter>(&src, "net.prototxt", "caffe.NetParameter") else {
            continue;
        };
        let layers: Vec<_> = net.layer.iter().filter(|l| l.r#type() != "Input").collect();
        if layers.len() == 1 && types.contains(&layers[0].r#type()) {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                listed.contains(&name.as_str()),
                "golden case {name} is not covered"
            );
        }
    }
}
