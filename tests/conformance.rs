//! Conformance against ../shared/golden: every layer and whole-net case produced by real BVLC Caffe
//! runs through the whole net (the `forward` command's code path) and must match its outputs,
//! input diffs and parameter diffs within the case's tolerances.
use std::path::{Path, PathBuf};

use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::format::tensors::{TensorMap, read_tensors};
use caffe_rs::proto::Phase;
use caffe_rs::tools::forward::{ForwardOptions, run_net};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

struct Tol {
    rtol: f32,
    atol: f32,
}

fn tol(case: &serde_json::Value, which: &str) -> Tol {
    let t = &case["tolerances"][which];
    Tol {
        rtol: t["rtol"].as_f64().unwrap_or(1e-4) as f32,
        atol: t["atol"].as_f64().unwrap_or(1e-4) as f32,
    }
}

/// |a - b| <= atol * max(1, max|ref|) + rtol * |ref| for every element.
fn compare(name: &str, got: &[f32], want: &[f32], t: &Tol) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let max_ref = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs();
        if err.is_nan() || err > t.atol * max_ref + t.rtol * b.abs() {
            return Err(format!("{name}[{i}]: got {a}, expected {b} (|diff| {err})"));
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

fn run_case(name: &str) {
    run_case_on(name, &mut CpuEngine::new());
}

fn run_gpu_case(name: &str) {
    run_case_on(name, &mut gpu_engine());
}

fn gpu_engine() -> GpuEngine {
    GpuEngine::new(0)
        .unwrap_or_else(|e| panic!("GPU conformance needs an adapter (lavapipe in CI): {e:#}"))
}

fn run_case_on(name: &str, eng: &mut dyn Engine) {
    let dir = golden_dir().join(name);
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let net = caffe_rs::format::read_net_prototxt(&dir.join("net.prototxt")).unwrap();
    let weights = if dir.join("weights.caffemodel").exists() {
        vec![
            caffe_rs::format::caffemodel::read_net_binary(&dir.join("weights.caffemodel")).unwrap(),
        ]
    } else {
        Vec::new()
    };
    let data = read_tensors(&dir.join("data.safetensors")).unwrap();
    let phase = if case["phase"] == "TRAIN" {
        Phase::Train
    } else {
        Phase::Test
    };
    let backward = case["backward"].as_bool().unwrap_or(false);
    let opts = ForwardOptions {
        phase,
        backward,
        ..Default::default()
    };
    let got: TensorMap =
        run_net(eng, &net, &weights, &data, &opts).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let (fwd, bwd) = (tol(&case, "forward"), tol(&case, "backward"));
    let mut failures = Vec::new();
    let mut checked = 0;
    for (key, (_, want)) in &data {
        let (ours, t) = if key.starts_with("output.") {
            (key.clone(), &fwd)
        } else if key.starts_with("bottom_diff.") || key.starts_with("param_diff.") {
            (key.clone(), &bwd)
        } else if let Some(rest) = key.strip_prefix("param_after_forward.") {
            (format!("param.{rest}"), &fwd)
        } else {
            continue;
        };
        match got.get(&ours) {
            None => failures.push(format!("{key}: not produced")),
            Some((_, values)) => match compare(key, values, want, t) {
                Ok(_) => checked += 1,
                Err(e) => failures.push(e),
            },
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} tensors differ:\n{}",
        failures.len(),
        checked + failures.len(),
        failures.join("\n")
    );
    assert!(checked > 0, "{name}: nothing compared");
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(#[test] fn $case() { run_case(stringify!($case)); })*
        /// The same cases in GPU mode.
        mod gpu {
            $(#[test] fn $case() { super::run_gpu_case(stringify!($case)); })*
        }
    };
}

cases! {
    absval,
    accuracy_per_class,
    accuracy_top1,
    accuracy_top3,
    argmax,
    argmax_axis_topk_maxval,
    batch_reindex,
    batchnorm_test,
    batchnorm_train,
    batchnorm_train_maf,
    bias,
    bias_2bottom,
    bnll,
    cifar10_quick,
    clip,
    concat,
    concat_axis0,
    concat_axis2,
    contrastive_loss,
    contrastive_loss_legacy,
    conv3d,
    conv_1x1,
    conv_3x3_pad1_bias,
    conv_5x5_s2_p2_nobias,
    conv_depthwise,
    conv_dilation,
    conv_group,
    conv_nobias_group_dil_stride,
    conv_nonsquare,
    crop,
    crop_axis1_offsets,
    deconv_group_pad,
    deconv_stride2,
    dropout_test,
    dummydata_const,
    eltwise_max,
    eltwise_prod,
    eltwise_prod3,
    eltwise_sum3,
    eltwise_sum_coeff,
    elu,
    elu_alpha05,
    embed,
    embed_bias,
    euclidean_loss,
    exp,
    filter,
    flatten,
    flatten_axis_end,
    hinge_loss_l1,
    hinge_loss_l2,
    infogain_loss,
    ip_5d_axis2,
    ip_axis,
    ip_bias,
    ip_nobias,
    ip_transpose,
    legacy_v1,
    lenet,
    lenet_train,
    log,
    lrn_across,
    lrn_large_k,
    lrn_within,
    multinomial_logistic_loss,
    mvn,
    mvn_across_nomvar,
    parameter,
    pool_ave_pad,
    pool_global,
    pool_max_ceil,
    pool_max_pad,
    pool_round_floor,
    pool_stride_gt_kernel_ave,
    pool_stride_gt_kernel_max,
    power,
    power_2_scale_shift,
    prelu,
    prelu_shared,
    reduction_mean,
    reduction_mean_coeff,
    reduction_sum_all,
    relu,
    relu_leaky,
    reshape,
    reshape_0_neg1,
    resnet_block_test,
    resnet_block_train,
    scale_2bottom,
    scale_axis0_all,
    scale_bias,
    sigmoid,
    sigmoid_ce_loss,
    silence,
    slice,
    slice_points_axis2,
    softmax,
    softmax_4d,
    softmax_axis2,
    softmax_loss,
    softmax_loss_ignore,
    softmax_loss_spatial_batch,
    softmax_loss_spatial_full,
    spp_ave,
    spp_max,
    swish,
    tanh,
    threshold,
    tile,
    tile_axis0,
}
