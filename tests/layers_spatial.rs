//! Golden conformance of the spatial layers (Convolution, Deconvolution, Pooling, SPP,
//! InnerProduct, Embed) against real Caffe: each single-layer case of ../shared/golden is run
//! through `run_layer` on the CPU engine and every stored tensor is compared; the CPU engine's
//! convolution paths are also checked against the definition on bigger shapes.
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

/// The CPU engine's convolution paths for bigger shapes than the goldens have (a 1x1 layer that
/// narrows the channels over 400 positions, a 1x1 layer with a bias on 7x7 planes whose forward
/// multiplies the images side by side, a grouped 5x5 layer whose forward is an implicit GEMM, a
/// strided 3x3 layer, a 3x3 Winograd layer and an RGB 7x7 stride-2 layer that runs directly,
/// three images each): forward, data gradient and weight (and bias) gradient against the
/// definition, summed in f64.
#[test]
fn cpu_convolution_paths_equal_the_definition() {
    use caffe_rs::rng::Rng;
    // (channels, outputs, group, kernel, stride, pad, size, bias)
    let layers = [
        (16, 4, 1, 1, 1, 0, 20, false),
        (40, 24, 1, 1, 1, 0, 7, true),
        (4, 6, 2, 5, 1, 2, 18, false),
        (6, 4, 1, 3, 2, 1, 33, false),
        (8, 8, 1, 3, 1, 1, 17, false),
        (3, 10, 1, 7, 2, 3, 37, false),
    ];
    let mut rng = Rng::new(11);
    for &(c, o, g, k, s, p, size, bias) in &layers {
        let batch = 3;
        let out = (size + 2 * p - k) / s + 1;
        let mut uniform =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.uniform_range(-1.0, 1.0)).collect() };
        let x = uniform(batch * c * size * size);
        let w = uniform(o * (c / g) * k * k);
        let dy = uniform(batch * o * out * out);
        let b_values = uniform(o);
        let text = format!(
            "name: \"conv\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param {{ \
             num_output: {o} group: {g} kernel_size: {k} stride: {s} pad: {p} bias_term: {bias} }}"
        );
        let case = LayerCase {
            param: parse_text(&text, "conv", "caffe.LayerParameter").unwrap(),
            phase: Phase::Train,
            bottoms: vec![(vec![batch, c, size, size], x.clone())],
            params: Some(if bias {
                vec![w.clone(), b_values.clone()]
            } else {
                vec![w.clone()]
            }),
        };
        let run = run_layer(
            &mut CpuEngine::new(),
            &case,
            Some(std::slice::from_ref(&dy)),
            None,
        )
        .unwrap();
        let (cg, og) = (c / g, o / g);
        let plane = out * out;
        let mut want_y: Vec<f64> = (0..dy.len())
            .map(|i| {
                if bias {
                    b_values[i / plane % o] as f64
                } else {
                    0.0
                }
            })
            .collect();
        let mut want_db = vec![0f64; o];
        for (i, &d) in dy.iter().enumerate() {
            want_db[i / plane % o] += d as f64;
        }
        let mut want_dx = vec![0f64; x.len()];
        let mut want_dw = vec![0f64; w.len()];
        for b in 0..batch {
            for oc in 0..o {
                let grp = oc / og;
                for ci in 0..cg {
                    let ic = grp * cg + ci;
                    for (i, j) in (0..k).flat_map(|i| (0..k).map(move |j| (i, j))) {
                        let wi = ((oc * cg + ci) * k + i) * k + j;
                        for (oy, ox) in (0..out).flat_map(|y| (0..out).map(move |x| (y, x))) {
                            let (iy, ix) = (
                                (oy * s + i) as isize - p as isize,
                                (ox * s + j) as isize - p as isize,
                            );
                            if iy < 0 || ix < 0 || iy >= size as isize || ix >= size as isize {
                                continue;
                            }
                            let xi = ((b * c + ic) * size + iy as usize) * size + ix as usize;
                            let yi = ((b * o + oc) * out + oy) * out + ox;
                            want_y[yi] += x[xi] as f64 * w[wi] as f64;
                            want_dx[xi] += dy[yi] as f64 * w[wi] as f64;
                            want_dw[wi] += dy[yi] as f64 * x[xi] as f64;
                        }
                    }
                }
            }
        }
        let what = format!("{c}->{o} group {g} {k}x{k}/{s} pad {p} at {size}x{size}");
        let mut checks = vec![
            ("forward", &run.tops[0].1, &want_y),
            ("data gradient", &run.bottom_diffs[0], &want_dx),
            ("weight gradient", &run.param_diffs[0], &want_dw),
        ];
        if bias {
            checks.push(("bias gradient", &run.param_diffs[1], &want_db));
        }
        for (name, got, want) in checks {
            assert_eq!(got.len(), want.len(), "{what}: {name} length");
            for (i, (&got, &want)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{what}: {name}[{i}] = {got}, expected {want}"
                );
            }
        }
    }
}
