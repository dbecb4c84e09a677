//! One Convolution layer on the GPU engine: forward (with bias), weight + bias gradient, and data
//! gradient, each timed separately by the wall clock and by process CPU time (robust to other
//! load; scaled to 2 threads for the rate).
//!
//! `conv_layer_bench [SHAPES] [ITERS]` where SHAPES is a comma-separated list of names
//! (`conv1`, `conv2`, `conv3`: CaffeNet's, batch 10) or specs
//! `N:C:H:W:OUT:K:S:P:G` (square kernel, stride, pad). `CONV_BENCH_PASSES=fd` picks the passes
//! (f forward, w weight gradient, d data gradient; default all). `CAFFE_RS_GPU_PROFILE=1` adds the
//! device time per kernel when the program ends.
use std::time::Instant;

use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::{Engine, View};
use caffe_rs::layers::{self, Blob, Ctx};
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
            let pg = [what == 1, what == 1];
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
            run(&mut eng, &mut rng, what);
            let (mut wall, mut cpu) = (Vec::new(), Vec::new());
            for _ in 0..iters {
                let (t, c) = (Instant::now(), cpu_seconds());
                run(&mut eng, &mut rng, what);
                wall.push(t.elapsed().as_secs_f64());
                cpu.push(cpu_seconds() - c);
            }
            let (w, c) = (median(wall), median(cpu) / 2.0);
            let gf = 2.0 * macs * 1e-9;
            println!(
                "{:<28} {label:<12} wall {:>8.2} ms {:>6.1} GFLOP/s | cpu/2 {:>8.2} ms {:>6.1} GFLOP/s",
                sp.name,
                w * 1e3,
                gf / w,
                c * 1e3,
                gf / c
            );
        }
    }
}
