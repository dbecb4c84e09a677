//! Split, Flatten and Reshape tops are views of their bottom as in Caffe (ShareData / ShareDiff):
//! they hold no copy of the values, and the gradients still come out right, also after a
//! data-dependent reshape (Filter) makes the net re-allocate the shared tensors.
use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::format::transcode::parse_text;
use caffe_rs::net::runtime::Net;
use caffe_rs::net::state::make_state;
use caffe_rs::proto::{NetParameter, Phase};

// p = f * (f + 2 r) with f = r = filtered x, so loss = sum(3 x_sel^2) and dloss/dx_sel = 6 x_sel.
const NET: &str = r#"
name: "shared_tops"
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "sel"
        input_param { shape { dim: 3 dim: 2 dim: 2 } shape { dim: 3 } } }
layer { name: "filter" type: "Filter" bottom: "x" bottom: "sel" top: "fx"
        propagate_down: true propagate_down: false }
layer { name: "flat" type: "Flatten" bottom: "fx" top: "f" }
layer { name: "resh" type: "Reshape" bottom: "fx" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "sum" type: "Eltwise" bottom: "f" bottom: "r" top: "s"
        eltwise_param { operation: SUM coeff: 1 coeff: 2 } }
layer { name: "prod" type: "Eltwise" bottom: "f" bottom: "s" top: "p" eltwise_param { operation: PROD } }
layer { name: "loss" type: "Reduction" bottom: "p" top: "loss" loss_weight: 1
        reduction_param { operation: SUM } }
"#;

#[test]
fn split_flatten_and_reshape_tops_share_their_bottom() {
    let param: NetParameter = parse_text(NET, "shared.prototxt", "caffe.NetParameter").unwrap();
    let state = make_state(&param, Phase::Train, 0, &[]);
    let mut eng = CpuEngine::new();
    let mut net = Net::from_param(&param, &state, &mut eng, Some(1)).unwrap();
    let x: Vec<f32> = (0..12).map(|v| v as f32 * 0.25 - 1.3).collect();
    // The second selection keeps more rows than the first: the filtered blobs grow.
    for selection in [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]] {
        eng.upload(net.blob("x").unwrap().data(), &x);
        eng.upload(net.blob("sel").unwrap().data(), &selection);
        net.forward(&mut eng).unwrap();
        net.backward(&mut eng).unwrap();

        let fx = net.blob("fx").unwrap().clone();
        let (f, r) = (net.blob("f").unwrap(), net.blob("r").unwrap());
        assert_eq!(
            f.data, fx.data,
            "Flatten of a Split top reads the Filter output"
        );
        assert_eq!(
            r.data, fx.data,
            "Reshape of a Split top reads the Filter output"
        );
        assert_ne!(f.diff, r.diff, "the Split's tops keep their own gradients");
        assert_eq!(f.shape, vec![fx.shape[0], 4]);

        let rows: Vec<usize> = (0..3).filter(|&i| selection[i] != 0.0).collect();
        let kept: Vec<f32> = rows
            .iter()
            .flat_map(|&i| x[i * 4..][..4].to_vec())
            .collect();
        let loss = eng.download(net.blob("loss").unwrap().data())[0];
        let expected: f32 = kept.iter().map(|v| 3.0 * v * v).sum();
        assert!(
            (loss - expected).abs() < 1e-4,
            "{selection:?}: loss {loss}, expected {expected}"
        );
        let dx = eng.download(net.blob("x").unwrap().diff());
        for i in 0..3 {
            for j in 0..4 {
                let want = if rows.contains(&i) {
                    6.0 * x[i * 4 + j]
                } else {
                    0.0
                };
                let got = dx[i * 4 + j];
                assert!(
                    (got - want).abs() < 1e-4,
                    "{selection:?}: dx[{i},{j}] = {got}, expected {want}"
                );
            }
        }
    }
}
