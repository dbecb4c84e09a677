//! Data-parallel training: two devices with batch 16 each equal one device with batch 32 (the same
//! records: device k reads records k, k + 2, ...), since gradients are summed and divided by the
//! device count before the update, as in Caffe's multi-GPU training.
use std::path::PathBuf;
use std::process::Command;

use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::proto::SolverParameter;
use caffe_rs::solver::Solver;

fn make_db() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caffe-rs-parallel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let digits = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits");
    let list: String = std::fs::read_to_string(digits.join("train.txt"))
        .unwrap()
        .lines()
        .take(64)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("list.txt"), list).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_caffe-rs"))
        .args([
            "convert_imageset",
            "-gray",
            &format!("{}/", digits.display()),
            "list.txt",
            "db",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir
}

fn solver(db: &std::path::Path, batch: usize) -> SolverParameter {
    let text = format!(
        r#"
        base_lr: 0.1 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed" max_iter: 3 display: 0
        snapshot_after_train: false random_seed: 3
        net_param {{
          layer {{ name: "data" type: "Data" top: "data" top: "label"
                  transform_param {{ scale: 0.00390625 }}
                  data_param {{ source: "{}" batch_size: {batch} backend: LMDB }} }}
          layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
                  inner_product_param {{ num_output: 10 weight_filler {{ type: "constant" value: 0.01 }} }} }}
          layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
        }}"#,
        db.display()
    );
    caffe_rs::format::transcode::parse_text(&text, "solver", "caffe.SolverParameter").unwrap()
}

fn weights(s: &mut Solver) -> Vec<f32> {
    let blobs: Vec<_> = s.net.layer_params("ip1").into_iter().cloned().collect();
    blobs
        .iter()
        .flat_map(|b| s.eng.download(b.data()))
        .collect()
}

#[test]
fn two_devices_equal_one_with_twice_the_batch() {
    let dir = make_db();
    let db = dir.join("db");
    let mut single = Solver::new(solver(&db, 32), Box::new(CpuEngine::new())).unwrap();
    single.quiet = true;
    single.solve().unwrap();
    let engines: Vec<Box<dyn Engine>> =
        vec![Box::new(CpuEngine::new()), Box::new(CpuEngine::new())];
    let mut parallel = Solver::new_parallel(solver(&db, 16), engines).unwrap();
    parallel.quiet = true;
    parallel.solve().unwrap();
    let (a, b) = (weights(&mut single), weights(&mut parallel));
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "parallel differs from single by {max}");
    assert!(
        a.iter().any(|&v| (v - 0.01).abs() > 1e-4),
        "training changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
