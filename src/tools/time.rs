//! `caffe-rs time`: Caffe's per-layer forward/backward benchmark.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::engine::Engine;
use crate::net::state::make_state;
use crate::net::{Net, NetGraph, Strictness};
use crate::proto::Phase;
use crate::solver::log::{fmt_g, info};

pub struct TimeArgs {
    pub model: PathBuf,
    pub weights: Option<String>,
    pub iterations: i32,
    pub phase: Phase,
    pub level: i32,
    pub stages: Vec<String>,
    /// GPU mode (`-gpu` given): per-layer times come from device timestamps where the adapter has
    /// them.
    pub gpu: bool,
    /// Time forwards as `forward` and `test` run them (nothing kept for a backward), without
    /// backwards: a deployed net's inference time. Caffe's `time` has no such flag.
    pub forward_only: bool,
}

pub struct Timing {
    pub layers: Vec<(String, f64, f64)>,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

pub fn run(eng: &mut dyn Engine, args: &TimeArgs) -> Result<Timing> {
    let param = crate::format::read_net_prototxt(&args.model)?;
    let state = make_state(&param, args.phase, args.level, &args.stages);
    let graph = NetGraph::build(&param, &state, Strictness::Strict)?;
    let mut graph = graph;
    // Caffe's time runs every layer's Backward (parameter gradients included), loss or not.
    for node in &mut graph.layers {
        node.need_backward = !args.forward_only;
    }
    let weights = crate::format::caffemodel::WeightsFile::open_list(args.weights.as_deref())?;
    let mut net = Net::new_for_weights(graph, eng, Some(1701), &weights)?;
    net.forward_only = args.forward_only;
    for w in weights {
        net.copy_trained_layers(eng, &w, &mut |l| info("net.cpp:1137", l))?;
    }
    let n_layers = net.graph.layers.len();
    info("caffe.cpp:352", "Performing Forward");
    net.forward(eng)?;
    info(
        "caffe.cpp:354",
        &format!("Initial loss: {}", fmt_g(net.loss(eng) as f64)),
    );
    if !args.forward_only {
        info("caffe.cpp:355", "Performing Backward");
        // As every timed backward does (so the warm-up also builds the pipelines those use).
        net.clear_param_diffs();
        net.backward(eng)?;
    }
    eng.sync()?;
    info("caffe.cpp:368", "*** Benchmark begins ***");
    info(
        "caffe.cpp:369",
        &format!(
            "Testing for {} iterations.{}",
            args.iterations,
            if args.forward_only {
                " Forward only: nothing is kept for a backward."
            } else {
                ""
            }
        ),
    );
    // Per-layer clock. With device timestamps a whole forward (and a whole backward) is recorded
    // as one submission with a timestamp at every layer boundary; otherwise each layer is
    // submitted and waited for on its own and timed on the host clock (exact on the CPU engine,
    // which runs kernels as they are launched).
    let device_clock = eng.has_timestamps();
    if args.gpu && !device_clock {
        info(
            "caffe.cpp:370",
            &format!(
                "{} has no timestamp queries: per-layer times are measured by waiting for each layer",
                eng.name()
            ),
        );
    }
    let mut fwd = vec![0f64; n_layers];
    let mut bwd = vec![0f64; n_layers];
    let (mut forward_total, mut backward_total) = (0f64, 0f64);
    let total = Instant::now();
    for j in 0..args.iterations {
        let iter_timer = Instant::now();
        let forward_timer = Instant::now();
        // A run of layers the net fuses into one pass is timed as one, on its first layer.
        let mut heads = Vec::with_capacity(n_layers);
        let mut fused = 0;
        let mut i = 0;
        if device_clock {
            eng.timestamp()?;
        }
        while i < n_layers {
            heads.push(i);
            let timer = Instant::now();
            let next = net.forward_step(eng, i, n_layers)?;
            if device_clock {
                eng.timestamp()?;
            } else {
                eng.sync()?;
                fwd[i] += timer.elapsed().as_secs_f64() * 1e3;
            }
            fused += usize::from(next > i + 1);
            i = next;
        }
        if device_clock {
            add_device_times(eng, &mut fwd, heads.into_iter())?;
        }
        if j == 0 && fused > 0 {
            info(
                "caffe.cpp:380",
                &format!(
                    "{fused} runs of in-place point-wise layers (BatchNorm, Scale, ReLU, ...) run \
                     forward as one pass each, or as the epilogue of the convolution before \
                     them, timed on the run's first layer"
                ),
            );
        }
        forward_total += forward_timer.elapsed().as_secs_f64() * 1e3;
        if args.forward_only {
            info(
                "caffe.cpp:397",
                &format!(
                    "Iteration: {} forward time: {} ms.",
                    j + 1,
                    fmt_g(iter_timer.elapsed().as_secs_f64() * 1e3)
                ),
            );
            continue;
        }
        // Each backward starts from cleared parameter diffs, as in a training iteration (Caffe's
        // time lets them accumulate, which changes only values nobody reads).
        net.clear_param_diffs();
        let backward_timer = Instant::now();
        // A fused backward run's time goes to its last layer (where its backward starts).
        let mut tails = Vec::with_capacity(n_layers);
        let mut fused_backward = 0;
        if device_clock {
            eng.timestamp()?;
        }
        let mut end = n_layers;
        while end > 0 {
            let i = end - 1;
            tails.push(i);
            let timer = Instant::now();
            end = net.backward_step(eng, i)?;
            if device_clock {
                eng.timestamp()?;
            } else {
                eng.sync()?;
                bwd[i] += timer.elapsed().as_secs_f64() * 1e3;
            }
            fused_backward += usize::from(end < i);
        }
        if device_clock {
            add_device_times(eng, &mut bwd, tails.into_iter())?;
        }
        if j == 0 && fused_backward > 0 {
            info(
                "caffe.cpp:380",
                &format!(
                    "{fused_backward} runs of in-place layers (BatchNorm, Scale, ReLU) run \
                     backward as one pass each, timed on the run's last layer"
                ),
            );
        }
        backward_total += backward_timer.elapsed().as_secs_f64() * 1e3;
        info(
            "caffe.cpp:397",
            &format!(
                "Iteration: {} forward-backward time: {} ms.",
                j + 1,
                fmt_g(iter_timer.elapsed().as_secs_f64() * 1e3)
            ),
        );
    }
    let total_ms = total.elapsed().as_secs_f64() * 1e3;
    let n = args.iterations.max(1) as f64;
    info("caffe.cpp:400", "Average time per layer: ");
    let mut layers = Vec::new();
    for (i, node) in net.graph.layers.iter().enumerate() {
        let name = node.name();
        info(
            "caffe.cpp:403",
            &format!("{name:>10}\tforward: {} ms.", fmt_g(fwd[i] / n)),
        );
        if !args.forward_only {
            info(
                "caffe.cpp:406",
                &format!("{name:>10}\tbackward: {} ms.", fmt_g(bwd[i] / n)),
            );
        }
        layers.push((name.to_string(), fwd[i] / n, bwd[i] / n));
    }
    info(
        "caffe.cpp:411",
        &format!("Average Forward pass: {} ms.", fmt_g(forward_total / n)),
    );
    if !args.forward_only {
        info(
            "caffe.cpp:413",
            &format!("Average Backward pass: {} ms.", fmt_g(backward_total / n)),
        );
        info(
            "caffe.cpp:415",
            &format!("Average Forward-Backward: {} ms.", fmt_g(total_ms / n)),
        );
    }
    info(
        "caffe.cpp:416",
        &format!("Total Time: {} ms.", fmt_g(total_ms)),
    );
    info("caffe.cpp:417", "*** Benchmark ends ***");
    Ok(Timing {
        layers,
        forward_ms: forward_total / n,
        backward_ms: backward_total / n,
    })
}

/// Submits the pass recorded with a timestamp before it and after each layer, and adds each
/// layer's device time to `times` (layers in the order they were recorded).
fn add_device_times(
    eng: &mut dyn Engine,
    times: &mut [f64],
    order: impl ExactSizeIterator<Item = usize>,
) -> Result<()> {
    let ms = eng.read_timestamps()?;
    if ms.len() != order.len() {
        anyhow::bail!(
            "internal: {} layer times from {} timestamps",
            order.len(),
            ms.len() + 1
        );
    }
    for (i, t) in order.zip(ms) {
        times[i] += t;
    }
    Ok(())
}
