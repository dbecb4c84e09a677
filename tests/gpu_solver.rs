//! The solver kernels on the GPU engine (lavapipe here) against the CPU engine.
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::kernels::solver::{Regularization, SolverKernel, UpdateRule};
use caffe_rs::engine::{Engine, Kernel, View};
use caffe_rs::rng::Rng;

fn gpu() -> GpuEngine {
    GpuEngine::new(0).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e:#}"))
}

fn run(eng: &mut dyn Engine, rule: UpdateRule, reg: Regularization, n: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(9);
    let hist = match rule {
        UpdateRule::AdaDelta { .. } | UpdateRule::Adam { .. } => 2,
        _ => 1,
    };
    let data = eng.alloc(n);
    let diff = eng.alloc(n);
    let history: Vec<_> = (0..hist).map(|_| eng.alloc(n)).collect();
    let w: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    eng.upload(View::new(data, 0, n), &w);
    for _ in 0..3 {
        let g: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
        eng.upload(View::new(diff, 0, n), &g);
        eng.launch(&Kernel::Solver(SolverKernel::Update {
            data: View::new(data, 0, n),
            diff: View::new(diff, 0, n),
            history: history.iter().map(|&h| View::new(h, 0, n)).collect(),
            scale: 0.5,
            regularization: reg,
            rule,
            rate: 0.01,
        }))
        .unwrap();
    }
    let out = eng.alloc(1);
    eng.launch(&Kernel::Solver(SolverKernel::SumSquares {
        x: View::new(data, 0, n),
        out: View::new(out, 0, 1),
        accumulate: false,
    }))
    .unwrap();
    let mut result = vec![
        eng.download(View::new(data, 0, n)),
        eng.download(View::new(diff, 0, n)),
    ];
    result.extend(history.iter().map(|&h| eng.download(View::new(h, 0, n))));
    result.push(eng.download(View::new(out, 0, 1)));
    result
}

#[test]
fn solver_kernels_match_the_cpu_engine() {
    let mut g = gpu();
    let rules = [
        UpdateRule::Sgd { momentum: 0.9 },
        UpdateRule::Nesterov { momentum: 0.9 },
        UpdateRule::AdaGrad { delta: 1e-8 },
        UpdateRule::RmsProp {
            rms_decay: 0.95,
            delta: 1e-6,
        },
        UpdateRule::AdaDelta {
            momentum: 0.95,
            delta: 1e-6,
        },
        UpdateRule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            correction: 0.3,
        },
    ];
    let regs = [
        Regularization::None,
        Regularization::L2 { decay: 0.01 },
        Regularization::L1 { decay: 0.01 },
    ];
    for (k, rule) in rules.iter().enumerate() {
        for n in [1, 7, 1000, 70_001] {
            let reg = regs[(k + n) % 3];
            let (a, b) = (
                run(&mut CpuEngine::new(), *rule, reg, n),
                run(&mut g, *rule, reg, n),
            );
            for (t, (x, y)) in a.iter().zip(&b).enumerate() {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                        "{rule:?} n={n} tensor {t}[{i}]: cpu {p} gpu {q}"
                    );
                }
            }
        }
    }
}

/// Lavapipe ends a shader invocation's loops after 65535 iterations: the one-workgroup sum of
/// squares must split tensors longer than 256 * 65535 (VGG's fc6 weights have 102M) into chunks.
#[test]
fn sum_squares_of_a_long_tensor() {
    let mut g = gpu();
    let n = 256 * 65536 + 4099;
    let mut rng = Rng::new(10);
    let x: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let (t, out) = (g.alloc(n), g.alloc(1));
    g.upload(View::new(t, 0, n), &x);
    g.launch(&Kernel::Solver(SolverKernel::SumSquares {
        x: View::new(t, 0, n),
        out: View::new(out, 0, 1),
        accumulate: false,
    }))
    .unwrap();
    let got = f64::from(g.download(View::new(out, 0, 1))[0]);
    assert!(
        (got - want).abs() <= 1e-4 * want,
        "sum of squares of {n} values: gpu {got}, exact {want}"
    );
}
