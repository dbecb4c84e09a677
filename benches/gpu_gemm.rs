//! SGEMM throughput of GPU mode (and CPU mode for reference) in GFLOP/s.
//!
//! `cargo bench --bench gpu_gemm` (needs `[[bench]] name = "gpu_gemm" harness = false`).
//! `GPU_GEMM_SIZES=1024,512x4096x256` changes the shapes (m x n x k, or one number for a cube);
//! `GPU_GEMM_ITERS=5` the timed repetitions. On lavapipe the subgroup kernel is the one to watch:
//! the target is >= 40 GFLOP/s at 1024^3.
// Without `harness = false` cargo builds this file as a libtest harness and `main` goes unused.
#![cfg_attr(test, allow(dead_code))]

use std::time::Instant;

use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::kernels::blas::{BlasKernel, Gemm};
use caffe_rs::engine::{Engine, Kernel, View};

fn shapes() -> Vec<(usize, usize, usize)> {
    let spec =
        std::env::var("GPU_GEMM_SIZES").unwrap_or_else(|_| "1024,256x3025x363,96x3025x1200".into());
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let v: Vec<usize> = s
                .split('x')
                .map(|d| d.trim().parse().expect("size"))
                .collect();
            match v[..] {
                [c] => (c, c, c),
                [m, n, k] => (m, n, k),
                _ => panic!("bad size {s}: use N or MxNxK"),
            }
        })
        .collect()
}

/// CPU time of every thread of this process so far (seconds; Linux only, else 0): the work
/// done, which unlike the wall clock does not depend on what else the machine runs.
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        * 1e-9
}

/// Seconds per product: (median wall time, median CPU time) of `iters` timed runs after one
/// warm-up.
fn time_gemm(e: &mut dyn Engine, m: usize, n: usize, k: usize, iters: usize) -> (f64, f64) {
    let (a, b, c) = (e.alloc(m * k), e.alloc(k * n), e.alloc(m * n));
    let fill = |len: usize| {
        (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect::<Vec<f32>>()
    };
    e.upload(View::new(a, 0, m * k), &fill(m * k));
    e.upload(View::new(b, 0, k * n), &fill(k * n));
    let g = Kernel::Blas(BlasKernel::Gemm(Gemm::single(
        false,
        false,
        m,
        n,
        k,
        1.0,
        View::new(a, 0, m * k),
        View::new(b, 0, k * n),
        0.0,
        View::new(c, 0, m * n),
    )));
    e.launch(&g).expect("gemm");
    e.sync().expect("sync");
    let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..iters)
        .map(|_| {
            let (t, c) = (Instant::now(), cpu_seconds());
            e.launch(&g).expect("gemm");
            e.sync().expect("sync");
            (t.elapsed().as_secs_f64(), cpu_seconds() - c)
        })
        .unzip();
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    for id in [a, b, c] {
        e.free(id);
    }
    (wall[wall.len() / 2], cpu[cpu.len() / 2])
}

fn main() {
    let iters: usize = std::env::var("GPU_GEMM_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut gpu = match GpuEngine::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu_gemm: {e:#}");
            std::process::exit(1);
        }
    };
    println!("adapter: {} ({})", gpu.name(), gpu.backend());
    let mut cpu = CpuEngine::new();
    let has_subgroups = gpu.uses_subgroups();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "GFLOP/s by the wall clock; in brackets by CPU time x {threads} threads, what an idle \
         machine would give if the work spread perfectly (robust to load from other processes)"
    );
    let rate = |flop: f64, (wall, cpu): (f64, f64)| {
        format!(
            "{:.1} GFLOP/s [{:.1}] ({:.2} ms)",
            flop / wall / 1e9,
            flop / (cpu / threads as f64) / 1e9,
            wall * 1e3
        )
    };
    for (m, n, k) in shapes() {
        let flop = 2.0 * (m * n * k) as f64;
        let mut line = format!("sgemm {m}x{n}x{k}:");
        if has_subgroups {
            gpu.set_subgroups(true);
            let t = time_gemm(&mut gpu, m, n, k, iters);
            line += &format!("  gpu subgroup {}", rate(flop, t));
        }
        gpu.set_subgroups(false);
        let t = time_gemm(&mut gpu, m, n, k, iters);
        line += &format!("  gpu portable {}", rate(flop, t));
        gpu.set_subgroups(has_subgroups);
        let t = time_gemm(&mut cpu, m, n, k, iters);
        line += &format!("  cpu {:.1} GFLOP/s", flop / t.0 / 1e9);
        println!("{line}");
    }
}
