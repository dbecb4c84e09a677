//! Caffe's solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam), the training loop with test
//! phases, display, snapshots and restore, printing Caffe's own log lines.
pub mod log;
pub mod lr;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use crate::engine::kernels::solver::{Regularization, SolverKernel, UpdateRule};
use crate::engine::{Engine, Kernel, TensorId, View};
use crate::format::{self, caffemodel};
use crate::layers::Blob;
use crate::net::{Net, NetGraph, Strictness};
use crate::proto::{
    BlobProto, BlobShape, NetParameter, NetState, Phase, SolverParameter, SolverState,
};
use log::fmt_g;

/// What a signal asks the training loop to do (Caffe's SolverAction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEffect {
    Stop,
    Snapshot,
    None,
}

impl std::str::FromStr for SignalEffect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(SignalEffect::Stop),
            "snapshot" => Ok(SignalEffect::Snapshot),
            "none" => Ok(SignalEffect::None),
            _ => Err(format!(
                "unknown signal effect \"{s}\" (expected stop, snapshot or none)"
            )),
        }
    }
}

/// Flags raised by signal handlers and polled once per iteration.
#[derive(Clone, Default)]
pub struct Signals {
    pub sigint: Arc<AtomicBool>,
    pub sighup: Arc<AtomicBool>,
    pub sigint_effect: Option<SignalEffect>,
    pub sighup_effect: Option<SignalEffect>,
}

impl Signals {
    fn requested(&self) -> SignalEffect {
        let mut effect = SignalEffect::None;
        if self.sigint.swap(false, Ordering::SeqCst) {
            effect = self.sigint_effect.unwrap_or(SignalEffect::Stop);
        }
        if self.sighup.swap(false, Ordering::SeqCst) && effect == SignalEffect::None {
            effect = self.sighup_effect.unwrap_or(SignalEffect::Snapshot);
        }
        effect
    }
}

/// The solver's view of one learnable parameter (an owner blob of the train net).
struct Learnable {
    blob: Blob,
    lr_mult: f32,
    decay_mult: f32,
    history: Vec<TensorId>,
}

/// A data-parallel copy of the train net on another device (Caffe's multi-GPU workers): it runs
/// forward/backward on its own shard of the data; the root sums and averages the gradients,
/// updates, and sends the new weights back.
pub struct Replica {
    pub eng: Box<dyn Engine>,
    pub net: Net,
}

pub struct Solver {
    pub param: SolverParameter,
    pub replicas: Vec<Replica>,
    pub eng: Box<dyn Engine>,
    pub net: Net,
    pub test_nets: Vec<Net>,
    pub iter: i32,
    pub current_step: i32,
    learnable: Vec<Learnable>,
    losses: Vec<f32>,
    smoothed_loss: f32,
    pub signals: Signals,
    requested_early_exit: bool,
    /// Silences the log (library use).
    pub quiet: bool,
    /// The mean outputs of the last test of each test net.
    pub last_test: Vec<Vec<(String, f32)>>,
}

fn update_rule(p: &SolverParameter, iter: i32) -> Result<UpdateRule> {
    Ok(match p.r#type() {
        "SGD" => UpdateRule::Sgd {
            momentum: p.momentum(),
        },
        "Nesterov" => UpdateRule::Nesterov {
            momentum: p.momentum(),
        },
        "AdaGrad" => {
            if p.momentum() != 0.0 {
                bail!("momentum cannot be used with AdaGrad");
            }
            UpdateRule::AdaGrad { delta: p.delta() }
        }
        "RMSProp" => {
            if p.momentum() != 0.0 {
                bail!("momentum cannot be used with RMSProp");
            }
            if !(0.0..=1.0).contains(&p.rms_decay()) {
                bail!("rms_decay should lie between 0 and 1");
            }
            UpdateRule::RmsProp {
                rms_decay: p.rms_decay(),
                delta: p.delta(),
            }
        }
        "AdaDelta" => UpdateRule::AdaDelta {
            momentum: p.momentum(),
            delta: p.delta(),
        },
        "Adam" => {
            let (beta1, beta2) = (p.momentum(), p.momentum2());
            let t = (iter + 1) as f64;
            let correction =
                ((1.0 - (beta2 as f64).powf(t)).sqrt() / (1.0 - (beta1 as f64).powf(t))) as f32;
            UpdateRule::Adam {
                beta1,
                beta2,
                eps: p.delta(),
                correction,
            }
        }
        other => bail!(
            "unknown solver type \"{other}\" (expected SGD, Nesterov, AdaGrad, RMSProp, AdaDelta or Adam)"
        ),
    })
}

fn history_count(p: &SolverParameter) -> usize {
    match p.r#type() {
        "AdaDelta" | "Adam" => 2,
        _ => 1,
    }
}

/// Caffe's state merging for the train net: phase TRAIN, then net.state, then train_state.
fn train_state(p: &SolverParameter, net: &NetParameter) -> NetState {
    let mut state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    merge_state(&mut state, net.state.as_ref());
    merge_state(&mut state, p.train_state.as_ref());
    state
}

fn merge_state(into: &mut NetState, from: Option<&NetState>) {
    if let Some(from) = from {
        if from.phase.is_some() {
            into.phase = from.phase;
        }
        if from.level.is_some() {
            into.level = from.level;
        }
        into.stage.extend(from.stage.iter().cloned());
    }
}

/// The loss weight of blob `b` (that of the top that produced it last).
pub fn blob_loss_weight(graph: &NetGraph, b: usize) -> f32 {
    let mut w = 0.0;
    for node in &graph.layers {
        for (j, &t) in node.tops.iter().enumerate() {
            if t == b {
                w = node.loss_weights.get(j).copied().unwrap_or(0.0);
            }
        }
    }
    w
}

impl Solver {
    /// Builds the train net and the test nets of a solver (paths relative to the working directory).
    pub fn new(param: SolverParameter, mut eng: Box<dyn Engine>) -> Result<Solver> {
        let seed = if param.random_seed() >= 0 {
            Some(param.random_seed() as u64)
        } else {
            None
        };
        let (train_param, train_label) = Self::train_net_param(&param)?;
        log::info(
            "solver.cpp:87",
            &format!("Creating training net from {train_label}"),
        );
        let state = train_state(&param, &train_param);
        let graph = NetGraph::build(&train_param, &state, Strictness::Strict)
            .with_context(|| format!("train net {train_label}"))?;
        let net = Net::new(graph, eng.as_mut(), seed)?;
        let mut test_nets = Vec::new();
        for (i, (test_param, label)) in Self::test_net_params(&param)?.into_iter().enumerate() {
            let mut state = NetState {
                phase: Some(Phase::Test as i32),
                ..Default::default()
            };
            merge_state(&mut state, test_param.state.as_ref());
            if let Some(s) = param.test_state.get(i) {
                merge_state(&mut state, Some(s));
            }
            log::info(
                "solver.cpp:172",
                &format!("Creating test net (#{i}) specified by {label}"),
            );
            let graph = NetGraph::build(&test_param, &state, Strictness::Strict)
                .with_context(|| format!("test net #{i} {label}"))?;
            let mut test = Net::new(graph, eng.as_mut(), seed.map(|s| s + 1 + i as u64))?;
            test.forward_only = true;
            for unused in test.share_trained_layers_with(&net)? {
                eng.free(unused.data);
                eng.free(unused.diff);
            }
            test_nets.push(test);
        }
        let n_hist = history_count(&param);
        update_rule(&param, 0)?;
        let mut learnable = Vec::new();
        for (i, p) in net.graph.params.iter().enumerate() {
            if p.owner != i {
                continue;
            }
            let blob = net.params[i].clone();
            let history = (0..n_hist).map(|_| eng.alloc(blob.count())).collect();
            learnable.push(Learnable {
                blob,
                lr_mult: p.lr_mult,
                decay_mult: p.decay_mult,
                history,
            });
        }
        log::info("solver.cpp:57", "Solver scaffolding done.");
        Ok(Solver {
            param,
            replicas: Vec::new(),
            eng,
            net,
            test_nets,
            iter: 0,
            current_step: 0,
            learnable,
            losses: Vec::new(),
            smoothed_loss: 0.0,
            signals: Signals::default(),
            requested_early_exit: false,
            quiet: false,
            last_test: Vec::new(),
        })
    }

    /// One solver over several devices: `engines[0]` is the root (it tests and snapshots); each
    /// device reads its own shard of the data (offset % count == rank), batch size per device.
    pub fn new_parallel(
        param: SolverParameter,
        mut engines: Vec<Box<dyn Engine>>,
    ) -> Result<Solver> {
        if engines.is_empty() {
            bail!("no device given");
        }
        let count = engines.len();
        let root_engine = engines.remove(0);
        crate::data::set_thread_shard(crate::data::Shard { rank: 0, count });
        let mut solver = Solver::new(param, root_engine)?;
        let seed = solver.param.random_seed();
        let (train_param, _) = Self::train_net_param(&solver.param)?;
        let state = train_state(&solver.param, &train_param);
        for (k, mut eng) in engines.into_iter().enumerate() {
            crate::data::set_thread_shard(crate::data::Shard { rank: k + 1, count });
            let graph = NetGraph::build(&train_param, &state, Strictness::Strict)?;
            let mut net = Net::new(
                graph,
                eng.as_mut(),
                (seed >= 0).then(|| seed as u64 + 100 + k as u64),
            )?;
            solver.broadcast_params(&mut net, eng.as_mut());
            solver.replicas.push(Replica { eng, net });
        }
        crate::data::set_thread_shard(crate::data::Shard { rank: 0, count: 1 });
        Ok(solver)
    }

    /// Copies the root's learnable parameters into a replica's net.
    fn broadcast_params(&mut self, net: &mut Net, eng: &mut dyn Engine) {
        let mut k = 0;
        for (i, p) in net.graph.params.iter().enumerate() {
            if p.owner != i {
                continue;
            }
            if let Some(l) = self.learnable.get(k) {
                let values = self.eng.download(l.blob.data());
                eng.upload(net.params[i].data(), &values);
            }
            k += 1;
        }
    }

    /// Sums the replicas' gradients into the root's and divides by the device count.
    fn reduce_gradients(&mut self) -> Result<()> {
        let count = (self.replicas.len() + 1) as f32;
        for (k, l) in self.learnable.iter().enumerate() {
            let mut sum = self.eng.download(l.blob.diff());
            for r in &mut self.replicas {
                let owners: Vec<usize> = r
                    .net
                    .graph
                    .params
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| p.owner == *i)
                    .map(|(i, _)| i)
                    .collect();
                let diff = r.eng.download(r.net.params[owners[k]].diff());
                for (s, d) in sum.iter_mut().zip(diff) {
                    *s += d;
                }
            }
            for s in &mut sum {
                *s /= count;
            }
            self.eng.upload(l.blob.diff(), &sum);
        }
        Ok(())
    }

    fn train_net_param(p: &SolverParameter) -> Result<(NetParameter, String)> {
        let given = [
            p.train_net_param.is_some(),
            p.train_net.is_some(),
            p.net_param.is_some(),
            p.net.is_some(),
        ];
        match given.iter().filter(|&&g| g).count() {
            0 => bail!(
                "the solver specifies no train net (set one of net, net_param, train_net, train_net_param)"
            ),
            1 => {}
            _ => bail!(
                "the solver specifies more than one train net (use only one of net, net_param, train_net, train_net_param)"
            ),
        }
        if let Some(n) = &p.train_net_param {
            let mut n = n.clone();
            format::upgrade::upgrade_net(&mut n)?;
            return Ok((n, "train_net_param".into()));
        }
        if let Some(path) = &p.train_net {
            return Ok((
                format::read_net_prototxt(Path::new(path))?,
                format!("train_net file: {path}"),
            ));
        }
        if let Some(n) = &p.net_param {
            let mut n = n.clone();
            format::upgrade::upgrade_net(&mut n)?;
            return Ok((n, "net_param".into()));
        }
        let path = p.net();
        Ok((
            format::read_net_prototxt(Path::new(path))?,
            format!("net file: {path}"),
        ))
    }

    fn test_net_params(p: &SolverParameter) -> Result<Vec<(NetParameter, String)>> {
        let mut nets = Vec::new();
        for n in &p.test_net_param {
            let mut n = n.clone();
            format::upgrade::upgrade_net(&mut n)?;
            nets.push((n, "test_net_param".to_string()));
        }
        for path in &p.test_net {
            nets.push((
                format::read_net_prototxt(Path::new(path))?,
                format!("test_net file: {path}"),
            ));
        }
        let specific = nets.len();
        let generic = p.net_param.is_some() || p.net.is_some();
        if generic {
            if p.test_iter.len() < specific {
                bail!(
                    "test_iter must be specified for each test network ({} given for {specific})",
                    p.test_iter.len()
                );
            }
            let instances = p.test_iter.len() - specific;
            if instances > 0 {
                let (n, label) = match &p.net_param {
                    Some(n) => {
                        let mut n = n.clone();
                        format::upgrade::upgrade_net(&mut n)?;
                        (n, "net_param".to_string())
                    }
                    None => (
                        format::read_net_prototxt(Path::new(p.net()))?,
                        format!("net file: {}", p.net()),
                    ),
                };
                for _ in 0..instances {
                    nets.push((n.clone(), label.clone()));
                }
            }
        } else if p.test_iter.len() != specific {
            bail!(
                "test_iter must be specified for each test network ({} given for {specific})",
                p.test_iter.len()
            );
        }
        if !p.test_state.is_empty() && p.test_state.len() != nets.len() {
            bail!("test_state must be unspecified or specified once per test net");
        }
        if !nets.is_empty() && p.test_interval() <= 0 {
            // Caffe allows test nets without test_interval; they only run at the end if asked.
        }
        Ok(nets)
    }

    fn info(&self, file: &str, msg: &str) {
        if !self.quiet {
            log::info(file, msg);
        }
    }

    /// `-weights a,b`: Caffe's CopyTrainedLayersFrom into the train net and every test net.
    pub fn copy_weights(&mut self, paths: &str) -> Result<()> {
        for path in paths.split(',').filter(|p| !p.is_empty()) {
            let weights = caffemodel::WeightsFile::open(Path::new(path))?;
            let quiet = self.quiet;
            let mut log_line = |l: &str| {
                if !quiet {
                    log::info("net.cpp:1137", l);
                }
            };
            self.net
                .copy_trained_layers(self.eng.as_mut(), &weights, &mut log_line)
                .with_context(|| format!("loading {path}"))?;
            for t in &mut self.test_nets {
                t.copy_trained_layers(self.eng.as_mut(), &weights, &mut log_line)
                    .with_context(|| format!("loading {path}"))?;
            }
        }
        Ok(())
    }

    fn learning_rate(&mut self) -> Result<f32> {
        let (rate, advanced) = lr::learning_rate(&self.param, self.iter, &mut self.current_step)?;
        if advanced {
            self.info(
                "sgd_solver.cpp:46",
                &format!(
                    "MultiStep Status: Iteration {}, step = {}",
                    self.iter, self.current_step
                ),
            );
        }
        Ok(rate)
    }

    fn read_outputs(&mut self, which: Option<usize>) -> Vec<(String, Vec<f32>, f32)> {
        let net = match which {
            None => &self.net,
            Some(i) => &self.test_nets[i],
        };
        let mut out = Vec::new();
        for &b in &net.graph.outputs {
            let values = self.eng.download(net.blobs[b].data());
            out.push((
                net.graph.blobs[b].name.clone(),
                values,
                blob_loss_weight(&net.graph, b),
            ));
        }
        out
    }

    fn forward_backward(&mut self) -> Result<f32> {
        self.net.forward(self.eng.as_mut())?;
        self.net.backward(self.eng.as_mut())?;
        Ok(self.net.loss(self.eng.as_mut()))
    }

    fn update_smoothed_loss(&mut self, loss: f32, start_iter: i32) {
        let average_loss = self.param.average_loss().max(1) as usize;
        if self.losses.len() < average_loss {
            self.losses.push(loss);
            let size = self.losses.len() as f32;
            self.smoothed_loss = (self.smoothed_loss * (size - 1.0) + loss) / size;
        } else {
            let idx = ((self.iter - start_iter) as usize) % average_loss;
            self.smoothed_loss += (loss - self.losses[idx]) / average_loss as f32;
            self.losses[idx] = loss;
        }
    }

    /// Caffe's ApplyUpdate: lr, clip_gradients, then per parameter normalise, regularise, update.
    fn apply_update(&mut self) -> Result<f32> {
        let rate = self.learning_rate()?;
        let display = self.param.display() > 0 && self.iter % self.param.display() == 0;
        if display {
            self.info(
                "sgd_solver.cpp:128",
                &format!("Iteration {}, lr = {}", self.iter, fmt_g(rate as f64)),
            );
        }
        let mut clip_scale = 1.0f32;
        let clip = self.param.clip_gradients();
        if clip >= 0.0 {
            let acc = self.eng.alloc(1);
            for (i, l) in self.learnable.iter().enumerate() {
                self.eng.launch(&Kernel::Solver(SolverKernel::SumSquares {
                    x: l.blob.diff(),
                    out: View::new(acc, 0, 1),
                    accumulate: i > 0,
                }))?;
            }
            let sumsq = self.eng.download(View::new(acc, 0, 1))[0];
            self.eng.free(acc);
            let norm = sumsq.sqrt();
            if norm > clip {
                clip_scale = clip / norm;
                self.info(
                    "sgd_solver.cpp:99",
                    &format!(
                        "Gradient clipping: scaling down gradients (L2 norm {} > {}) by scale factor {}",
                        fmt_g(norm as f64),
                        fmt_g(clip as f64),
                        fmt_g(clip_scale as f64)
                    ),
                );
            }
        }
        let iter_scale = 1.0 / self.param.iter_size().max(1) as f32;
        let scale = if clip_scale != 1.0 {
            clip_scale * iter_scale
        } else {
            iter_scale
        };
        let rule = update_rule(&self.param, self.iter)?;
        let weight_decay = self.param.weight_decay();
        let l1 = match self.param.regularization_type() {
            "L2" => false,
            "L1" => true,
            other => bail!("unknown regularization type \"{other}\" (expected L1 or L2)"),
        };
        for l in &self.learnable {
            let decay = weight_decay * l.decay_mult;
            let regularization = if decay == 0.0 {
                Regularization::None
            } else if l1 {
                Regularization::L1 { decay }
            } else {
                Regularization::L2 { decay }
            };
            let count = l.blob.count();
            self.eng.launch(&Kernel::Solver(SolverKernel::Update {
                data: l.blob.data(),
                diff: l.blob.diff(),
                history: l.history.iter().map(|&h| View::new(h, 0, count)).collect(),
                scale,
                regularization,
                rule,
                rate: rate * l.lr_mult,
            }))?;
        }
        Ok(rate)
    }

    /// Caffe's Solver::Step.
    pub fn step(&mut self, iters: i32) -> Result<()> {
        let start_iter = self.iter;
        let stop_iter = self.iter + iters;
        self.losses.clear();
        self.smoothed_loss = 0.0;
        let mut timer = Instant::now();
        let run_timer = Instant::now();
        let mut iterations_last = self.iter;
        while self.iter < stop_iter {
            self.net.clear_param_diffs();
            let ti = self.param.test_interval();
            if ti > 0 && self.iter % ti == 0 && (self.iter > 0 || self.param.test_initialization())
            {
                self.test_all()?;
                if self.requested_early_exit {
                    break;
                }
            }
            let display = self.param.display() > 0 && self.iter % self.param.display() == 0;
            let mut loss = 0.0;
            let iter_size = self.param.iter_size().max(1);
            for r in &mut self.replicas {
                r.net.clear_param_diffs();
            }
            for _ in 0..iter_size {
                loss += self.forward_backward()?;
                for r in &mut self.replicas {
                    r.net.forward(r.eng.as_mut())?;
                    r.net.backward(r.eng.as_mut())?;
                }
            }
            if !self.replicas.is_empty() {
                self.reduce_gradients()?;
            }
            loss /= iter_size as f32;
            self.update_smoothed_loss(loss, start_iter);
            if display {
                let lapse = timer.elapsed().as_secs_f32();
                let per_s =
                    (self.iter - iterations_last) as f32 / if lapse > 0.0 { lapse } else { 1.0 };
                self.info(
                    "solver.cpp:218",
                    &format!(
                        "Iteration {} ({} iter/s, {}s/{} iters), loss = {}",
                        self.iter,
                        fmt_g(per_s as f64),
                        fmt_g(lapse as f64),
                        self.param.display(),
                        fmt_g(self.smoothed_loss as f64)
                    ),
                );
                timer = Instant::now();
                iterations_last = self.iter;
                let mut score_index = 0;
                for (name, values, weight) in self.read_outputs(None) {
                    for v in values {
                        let extra = if weight != 0.0 {
                            format!(
                                " (* {} = {} loss)",
                                fmt_g(weight as f64),
                                fmt_g((weight * v) as f64)
                            )
                        } else {
                            String::new()
                        };
                        self.info(
                            "solver.cpp:237",
                            &format!(
                                "    Train net output #{score_index}: {name} = {}{extra}",
                                fmt_g(v as f64)
                            ),
                        );
                        score_index += 1;
                    }
                }
            }
            let rate = self.apply_update()?;
            let mut replicas = std::mem::take(&mut self.replicas);
            for r in &mut replicas {
                self.broadcast_params(&mut r.net, r.eng.as_mut());
            }
            self.replicas = replicas;
            self.iter += 1;
            if !self.quiet {
                let done = (self.iter - start_iter) as f64;
                let per_s = done / run_timer.elapsed().as_secs_f64().max(1e-9);
                let eta = (stop_iter - self.iter) as f64 / per_s.max(1e-9);
                log::progress(&format!(
                    "iteration {}/{}  loss {}  lr {}  {:.1} iter/s  ETA {:.0}s",
                    self.iter,
                    self.param.max_iter(),
                    fmt_g(self.smoothed_loss as f64),
                    fmt_g(rate as f64),
                    per_s,
                    eta
                ));
            }
            let request = self.signals.requested();
            if (self.param.snapshot() > 0 && self.iter % self.param.snapshot() == 0)
                || request == SignalEffect::Snapshot
            {
                self.snapshot()?;
            }
            if request == SignalEffect::Stop {
                self.requested_early_exit = true;
                break;
            }
        }
        Ok(())
    }

    /// Caffe's Solver::Solve: run to max_iter, final snapshot, final forward and test.
    pub fn solve(&mut self) -> Result<()> {
        self.info(
            "solver.cpp:292",
            &format!("Solving {}", self.net.graph.name),
        );
        self.info(
            "solver.cpp:293",
            &format!("Learning Rate Policy: {}", self.param.lr_policy()),
        );
        self.requested_early_exit = false;
        let start_iter = self.iter;
        self.step(self.param.max_iter() - self.iter)?;
        if self.param.snapshot_after_train()
            && (self.param.snapshot() <= 0 || self.iter % self.param.snapshot() != 0)
        {
            self.snapshot()?;
        }
        if self.requested_early_exit {
            self.info("solver.cpp:310", "Optimization stopped early.");
            return Ok(());
        }
        if self.param.display() > 0 && self.iter % self.param.display() == 0 {
            self.net.forward(self.eng.as_mut())?;
            let loss = self.net.loss(self.eng.as_mut());
            self.update_smoothed_loss(loss, start_iter);
            self.info(
                "solver.cpp:327",
                &format!(
                    "Iteration {}, loss = {}",
                    self.iter,
                    fmt_g(self.smoothed_loss as f64)
                ),
            );
        }
        let ti = self.param.test_interval();
        if ti > 0 && self.iter % ti == 0 {
            self.test_all()?;
        }
        self.info("solver.cpp:332", "Optimization Done.");
        Ok(())
    }

    pub fn test_all(&mut self) -> Result<()> {
        for i in 0..self.test_nets.len() {
            if self.requested_early_exit {
                break;
            }
            self.test(i)?;
        }
        Ok(())
    }

    /// Runs test net `i` for its test_iter batches and logs the mean of each output.
    pub fn test(&mut self, i: usize) -> Result<Vec<(String, f32)>> {
        self.info(
            "solver.cpp:347",
            &format!("Iteration {}, Testing net (#{i})", self.iter),
        );
        let iters = self.param.test_iter.get(i).copied().unwrap_or(0).max(0);
        let mut scores: Vec<(String, f32, f32)> = Vec::new();
        let mut loss = 0.0f32;
        for k in 0..iters {
            if self.signals.requested() == SignalEffect::Stop {
                self.requested_early_exit = true;
                break;
            }
            self.test_nets[i].forward(self.eng.as_mut())?;
            if self.param.test_compute_loss() {
                loss += self.test_nets[i].loss(self.eng.as_mut());
            }
            let mut idx = 0;
            for (name, values, weight) in self.read_outputs(Some(i)) {
                for v in values {
                    if k == 0 {
                        scores.push((name.clone(), v, weight));
                    } else {
                        scores[idx].1 += v;
                    }
                    idx += 1;
                }
            }
        }
        if self.requested_early_exit {
            self.info("solver.cpp:365", "Test interrupted.");
            return Ok(Vec::new());
        }
        if self.param.test_compute_loss() {
            self.info(
                "solver.cpp:371",
                &format!("Test loss: {}", fmt_g((loss / iters.max(1) as f32) as f64)),
            );
        }
        let mut out = Vec::new();
        for (k, (name, sum, weight)) in scores.into_iter().enumerate() {
            let mean = sum / iters.max(1) as f32;
            let extra = if weight != 0.0 {
                format!(
                    " (* {} = {} loss)",
                    fmt_g(weight as f64),
                    fmt_g((weight * mean) as f64)
                )
            } else {
                String::new()
            };
            self.info(
                "solver.cpp:384",
                &format!(
                    "    Test net output #{k}: {name} = {}{extra}",
                    fmt_g(mean as f64)
                ),
            );
            out.push((name, mean));
        }
        if self.last_test.len() <= i {
            self.last_test.resize(i + 1, Vec::new());
        }
        self.last_test[i] = out.clone();
        Ok(out)
    }

    /// `<prefix>_iter_<N>` for the snapshot files.
    pub fn snapshot_base(&self) -> String {
        format!("{}_iter_{}", self.param.snapshot_prefix(), self.iter)
    }

    /// Writes `<prefix>_iter_<N>.caffemodel` and `.solverstate` (atomically).
    pub fn snapshot(&mut self) -> Result<(PathBuf, PathBuf)> {
        let base = self.snapshot_base();
        let model = PathBuf::from(format!("{base}.caffemodel"));
        self.info(
            "solver.cpp:464",
            &format!("Snapshotting to binary proto file {}", model.display()),
        );
        let net = self
            .net
            .to_proto(self.eng.as_mut(), self.param.snapshot_diff());
        caffemodel::write_net_binary(&model, &net)?;
        let state_path = PathBuf::from(format!("{base}.solverstate"));
        self.info(
            "sgd_solver.cpp:284",
            &format!(
                "Snapshotting solver state to binary proto file {}",
                state_path.display()
            ),
        );
        let mut state = SolverState {
            iter: Some(self.iter),
            learned_net: Some(model.display().to_string()),
            current_step: Some(self.current_step),
            history: Vec::new(),
        };
        let n_hist = history_count(&self.param);
        for h in 0..n_hist {
            for l in &self.learnable {
                let values = self
                    .eng
                    .download(View::new(l.history[h], 0, l.blob.count()));
                state.history.push(BlobProto {
                    shape: Some(BlobShape {
                        dim: l.blob.shape.iter().map(|&d| d as i64).collect(),
                    }),
                    data: values,
                    ..Default::default()
                });
            }
        }
        caffemodel::write_solver_state(&state_path, &state)?;
        Ok((model, state_path))
    }

    /// Caffe's Restore from a .solverstate: iter, current_step, history and the learned net.
    pub fn restore(&mut self, path: &Path) -> Result<()> {
        self.info(
            "solver.cpp:297",
            &format!("Restoring previous solver status from {}", path.display()),
        );
        let state = caffemodel::read_solver_state(path)?;
        self.iter = state.iter();
        self.current_step = state.current_step();
        if let Some(learned) = &state.learned_net
            && !learned.is_empty()
        {
            let weights = caffemodel::WeightsFile::open(Path::new(learned)).with_context(|| {
                format!(
                    "the solver state {} names the weights file {learned}",
                    path.display()
                )
            })?;
            self.net
                .copy_trained_layers(self.eng.as_mut(), &weights, &mut |_| {})?;
        }
        let n_hist = history_count(&self.param);
        let expected = self.learnable.len() * n_hist;
        if state.history.len() != expected {
            bail!(
                "{}: holds {} history blobs, the {} solver on this net needs {expected}",
                path.display(),
                state.history.len(),
                self.param.r#type()
            );
        }
        for (k, blob) in state.history.iter().enumerate() {
            let (h, i) = (k / self.learnable.len(), k % self.learnable.len());
            let l = &self.learnable[i];
            let values = blob.values_f32();
            if values.len() != l.blob.count() {
                return Err(anyhow!(
                    "{}: history blob {k} has {} values, parameter needs {}",
                    path.display(),
                    values.len(),
                    l.blob.count()
                ));
            }
            self.eng
                .upload(View::new(l.history[h], 0, values.len()), &values);
        }
        Ok(())
    }
}
