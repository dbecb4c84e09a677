//! Runs of in-place point-wise layers (BatchNorm with stored statistics, Scale, neurons) run
//! forward as one pass. That must change nothing a user can see: every blob, gradient and
//! parameter gradient equals the layer-by-layer run bit for bit, in both engines.
use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::format::transcode::parse_text;
use caffe_rs::net::runtime::Net;
use caffe_rs::net::state::make_state;
use caffe_rs::proto::{NetParameter, Phase};
use caffe_rs::rng::Rng;

const NET: &str = r#"
name: "fused"
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "c" top: "c"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.1 } }
layer { name: "swish" type: "Swish" bottom: "c" top: "c" }
layer { name: "bn2" type: "BatchNorm" bottom: "c" top: "n" batch_norm_param { use_global_stats: true } }
layer { name: "tanh" type: "TanH" bottom: "n" top: "n" }
layer { name: "whole" type: "Scale" bottom: "n" top: "n" scale_param { axis: 0 num_axes: 0 filler { type: "constant" value: 1.5 } } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "n" top: "n" }
layer { name: "batch_bn" type: "BatchNorm" bottom: "n" top: "n" batch_norm_param { use_global_stats: false } }
layer { name: "relu2" type: "ReLU" bottom: "n" top: "n" }
layer { name: "sum" type: "Eltwise" bottom: "n" bottom: "c" top: "s" eltwise_param { coeff: 0.5 coeff: -1 } }
layer { name: "relu3" type: "ReLU" bottom: "s" top: "s" relu_param { negative_slope: 0.2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "s" bottom: "c" top: "loss" }
"#;

/// Every blob's data and diff and every parameter's data and diff after a forward and backward
/// (three iterations, so BatchNorm's batch statistics update and get used again).
fn run(eng: &mut dyn Engine, fuse: bool, forward_only: bool) -> (Vec<Vec<f32>>, usize) {
    let param: NetParameter = parse_text(NET, "fused.prototxt", "caffe.NetParameter").unwrap();
    let state = make_state(&param, Phase::Train, 0, &[]);
    let mut net = Net::from_param(&param, &state, eng, Some(5)).unwrap();
    net.fuse_forward = fuse;
    net.forward_only = forward_only;
    let mut rng = Rng::new(3);
    let mut values =
        |n: usize, lo: f32| -> Vec<f32> { (0..n).map(|_| rng.uniform_range(lo, 2.0)).collect() };
    let x = values(2 * 3 * 5 * 7, -2.0);
    eng.upload(net.blob("x").unwrap().data(), &x);
    for bn in ["bn", "bn2"] {
        let stats = net.layer_params(bn);
        let (sums, sq, count) = (stats[0].data(), stats[1].data(), stats[2].data());
        let (s, q) = (values(4, -1.0), values(4, 2.5));
        eng.upload(sums, &s);
        eng.upload(sq, &q);
        eng.upload(count, &[1.25]);
    }
    let mut runs = 0;
    let mut out = Vec::new();
    for _ in 0..3 {
        let n = net.graph.layers.len();
        let mut i = 0;
        while i < n {
            let next = net.forward_step(eng, i, n).unwrap();
            runs += usize::from(next > i + 1);
            i = next;
        }
        if forward_only {
            for b in net.blobs.clone() {
                out.push(eng.download(b.data()));
            }
            continue;
        }
        net.clear_param_diffs();
        net.backward(eng).unwrap();
        for b in net.blobs.clone() {
            out.push(eng.download(b.data()));
            out.push(eng.download(b.diff()));
        }
        for p in net.params.clone() {
            out.push(eng.download(p.data()));
            out.push(eng.download(p.diff()));
        }
    }
    (out, runs)
}

fn check(eng: &mut dyn Engine) {
    // Without a backward to follow, the fused layers keep nothing and the values stay the same.
    let (fused, _) = run(eng, true, true);
    assert_eq!(fused, run(eng, false, true).0, "forward-only values");
    let (fused, runs) = run(eng, true, false);
    let (plain, none) = run(eng, false, false);
    assert_eq!(none, 0);
    // bn..swish; bn2 + tanh; whole + sigmoid (a whole-blob scale has other dims than bn2's
    // channels); batch_bn (batch statistics) and relu2 alone; sum + relu3: four runs per forward.
    assert_eq!(runs, 4 * 3, "fused runs in three forwards");
    assert_eq!(fused.len(), plain.len());
    for (t, (a, b)) in fused.iter().zip(&plain).enumerate() {
        let same = a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "tensor {t} differs: {a:?} vs {b:?}");
    }
}

#[test]
fn fused_forward_equals_layer_by_layer_on_cpu() {
    check(&mut CpuEngine::new());
}

#[test]
fn fused_forward_equals_layer_by_layer_on_gpu() {
    let mut gpu = GpuEngine::new(0)
        .unwrap_or_else(|e| panic!("this test needs a GPU adapter (lavapipe will do): {e:#}"));
    check(&mut gpu);
}
