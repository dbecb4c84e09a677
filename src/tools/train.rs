//! `caffe-rs train`: Caffe's `caffe train` (from fillers, fine-tuning with -weights, resuming with
//! -snapshot), with SIGINT/SIGHUP handling.
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::engine::Engine;
use crate::proto::solver_parameter::SolverMode;
use crate::solver::{SignalEffect, Signals, Solver, log};

pub struct TrainArgs {
    pub solver: PathBuf,
    pub weights: Option<String>,
    pub snapshot: Option<PathBuf>,
    pub gpu: Option<String>,
    pub level: i32,
    pub stages: Vec<String>,
    pub sigint_effect: SignalEffect,
    pub sighup_effect: SignalEffect,
}

/// Chooses the engine as Caffe does: `-gpu` wins; otherwise the solver's solver_mode/device_id.
/// A solver asking for GPU on a machine without an adapter falls back to CPU with one warning.
pub fn choose_engine(
    gpu_flag: Option<&str>,
    solver_mode_gpu: Option<i64>,
) -> Result<Box<dyn Engine>> {
    match (gpu_flag, solver_mode_gpu) {
        (Some(list), _) => super::engine_for_gpu_flag(list),
        (None, Some(device)) => match super::engine_for_gpu_flag(&device.to_string()) {
            Ok(e) => Ok(e),
            Err(e) => {
                log::warn(
                    "caffe.cpp:219",
                    &format!(
                        "solver_mode is GPU but no GPU can be used ({e:#}); running in CPU mode"
                    ),
                );
                Ok(Box::new(crate::engine::cpu::CpuEngine::new()))
            }
        },
        (None, None) => Ok(Box::new(crate::engine::cpu::CpuEngine::new())),
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    run_solver(args).map(|_| ())
}

/// Trains and returns the solver (for its last test results and final iteration).
pub fn run_solver(args: &TrainArgs) -> Result<Solver> {
    if args.snapshot.is_some() && args.weights.is_some() {
        bail!("give a snapshot to resume training or weights to finetune, but not both");
    }
    let mut param = crate::format::read_solver_prototxt(&args.solver)?;
    let train_state = param.train_state.get_or_insert_with(Default::default);
    train_state.level = Some(args.level);
    train_state.stage.extend(args.stages.iter().cloned());
    let solver_gpu = (param.solver_mode.is_some() && param.solver_mode() == SolverMode::Gpu)
        .then(|| i64::from(param.device_id()));
    let eng = choose_engine(args.gpu.as_deref(), solver_gpu)?;
    log::info("caffe.cpp:248", &format!("Using {}", eng.name()));
    let weights = args
        .weights
        .clone()
        .or_else(|| (!param.weights.is_empty()).then(|| param.weights.join(",")));
    let mut solver = Solver::new(param, eng)?;
    let signals = Signals {
        sigint_effect: Some(args.sigint_effect),
        sighup_effect: Some(args.sighup_effect),
        ..Default::default()
    };
    signal_hook::flag::register(signal_hook::consts::SIGINT, signals.sigint.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.sighup.clone())?;
    solver.signals = signals;
    log::info("caffe.cpp:252", "Starting Optimization");
    if let Some(snapshot) = &args.snapshot {
        solver.restore(snapshot)?;
    } else if let Some(w) = &weights {
        solver.copy_weights(w)?;
    }
    solver.solve()?;
    log::info("caffe.cpp:263", "Optimization Done.");
    Ok(solver)
}
