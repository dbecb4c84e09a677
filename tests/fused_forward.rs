//! Runs of in-place point-wise layers (BatchNorm with stored statistics, Scale, neurons) run
//! forward as one pass (or as a convolution's epilogue), and BatchNorm + Scale + neuron runs
//! backward as one pass. That must change nothing a user can see: every blob, gradient and
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

/// A convolution applies the in-place layers after it as it stores its output: every step
/// pattern the GPU's GEMM epilogue runs (BatchNorm, Scale with and without bias, ReLU, the
/// Scale's saved input), on both of its product paths (16 to 128 output channels per group, and
/// more), grouped and strided, with rows of whole vec4s (8x8) and without (9x11); on the CPU the
/// 5x5 layer on 9x11 images is an implicit GEMM (7 vectors of lines that cross rows).
const CONV_NET: &str = r#"
name: "epilogues"
force_backward: true
layer { name: "in" type: "Input" top: "a" top: "b"
        input_param { shape { dim: 2 dim: 16 dim: 8 dim: 8 } shape { dim: 2 dim: 16 dim: 9 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "a" top: "c1"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.2 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1" batch_norm_param { use_global_stats: true } }
layer { name: "sc1" type: "Scale" bottom: "c1" top: "c1"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv2" type: "Convolution" bottom: "c1" top: "c2"
        convolution_param { num_output: 136 kernel_size: 1 bias_term: false weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "c2" top: "c2" batch_norm_param { use_global_stats: true } }
layer { name: "sc2" type: "Scale" bottom: "c2" top: "c2"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "conv3" type: "Convolution" bottom: "c2" top: "c3"
        convolution_param { num_output: 32 kernel_size: 3 stride: 2 pad: 1 group: 2
                            weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu3" type: "ReLU" bottom: "c3" top: "c3" }
layer { name: "conv4" type: "Convolution" bottom: "c3" top: "c4"
        convolution_param { num_output: 20 kernel_size: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "sc4" type: "Scale" bottom: "c4" top: "c4" scale_param { filler { type: "gaussian" std: 1 } } }
layer { name: "conv5" type: "Convolution" bottom: "c4" top: "c5"
        convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "bn5" type: "BatchNorm" bottom: "c5" top: "c5" batch_norm_param { use_global_stats: true } }
layer { name: "convb" type: "Convolution" bottom: "b" top: "cb"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "bnb" type: "BatchNorm" bottom: "cb" top: "cb" batch_norm_param { use_global_stats: true } }
layer { name: "scb" type: "Scale" bottom: "cb" top: "cb"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relub" type: "ReLU" bottom: "cb" top: "cb" relu_param { negative_slope: 0.1 } }
layer { name: "convi" type: "Convolution" bottom: "b" top: "ci"
        convolution_param { num_output: 20 kernel_size: 5 pad: 2 weight_filler { type: "gaussian" std: 0.1 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bni" type: "BatchNorm" bottom: "ci" top: "ci" batch_norm_param { use_global_stats: true } }
layer { name: "sci" type: "Scale" bottom: "ci" top: "ci"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relui" type: "ReLU" bottom: "ci" top: "ci" }
layer { name: "rgb" type: "Input" top: "r" input_param { shape { dim: 2 dim: 3 dim: 13 dim: 37 } } }
layer { name: "convr" type: "Convolution" bottom: "r" top: "cr"
        convolution_param { num_output: 12 kernel_size: 5 stride: 2 pad: 2 weight_filler { type: "gaussian" std: 0.2 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bnr" type: "BatchNorm" bottom: "cr" top: "cr" batch_norm_param { use_global_stats: true } }
layer { name: "scr" type: "Scale" bottom: "cr" top: "cr"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relur" type: "ReLU" bottom: "cr" top: "cr" }
layer { name: "la" type: "Reduction" bottom: "c5" top: "la" reduction_param { operation: SUMSQ } loss_weight: 1 }
layer { name: "lb" type: "Reduction" bottom: "cb" top: "lb" reduction_param { operation: SUMSQ } loss_weight: 1 }
layer { name: "lr" type: "Reduction" bottom: "cr" top: "lr" reduction_param { operation: SUMSQ } loss_weight: 1 }
layer { name: "li" type: "Reduction" bottom: "ci" top: "li" reduction_param { operation: SUMSQ } loss_weight: 1 }
"#;

/// Sum junctions (Eltwise SUM, in-place neuron, Split) go backward as one pass each: with and
/// without the neuron or the Split, a Split of three tops, coefficients, an Eltwise of three
/// bottoms, and an in-place Eltwise (its bottom diff is the top diff). 2x8x48x48 elements are
/// split among the cores with a partial last block.
const JUNCTION_NET: &str = r#"
name: "junctions"
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 dim: 48 dim: 48 } } }
layer { name: "pa" type: "Power" bottom: "x" top: "p" power_param { scale: 1.5 shift: -0.5 } }
layer { name: "sum1" type: "Eltwise" bottom: "p" bottom: "x" top: "s1" }
layer { name: "relu1" type: "ReLU" bottom: "s1" top: "s1" relu_param { negative_slope: 0.1 } }
layer { name: "tanh" type: "TanH" bottom: "s1" top: "t" }
layer { name: "sum2" type: "Eltwise" bottom: "t" bottom: "s1" top: "s2" eltwise_param { coeff: 0.5 coeff: -2 } }
layer { name: "relu2" type: "ReLU" bottom: "s2" top: "s2" }
layer { name: "sum3" type: "Eltwise" bottom: "s2" bottom: "x" bottom: "s1" top: "s3"
        eltwise_param { coeff: 1 coeff: 0.25 coeff: 1 } }
layer { name: "sig" type: "Sigmoid" bottom: "s3" top: "g" }
layer { name: "sum4" type: "Eltwise" bottom: "g" bottom: "s3" top: "g" }
layer { name: "elu" type: "ELU" bottom: "g" top: "g" }
layer { name: "loss" type: "EuclideanLoss" bottom: "g" bottom: "s2" top: "loss" }
"#;

/// Every blob's data and diff and every parameter's data and diff after a forward and backward
/// (three iterations, so BatchNorm's batch statistics update and get used again); the number of
/// fused runs (forward and backward). The inputs and the BatchNorm layers' stored statistics are random.
/// An Eltwise SUM that reads a convolution's output right after the convolution (and its
/// in-place layers) joins the convolution's forward, with the in-place layers on its own top:
/// the ResNet block (BatchNorm, Scale, then the shortcut's sum and a ReLU) on the Winograd path,
/// a 1x1 convolution first of three bottoms with coefficients and nothing after, a grouped 3x3
/// convolution in the middle of three bottoms with a Scale (and its saved input) after the sum,
/// the direct path of an RGB input; an in-place Eltwise and a PROD do not join.
const JOIN_NET: &str = r#"
name: "joins"
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "y" top: "r" top: "q"
        input_param { shape { dim: 2 dim: 16 dim: 8 dim: 8 } shape { dim: 2 dim: 24 dim: 8 dim: 8 }
                      shape { dim: 2 dim: 3 dim: 13 dim: 37 } shape { dim: 2 dim: 8 dim: 7 dim: 19 } } }
layer { name: "conv1" type: "Convolution" bottom: "x" top: "c1"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.2 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1" batch_norm_param { use_global_stats: true } }
layer { name: "sc1" type: "Scale" bottom: "c1" top: "c1"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "sum1" type: "Eltwise" bottom: "y" bottom: "c1" top: "s1" }
layer { name: "relu1" type: "ReLU" bottom: "s1" top: "s1" }
layer { name: "conv2" type: "Convolution" bottom: "s1" top: "c2"
        convolution_param { num_output: 24 kernel_size: 1 bias_term: false weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "sum2" type: "Eltwise" bottom: "c2" bottom: "s1" bottom: "y" top: "s2"
        eltwise_param { coeff: 0.5 coeff: -1 coeff: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "s2" top: "c3"
        convolution_param { num_output: 24 kernel_size: 3 pad: 1 group: 2 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "relu3" type: "ReLU" bottom: "c3" top: "c3" relu_param { negative_slope: 0.1 } }
layer { name: "sum3" type: "Eltwise" bottom: "s1" bottom: "c3" bottom: "s2" top: "s3"
        eltwise_param { coeff: 1 coeff: 0.25 coeff: -0.5 } }
layer { name: "sig3" type: "Sigmoid" bottom: "s3" top: "s3" }
layer { name: "sc3" type: "Scale" bottom: "s3" top: "s3"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "pw" type: "Power" bottom: "s3" top: "w" power_param { scale: 0.5 } }
layer { name: "conv4" type: "Convolution" bottom: "s3" top: "c4"
        convolution_param { num_output: 24 kernel_size: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "sum4" type: "Eltwise" bottom: "w" bottom: "c4" top: "w" }
layer { name: "conv5" type: "Convolution" bottom: "w" top: "c5"
        convolution_param { num_output: 24 kernel_size: 1 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "prod" type: "Eltwise" bottom: "c5" bottom: "y" top: "p" eltwise_param { operation: PROD } }
layer { name: "convr" type: "Convolution" bottom: "r" top: "cr"
        convolution_param { num_output: 8 kernel_size: 5 stride: 2 pad: 2 weight_filler { type: "gaussian" std: 0.2 }
                            bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sumr" type: "Eltwise" bottom: "q" bottom: "cr" top: "sr" }
layer { name: "relur" type: "ReLU" bottom: "sr" top: "sr" }
layer { name: "ls" type: "Reduction" bottom: "p" top: "ls" reduction_param { operation: SUMSQ } loss_weight: 1 }
layer { name: "lr" type: "Reduction" bottom: "sr" top: "lr" reduction_param { operation: SUMSQ } loss_weight: 1 }
"#;

fn run(eng: &mut dyn Engine, net: &str, fuse: bool, forward_only: bool) -> (Vec<Vec<f32>>, usize) {
    let param: NetParameter = parse_text(net, "fused.prototxt", "caffe.NetParameter").unwrap();
    let state = make_state(&param, Phase::Train, 0, &[]);
    let mut net = Net::from_param(&param, &state, eng, Some(5)).unwrap();
    net.fuse = fuse;
    net.forward_only = forward_only;
    let mut rng = Rng::new(3);
    let mut values =
        |n: usize, lo: f32| -> Vec<f32> { (0..n).map(|_| rng.uniform_range(lo, 2.0)).collect() };
    for layer in &param.layer {
        let name = layer.name.as_deref().unwrap_or_default();
        match layer.r#type.as_deref() {
            Some("Input") => {
                for top in &layer.top {
                    let blob = net.blob(top).unwrap().data();
                    eng.upload(blob, &values(blob.len, -2.0));
                }
            }
            Some("BatchNorm") => {
                let stats = net.layer_params(name);
                let (sums, sq, count) = (stats[0].data(), stats[1].data(), stats[2].data());
                let (s, q) = (values(sums.len, -1.0), values(sq.len, 0.5));
                eng.upload(sums, &s);
                eng.upload(sq, &q);
                eng.upload(count, &[1.25]);
            }
            _ => {}
        }
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
        net.seed_loss_diffs(eng);
        let mut end = n;
        while end > 0 {
            let first = net.backward_step(eng, end - 1).unwrap();
            runs += usize::from(first < end - 1);
            end = first;
        }
        net.zero_cleared_diffs(eng);
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

/// Asserts that two runs' tensors are equal bit for bit, naming the first difference.
fn assert_same(what: &str, fused: &[Vec<f32>], plain: &[Vec<f32>]) {
    assert_eq!(fused.len(), plain.len(), "{what}: tensor count");
    for (t, (a, b)) in fused.iter().zip(plain).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: tensor {t} length");
        if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
            panic!(
                "{what}: tensor {t} differs first at {i}: {} fused vs {} plain",
                a[i], b[i]
            );
        }
    }
}

/// Fused and layer-by-layer runs of `net` agree, with (forward, backward) fused runs per
/// iteration.
fn check(eng: &mut dyn Engine, net: &str, (forward_runs, backward_runs): (usize, usize)) {
    // Without a backward to follow, the fused layers keep nothing and the values stay the same.
    let (fused, runs) = run(eng, net, true, true);
    assert_eq!(runs, forward_runs * 3, "fused runs in three forwards");
    assert_same("forward only", &fused, &run(eng, net, false, true).0);
    let (fused, runs) = run(eng, net, true, false);
    let (plain, none) = run(eng, net, false, false);
    assert_eq!(none, 0);
    assert_eq!(
        runs,
        (forward_runs + backward_runs) * 3,
        "fused runs in three iterations"
    );
    assert_same("forward and backward", &fused, &plain);
}

fn gpu() -> GpuEngine {
    GpuEngine::new(0)
        .unwrap_or_else(|e| panic!("this test needs a GPU adapter (lavapipe will do): {e:#}"))
}

// Forward: conv..swish; bn2 + tanh; whole + sigmoid (a whole-blob scale has other dims than
// bn2's channels); batch_bn (batch statistics) and relu2 alone; sum + relu3. Backward: the
// Scale runs bn + scale and whole + sigmoid; relu + swish and batch_bn + relu2, which the net
// tries as Scale runs and then takes one by one; sum + relu3 as a junction.
const NET_RUNS: (usize, usize) = (4, 5);
// Forward: every convolution with the layers after it. Backward: the five Scale runs.
const CONV_NET_RUNS: (usize, usize) = (8, 5);
// Forward: sum1 + relu1, sum2 + relu2, sum4 + elu. Backward: sum1 + relu1 + the Split of s1,
// sum2 + relu2 + the Split of s2, sum3 + the Split of s3, sum4 + elu.
const JUNCTION_RUNS: (usize, usize) = (3, 4);

#[test]
fn fused_forward_equals_layer_by_layer_on_cpu() {
    check(&mut CpuEngine::new(), NET, NET_RUNS);
}

#[test]
fn fused_forward_equals_layer_by_layer_on_gpu() {
    check(&mut gpu(), NET, NET_RUNS);
}

#[test]
fn convolution_epilogues_equal_layer_by_layer_on_cpu() {
    check(&mut CpuEngine::new(), CONV_NET, CONV_NET_RUNS);
    // One image: the products of the whole batch, then the epilogue as a pass of its own (the
    // direct convolution of the 3-channel input splits its image's rows among the cores).
    let one_image = CONV_NET
        .replace("dim: 2 dim: 16", "dim: 1 dim: 16")
        .replace("dim: 2 dim: 3", "dim: 1 dim: 3");
    assert_ne!(one_image, CONV_NET);
    check(&mut CpuEngine::new(), &one_image, CONV_NET_RUNS);
}

// Forward: conv1 ... relu1, conv2 + sum2, conv3 ... sc3, convr ... relur (sum4 and prod stay
// apart). Backward: bn1 + sc1, sum1 + relu1 + the Split of s1, sum2 + the Split of s2, sum3 +
// sig3, sumr + relur.
const JOIN_RUNS: (usize, usize) = (4, 5);

#[test]
fn convolution_junctions_equal_layer_by_layer_on_cpu() {
    check(&mut CpuEngine::new(), JOIN_NET, JOIN_RUNS);
    // One image: the direct convolution splits its rows among the cores, the 1x1 products
    // run composed (the junction as a pass of its own).
    let one_image = JOIN_NET.replace("shape { dim: 2", "shape { dim: 1");
    assert_ne!(one_image, JOIN_NET);
    check(&mut CpuEngine::new(), &one_image, JOIN_RUNS);
}

#[test]
fn convolution_junctions_equal_layer_by_layer_on_gpu() {
    check(&mut gpu(), JOIN_NET, JOIN_RUNS);
}

#[test]
fn junction_backwards_equal_layer_by_layer_on_cpu() {
    check(&mut CpuEngine::new(), JUNCTION_NET, JUNCTION_RUNS);
    check(&mut CpuEngine::new(), &odd_junctions(), JUNCTION_RUNS);
}

/// [`JUNCTION_NET`] on 210 elements: one block on the CPU, single elements on the GPU.
fn odd_junctions() -> String {
    let odd = JUNCTION_NET.replace(
        "dim: 2 dim: 8 dim: 48 dim: 48",
        "dim: 2 dim: 3 dim: 5 dim: 7",
    );
    assert_ne!(odd, JUNCTION_NET);
    odd
}

#[test]
fn junction_backwards_equal_layer_by_layer_on_gpu() {
    let mut gpu = gpu();
    check(&mut gpu, JUNCTION_NET, JUNCTION_RUNS);
    check(&mut gpu, &odd_junctions(), JUNCTION_RUNS);
}

#[test]
fn convolution_epilogues_equal_layer_by_layer_on_gpu() {
    check(&mut gpu(), CONV_NET, CONV_NET_RUNS);
}
