//! `caffe-rs demo`: the README's main job. Builds LMDBs of the bundled handwritten digits with
//! convert_imageset, trains the LeNet-style recipe in fixtures/digits, converts the final snapshot
//! to safetensors and prints the inspect table with the trained weights.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{compute_image_mean, convert, convert_imageset, inspect, train};
use crate::proto::Phase;
use crate::solver::SignalEffect;

pub struct DemoArgs {
    /// The folder with the images, list files and prototxts (fixtures/digits).
    pub data: PathBuf,
    /// Where everything is written (becomes the working directory).
    pub dir: PathBuf,
    pub gpu: Option<String>,
}

const NET: &str = "lenet_digits_train_test.prototxt";
const SOLVER: &str = "lenet_digits_solver.prototxt";

pub fn run(args: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    let data = args.data.canonicalize().with_context(|| {
        format!(
            "the demo data folder {} is missing (run from the repository root)",
            args.data.display()
        )
    })?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    for f in [NET, SOLVER] {
        std::fs::copy(data.join(f), args.dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    std::env::set_current_dir(&args.dir)
        .with_context(|| format!("cannot enter {}", args.dir.display()))?;
    let root = format!("{}/", data.display());
    for (list, db) in [
        ("train.txt", "digits_train_lmdb"),
        ("test.txt", "digits_test_lmdb"),
    ] {
        if Path::new(db).exists() {
            std::fs::remove_dir_all(db).with_context(|| format!("removing the old {db}"))?;
        }
        eprintln!("== convert_imageset -gray -shuffle {root} {list} {db}");
        convert_imageset::run(&convert_imageset::ConvertImagesetArgs {
            root_folder: root.clone(),
            list_file: data.join(list).display().to_string(),
            db_name: db.to_string(),
            gray: true,
            shuffle: true,
            seed: Some(1701),
            ..Default::default()
        })?;
    }
    eprintln!("== compute_image_mean digits_train_lmdb digits_mean.binaryproto");
    compute_image_mean::run(&compute_image_mean::ComputeImageMeanArgs {
        input_db: "digits_train_lmdb".into(),
        output_file: Some("digits_mean.binaryproto".into()),
        ..Default::default()
    })?;
    eprintln!("== train -solver {SOLVER}");
    let solver = train::run_solver(&train::TrainArgs {
        solver: SOLVER.into(),
        weights: None,
        snapshot: None,
        gpu: args.gpu.clone(),
        level: 0,
        stages: Vec::new(),
        sigint_effect: SignalEffect::Stop,
        sighup_effect: SignalEffect::Snapshot,
    })?;
    let accuracy = solver
        .last_test
        .first()
        .and_then(|t| t.iter().find(|(name, _)| name == "accuracy"))
        .map(|(_, v)| *v);
    let snapshot = format!("{}.caffemodel", solver.snapshot_base());
    if !Path::new(&snapshot).exists() {
        bail!("training ended without the snapshot {snapshot}");
    }
    eprintln!("== convert {snapshot} lenet_digits.safetensors");
    for line in convert::run(&convert::ConvertArgs {
        input: snapshot.clone().into(),
        output: "lenet_digits.safetensors".into(),
        model: None,
        names: Default::default(),
        fold_bn: false,
        dtype: Default::default(),
    })? {
        eprintln!("{line}");
    }
    eprintln!("== inspect -model {NET} -weights {snapshot}");
    print!(
        "{}",
        inspect::run(&inspect::InspectArgs {
            model: NET.into(),
            weights: Some(snapshot.clone().into()),
            phase: Phase::Test,
            level: 0,
            stages: Vec::new(),
            format: "table".into(),
        })?
    );
    let accuracy = accuracy.context("the test net reported no accuracy")?;
    println!(
        "demo: test accuracy {:.2}% after {} iterations in {:.1} s; outputs in {}",
        accuracy * 100.0,
        solver.iter,
        start.elapsed().as_secs_f64(),
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}
