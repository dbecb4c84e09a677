//! Caffe's param_propagate_down: a parameter with lr_mult 0 gets no gradient (its layer skips the
//! work), the other parameters of the same layer and the layers around it still get theirs.
use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::format::transcode::parse_text;
use caffe_rs::net::runtime::Net;
use caffe_rs::net::state::make_state;
use caffe_rs::proto::{NetParameter, Phase};

const NET: &str = r#"
name: "frozen"
layer { name: "x" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 4 dim: 5 dim: 1 dim: 1 } shape { dim: 4 dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        param { lr_mult: 0 } param { lr_mult: 1 }
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y"
        param { lr_mult: 1 } param { lr_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"#;

/// The TRAIN-phase net of a prototxt text, on the CPU engine, its fillers seeded by `seed`.
fn train_net(text: &str, file: &str, seed: u64) -> (CpuEngine, Net) {
    let param: NetParameter = parse_text(text, file, "caffe.NetParameter").unwrap();
    let state = make_state(&param, Phase::Train, 0, &[]);
    let mut eng = CpuEngine::new();
    let net = Net::from_param(&param, &state, &mut eng, Some(seed)).unwrap();
    (eng, net)
}

#[test]
fn parameters_with_lr_mult_zero_get_no_gradient() {
    let (mut eng, mut net) = train_net(NET, "frozen.prototxt", 3);
    let x = net.blobs[net.graph.blob_index("x").unwrap()].clone();
    let t = net.blobs[net.graph.blob_index("t").unwrap()].clone();
    eng.upload(
        x.data(),
        &(0..20).map(|v| v as f32 * 0.1 - 1.0).collect::<Vec<_>>(),
    );
    eng.upload(t.data(), &[1.0, -1.0, 0.5, 0.0, 2.0, 1.0, -0.5, 0.25]);
    net.forward(&mut eng).unwrap();
    net.clear_param_diffs();
    net.backward(&mut eng).unwrap();
    let diff_norm = |net: &Net, eng: &mut CpuEngine, i: usize| -> f32 {
        eng.download(net.params[i].diff())
            .iter()
            .map(|v| v.abs())
            .sum()
    };
    // params: conv weight (frozen), conv bias, ip weight, ip bias (frozen)
    assert_eq!(diff_norm(&net, &mut eng, 0), 0.0, "frozen conv weight");
    assert!(diff_norm(&net, &mut eng, 1) > 0.0, "conv bias");
    assert!(diff_norm(&net, &mut eng, 2) > 0.0, "ip weight");
    assert_eq!(diff_norm(&net, &mut eng, 3), 0.0, "frozen ip bias");
}

/// Caffe's ClearParamDiffs, done lazily: after a clear, whatever the diffs held (NaN here), a
/// backward leaves exactly the new gradient in every diff, through layers that overwrite a
/// cleared diff (InnerProduct, including a weight shared by two of them), layers that add to a
/// zeroed one (Convolution), frozen parameters and parameters no backward reaches; without a
/// clear, gradients add up (iter_size).
#[test]
fn cleared_diffs_hold_exactly_the_new_gradient() {
    const SHARED: &str = r#"
name: "shared"
layer { name: "x" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 4 dim: 3 dim: 1 dim: 1 } shape { dim: 4 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        param { lr_mult: 0 } param { lr_mult: 1 }
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "c" top: "h"
        param { name: "w" } param { name: "b" lr_mult: 0 }
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "constant" value: 0.5 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        param { name: "w" } param { name: "b" lr_mult: 0 }
        inner_product_param { num_output: 3 } }
layer { name: "side" type: "InnerProduct" bottom: "x" top: "unused"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"#;
    let (mut eng, mut net) = train_net(SHARED, "shared.prototxt", 5);
    let x = net.blobs[net.graph.blob_index("x").unwrap()].clone();
    let t = net.blobs[net.graph.blob_index("t").unwrap()].clone();
    eng.upload(
        x.data(),
        &(0..12).map(|v| v as f32 * 0.2 - 1.0).collect::<Vec<_>>(),
    );
    eng.upload(
        t.data(),
        &(0..12).map(|v| (v % 5) as f32).collect::<Vec<_>>(),
    );
    let diffs = |net: &Net, eng: &mut CpuEngine| -> Vec<Vec<f32>> {
        net.params.iter().map(|p| eng.download(p.diff())).collect()
    };
    net.forward(&mut eng).unwrap();
    net.clear_param_diffs();
    net.backward(&mut eng).unwrap();
    let gradient = diffs(&net, &mut eng);
    assert!(gradient.iter().flatten().all(|v| v.is_finite()));
    assert!(gradient.iter().flatten().any(|&v| v != 0.0));
    for p in &net.params {
        eng.fill(p.diff(), f32::NAN);
    }
    net.clear_param_diffs();
    net.forward(&mut eng).unwrap();
    net.backward(&mut eng).unwrap();
    assert_eq!(diffs(&net, &mut eng), gradient);
    net.forward(&mut eng).unwrap();
    net.backward(&mut eng).unwrap();
    let doubled: Vec<Vec<f32>> = gradient
        .iter()
        .map(|d| d.iter().map(|v| v + v).collect())
        .collect();
    // (The shared weight's two gradients add in another order: equal up to rounding.)
    for (got, want) in diffs(&net, &mut eng)
        .iter()
        .flatten()
        .zip(doubled.iter().flatten())
    {
        assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
    }
    // Written with diffs (Caffe's snapshot_diff) right after a clear: zeros.
    for p in &net.params {
        eng.fill(p.diff(), f32::NAN);
    }
    net.clear_param_diffs();
    let proto = net.to_proto(&mut eng, true);
    assert!(
        proto
            .layer
            .iter()
            .flat_map(|l| &l.blobs)
            .all(|b| b.diff.iter().all(|&v| v == 0.0))
    );
}
