//! One Convolution layer on the GPU engine: forward (with bias), weight + bias gradient, and data
//! gradient, each timed separately by the wall clock and by process CPU time (robust to other
//! load; scaled to 2 threads for the rate).
//!
//! `conv_layer_bench [SHAPES] [ITERS]` where SHAPES is a comma-separated list of names
//! (`conv1`, `conv2`, `conv3`: CaffeNet's, batch 10) or specs
//! `N:C:H:W:OUT:K:S:P:G` (square kernel, stride, pad). `CONV_BENCH_PASSES=fd` picks the passes
//! (f forward, w weight gradient, d data gradient; default all). `CONV_BENCH_AB=VAR` compares
//! VAR=0 and VAR=1 (an environment switch of the engine, e.g. `CAFFE_RS_CONV_COMPOSED`), run in
//! turns so that both see the same load. Each timed pass is followed by a 1024^3 SGEMM, and each
//! rate is also given as a percentage of that GEMM's (median) rate, in the same conditions. `CAFFE_RS_GPU_PROFILE=1` adds the device time per kernel
//! when the program ends.
use std::time::Instant;

use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::kernels::blas::{BlasKernel, Gemm};
use caffe_rs::engine::{Engine, Kernel, View};
use caffe_rs::layers::{self, Blob, Ctx, ParamGrad};
use caffe_rs::proto::{ConvolutionParameter, LayerParameter, Phase};
use caffe_rs::rng::Rng;

fn cpu_seconds() -> f64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        * 1e-9
}

struct Spec {
    name: String,
    shape: Vec<usize>,
    out: usize,
    k: usize,
    s: usize,
    p: usize,
    g: usize,
}

fn spec(s: &str) -> Spec {
    let v: Vec<usize> = match s {
        "conv1" => vec![10, 3, 227, 227, 96, 11, 4, 0, 1],
        "conv2" => vec![10, 96, 27, 27, 256, 5, 1, 2, 2],
        "conv3" => vec![10, 256, 13, 13, 384, 3, 1, 1, 1],
        "conv4" => vec![10, 384, 13, 13, 384, 3, 1, 1, 2],
        _ => s.split(':').map(|x| x.parse().expect("number")).collect(),
    };
    assert_eq!(v.len(), 9, "spec N:C:H:W:OUT:K:S:P:G");
    Spec {
        name: s.to_string(),
        shape: v[..4].to_vec(),
        out: v[4],
        k: v[5],
        s: v[6],
        p: v[7],
        g: v[8],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shapes = args.get(1).map_or("conv1,conv2,conv3", |s| s.as_str());
    let iters: usize = args.get(2).map_or(5, |s| s.parse().unwrap());
    let mut eng = GpuEngine::new(0).unwrap();
    let mut rng = Rng::new(1);
    // The reference: a 1024^3 SGEMM.
    const G: usize = 1024;
    let (ga, gb, gc) = (eng.alloc(G * G), eng.alloc(G * G), eng.alloc(G * G));
    let vals: Vec<f32> = (0..G * G).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    eng.upload(View::new(ga, 0, G * G), &vals);
    eng.upload(View::new(gb, 0, G * G), &vals);
    let gemm = Kernel::Blas(BlasKernel::Gemm(Gemm::single(
        false,
        false,
        G,
        G,
        G,
        1.0,
        View::new(ga, 0, G * G),
        View::new(gb, 0, G * G),
        0.0,
        View::new(gc, 0, G * G),
    )));
    let gemm_gflop = 2.0 * (G * G * G) as f64 * 1e-9;
    let reference = |eng: &mut GpuEngine| {
        let (t, c) = (Instant::now(), cpu_seconds());
        eng.launch(&gemm).unwrap();
        eng.sync().unwrap();
        (t.elapsed().as_secs_f64(), cpu_seconds() - c)
    };
    reference(&mut eng);
    for name in shapes.split(',') {
        let sp = spec(name);
        let param = LayerParameter {
            name: Some("conv".into()),
            r#type: Some("Convolution".into()),
            convolution_param: Some(ConvolutionParameter {
                num_output: Some(sp.out as u32),
                kernel_size: vec![sp.k as u32],
                stride: vec![sp.s as u32],
                pad: vec![sp.p as u32],
                group: Some(sp.g as u32),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut layer = layers::create(&param).unwrap();
        let shapes = layer.reshape(std::slice::from_ref(&sp.shape)).unwrap();
        let macs = layer.macs() as f64;
        let blob = |eng: &mut GpuEngine, rng: &mut Rng, shape: &Vec<usize>| {
            let n: usize = shape.iter().product();
            let b = Blob {
                shape: shape.clone(),
                data: eng.alloc(n),
                diff: eng.alloc(n),
            };
            let vals: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            eng.upload(View::new(b.data, 0, n), &vals);
            eng.upload(View::new(b.diff, 0, n), &vals);
            b
        };
        let bottoms = vec![blob(&mut eng, &mut rng, &sp.shape)];
        let tops = vec![blob(&mut eng, &mut rng, &shapes.tops[0])];
        let params: Vec<Blob> = shapes
            .params
            .iter()
            .map(|p| blob(&mut eng, &mut rng, &p.shape))
            .collect();
        // 0 forward, 1 weight + bias gradient, 2 data gradient
        let mut run = |eng: &mut GpuEngine, rng: &mut Rng, what: usize| {
            let grad = if what == 1 {
                ParamGrad::Accumulate
            } else {
                ParamGrad::Skip
            };
            let pg = [grad, grad];
            let mut cx = Ctx {
                eng,
                bottoms: &bottoms,
                tops: &tops,
                params: &params,
                phase: Phase::Train,
                rng,
                param_grads: &pg,
            };
            if what == 0 {
                layer.forward(&mut cx).unwrap();
            } else {
                layer.backward(&mut cx, &[what == 2]).unwrap();
            }
            eng.sync().unwrap();
        };
        let passes = std::env::var("CONV_BENCH_PASSES").unwrap_or_else(|_| "fwd".into());
        for (what, label) in ["forward", "weight grad", "data grad"].iter().enumerate() {
            if !passes.contains(["f", "w", "d"][what]) {
                continue;
            }
            let ab = std::env::var("CONV_BENCH_AB").ok();
            let sides: Vec<Option<&str>> = match &ab {
                Some(_) => vec![Some("0"), Some("1")],
                None => vec![None],
            };
            let set = |side: Option<&str>| {
                if let (Some(var), Some(v)) = (&ab, side) {
                    // Single-threaded here: nothing else reads the environment meanwhile.
                    unsafe { std::env::set_var(var, v) };
                }
            };
            for &side in &sides {
                set(side);
                run(&mut eng, &mut rng, what);
            }
            let mut times = vec![(Vec::new(), Vec::new()); sides.len()];
            let (mut rw, mut rc) = (Vec::new(), Vec::new());
            for _ in 0..iters {
                for (i, &side) in sides.iter().enumerate() {
                    set(side);
                    let (t, c) = (Instant::now(), cpu_seconds());
                    run(&mut eng, &mut rng, what);
                    times[i].0.push(t.elapsed().as_secs_f64());
                    times[i].1.push(cpu_seconds() - c);
                }
                let (w, c) = reference(&mut eng);
                rw.push(w);
                rc.push(c);
            }
            let (gw, gc) = (gemm_gflop / median(rw), gemm_gflop / (median(rc) / 2.0));
            for (i, (wall, cpu)) in times.into_iter().enumerate() {
                let (w, c) = (median(wall), median(cpu) / 2.0);
                let gf = 2.0 * macs * 1e-9;
                let tag = match (&ab, sides[i]) {
                    (Some(var), Some(v)) => format!(" {var}={v}"),
                    _ => String::new(),
                };
                println!(
                    "{:<8} {label:<12} wall {:>7.2} ms {:>5.1} GFLOP/s {:>3.0}% | cpu/2 {:>7.2} ms {:>5.1} GFLOP/s {:>3.0}% | gemm {gw:.1} / {gc:.1}{tag}",
                    sp.name,
                    w * 1e3,
                    gf / w,
                    100.0 * gf / w / gw,
                    c * 1e3,
                    gf / c,
                    100.0 * gf / c / gc,
                );
            }
        }
    }
}
