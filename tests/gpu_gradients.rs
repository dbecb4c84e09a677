//! Every layer type, data-driven, in both engines:
//!
//! 1. Caffe's GradientChecker (central finite differences of a random projection of the tops,
//!    step 1e-2, relative threshold 1e-2 or Caffe's tighter one) on 3 random instances of 24 to 300
//!    checked elements, in GPU mode and in CPU mode, for every layer with a backward;
//! 2. GPU forward + backward against CPU forward + backward on 16 random instances (shapes and
//!    layer parameters drawn from a seeded RNG, most of them up to 3x larger), for every layer,
//!    backward or not, so that a kernel that fits one shape only cannot pass.
//!
//! Each row of the table below is one test: a generator of (layer prototxt, bottoms with how to fill
//! them), the bottoms whose gradient is checked, and the threshold. Inputs stay away from a layer's
//! kinks (ReLU at 0, MAX ties, Clip bounds, hinge margins) by more than the step, instead of Caffe's
//! kink ranges. The seeds come from the row names; `CAFFE_RS_GRAD_SEED=n` draws other instances.
//! The GPU engine is adapter 0 (lavapipe in CI); without one the tests fail.
use std::sync::{Mutex, MutexGuard, OnceLock};

use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::format::transcode::parse_text;
use caffe_rs::layers::testing::{LayerCase, LayerRun, check_gradient_of, run_layer};
use caffe_rs::proto::{LayerParameter, Phase};
use caffe_rs::rng::Rng;

/// Caffe's GradientChecker step.
const STEP: f32 = 1e-2;
/// GPU against CPU: |gpu - cpu| <= TOL * max(|cpu|, 1) per element.
const TOL: f32 = 1e-4;
/// Random instances compared between the engines per row.
const INSTANCES: u64 = 16;
/// Finite-difference instances per row, and the range of elements each one checks.
const FD_INSTANCES: u64 = 3;
const CHECK_MIN: usize = 24;
const CHECK_MAX: usize = 300;

static GPU: OnceLock<Mutex<GpuEngine>> = OnceLock::new();

/// The shared GPU engine (one device per test process, pipelines compiled once).
fn gpu() -> MutexGuard<'static, GpuEngine> {
    GPU.get_or_init(|| {
        Mutex::new(GpuEngine::new(0).unwrap_or_else(|e| {
            panic!("GPU gradient checks need a GPU adapter (lavapipe will do): {e:#}")
        }))
    })
    .lock()
    .unwrap_or_else(|p| p.into_inner())
}

// ---- instances ------------------------------------------------------------------------------

/// How a bottom is filled.
#[derive(Clone, Debug)]
enum Fill {
    /// Uniform in [lo, hi).
    U(f32, f32),
    /// Uniform in [lo, hi) but at least 0.05 (5 steps) from each kink.
    Away(f32, f32, Vec<f32>),
    /// Distinct values 0.05 apart, shuffled, distinct across all `Distinct` bottoms of the layer
    /// (MAX pooling, Eltwise MAX: no tie within a step).
    Distinct,
    /// Integers in [0, n) (labels, indices, selectors).
    Int(usize),
}

/// One layer instance: the prototxt of the layer (without bottoms and tops), its bottoms, the
/// number of tops, the phase and the parameter values (`None`: uniform in [-1, 1)).
struct Spec {
    proto: String,
    bottoms: Vec<(Vec<usize>, Fill)>,
    tops: usize,
    phase: Phase,
    params: Option<Vec<Vec<f32>>>,
}

fn spec(proto: impl Into<String>, bottoms: Vec<(Vec<usize>, Fill)>) -> Spec {
    Spec {
        proto: proto.into(),
        bottoms,
        tops: 1,
        phase: Phase::Test,
        params: None,
    }
}

impl Spec {
    fn tops(mut self, n: usize) -> Spec {
        self.tops = n;
        self
    }
    fn train(mut self) -> Spec {
        self.phase = Phase::Train;
        self
    }
    fn params(mut self, p: Vec<Vec<f32>>) -> Spec {
        self.params = Some(p);
        self
    }
}

/// One row of the table.
struct Row {
    make: fn(&mut G) -> Spec,
    /// Bottoms checked by finite differences; `None`: no finite-difference check (no backward, or
    /// an output that is not differentiable in its inputs, such as random sampling).
    grad: Option<&'static [usize]>,
    /// Parameters checked (`None`: all).
    params: Option<&'static [usize]>,
    threshold: f32,
    /// Rejects finite-difference instances that lie within a step of a kink the inputs alone
    /// cannot avoid (ContrastiveLoss: a pair at the margin).
    smooth: Option<fn(&LayerCase) -> bool>,
}

fn row(make: fn(&mut G) -> Spec, grad: &'static [usize], threshold: f32) -> Row {
    Row {
        make,
        grad: Some(grad),
        params: None,
        threshold,
        smooth: None,
    }
}

fn forward_only(make: fn(&mut G) -> Spec) -> Row {
    Row {
        make,
        grad: None,
        params: None,
        threshold: 0.0,
        smooth: None,
    }
}

/// The random source of the generators and the size of the instance: blob dimensions are drawn up
/// to `scale` times a generator's nominal maximum.
struct G {
    r: Rng,
    scale: usize,
}

impl G {
    fn new(seed: u64, scale: usize) -> G {
        G {
            r: Rng::new(seed),
            scale,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        self.r.below(n)
    }
}

/// Uniform integer in [lo, hi] (layer parameters: kernel sizes, strides, counts).
fn pick(r: &mut G, lo: usize, hi: usize) -> usize {
    lo + r.below(hi - lo + 1)
}

/// A blob dimension: uniform in [lo, scale * hi].
fn dim(r: &mut G, lo: usize, hi: usize) -> usize {
    let hi = (r.scale * hi).max(lo);
    pick(r, lo, hi)
}

fn coin(r: &mut G) -> bool {
    r.below(2) == 0
}

fn uni(r: &mut G, lo: f32, hi: f32) -> f32 {
    r.r.uniform_range(lo, hi)
}

/// A random shape of 1 to `max_axes` axes of 1 to `scale * max_dim` each.
fn shape(r: &mut G, max_axes: usize, max_dim: usize) -> Vec<usize> {
    (0..pick(r, 1, max_axes))
        .map(|_| dim(r, 1, max_dim))
        .collect()
}

fn fill_values(fill: &Fill, n: usize, r: &mut Rng, distinct: &mut Vec<f32>) -> Vec<f32> {
    match fill {
        Fill::U(lo, hi) => (0..n).map(|_| r.uniform_range(*lo, *hi)).collect(),
        Fill::Away(lo, hi, kinks) => (0..n)
            .map(|_| {
                loop {
                    let v = r.uniform_range(*lo, *hi);
                    if kinks.iter().all(|k| (v - k).abs() >= 0.05) {
                        break v;
                    }
                }
            })
            .collect(),
        Fill::Distinct => distinct.drain(..n).collect(),
        Fill::Int(k) => (0..n).map(|_| r.below(*k) as f32).collect(),
    }
}

/// The LayerParameter of a spec, with bottoms b0.. and tops t0..
fn layer_param(s: &Spec) -> LayerParameter {
    let mut text = s.proto.clone();
    for i in 0..s.bottoms.len() {
        text.push_str(&format!(" bottom: \"b{i}\""));
    }
    for i in 0..s.tops {
        text.push_str(&format!(" top: \"t{i}\""));
    }
    parse_text(&text, "row", "caffe.LayerParameter")
        .unwrap_or_else(|e| panic!("bad prototxt `{text}`: {e:#}"))
}

/// A concrete case: bottom values from `r`, parameters uniform in [-1, 1) unless the spec gives them.
fn instance(s: &Spec, r: &mut Rng) -> LayerCase {
    let param = layer_param(s);
    let n_distinct: usize = s
        .bottoms
        .iter()
        .filter(|(_, f)| matches!(f, Fill::Distinct))
        .map(|(sh, _)| sh.iter().product::<usize>())
        .sum();
    let mut distinct: Vec<f32> = (0..n_distinct)
        .map(|i| (i as f32 - n_distinct as f32 / 2.0) * 0.05)
        .collect();
    r.shuffle(&mut distinct);
    let bottoms: Vec<(Vec<usize>, Vec<f32>)> = s
        .bottoms
        .iter()
        .map(|(sh, f)| {
            (
                sh.clone(),
                fill_values(f, sh.iter().product(), r, &mut distinct),
            )
        })
        .collect();
    let shapes = caffe_rs::layers::create(&param)
        .and_then(|mut l| l.reshape(&s.bottoms.iter().map(|b| b.0.clone()).collect::<Vec<_>>()))
        .unwrap_or_else(|e| panic!("{}: {e:#}", s.proto));
    let params = s.params.clone().unwrap_or_else(|| {
        shapes
            .params
            .iter()
            .map(|p| {
                (0..p.shape.iter().product::<usize>())
                    .map(|_| r.uniform_range(-1.0, 1.0))
                    .collect()
            })
            .collect()
    });
    LayerCase {
        param,
        phase: s.phase,
        bottoms,
        params: Some(params),
    }
}

// ---- the checks -----------------------------------------------------------------------------

fn compare(what: &str, cpu: &[f32], gpu: &[f32]) -> Result<(), String> {
    if cpu.len() != gpu.len() {
        return Err(format!(
            "{what}: {} values on CPU, {} on GPU",
            cpu.len(),
            gpu.len()
        ));
    }
    for (i, (&c, &g)) in cpu.iter().zip(gpu).enumerate() {
        let ok = (c.is_nan() && g.is_nan()) || (c - g).abs() <= TOL * c.abs().max(1.0);
        if !ok {
            return Err(format!("{what}[{i}]: cpu {c}, gpu {g}"));
        }
    }
    Ok(())
}

fn compare_runs(cpu: &LayerRun, gpu: &LayerRun) -> Result<(), String> {
    for (i, (c, g)) in cpu.tops.iter().zip(&gpu.tops).enumerate() {
        if c.0 != g.0 {
            return Err(format!("top {i}: shape {:?} on CPU, {:?} on GPU", c.0, g.0));
        }
        compare(&format!("top {i}"), &c.1, &g.1)?;
    }
    for (i, (c, g)) in cpu.bottom_diffs.iter().zip(&gpu.bottom_diffs).enumerate() {
        compare(&format!("bottom diff {i}"), c, g)?;
    }
    for (i, (c, g)) in cpu.param_diffs.iter().zip(&gpu.param_diffs).enumerate() {
        compare(&format!("param diff {i}"), c, g)?;
    }
    // Parameters after forward (BatchNorm's running statistics in TRAIN).
    for (i, (c, g)) in cpu.params.iter().zip(&gpu.params).enumerate() {
        compare(&format!("param {i}"), &c.1, &g.1)?;
    }
    Ok(())
}

/// The seed of a row: from its name, mixed with `CAFFE_RS_GRAD_SEED` when set (to explore other
/// instances than the default ones).
fn seed_of(name: &str) -> u64 {
    let extra: u64 = std::env::var("CAFFE_RS_GRAD_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    extra.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

/// Elements whose gradient a finite-difference check perturbs.
fn checked_elements(case: &LayerCase, grad: &[usize], params: Option<&[usize]>) -> usize {
    let bottoms: usize = grad.iter().map(|&b| case.bottoms[b].1.len()).sum();
    let params: usize = case.params.as_ref().map_or(0, |ps| {
        ps.iter()
            .enumerate()
            .filter(|(i, _)| params.is_none_or(|c| c.contains(i)))
            .map(|(_, p)| p.len())
            .sum()
    });
    bottoms + params
}

/// A finite-difference instance of `row` from `seed`: the first draw (of dimensions up to twice
/// the nominal ones) whose checked elements number between CHECK_MIN and CHECK_MAX, else the
/// largest one below CHECK_MAX. Returns the spec, the case and the bottoms to check.
fn fd_instance(row: &Row, grad: &[usize], seed: u64) -> (Spec, LayerCase, Vec<usize>) {
    let mut best: Option<(usize, Spec, LayerCase, Vec<usize>)> = None;
    for attempt in 0..64u64 {
        let mut r = G::new(seed.wrapping_add(attempt), 2);
        let s = (row.make)(&mut r);
        let case = instance(&s, &mut r.r);
        // Rows list every bottom that may take a gradient; instances may have fewer bottoms.
        let grad: Vec<usize> = grad
            .iter()
            .copied()
            .filter(|&b| b < case.bottoms.len())
            .collect();
        if row.smooth.is_some_and(|f| !f(&case)) {
            continue;
        }
        let n = checked_elements(&case, &grad, row.params);
        if (CHECK_MIN..=CHECK_MAX).contains(&n) {
            return (s, case, grad);
        }
        if n <= CHECK_MAX && best.as_ref().is_none_or(|b| b.0 < n) {
            best = Some((n, s, case, grad));
        }
    }
    let (_, s, case, grad) = best.expect("no instance fit for a gradient check in 64 draws");
    (s, case, grad)
}

fn run_row(name: &str, row: Row) {
    let seed = seed_of(name);
    // 1. Finite differences, in both engines.
    if let Some(grad) = row.grad {
        for i in 0..FD_INSTANCES {
            let (s, case, grad) = fd_instance(&row, grad, seed.wrapping_add(1000 * i));
            let check = |eng: &mut dyn Engine, mode: &str| {
                check_gradient_of(eng, &case, &grad, row.params, STEP, row.threshold)
                    .unwrap_or_else(|e| {
                        panic!(
                            "{name} ({mode} mode) gradient check failed on `{}` with bottoms \
                             {:?}: {e:#}",
                            s.proto,
                            s.bottoms.iter().map(|b| &b.0).collect::<Vec<_>>()
                        )
                    })
            };
            check(&mut CpuEngine::new(), "CPU");
            check(&mut *gpu(), "GPU");
        }
    }
    // 2. GPU against CPU on random instances (a third of nominal size, the others up to 3x),
    // forward and backward.
    for k in 0..INSTANCES {
        let scale = if k % 3 == 0 { 1 } else { 3 };
        let mut r = G::new(seed ^ (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15), scale);
        let s = (row.make)(&mut r);
        let mut r = r.r;
        let case = instance(&s, &mut r);
        let shapes = caffe_rs::layers::create(&case.param)
            .and_then(|mut l| {
                l.reshape(&case.bottoms.iter().map(|b| b.0.clone()).collect::<Vec<_>>())
            })
            .unwrap();
        let top_diffs: Vec<Vec<f32>> = shapes
            .tops
            .iter()
            .map(|t| {
                (0..t.iter().product::<usize>())
                    .map(|_| r.uniform_range(-1.0, 1.0))
                    .collect()
            })
            .collect();
        let what = format!(
            "{name} instance {k}: `{}` with bottoms {:?}",
            s.proto,
            s.bottoms.iter().map(|b| &b.0).collect::<Vec<_>>()
        );
        let cpu = run_layer(&mut CpuEngine::new(), &case, Some(&top_diffs), None)
            .unwrap_or_else(|e| panic!("{what}: CPU: {e:#}"));
        let g = run_layer(&mut *gpu(), &case, Some(&top_diffs), None)
            .unwrap_or_else(|e| panic!("{what}: GPU: {e:#}"));
        if let Err(e) = compare_runs(&cpu, &g) {
            panic!("{what}: GPU differs from CPU: {e}");
        }
    }
}

macro_rules! table {
    ($($name:ident => $row:expr;)*) => {
        $(#[test] fn $name() { run_row(stringify!($name), $row); })*
    };
}

// ---- generators -----------------------------------------------------------------------------

/// One generator per row: a random instance (layer prototxt and bottoms) from `r`.
mod make {
    use super::*;

    pub fn conv_like(r: &mut G, ty: &str) -> Spec {
        let group = pick(r, 1, 2);
        let (cin, cout) = (group * dim(r, 1, 2), group * dim(r, 1, 2));
        let (kh, kw) = (pick(r, 1, 3), pick(r, 1, 3));
        let (sh, sw) = (pick(r, 1, 2), pick(r, 1, 2));
        let (ph, pw) = (r.below(kh), r.below(kw));
        let dil = pick(r, 1, 2);
        let size = |k: usize, p: usize, r: &mut G| {
            let extent = dil * (k - 1) + 1;
            if ty == "Deconvolution" {
                dim(r, 3, 4)
            } else {
                extent.saturating_sub(2 * p).max(1) + dim(r, 0, 2)
            }
        };
        let (h, w) = (size(kh, ph, r), size(kw, pw, r));
        spec(
            format!(
                "type: \"{ty}\" convolution_param {{ num_output: {cout} group: {group} kernel_h: {kh} \
                 kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} dilation: {dil} \
                 bias_term: {} }}",
                coin(r)
            ),
            vec![(vec![dim(r, 1, 2), cin, h, w], Fill::U(-1.0, 1.0))],
        )
    }

    pub fn convolution(r: &mut G) -> Spec {
        conv_like(r, "Convolution")
    }

    pub fn deconvolution(r: &mut G) -> Spec {
        conv_like(r, "Deconvolution")
    }

    pub fn convolution_3d(r: &mut G) -> Spec {
        let (k, s, p) = (2, pick(r, 1, 2), r.below(2));
        let dims: Vec<usize> = (0..3).map(|_| dim(r, 2, 3)).collect();
        spec(
            format!(
                "type: \"Convolution\" convolution_param {{ num_output: {} kernel_size: {k} stride: {s} \
                 pad: {p} }}",
                pick(r, 1, 2)
            ),
            vec![(
                vec![1, dim(r, 1, 2), dims[0], dims[1], dims[2]],
                Fill::U(-1.0, 1.0),
            )],
        )
    }

    pub fn im2col(r: &mut G) -> Spec {
        let (k, s, p, dil) = (pick(r, 1, 3), pick(r, 1, 2), r.below(2), pick(r, 1, 2));
        let min = (dil * (k - 1) + 1).saturating_sub(2 * p).max(1);
        let shape = vec![
            dim(r, 1, 2),
            dim(r, 1, 2),
            min + dim(r, 0, 2),
            min + dim(r, 0, 2),
        ];
        spec(
            format!(
                "type: \"Im2col\" convolution_param {{ kernel_size: {k} stride: {s} pad: {p} \
                 dilation: {dil} }}"
            ),
            vec![(shape, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn inner_product(r: &mut G) -> Spec {
        let shape = vec![dim(r, 1, 3), dim(r, 1, 3), dim(r, 1, 4)];
        spec(
            format!(
                "type: \"InnerProduct\" inner_product_param {{ num_output: {} axis: {} transpose: {} \
                 bias_term: {} }}",
                dim(r, 1, 4),
                pick(r, 1, 2),
                coin(r),
                coin(r)
            ),
            vec![(shape, Fill::U(-1.0, 1.0))],
        )
    }

    /// Pooling with method `pool`; `global` picks global pooling sometimes.
    pub fn pooling_spec(r: &mut G, pool: &str, fill: Fill) -> Spec {
        let (kh, kw) = (pick(r, 1, 3), pick(r, 1, 3));
        let (sh, sw) = (pick(r, 1, 2), pick(r, 1, 2));
        let unpadded = pool == "STOCHASTIC";
        let (ph, pw) = if unpadded {
            (0, 0)
        } else {
            (r.below(kh), r.below(kw))
        };
        let shape = vec![
            dim(r, 1, 2),
            dim(r, 1, 2),
            kh + dim(r, 0, 2),
            kw + dim(r, 0, 2),
        ];
        // CEIL may add a last window that starts past the image when there is no padding; its
        // output (-FLT_MAX for MAX) would drown every finite difference, so use FLOOR then.
        let ceil_empty = |size: usize, k: usize, s: usize, p: usize| {
            let mut out = (size + 2 * p - k).div_ceil(s) + 1;
            if p > 0 && (out - 1) * s >= size + p {
                out -= 1;
            }
            (out - 1) * s >= size + p
        };
        let ceil =
            coin(r) && !ceil_empty(shape[2], kh, sh, ph) && !ceil_empty(shape[3], kw, sw, pw);
        let geometry = if r.below(5) == 0 {
            "global_pooling: true".to_string()
        } else {
            format!(
                "kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} \
                 round_mode: {}",
                if ceil { "CEIL" } else { "FLOOR" }
            )
        };
        spec(
            format!("type: \"Pooling\" pooling_param {{ pool: {pool} {geometry} }}"),
            vec![(shape, fill)],
        )
    }

    pub fn pool_max(r: &mut G) -> Spec {
        pooling_spec(r, "MAX", Fill::Distinct)
    }

    pub fn pool_ave(r: &mut G) -> Spec {
        pooling_spec(r, "AVE", Fill::U(-1.0, 1.0))
    }

    pub fn pool_stochastic_test(r: &mut G) -> Spec {
        pooling_spec(r, "STOCHASTIC", Fill::U(0.1, 1.0))
    }

    pub fn pool_stochastic_train(r: &mut G) -> Spec {
        pooling_spec(r, "STOCHASTIC", Fill::U(0.1, 1.0)).train()
    }

    pub fn pool_max_two_tops(r: &mut G) -> Spec {
        // The second top is the mask (argmax indices): same in both engines, no gradient.
        pooling_spec(r, "MAX", Fill::Distinct).tops(2)
    }

    pub fn spp(r: &mut G) -> Spec {
        let max = coin(r);
        let height = pick(r, 1, 3);
        // The finest level has `bins` bins; Caffe needs its padding below its kernel.
        let bins = 1 << (height - 1);
        let side = |r: &mut G| {
            if bins == 1 {
                pick(r, 1, 3)
            } else {
                2 * bins - r.below(3)
            }
        };
        spec(
            format!(
                "type: \"SPP\" spp_param {{ pyramid_height: {height} pool: {} }}",
                if max { "MAX" } else { "AVE" }
            ),
            vec![(
                vec![dim(r, 1, 2), dim(r, 1, 2), side(r), side(r)],
                if max {
                    Fill::Distinct
                } else {
                    Fill::U(-1.0, 1.0)
                },
            )],
        )
    }

    /// A neuron layer over a random shape of up to 4 axes.
    pub fn neuron(r: &mut G, proto: String, fill: Fill) -> Spec {
        let s = shape(r, 4, 4);
        spec(proto, vec![(s, fill)])
    }

    pub fn relu(r: &mut G) -> Spec {
        let slope = if coin(r) { 0.0 } else { uni(r, 0.05, 0.5) };
        neuron(
            r,
            format!("type: \"ReLU\" relu_param {{ negative_slope: {slope} }}"),
            Fill::Away(-2.0, 2.0, vec![0.0]),
        )
    }

    pub fn absval(r: &mut G) -> Spec {
        neuron(
            r,
            "type: \"AbsVal\"".into(),
            Fill::Away(-2.0, 2.0, vec![0.0]),
        )
    }

    pub fn bnll(r: &mut G) -> Spec {
        neuron(r, "type: \"BNLL\"".into(), Fill::U(-3.0, 3.0))
    }

    pub fn sigmoid(r: &mut G) -> Spec {
        neuron(r, "type: \"Sigmoid\"".into(), Fill::U(-3.0, 3.0))
    }

    pub fn tanh(r: &mut G) -> Spec {
        neuron(r, "type: \"TanH\"".into(), Fill::U(-3.0, 3.0))
    }

    pub fn elu(r: &mut G) -> Spec {
        let alpha = uni(r, 0.3, 2.0);
        neuron(
            r,
            format!("type: \"ELU\" elu_param {{ alpha: {alpha} }}"),
            Fill::Away(-2.0, 2.0, vec![0.0]),
        )
    }

    pub fn exp(r: &mut G) -> Spec {
        let base = if coin(r) { -1.0 } else { uni(r, 1.5, 3.0) };
        let (scale, shift) = (uni(r, -1.0, 1.0), uni(r, -1.0, 1.0));
        neuron(
            r,
            format!("type: \"Exp\" exp_param {{ base: {base} scale: {scale} shift: {shift} }}"),
            Fill::U(-1.0, 1.0),
        )
    }

    pub fn log(r: &mut G) -> Spec {
        let base = if coin(r) { -1.0 } else { uni(r, 1.5, 3.0) };
        let (scale, shift) = (uni(r, 0.5, 2.0), uni(r, 0.5, 1.0));
        neuron(
            r,
            format!("type: \"Log\" log_param {{ base: {base} scale: {scale} shift: {shift} }}"),
            Fill::U(0.1, 2.0),
        )
    }

    pub fn power(r: &mut G) -> Spec {
        let power = [1.0, 2.0, 0.5, 1.7, 3.0, -0.5][r.below(6)];
        let (scale, shift) = (uni(r, 0.5, 1.5), uni(r, 0.5, 1.0));
        neuron(
            r,
            format!(
                "type: \"Power\" power_param {{ power: {power} scale: {scale} shift: {shift} }}"
            ),
            Fill::U(0.1, 1.0),
        )
    }

    pub fn swish(r: &mut G) -> Spec {
        let beta = uni(r, 0.5, 2.0);
        neuron(
            r,
            format!("type: \"Swish\" swish_param {{ beta: {beta} }}"),
            Fill::U(-3.0, 3.0),
        )
    }

    pub fn clip(r: &mut G) -> Spec {
        let (min, max) = (uni(r, -1.0, -0.2), uni(r, 0.2, 1.0));
        neuron(
            r,
            format!("type: \"Clip\" clip_param {{ min: {min} max: {max} }}"),
            Fill::Away(-1.5, 1.5, vec![min, max]),
        )
    }

    pub fn threshold(r: &mut G) -> Spec {
        let t = uni(r, -0.5, 0.5);
        neuron(
            r,
            format!("type: \"Threshold\" threshold_param {{ threshold: {t} }}"),
            Fill::U(-1.0, 1.0),
        )
    }

    pub fn prelu(r: &mut G) -> Spec {
        let shared = coin(r);
        let s = vec![dim(r, 1, 2), dim(r, 1, 3), dim(r, 1, 3), dim(r, 1, 3)];
        spec(
            format!("type: \"PReLU\" prelu_param {{ channel_shared: {shared} }}"),
            vec![(s, Fill::Away(-2.0, 2.0, vec![0.0]))],
        )
    }

    pub fn dropout_test(r: &mut G) -> Spec {
        let ratio = uni(r, 0.1, 0.9);
        neuron(
            r,
            format!("type: \"Dropout\" dropout_param {{ dropout_ratio: {ratio} }}"),
            Fill::U(-1.0, 1.0),
        )
    }

    pub fn dropout_train(r: &mut G) -> Spec {
        // The mask seed comes from the layer's rng, the same for every run of a case.
        dropout_test(r).train()
    }

    pub fn batch_norm(r: &mut G, train: bool) -> Spec {
        // At least 6 values per channel: with 2 or 3 the normalised output is nearly constant and
        // so curved that central differences are meaningless.
        let c = dim(r, 1, 3);
        let mut s = vec![dim(r, 2, 3), c];
        s.extend((0..r.below(3)).map(|_| dim(r, 1, 3)));
        while s.iter().product::<usize>() / c < 6 {
            s[0] += 1;
        }
        let eps = if coin(r) { 1e-5 } else { uni(r, 1e-3, 1e-1) };
        let stats = if train {
            vec![vec![0.0; c], vec![0.0; c], vec![0.0]]
        } else {
            vec![
                (0..c).map(|_| uni(r, -1.0, 1.0)).collect(),
                (0..c).map(|_| uni(r, 0.2, 2.0)).collect(),
                vec![uni(r, 0.5, 2.0)],
            ]
        };
        let sp = spec(
            format!(
                "type: \"BatchNorm\" batch_norm_param {{ use_global_stats: {} eps: {eps} }}",
                !train
            ),
            vec![(s, Fill::U(-2.0, 2.0))],
        )
        .params(stats);
        if train { sp.train() } else { sp }
    }

    pub fn batch_norm_train(r: &mut G) -> Spec {
        batch_norm(r, true)
    }

    pub fn batch_norm_global(r: &mut G) -> Spec {
        batch_norm(r, false)
    }

    /// Scale or Bias: 1 bottom and a parameter, or 2 bottoms (the second the scale / bias).
    pub fn scale_bias(r: &mut G, ty: &str, two_bottoms: bool) -> Spec {
        let s = vec![dim(r, 1, 3), dim(r, 1, 3), dim(r, 1, 3), dim(r, 1, 2)];
        let axis = pick(r, 0, 2);
        let num_axes = r.below(s.len() - axis + 1);
        let other = s[axis..axis + num_axes].to_vec();
        let (field, extra) = if ty == "Scale" {
            ("scale_param", format!(" bias_term: {}", coin(r)))
        } else {
            ("bias_param", String::new())
        };
        let proto =
            format!("type: \"{ty}\" {field} {{ axis: {axis} num_axes: {num_axes}{extra} }}");
        let mut bottoms = vec![(s, Fill::U(-1.0, 1.0))];
        if two_bottoms {
            bottoms.push((other, Fill::U(-1.0, 1.0)));
        }
        spec(proto, bottoms)
    }

    pub fn scale(r: &mut G) -> Spec {
        scale_bias(r, "Scale", false)
    }

    pub fn scale_2bottom(r: &mut G) -> Spec {
        scale_bias(r, "Scale", true)
    }

    pub fn bias(r: &mut G) -> Spec {
        scale_bias(r, "Bias", false)
    }

    pub fn bias_2bottom(r: &mut G) -> Spec {
        scale_bias(r, "Bias", true)
    }

    pub fn eltwise(r: &mut G, op: &str) -> Spec {
        let n = pick(r, 2, 3);
        let s = shape(r, 4, 3);
        let mut extra = String::new();
        let fill = match op {
            "SUM" => {
                for _ in 0..n {
                    extra.push_str(&format!(" coeff: {}", uni(r, -2.0, 2.0)));
                }
                Fill::U(-1.0, 1.0)
            }
            "PROD" => {
                extra = format!(" stable_prod_grad: {}", coin(r));
                Fill::Away(-1.5, 1.5, vec![0.0])
            }
            _ => Fill::Distinct,
        };
        spec(
            format!("type: \"Eltwise\" eltwise_param {{ operation: {op}{extra} }}"),
            (0..n).map(|_| (s.clone(), fill.clone())).collect(),
        )
    }

    pub fn eltwise_sum(r: &mut G) -> Spec {
        eltwise(r, "SUM")
    }

    pub fn eltwise_prod(r: &mut G) -> Spec {
        eltwise(r, "PROD")
    }

    pub fn eltwise_max(r: &mut G) -> Spec {
        eltwise(r, "MAX")
    }

    pub fn lrn(r: &mut G, across: bool) -> Spec {
        let size = [3, 5][r.below(2)];
        let (alpha, beta, k) = (uni(r, 0.5, 2.0), uni(r, 0.5, 1.0), uni(r, 1.0, 2.0));
        let s = if across {
            vec![dim(r, 1, 2), dim(r, 2, 6), dim(r, 1, 3), dim(r, 1, 3)]
        } else {
            vec![dim(r, 1, 2), dim(r, 1, 2), dim(r, 2, 5), dim(r, 2, 5)]
        };
        spec(
            format!(
                "type: \"LRN\" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} \
                 norm_region: {} }}",
                if across {
                    "ACROSS_CHANNELS"
                } else {
                    "WITHIN_CHANNEL"
                }
            ),
            vec![(s, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn lrn_across(r: &mut G) -> Spec {
        lrn(r, true)
    }

    pub fn lrn_within(r: &mut G) -> Spec {
        lrn(r, false)
    }

    fn mvn_spec(r: &mut G, normalize_variance: bool) -> Spec {
        let s = vec![dim(r, 1, 2), dim(r, 1, 3), dim(r, 2, 3), dim(r, 2, 3)];
        spec(
            format!(
                "type: \"MVN\" mvn_param {{ normalize_variance: {normalize_variance} across_channels: {} }}",
                coin(r)
            ),
            vec![(s, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn mvn(r: &mut G) -> Spec {
        mvn_spec(r, true)
    }

    pub fn mvn_mean_only(r: &mut G) -> Spec {
        mvn_spec(r, false)
    }

    pub fn softmax(r: &mut G) -> Spec {
        let s = shape(r, 4, 4);
        let axis = r.below(s.len());
        spec(
            format!("type: \"Softmax\" softmax_param {{ axis: {axis} }}"),
            vec![(s, Fill::U(-2.0, 2.0))],
        )
    }

    pub fn softmax_loss(r: &mut G) -> Spec {
        let (n, c) = (dim(r, 1, 3), dim(r, 2, 4));
        let spatial: Vec<usize> = (0..r.below(3)).map(|_| dim(r, 1, 3)).collect();
        let mut x = vec![n, c];
        x.extend(&spatial);
        let mut label = vec![n];
        label.extend(&spatial);
        let norm = ["FULL", "VALID", "BATCH_SIZE", "NONE"][r.below(4)];
        // ignore_label 0 ignores the positions labelled 0.
        let ignore = if coin(r) { " ignore_label: 0" } else { "" };
        spec(
            format!("type: \"SoftmaxWithLoss\" loss_param {{ normalization: {norm}{ignore} }}"),
            vec![(x, Fill::U(-2.0, 2.0)), (label, Fill::Int(c))],
        )
    }

    pub fn softmax_loss_prob_top(r: &mut G) -> Spec {
        // The probabilities as a second top: their diff takes no part in backward (as in Caffe).
        softmax_loss(r).tops(2)
    }

    pub fn sigmoid_cross_entropy_loss(r: &mut G) -> Spec {
        let s = vec![dim(r, 1, 3), dim(r, 1, 4)];
        let norm = ["FULL", "VALID", "BATCH_SIZE", "NONE"][r.below(4)];
        spec(
            format!("type: \"SigmoidCrossEntropyLoss\" loss_param {{ normalization: {norm} }}"),
            vec![(s.clone(), Fill::U(-3.0, 3.0)), (s, Fill::U(0.0, 1.0))],
        )
    }

    pub fn euclidean_loss(r: &mut G) -> Spec {
        let (n, d) = (dim(r, 1, 3), dim(r, 1, 4));
        spec(
            "type: \"EuclideanLoss\"",
            vec![
                (vec![n, d], Fill::U(-1.0, 1.0)),
                (vec![n, d, 1], Fill::U(-1.0, 1.0)),
            ],
        )
    }

    pub fn hinge_loss(r: &mut G, l2: bool) -> Spec {
        let (n, d) = (dim(r, 1, 4), dim(r, 2, 5));
        spec(
            format!(
                "type: \"HingeLoss\" hinge_loss_param {{ norm: {} }}",
                if l2 { "L2" } else { "L1" }
            ),
            vec![
                (vec![n, d], Fill::Away(-2.0, 2.0, vec![-1.0, 1.0])),
                (vec![n], Fill::Int(d)),
            ],
        )
    }

    pub fn hinge_loss_l1(r: &mut G) -> Spec {
        hinge_loss(r, false)
    }

    pub fn hinge_loss_l2(r: &mut G) -> Spec {
        hinge_loss(r, true)
    }

    pub fn infogain_loss(r: &mut G) -> Spec {
        let (n, c) = (dim(r, 1, 4), dim(r, 2, 4));
        spec(
            "type: \"InfogainLoss\"",
            vec![
                (vec![n, c], Fill::U(-2.0, 2.0)),
                (vec![n], Fill::Int(c)),
                (vec![c, c], Fill::U(0.0, 1.0)),
            ],
        )
    }

    pub fn multinomial_logistic_loss(r: &mut G) -> Spec {
        let (n, c) = (dim(r, 1, 4), dim(r, 2, 5));
        spec(
            "type: \"MultinomialLogisticLoss\"",
            vec![(vec![n, c], Fill::U(0.2, 1.0)), (vec![n], Fill::Int(c))],
        )
    }

    fn contrastive(r: &mut G, legacy: bool) -> Spec {
        let (n, c) = (dim(r, 2, 5), dim(r, 1, 4));
        // |a - b|^2 is about c / 6: put the margin near it so both branches occur.
        let margin = if legacy {
            c as f32 / 6.0
        } else {
            (c as f32 / 6.0).sqrt()
        };
        spec(
            format!(
                "type: \"ContrastiveLoss\" contrastive_loss_param {{ margin: {margin} \
                 legacy_version: {legacy} }}"
            ),
            vec![
                (vec![n, c, 1, 1], Fill::U(-0.5, 0.5)),
                (vec![n, c, 1, 1], Fill::U(-0.5, 0.5)),
                (vec![n, 1, 1, 1], Fill::Int(2)),
            ],
        )
    }

    pub fn contrastive_loss(r: &mut G) -> Spec {
        contrastive(r, false)
    }

    pub fn contrastive_loss_legacy(r: &mut G) -> Spec {
        contrastive(r, true)
    }

    pub fn concat(r: &mut G) -> Spec {
        let base = shape(r, 4, 3);
        let axis = r.below(base.len());
        let n = pick(r, 1, 3);
        let bottoms = (0..n)
            .map(|_| {
                let mut s = base.clone();
                s[axis] = dim(r, 1, 3);
                (s, Fill::U(-1.0, 1.0))
            })
            .collect();
        spec(
            format!("type: \"Concat\" concat_param {{ axis: {axis} }}"),
            bottoms,
        )
    }

    pub fn slice(r: &mut G) -> Spec {
        let mut s = shape(r, 4, 3);
        let axis = r.below(s.len());
        s[axis] = dim(r, 2, 5);
        let mut points: Vec<usize> = (1..s[axis]).filter(|_| coin(r)).collect();
        if points.is_empty() {
            points.push(1);
        }
        let tops = points.len() + 1;
        let points: String = points
            .iter()
            .map(|p| format!(" slice_point: {p}"))
            .collect();
        spec(
            format!("type: \"Slice\" slice_param {{ axis: {axis}{points} }}"),
            vec![(s, Fill::U(-1.0, 1.0))],
        )
        .tops(tops)
    }

    pub fn split(r: &mut G) -> Spec {
        let tops = pick(r, 1, 3);
        neuron(r, "type: \"Split\"".into(), Fill::U(-1.0, 1.0)).tops(tops)
    }

    pub fn flatten(r: &mut G) -> Spec {
        let s = vec![dim(r, 1, 2), dim(r, 1, 3), dim(r, 1, 3), dim(r, 1, 3)];
        let axis = r.below(4);
        let end = axis + r.below(4 - axis);
        spec(
            format!("type: \"Flatten\" flatten_param {{ axis: {axis} end_axis: {end} }}"),
            vec![(s, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn reshape(r: &mut G) -> Spec {
        let s = vec![dim(r, 1, 2), dim(r, 1, 3), dim(r, 1, 3), dim(r, 1, 3)];
        spec(
            "type: \"Reshape\" reshape_param { shape { dim: 0 dim: -1 dim: 1 } }",
            vec![(s, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn crop(r: &mut G) -> Spec {
        let big = vec![dim(r, 1, 2), dim(r, 1, 3), dim(r, 2, 5), dim(r, 2, 5)];
        let axis = pick(r, 1, 3);
        let mut small = big.clone();
        let mut offsets = String::new();
        for a in axis..4 {
            small[a] = pick(r, 1, big[a]);
            offsets.push_str(&format!(" offset: {}", r.below(big[a] - small[a] + 1)));
        }
        spec(
            format!("type: \"Crop\" crop_param {{ axis: {axis}{offsets} }}"),
            vec![(big, Fill::U(-1.0, 1.0)), (small, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn tile(r: &mut G) -> Spec {
        let s = shape(r, 3, 3);
        let axis = r.below(s.len());
        spec(
            format!(
                "type: \"Tile\" tile_param {{ axis: {axis} tiles: {} }}",
                pick(r, 1, 3)
            ),
            vec![(s, Fill::U(-1.0, 1.0))],
        )
    }

    pub fn reduction(r: &mut G) -> Spec {
        let s = shape(r, 4, 3);
        let axis = r.below(s.len());
        let op = ["SUM", "ASUM", "SUMSQ", "MEAN"][r.below(4)];
        let coeff = uni(r, -2.0, 2.0);
        spec(
            format!(
                "type: \"Reduction\" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}"
            ),
            vec![(s, Fill::Away(-1.0, 1.0, vec![0.0]))],
        )
    }

    pub fn embed(r: &mut G) -> Spec {
        let input_dim = dim(r, 2, 5);
        let s = shape(r, 2, 3);
        spec(
            format!(
                "type: \"Embed\" embed_param {{ input_dim: {input_dim} num_output: {} bias_term: {} }}",
                dim(r, 1, 4),
                coin(r)
            ),
            vec![(s, Fill::Int(input_dim))],
        )
    }

    pub fn batch_reindex(r: &mut G) -> Spec {
        let n = dim(r, 1, 4);
        let mut s = vec![n];
        s.extend(shape(r, 2, 3));
        spec(
            "type: \"BatchReindex\"",
            vec![(s, Fill::U(-1.0, 1.0)), (vec![dim(r, 1, 5)], Fill::Int(n))],
        )
    }

    pub fn filter(r: &mut G) -> Spec {
        let n = dim(r, 1, 5);
        let tops = pick(r, 1, 2);
        let mut bottoms: Vec<(Vec<usize>, Fill)> = (0..tops)
            .map(|_| {
                let mut s = vec![n];
                s.extend(shape(r, 2, 3));
                (s, Fill::U(-1.0, 1.0))
            })
            .collect();
        bottoms.push((vec![n, 1], Fill::Int(2)));
        spec("type: \"Filter\"", bottoms).tops(tops)
    }

    pub fn parameter(r: &mut G) -> Spec {
        let dims: String = shape(r, 3, 3)
            .iter()
            .map(|d| format!(" dim: {d}"))
            .collect();
        spec(
            format!("type: \"Parameter\" parameter_param {{ shape {{{dims} }} }}"),
            vec![],
        )
    }

    pub fn silence(r: &mut G) -> Spec {
        let n = pick(r, 1, 2);
        spec(
            "type: \"Silence\"",
            (0..n)
                .map(|_| (shape(r, 3, 3), Fill::U(-1.0, 1.0)))
                .collect(),
        )
        .tops(0)
    }

    pub fn accuracy(r: &mut G) -> Spec {
        let (n, c) = (dim(r, 1, 5), dim(r, 2, 6));
        let ignore = if coin(r) { " ignore_label: 1" } else { "" };
        spec(
            format!(
                "type: \"Accuracy\" accuracy_param {{ top_k: {}{ignore} }}",
                pick(r, 1, c)
            ),
            vec![(vec![n, c], Fill::U(-1.0, 1.0)), (vec![n], Fill::Int(c))],
        )
        .tops(pick(r, 1, 2))
    }

    pub fn argmax(r: &mut G) -> Spec {
        let s = shape(r, 4, 4);
        let axis = if coin(r) {
            Some(r.below(s.len()))
        } else {
            None
        };
        let classes = match axis {
            Some(a) => s[a],
            None => s[1..].iter().product(),
        };
        let axis = axis.map(|a| format!(" axis: {a}")).unwrap_or_default();
        spec(
            format!(
                "type: \"ArgMax\" argmax_param {{ top_k: {} out_max_val: {}{axis} }}",
                pick(r, 1, classes),
                coin(r)
            ),
            vec![(s, Fill::U(-1.0, 1.0))],
        )
    }
}

/// Every dissimilar pair of a ContrastiveLoss case is clear of the margin (and of d = 0).
fn contrastive_smooth(case: &LayerCase) -> bool {
    let p = case.param.contrastive_loss_param.unwrap_or_default();
    let (a, b, sim) = (&case.bottoms[0].1, &case.bottoms[1].1, &case.bottoms[2].1);
    let c = a.len() / sim.len();
    sim.iter().enumerate().all(|(n, &s)| {
        let d2: f32 = (n * c..(n + 1) * c).map(|k| (a[k] - b[k]).powi(2)).sum();
        if s as i32 != 0 {
            true
        } else if p.legacy_version() {
            (p.margin() - d2).abs() > 0.1
        } else {
            (p.margin() - d2.sqrt()).abs() > 0.05 && d2.sqrt() > 0.05
        }
    })
}

// ---- the table ------------------------------------------------------------------------------
// Thresholds: Caffe's own test thresholds (1e-3 for most layers, 1e-2 for pooling, LRN, the losses,
// ...), never looser than 1e-2.

table! {
    convolution => row(make::convolution, &[0], 1e-3);
    convolution_3d => row(make::convolution_3d, &[0], 1e-3);
    deconvolution => row(make::deconvolution, &[0], 1e-3);
    im2col => row(make::im2col, &[0], 1e-2);
    inner_product => row(make::inner_product, &[0], 1e-3);
    pooling_max => row(make::pool_max, &[0], 1e-2);
    pooling_max_mask_top => row(make::pool_max_two_tops, &[0], 1e-2);
    pooling_ave => row(make::pool_ave, &[0], 1e-2);
    pooling_stochastic_test => row(make::pool_stochastic_test, &[0], 1e-2);
    pooling_stochastic_train => forward_only(make::pool_stochastic_train);
    spp => row(make::spp, &[0], 1e-2);
    relu => row(make::relu, &[0], 1e-3);
    absval => row(make::absval, &[0], 1e-3);
    bnll => row(make::bnll, &[0], 1e-3);
    sigmoid => row(make::sigmoid, &[0], 1e-3);
    tanh => row(make::tanh, &[0], 1e-3);
    elu => row(make::elu, &[0], 1e-3);
    exp => row(make::exp, &[0], 1e-3);
    log => row(make::log, &[0], 1e-3);
    power => row(make::power, &[0], 1e-2);
    swish => row(make::swish, &[0], 1e-3);
    clip => row(make::clip, &[0], 1e-3);
    threshold => forward_only(make::threshold);
    prelu => row(make::prelu, &[0], 1e-3);
    dropout_test => row(make::dropout_test, &[0], 1e-3);
    dropout_train => row(make::dropout_train, &[0], 1e-3);
    batch_norm_train => row(make::batch_norm_train, &[0], 1e-3);
    batch_norm_global_stats => Row {
        // The stored statistics have no gradient (as in Caffe): bottom only.
        params: Some(&[]),
        ..row(make::batch_norm_global, &[0], 1e-3)
    };
    scale => row(make::scale, &[0], 1e-3);
    scale_2bottom => row(make::scale_2bottom, &[0, 1], 1e-3);
    bias => row(make::bias, &[0], 1e-3);
    bias_2bottom => row(make::bias_2bottom, &[0, 1], 1e-3);
    eltwise_sum => row(make::eltwise_sum, &[0, 1], 1e-3);
    eltwise_prod => row(make::eltwise_prod, &[0, 1], 1e-3);
    eltwise_max => row(make::eltwise_max, &[0, 1], 1e-3);
    lrn_across_channels => row(make::lrn_across, &[0], 1e-2);
    lrn_within_channel => row(make::lrn_within, &[0], 1e-2);
    mvn => row(make::mvn, &[0], 1e-3);
    mvn_mean_only => row(make::mvn_mean_only, &[0], 1e-3);
    softmax => row(make::softmax, &[0], 1e-3);
    softmax_with_loss => row(make::softmax_loss, &[0], 1e-2);
    softmax_with_loss_prob_top => forward_only(make::softmax_loss_prob_top);
    sigmoid_cross_entropy_loss => row(make::sigmoid_cross_entropy_loss, &[0], 1e-2);
    euclidean_loss => row(make::euclidean_loss, &[0, 1], 1e-2);
    hinge_loss_l1 => row(make::hinge_loss_l1, &[0], 2e-3);
    hinge_loss_l2 => row(make::hinge_loss_l2, &[0], 1e-2);
    infogain_loss => row(make::infogain_loss, &[0], 1e-2);
    multinomial_logistic_loss => row(make::multinomial_logistic_loss, &[0], 1e-2);
    contrastive_loss => Row {
        smooth: Some(contrastive_smooth),
        ..row(make::contrastive_loss, &[0, 1], 1e-2)
    };
    contrastive_loss_legacy => Row {
        smooth: Some(contrastive_smooth),
        ..row(make::contrastive_loss_legacy, &[0, 1], 1e-2)
    };
    concat => row(make::concat, &[0, 1, 2], 1e-3);
    slice => row(make::slice, &[0], 1e-3);
    split => row(make::split, &[0], 1e-3);
    flatten => row(make::flatten, &[0], 1e-3);
    reshape => row(make::reshape, &[0], 1e-3);
    crop => row(make::crop, &[0], 1e-3);
    tile => row(make::tile, &[0], 1e-3);
    reduction => row(make::reduction, &[0], 1e-3);
    embed => row(make::embed, &[], 1e-2);
    batch_reindex => row(make::batch_reindex, &[0], 1e-3);
    filter => row(make::filter, &[0], 1e-3);
    parameter => row(make::parameter, &[], 1e-3);
    silence => row(make::silence, &[0], 1e-3);
    accuracy => forward_only(make::accuracy);
    argmax => forward_only(make::argmax);
}
