//! `caffe-rs train` as a user runs it: interrupted by SIGINT, resumed from its own snapshot, it ends
//! with the same weights as an uninterrupted run; flag conflicts and missing files are clear errors.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_caffe-rs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A folder with a 16-record LMDB (one batch: every iteration sees the same data, so a resumed run
/// reads what the uninterrupted run read) and a small solver.
fn setup(tag: &str, max_iter: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caffe-rs-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let digits = repo().join("fixtures/digits");
    let list: String = std::fs::read_to_string(digits.join("train.txt"))
        .unwrap()
        .lines()
        .take(16)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("list.txt"), list).unwrap();
    let o = Command::new(bin())
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
    std::fs::copy(
        repo().join("../shared/golden/solver_sgd_step/train.prototxt"),
        dir.join("train.prototxt"),
    )
    .unwrap();
    let net = std::fs::read_to_string(dir.join("train.prototxt"))
        .unwrap()
        .replace("digits_lmdb", "db");
    std::fs::write(dir.join("train.prototxt"), net).unwrap();
    std::fs::write(
        dir.join("solver.prototxt"),
        format!(
            "net: \"train.prototxt\"\nbase_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"fixed\"\n\
             display: 1\nmax_iter: {max_iter}\nsnapshot_prefix: \"run\"\nsolver_mode: CPU\nrandom_seed: 7\n"
        ),
    )
    .unwrap();
    dir
}

fn params(path: &Path) -> Vec<Vec<f32>> {
    let net = caffe_rs::format::caffemodel::read_net_binary(path).unwrap();
    net.layer
        .iter()
        .flat_map(|l| l.blobs.iter().map(|b| b.values_f32()))
        .collect()
}

#[test]
fn sigint_snapshot_resumes_to_the_uninterrupted_result() {
    let max_iter = 400;
    let full = setup("full", max_iter);
    let o = Command::new(bin())
        .args(["train", "-solver", "solver.prototxt"])
        .current_dir(&full)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = params(&full.join(format!("run_iter_{max_iter}.caffemodel")));

    let dir = setup("interrupted", max_iter);
    let mut child = Command::new(bin())
        .args([
            "train",
            "--solver=solver.prototxt",
            "-sigint_effect",
            "stop",
        ])
        .current_dir(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut signalled = false;
    let mut log = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if !signalled && line.contains("Iteration 20 ") {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            signalled = true;
        }
    }
    assert!(child.wait().unwrap().success(), "{log}");
    assert!(log.contains("Optimization stopped early."), "{log}");
    let state = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find(|n| n.ends_with(".solverstate"))
        .unwrap_or_else(|| panic!("no snapshot after SIGINT:\n{log}"));
    let stopped_at: u32 = state
        .trim_start_matches("run_iter_")
        .trim_end_matches(".solverstate")
        .parse()
        .unwrap();
    assert!(
        stopped_at < max_iter,
        "the run was not interrupted ({state})"
    );
    let o = Command::new(bin())
        .args(["train", "-solver", "solver.prototxt", "-snapshot", &state])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = params(&dir.join(format!("run_iter_{max_iter}.caffemodel")));
    assert_eq!(resumed, reference, "resumed from iteration {stopped_at}");
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weights_and_snapshot_together_is_an_error() {
    let o = Command::new(bin())
        .args([
            "train",
            "-solver",
            "s.prototxt",
            "-weights",
            "a.caffemodel",
            "-snapshot",
            "b.solverstate",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not both"));
}

#[test]
fn missing_solver_and_bad_solver_fields_are_named() {
    let o = Command::new(bin())
        .args(["train", "-solver", "/nonexistent/solver.prototxt"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/solver.prototxt"));
    let dir = setup("bad", 10);
    std::fs::write(dir.join("solver.prototxt"), "net: \"train.prototxt\"\nbase_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 1\ntype: \"Adamm\"\n").unwrap();
    let o = Command::new(bin())
        .args(["train", "-solver", "solver.prototxt"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("Adamm"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
