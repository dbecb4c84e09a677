//! `convert -fold_bn` is proved here: the folded model's outputs equal the unfolded model's.
use std::path::Path;
use std::process::Command;

use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::format::tensors::read_tensors;
use caffe_rs::tools::forward::{ForwardOptions, run_net};

#[test]
fn folded_model_computes_the_same_outputs() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/resnet_block_test");
    let net = caffe_rs::format::read_net_prototxt(&case.join("net.prototxt")).unwrap();
    let weights =
        caffe_rs::format::caffemodel::read_net_binary(&case.join("weights.caffemodel")).unwrap();
    let inputs = read_tensors(&case.join("data.safetensors")).unwrap();
    let opts = ForwardOptions::default();
    let reference = run_net(
        &mut CpuEngine::new(),
        &net,
        std::slice::from_ref(&weights),
        &inputs,
        &opts,
    )
    .unwrap();

    // Through the command line: fold, export, import with the folded net, run.
    let dir = std::env::temp_dir().join(format!("caffe-rs-fold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_caffe-rs");
    let st = dir.join("folded.safetensors");
    let o = Command::new(bin)
        .args([
            "convert",
            case.join("weights.caffemodel").to_str().unwrap(),
            st.to_str().unwrap(),
        ])
        .args([
            "-model",
            case.join("net.prototxt").to_str().unwrap(),
            "-fold_bn",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("Folded conv1_bn into conv1"), "{log}");
    let folded_net_path = dir.join("folded.prototxt");
    let cm = dir.join("folded.caffemodel");
    let o = Command::new(bin)
        .args([
            "convert",
            st.to_str().unwrap(),
            cm.to_str().unwrap(),
            "-model",
            folded_net_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let folded_net = caffe_rs::format::read_net_prototxt(&folded_net_path).unwrap();
    assert!(
        folded_net
            .layer
            .iter()
            .all(|l| l.r#type() != "BatchNorm" && l.r#type() != "Scale")
    );
    let folded_weights = caffe_rs::format::caffemodel::read_net_binary(&cm).unwrap();
    let folded = run_net(
        &mut CpuEngine::new(),
        &folded_net,
        &[folded_weights],
        &inputs,
        &opts,
    )
    .unwrap();
    for blob in ["output.fc", "output.prob", "output.add3"] {
        let (a, b) = (&folded[blob].1, &reference[blob].1);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{blob}: folded {x} vs unfolded {y}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
