//! Forward passes of a net on the GPU engine (or the CPU engine with CAFFE_RS_BENCH_CPU=1), timed
//! by the wall clock and by process CPU time (robust to other load):
//! `conv_bench NET.prototxt [ITERS] [GFLOP]`. With GFLOP (the pass's work) given, prints GFLOP/s
//! too (CPU time scaled to 2 threads). The passes keep nothing for a backward (as `forward` and
//! `test` do) unless CAFFE_RS_BENCH_BACKWARD is set. With PER_LAYER set, prints each layer's (or
//! fused run's) median time instead.
use std::path::Path;
use std::time::Instant;

use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::net::state::make_state;
use caffe_rs::net::{Net, NetGraph, Strictness};
use caffe_rs::proto::Phase;

fn cpu_seconds() -> f64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        * 1e-9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = args.get(2).map_or(5, |s| s.parse().unwrap());
    let gflop: Option<f64> = args.get(3).map(|s| s.parse().unwrap());
    let param = caffe_rs::format::read_net_prototxt(Path::new(&args[1])).unwrap();
    let state = make_state(&param, Phase::Test, 0, &[]);
    let graph = NetGraph::build(&param, &state, Strictness::Strict).unwrap();
    let mut eng: Box<dyn Engine> = if std::env::var_os("CAFFE_RS_BENCH_CPU").is_some() {
        Box::new(CpuEngine::new())
    } else {
        Box::new(GpuEngine::new(0).unwrap())
    };
    let eng = eng.as_mut();
    let mut net = Net::new(graph, eng, Some(1)).unwrap();
    net.forward_only = std::env::var_os("CAFFE_RS_BENCH_BACKWARD").is_none();
    net.forward(eng).unwrap();
    eng.sync().unwrap();
    if std::env::var_os("PER_LAYER").is_some() {
        per_layer(&mut net, eng, iters);
        return;
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let (t, c) = (Instant::now(), cpu_seconds());
        net.forward(eng).unwrap();
        eng.sync().unwrap();
        wall.push(t.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let (w, c) = (wall[iters / 2], cpu[iters / 2]);
    let rate = |s: f64| gflop.map_or(String::new(), |g| format!(" ({:.1} GFLOP/s)", g / s));
    println!(
        "{}: forward wall {:.1} ms{}, cpu {:.1} ms -> {:.1} ms on 2 idle cores{}",
        args[1],
        w * 1e3,
        rate(w),
        c * 1e3,
        c * 1e3 / 2.0,
        rate(c / 2.0)
    );
}

/// Prints the median time of each layer's forward (a fused run's on its first layer).
fn per_layer(net: &mut Net, eng: &mut dyn Engine, iters: usize) {
    let n = net.graph.layers.len();
    let mut times = vec![Vec::new(); n];
    for _ in 0..iters {
        let mut i = 0;
        while i < n {
            let t = Instant::now();
            let next = net.forward_step(eng, i, n).unwrap();
            eng.sync().unwrap();
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
            i = next;
        }
    }
    for (i, t) in times.iter_mut().enumerate() {
        if t.is_empty() {
            continue;
        }
        t.sort_by(f64::total_cmp);
        println!("{} {:.3} ms", net.graph.layers[i].name(), t[t.len() / 2]);
    }
}
