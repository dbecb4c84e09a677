//! The solver cases of ../shared/golden, run as a user runs them: `caffe-rs train -solver
//! solver.prototxt -weights init.caffemodel` from inside (a copy of) the case folder. The logged
//! losses, the iteration-10 and -20 snapshots and the solver states must match real Caffe's.
use std::path::{Path, PathBuf};
use std::process::Command;

use caffe_rs::format::caffemodel::{read_net_binary, read_solver_state};
use caffe_rs::format::tensors::read_tensors;

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden")
        .join(case)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A fresh copy of the case folder without Caffe's own snapshots (ours are written there).
fn workdir(case: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "caffe-rs-solver-{case}-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&golden(case), &dir);
    for n in [10, 20] {
        let _ = std::fs::remove_file(dir.join(format!("snapshot_iter_{n}.caffemodel")));
        let _ = std::fs::remove_file(dir.join(format!("snapshot_iter_{n}.solverstate")));
    }
    dir
}

fn train(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_caffe-rs"))
        .arg("train")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run caffe-rs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "caffe-rs train failed:\n{log}");
    log
}

/// (iteration, value) of every `Iteration N, loss = X` line.
fn logged_losses(log: &str) -> Vec<(usize, f32)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("] Iteration ")? + 12..];
            let (iter, rest) = rest.split_once([',', ' '])?;
            let value = rest.rsplit_once("loss = ")?.1;
            Some((iter.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect()
}

fn close(a: f32, b: f32, rtol: f32, atol: f32) -> bool {
    (a - b).abs() <= atol + rtol * b.abs()
}

fn tolerances(case: &str) -> (f32, f32, f32, f32) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden(case).join("case.json")).unwrap())
            .unwrap();
    let t = &json["tolerances"];
    let get = |a: &str, b: &str, d: f64| t[a][b].as_f64().unwrap_or(d) as f32;
    (
        get("loss", "rtol", 1e-4),
        get("loss", "atol", 1e-5),
        get("params", "rtol", 1e-3),
        get("params", "atol", 1e-5),
    )
}

fn compare_params(
    label: &str,
    ours: &Path,
    theirs: &std::collections::BTreeMap<String, Vec<f32>>,
    rtol: f32,
    atol: f32,
) {
    let net = read_net_binary(ours).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let mut compared = 0;
    for layer in &net.layer {
        for (i, blob) in layer.blobs.iter().enumerate() {
            let key = format!("{}.{i}", layer.name());
            let Some(want) = theirs.get(&key) else {
                continue;
            };
            let got = blob.values_f32();
            assert_eq!(got.len(), want.len(), "{label} {key}: length");
            for (k, (a, b)) in got.iter().zip(want).enumerate() {
                assert!(
                    close(*a, *b, rtol, atol),
                    "{label} {key}[{k}]: ours {a}, Caffe {b}"
                );
            }
            compared += 1;
        }
    }
    assert_eq!(
        compared,
        theirs.len(),
        "{label}: compared {compared} of {} param blobs",
        theirs.len()
    );
}

fn params_of(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let net = read_net_binary(path).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for layer in &net.layer {
        for (i, b) in layer.blobs.iter().enumerate() {
            out.insert(format!("{}.{i}", layer.name()), b.values_f32());
        }
    }
    out
}

fn check_solver_state(label: &str, ours: &Path, theirs: &Path) {
    let (a, b) = (
        read_solver_state(ours).unwrap(),
        read_solver_state(theirs).unwrap(),
    );
    assert_eq!(a.iter, b.iter, "{label}: iter");
    assert_eq!(a.current_step(), b.current_step(), "{label}: current_step");
    assert_eq!(a.learned_net, b.learned_net, "{label}: learned_net");
    assert_eq!(
        a.history.len(),
        b.history.len(),
        "{label}: history blob count"
    );
    for (k, (x, y)) in a.history.iter().zip(&b.history).enumerate() {
        assert_eq!(x.dims(), y.dims(), "{label}: history blob {k} shape");
    }
}

fn run_case(case: &str) {
    run_case_mode(case, &[]);
}

fn run_case_mode(case: &str, mode: &[&str]) {
    let (loss_rtol, loss_atol, p_rtol, p_atol) = tolerances(case);
    let dir = workdir(case, if mode.is_empty() { "cpu" } else { "gpu" });
    let mut args = vec!["-solver", "solver.prototxt", "-weights", "init.caffemodel"];
    args.extend_from_slice(mode);
    let log = train(&dir, &args);
    let traj = read_tensors(&golden(case).join("trajectory.safetensors")).unwrap();
    let key = if traj.contains_key("loss_logged_cli") {
        "loss_logged_cli"
    } else {
        "loss_logged"
    };
    let want = &traj[key].1;
    let got = logged_losses(&log);
    for (i, w) in want.iter().enumerate() {
        let g = got.iter().find(|(it, _)| *it == i).map(|(_, v)| *v);
        let g = g.unwrap_or_else(|| panic!("{case}: no loss logged for iteration {i}\n{log}"));
        // The log prints 6 significant digits.
        assert!(
            close(g, *w, loss_rtol.max(2e-5), loss_atol),
            "{case}: iteration {i} loss {g}, Caffe {w}"
        );
    }
    let final_params: std::collections::BTreeMap<String, Vec<f32>> = traj
        .iter()
        .filter_map(|(k, (_, v))| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone())))
        .collect();
    compare_params(
        &format!("{case} iter 20"),
        &dir.join("snapshot_iter_20.caffemodel"),
        &final_params,
        p_rtol,
        p_atol,
    );
    let caffe10 = params_of(&golden(case).join("snapshot_iter_10.caffemodel"));
    compare_params(
        &format!("{case} iter 10"),
        &dir.join("snapshot_iter_10.caffemodel"),
        &caffe10,
        p_rtol,
        p_atol,
    );
    for n in [10, 20] {
        check_solver_state(
            &format!("{case} solverstate {n}"),
            &dir.join(format!("snapshot_iter_{n}.solverstate")),
            &golden(case).join(format!("snapshot_iter_{n}.solverstate")),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

macro_rules! solver_cases {
    ($($case:ident),* $(,)?) => {
        $(#[test] fn $case() { run_case(stringify!($case)); })*
        /// The same runs in GPU mode (`-gpu 0`; lavapipe without a GPU).
        mod gpu {
            $(#[test] fn $case() { super::run_case_mode(stringify!($case), &["-gpu", "0"]); })*
        }
    };
}

solver_cases! {
    solver_adadelta, solver_adagrad, solver_adam, solver_clip, solver_iter_size, solver_l1, solver_lr_exp,
    solver_lr_inv, solver_lr_mult, solver_lr_multistep, solver_lr_poly, solver_lr_sigmoid, solver_nesterov,
    solver_rmsprop, solver_sgd_step,
}

/// Caffe's iteration-10 .solverstate resumes here to Caffe's own resumed result.
#[test]
fn solver_resume() {
    let case = "solver_resume";
    let (_, _, p_rtol, p_atol) = tolerances(case);
    let dir = workdir(case, "cpu");
    std::fs::copy(
        golden(case).join("snapshot_iter_10.caffemodel"),
        dir.join("snapshot_iter_10.caffemodel"),
    )
    .unwrap();
    std::fs::copy(
        golden(case).join("snapshot_iter_10.solverstate"),
        dir.join("snapshot_iter_10.solverstate"),
    )
    .unwrap();
    let log = train(
        &dir,
        &[
            "-solver",
            "solver.prototxt",
            "-snapshot",
            "snapshot_iter_10.solverstate",
        ],
    );
    let traj = read_tensors(&golden(case).join("trajectory.safetensors")).unwrap();
    let got = logged_losses(&log);
    for (k, w) in traj["loss_logged"].1.iter().enumerate() {
        let i = 10 + k;
        let g = got
            .iter()
            .find(|(it, _)| *it == i)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no loss for {i}\n{log}"));
        assert!(
            close(g, *w, 2e-4, 1e-5),
            "resume: iteration {i} loss {g}, Caffe {w}"
        );
    }
    let final_params: std::collections::BTreeMap<String, Vec<f32>> = traj
        .iter()
        .filter_map(|(k, (_, v))| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone())))
        .collect();
    compare_params(
        "resume",
        &dir.join("snapshot_iter_20.caffemodel"),
        &final_params,
        p_rtol,
        p_atol,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
