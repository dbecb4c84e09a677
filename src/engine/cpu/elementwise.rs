//! CPU element-wise kernels. Each op is matched once outside its loop so the inner loops stay
//! simple (and vectorisable); big tensors are split across rayon threads.
use rayon::prelude::*;

use super::{Memory, wide};
use crate::engine::View;
use crate::engine::kernels::Kernel;
use crate::engine::kernels::conv::EpilogueJunction;
use crate::engine::kernels::elementwise::{
    ChannelDims, ChannelStage, ElementwiseKernel, NaryOp, StageOp, StagePart, SumWeight, UnaryOp,
    dropout_threshold, pcg_hash,
};

/// Tensors at least this long are processed in parallel.
pub(super) const PAR_MIN: usize = 1 << 15;
/// Elements per parallel work item.
pub(super) const CHUNK: usize = 1 << 13;

/// Runs `f(start, chunk)` over `out` in chunks (in parallel when `out` is big).
pub(super) fn for_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= PAR_MIN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(k, c)| wide(|| f(k * CHUNK, c)));
    } else {
        wide(|| f(0, out));
    }
}

/// Runs `f(row_index, row)` over the rows of length `inner` of `out` (in parallel when big).
pub(super) fn for_rows(out: &mut [f32], inner: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if inner == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN && rayon::current_num_threads() > 1 {
        let min_rows = (CHUNK / inner).max(1);
        out.par_chunks_mut(inner)
            .enumerate()
            .with_min_len(min_rows)
            .for_each(|(r, row)| wide(|| f(r, row)));
    } else {
        wide(|| {
            for (r, row) in out.chunks_mut(inner).enumerate() {
                f(r, row);
            }
        });
    }
}

/// Sum of `a` (8 lanes so it vectorises).
pub(super) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = a.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += v;
    }
    s
}

/// Dot product of `a` and `b` (8 lanes).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// The output of a point-wise kernel together with its last operand, which an in-place layer
/// (top == bottom, or bottom diff == top diff) keeps in the output's own memory: then the kernel
/// reads each element just before overwriting it, and nothing is copied.
pub(super) enum Io<'a> {
    Apart { out: &'a mut [f32], last: &'a [f32] },
    InPlace(&'a mut [f32]),
}

impl Io<'_> {
    /// out[i] = f(i, last[i]).
    fn map1_at(self, f: impl Fn(usize, f32) -> f32 + Sync + Send) {
        match self {
            Io::Apart { out, last } => for_chunks(out, |s, c| {
                let n = c.len();
                for (k, (o, &v)) in c.iter_mut().zip(&last[s..s + n]).enumerate() {
                    *o = f(s + k, v);
                }
            }),
            Io::InPlace(out) => for_chunks(out, |s, c| {
                for (k, o) in c.iter_mut().enumerate() {
                    *o = f(s + k, *o);
                }
            }),
        }
    }

    /// out[i] = f(last[i]).
    fn map1(self, f: impl Fn(f32) -> f32 + Sync + Send) {
        self.map1_at(move |_, v| f(v));
    }

    /// out[i] = f(a[i], last[i]).
    fn map2(self, a: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) {
        match self {
            Io::Apart { out, last } => for_chunks(out, |s, c| {
                let n = c.len();
                for ((o, &p), &q) in c.iter_mut().zip(&a[s..s + n]).zip(&last[s..s + n]) {
                    *o = f(p, q);
                }
            }),
            Io::InPlace(out) => for_chunks(out, |s, c| {
                let n = c.len();
                for (o, &p) in c.iter_mut().zip(&a[s..s + n]) {
                    *o = f(p, *o);
                }
            }),
        }
    }

    /// out[i] = f(a[i], b[i], last[i]).
    fn map3(self, a: &[f32], b: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync + Send) {
        match self {
            Io::Apart { out, last } => for_chunks(out, |s, c| {
                let n = c.len();
                let (a, b, l) = (&a[s..s + n], &b[s..s + n], &last[s..s + n]);
                for (((o, &p), &q), &r) in c.iter_mut().zip(a).zip(b).zip(l) {
                    *o = f(p, q, r);
                }
            }),
            Io::InPlace(out) => for_chunks(out, |s, c| {
                let n = c.len();
                for ((o, &p), &q) in c.iter_mut().zip(&a[s..s + n]).zip(&b[s..s + n]) {
                    *o = f(p, q, *o);
                }
            }),
        }
    }

    fn fill(self, value: f32) {
        match self {
            Io::Apart { out, .. } | Io::InPlace(out) => out.fill(value),
        }
    }

    /// Row r (of length `inner`): out = f(&param(r), a, last) element by element (`a` = the
    /// same row of `extra`, or 0 without it).
    pub(super) fn map_rows<P>(
        self,
        inner: usize,
        extra: Option<&[f32]>,
        param: impl Fn(usize) -> P + Sync + Send,
        f: impl Fn(&P, f32, f32) -> f32 + Sync + Send,
    ) {
        let (out, last) = match self {
            Io::Apart { out, last } => (out, Some(last)),
            Io::InPlace(out) => (out, None),
        };
        for_rows(out, inner, |r, row| {
            let p = param(r);
            let range = r * inner..r * inner + row.len();
            match (extra, last) {
                (None, Some(l)) => {
                    let l = &l[range];
                    row.iter_mut().zip(l).for_each(|(o, &v)| *o = f(&p, 0.0, v));
                }
                (None, None) => row.iter_mut().for_each(|o| *o = f(&p, 0.0, *o)),
                (Some(a), Some(l)) => {
                    let (a, l) = (&a[range.clone()], &l[range]);
                    for ((o, &p2), &v) in row.iter_mut().zip(a).zip(l) {
                        *o = f(&p, p2, v);
                    }
                }
                (Some(a), None) => {
                    let a = &a[range];
                    row.iter_mut()
                        .zip(a)
                        .for_each(|(o, &p2)| *o = f(&p, p2, *o));
                }
            }
        });
    }
}

fn map1(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    Io::Apart { out: y, last: x }.map1(f);
}

fn map2(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) {
    Io::Apart { out: y, last: b }.map2(a, f);
}

fn map3(
    y: &mut [f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync + Send,
) {
    Io::Apart { out: y, last: c }.map3(a, b, f);
}

/// Caffe's sigmoid: 0.5 * tanh(0.5 * x) + 0.5 (evaluated in double as the C++ literals make it).
fn sigmoid(x: f32) -> f32 {
    (0.5 * (0.5 * x as f64).tanh() + 0.5) as f32
}

const BNLL_THRESHOLD: f32 = 50.0;

fn unary(op: UnaryOp, io: Io) {
    match op {
        UnaryOp::Relu { negative_slope: s } => io.map1(move |x| x.max(0.0) + s * x.min(0.0)),
        UnaryOp::Sigmoid => io.map1(sigmoid),
        UnaryOp::TanH => io.map1(f32::tanh),
        UnaryOp::AbsVal => io.map1(f32::abs),
        UnaryOp::Bnll => io.map1(|x| {
            if x > 0.0 {
                (x as f64 + (1.0 + (-x).exp() as f64).ln()) as f32
            } else {
                (1.0 + x.exp() as f64).ln() as f32
            }
        }),
        UnaryOp::Elu { alpha } => io.map1(move |x| x.max(0.0) + alpha * (x.min(0.0).exp() - 1.0)),
        UnaryOp::Power {
            power,
            scale,
            shift,
        } => {
            if power * scale == 0.0 {
                let value = if power == 0.0 { 1.0 } else { shift.powf(power) };
                io.fill(value);
            } else {
                io.map1(move |x| {
                    let mut v = x;
                    if scale != 1.0 {
                        v *= scale;
                    }
                    if shift != 0.0 {
                        v += shift;
                    }
                    if power != 1.0 {
                        v = v.powf(power);
                    }
                    v
                })
            }
        }
        UnaryOp::Exp {
            inner_scale,
            outer_scale,
        } => io.map1(move |x| {
            let v = if inner_scale == 1.0 {
                x
            } else {
                inner_scale * x
            };
            let v = v.exp();
            if outer_scale == 1.0 {
                v
            } else {
                v * outer_scale
            }
        }),
        UnaryOp::Log {
            scale,
            shift,
            base_scale,
        } => io.map1(move |x| {
            let mut v = x;
            if scale != 1.0 {
                v *= scale;
            }
            if shift != 0.0 {
                v += shift;
            }
            let v = v.ln();
            if base_scale == 1.0 { v } else { v * base_scale }
        }),
        UnaryOp::Threshold { threshold } => io.map1(move |x| if x > threshold { 1.0 } else { 0.0 }),
        UnaryOp::Clip { min, max } => io.map1(move |x| min.max(x.min(max))),
        UnaryOp::Swish { beta } => io.map1(move |x| x * sigmoid(x * beta)),
    }
}

fn step(c: bool) -> f32 {
    if c { 1.0 } else { 0.0 }
}

/// dx from (x, y, dy); `io` holds dx and dy.
fn unary_backward(op: UnaryOp, x: &[f32], y: &[f32], io: Io) {
    match op {
        UnaryOp::Relu { negative_slope: s } => {
            io.map2(x, move |x, d| d * (step(x > 0.0) + s * step(x <= 0.0)))
        }
        UnaryOp::Sigmoid => io.map2(y, |y, d| (d as f64 * y as f64 * (1.0 - y as f64)) as f32),
        UnaryOp::TanH => io.map2(y, |y, d| d * (1.0 - y * y)),
        UnaryOp::AbsVal => io.map2(x, |x, d| (step(0.0 < x) - step(x < 0.0)) * d),
        UnaryOp::Bnll => io.map2(x, |x, d| {
            let e = x.min(BNLL_THRESHOLD).exp() as f64;
            (d as f64 * e / (e + 1.0)) as f32
        }),
        UnaryOp::Elu { alpha } => io.map3(x, y, move |x, y, d| {
            d * (step(x > 0.0) + (alpha + y) * step(x <= 0.0))
        }),
        UnaryOp::Power {
            power,
            scale,
            shift,
        } => {
            let diff_scale = power * scale;
            if diff_scale == 0.0 {
                io.fill(0.0);
            } else if power == 1.0 {
                io.map1(move |d| d * diff_scale);
            } else if power == 2.0 {
                let (a, b) = (diff_scale * scale, diff_scale * shift);
                if shift != 0.0 {
                    io.map2(x, move |x, d| d * (a * x + b));
                } else {
                    io.map2(x, move |x, d| d * (a * x));
                }
            } else if shift == 0.0 {
                io.map3(x, y, move |x, y, d| d * ((y / x) * power));
            } else {
                io.map3(x, y, move |x, y, d| {
                    let mut v = x;
                    if scale != 1.0 {
                        v *= scale;
                    }
                    v += shift;
                    let mut g = y / v;
                    if diff_scale != 1.0 {
                        g *= diff_scale;
                    }
                    d * g
                });
            }
        }
        UnaryOp::Exp { inner_scale, .. } => io.map2(y, move |y, d| {
            let g = y * d;
            if inner_scale == 1.0 {
                g
            } else {
                g * inner_scale
            }
        }),
        UnaryOp::Log {
            scale,
            shift,
            base_scale,
        } => {
            let num_scale = scale * base_scale;
            io.map2(x, move |x, d| {
                let mut v = x;
                if scale != 1.0 {
                    v *= scale;
                }
                if shift != 0.0 {
                    v += shift;
                }
                let mut g = 1.0 / v;
                if num_scale != 1.0 {
                    g *= num_scale;
                }
                d * g
            })
        }
        UnaryOp::Threshold { .. } => io.fill(0.0),
        UnaryOp::Clip { min, max } => io.map2(x, move |x, d| d * step(x >= min && x <= max)),
        UnaryOp::Swish { beta } => io.map3(x, y, move |x, y, d| {
            let s = sigmoid(x * beta) as f64;
            let by = (beta * y) as f64;
            (d as f64 * (by + s * (1.0 - by))) as f32
        }),
    }
}

fn nary(op: &NaryOp, xs: &[&[f32]], y: &mut [f32], argmax: Option<&mut [f32]>) {
    match op {
        NaryOp::Sum { coeffs } => for_chunks(y, |s, yc| {
            yc.fill(0.0);
            let n = yc.len();
            for (x, &c) in xs.iter().zip(coeffs) {
                for (o, &v) in yc.iter_mut().zip(&x[s..s + n]) {
                    *o += c * v;
                }
            }
        }),
        NaryOp::Prod { .. } => for_chunks(y, |s, yc| {
            let n = yc.len();
            for ((o, &a), &b) in yc.iter_mut().zip(&xs[0][s..s + n]).zip(&xs[1][s..s + n]) {
                *o = a * b;
            }
            for x in &xs[2..] {
                for (o, &v) in yc.iter_mut().zip(&x[s..s + n]) {
                    *o *= v;
                }
            }
        }),
        NaryOp::Max => {
            let mut scratch: Vec<f32>;
            let mask = match argmax {
                Some(m) => m,
                None => {
                    scratch = vec![0f32; y.len()];
                    &mut scratch[..]
                }
            };
            let work = |s: usize, yc: &mut [f32], mc: &mut [f32]| {
                let n = yc.len();
                for (((o, m), &a), &b) in yc
                    .iter_mut()
                    .zip(mc.iter_mut())
                    .zip(&xs[0][s..s + n])
                    .zip(&xs[1][s..s + n])
                {
                    if a > b {
                        *o = a;
                        *m = 0.0;
                    } else {
                        *o = b;
                        *m = 1.0;
                    }
                }
                for (j, x) in xs.iter().enumerate().skip(2) {
                    for ((o, m), &v) in yc.iter_mut().zip(mc.iter_mut()).zip(&x[s..s + n]) {
                        if v > *o {
                            *o = v;
                            *m = j as f32;
                        }
                    }
                }
            };
            if y.len() >= PAR_MIN && rayon::current_num_threads() > 1 {
                y.par_chunks_mut(CHUNK)
                    .zip(mask.par_chunks_mut(CHUNK))
                    .enumerate()
                    .for_each(|(k, (yc, mc))| work(k * CHUNK, yc, mc));
            } else {
                work(0, y, mask);
            }
        }
    }
}

fn nary_backward(
    op: &NaryOp,
    index: usize,
    xs: &[&[f32]],
    y: &[f32],
    argmax: Option<&[f32]>,
    dy: &[f32],
    dx: &mut [f32],
) {
    match op {
        NaryOp::Sum { coeffs } => {
            let c = coeffs[index];
            map1(dx, dy, move |d| d * c);
        }
        NaryOp::Prod { stable: true } => for_chunks(dx, |s, dc| {
            let n = dc.len();
            let mut first = true;
            for (j, x) in xs.iter().enumerate() {
                if j == index {
                    continue;
                }
                if first {
                    dc.copy_from_slice(&x[s..s + n]);
                    first = false;
                } else {
                    for (o, &v) in dc.iter_mut().zip(&x[s..s + n]) {
                        *o *= v;
                    }
                }
            }
            if first {
                dc.fill(1.0);
            }
            for (o, &d) in dc.iter_mut().zip(&dy[s..s + n]) {
                *o *= d;
            }
        }),
        NaryOp::Prod { stable: false } => map3(dx, y, xs[index], dy, |y, x, d| (y / x) * d),
        NaryOp::Max => {
            let mask = argmax.expect("Eltwise MAX backward needs the forward's argmax");
            let i = index as f32;
            map2(dx, mask, dy, move |m, d| if m == i { d } else { 0.0 });
        }
    }
}

/// A [`ChannelStage`] with its per-channel operands resolved to slices.
enum Step<'a> {
    Normalize {
        mean: &'a [f32],
        std: &'a [f32],
    },
    Affine {
        scale: Option<&'a [f32]>,
        bias: Option<&'a [f32]>,
    },
    Unary(UnaryOp),
    Sum {
        coeffs: &'a [f32],
        others: Vec<&'a [f32]>,
    },
}

impl Step<'_> {
    /// Applies the step to the elements `at..at + row.len()`, of channel `c`, with the
    /// arithmetic of the step's own kernel.
    #[inline(always)]
    fn apply(&self, c: usize, at: usize, row: &mut [f32]) {
        match *self {
            Step::Sum { coeffs, ref others } => {
                let c0 = coeffs[0];
                row.iter_mut().for_each(|v| *v = 0.0 + c0 * *v);
                let len = row.len();
                for (x, &k) in others.iter().zip(&coeffs[1..]) {
                    for (v, &x) in row.iter_mut().zip(&x[at..at + len]) {
                        *v += k * x;
                    }
                }
            }
            Step::Normalize { mean, std } => {
                let (m, s) = (mean[c], std[c]);
                row.iter_mut().for_each(|v| *v = (*v - m) / s);
            }
            Step::Affine {
                scale: Some(scale),
                bias: Some(bias),
            } => {
                let (sc, b) = (scale[c], bias[c]);
                row.iter_mut().for_each(|v| *v = *v * sc + b);
            }
            Step::Affine {
                scale: Some(scale),
                bias: None,
            } => {
                let sc = scale[c];
                row.iter_mut().for_each(|v| *v *= sc);
            }
            Step::Affine {
                scale: None,
                bias: Some(bias),
            } => {
                let b = bias[c];
                row.iter_mut().for_each(|v| *v += b);
            }
            Step::Affine {
                scale: None,
                bias: None,
            } => {}
            Step::Unary(op) => unary(op, Io::InPlace(row)),
        }
    }
}

/// The operands of a [`ChannelStage`] list besides the values it runs over, checked against
/// `dims`: outputs (each Normalize's std, then each save) and inputs (the per-channel operands
/// and the Sum's others, in stage order).
pub(super) struct StageOperands {
    pub outs: Vec<View>,
    pub ins: Vec<View>,
    stds: usize,
}

pub(super) fn stage_operands(
    dims: ChannelDims,
    stages: &[ChannelStage],
) -> anyhow::Result<StageOperands> {
    let (mut outs, mut ins) = (Vec::new(), Vec::new());
    for stage in stages {
        match &stage.op {
            &StageOp::Normalize { mean, var, std, .. } => {
                check_len(&[mean, var, std], dims.channels)?;
                outs.push(std);
                ins.extend([mean, var]);
            }
            &StageOp::Affine { scale, bias } => {
                for v in [scale, bias].into_iter().flatten() {
                    check_len(&[v], dims.channels)?;
                    ins.push(v);
                }
            }
            StageOp::Unary(_) => {}
            StageOp::Sum { coeffs, others } => {
                anyhow::ensure!(
                    coeffs.len() == others.len() + 1,
                    "Sum step: {} coefficients for {} inputs",
                    coeffs.len(),
                    others.len() + 1
                );
                check_len(others, dims.count())?;
                ins.extend(others);
            }
        }
    }
    let stds = outs.len();
    for save in stages.iter().filter_map(|s| s.save) {
        check_len(&[save], dims.count())?;
        outs.push(save);
    }
    Ok(StageOperands { outs, ins, stds })
}

/// The steps of a [`ChannelStage`] list with their operands resolved to slices, applied row by
/// row (a row: the elements of one channel in one outer index).
pub(super) struct RowSteps<'a> {
    steps: Vec<Step<'a>>,
    /// Which save (in stage order) receives each step's input.
    saved_by: Vec<Option<usize>>,
}

impl<'a> RowSteps<'a> {
    /// Writes each Normalize's std and resolves the operands: `outs` and `ins` are the slices
    /// of [`StageOperands`]' views. Returns the steps and the saves' slices.
    pub(super) fn new<'b>(
        stages: &'a [ChannelStage],
        operands: &StageOperands,
        outs: &'a mut [&'b mut [f32]],
        ins: &[&'a [f32]],
    ) -> (RowSteps<'a>, &'a mut [&'b mut [f32]]) {
        let (std_outs, save_outs) = outs.split_at_mut(operands.stds);
        let mut inputs = ins.iter();
        let mut std_outs = std_outs.iter_mut();
        let mut steps = Vec::with_capacity(stages.len());
        let mut saved_by = Vec::with_capacity(stages.len());
        let mut saves = 0;
        for stage in stages {
            let step = match &stage.op {
                &StageOp::Normalize { eps, eps_mode, .. } => {
                    let (mean, var) = (inputs.next().unwrap(), inputs.next().unwrap());
                    let std = std_outs.next().unwrap();
                    for (s, &v) in std.iter_mut().zip(*var) {
                        *s = super::norm::std_of(v, eps, eps_mode);
                    }
                    Step::Normalize { mean, std }
                }
                StageOp::Affine { scale, bias } => Step::Affine {
                    scale: scale.map(|_| *inputs.next().unwrap()),
                    bias: bias.map(|_| *inputs.next().unwrap()),
                },
                &StageOp::Unary(op) => Step::Unary(op),
                StageOp::Sum { coeffs, others } => Step::Sum {
                    coeffs,
                    others: others.iter().map(|_| *inputs.next().unwrap()).collect(),
                },
            };
            steps.push(step);
            saved_by.push(stage.save.map(|_| {
                saves += 1;
                saves - 1
            }));
        }
        (RowSteps { steps, saved_by }, save_outs)
    }

    /// Runs the steps over `row`, the elements `at..at + row.len()` of channel `c`; `save(k,
    /// values)` stores a step's input as the same elements of save k.
    #[inline(always)]
    pub(super) fn apply(
        &self,
        c: usize,
        at: usize,
        row: &mut [f32],
        mut save: impl FnMut(usize, &[f32]),
    ) {
        for (step, saved) in self.steps.iter().zip(&self.saved_by) {
            if let Some(k) = *saved {
                save(k, row);
            }
            step.apply(c, at, row);
        }
    }
}

/// The operands of an [`EpilogueJunction`] besides the convolution's output, checked against
/// `dims`: outputs (the SUM's top, then its steps' outputs) and inputs (the other bottoms, then
/// its steps' inputs).
pub(super) struct JunctionOperands {
    pub outs: Vec<View>,
    pub ins: Vec<View>,
    stages: StageOperands,
    others: usize,
}

impl JunctionOperands {
    pub(super) fn new(dims: ChannelDims, junction: &EpilogueJunction) -> anyhow::Result<Self> {
        anyhow::ensure!(
            junction.coeffs.len() == junction.bottoms.len()
                && junction.position < junction.bottoms.len(),
            "junction: {} coefficients for {} bottoms, the convolution's output at {}",
            junction.coeffs.len(),
            junction.bottoms.len(),
            junction.position
        );
        let others: Vec<View> = junction.others().collect();
        check_len(&others, dims.count())?;
        check_len(&[junction.top], dims.count())?;
        let stages = stage_operands(dims, &junction.stages)?;
        Ok(JunctionOperands {
            outs: std::iter::once(junction.top)
                .chain(stages.outs.iter().copied())
                .collect(),
            ins: others.iter().chain(&stages.ins).copied().collect(),
            stages,
            others: others.len(),
        })
    }
}

/// A save's elements, written by plane from several threads.
#[derive(Clone, Copy)]
struct SavePtr(*mut f32);
// SAFETY: each plane's elements are written by one thread only (see PlaneEpilogue::apply).
unsafe impl Send for SavePtr {}
unsafe impl Sync for SavePtr {}

/// A convolution's forward epilogue, applied to each output plane (image b, channel c; `plane`
/// elements) as soon as it is computed, while it is in cache: the bias, then the
/// [`crate::engine::kernels::conv::ConvGemm::epilogue`] steps, with the arithmetic of their own
/// kernels (AddChannelBias, then the ChannelStages pass).
pub(super) struct PlaneEpilogue<'a> {
    bias: Option<&'a [f32]>,
    steps: RowSteps<'a>,
    saves: Vec<SavePtr>,
    junction: Option<PlaneJunction<'a>>,
    channels: usize,
    plane: usize,
    /// Elements of the whole output.
    count: usize,
}

/// An [`EpilogueJunction`] with its operands resolved: the top and the saves of its steps are
/// written by plane through shared pointers, as the epilogue's saves.
struct PlaneJunction<'a> {
    coeffs: &'a [f32],
    position: usize,
    others: Vec<&'a [f32]>,
    top: SavePtr,
    steps: RowSteps<'a>,
    saves: Vec<SavePtr>,
}

/// Pointers to the save slices, each checked to hold `count` elements.
fn save_pointers(saves: &mut [&mut [f32]], count: usize) -> Vec<SavePtr> {
    saves
        .iter_mut()
        .map(|s| {
            assert!(
                s.len() >= count,
                "epilogue output shorter than the convolution's"
            );
            SavePtr(s.as_mut_ptr())
        })
        .collect()
}

/// Elements `at..at + len` of an output that [`PlaneEpilogue`] writes by plane.
///
/// # Safety
/// The output holds at least `at + len` elements, and no other thread touches them meanwhile.
unsafe fn plane_of<'b>(out: SavePtr, at: usize, len: usize) -> &'b mut [f32] {
    // SAFETY: the caller's.
    unsafe { std::slice::from_raw_parts_mut(out.0.add(at), len) }
}

impl<'a> PlaneEpilogue<'a> {
    /// `dims` = (images, channels, plane); `outs` / `ins` as for [`RowSteps::new`].
    pub(super) fn new(
        dims: ChannelDims,
        bias: Option<&'a [f32]>,
        stages: &'a [ChannelStage],
        operands: &StageOperands,
        outs: &'a mut [&mut [f32]],
        ins: &[&'a [f32]],
    ) -> Self {
        let (steps, saves) = RowSteps::new(stages, operands, outs, ins);
        PlaneEpilogue {
            bias,
            steps,
            saves: save_pointers(saves, dims.count()),
            junction: None,
            channels: dims.channels,
            plane: dims.inner,
            count: dims.count(),
        }
    }

    /// Adds the junction to the epilogue: `outs` and `ins` are the slices of
    /// [`JunctionOperands`]' views.
    pub(super) fn join(
        &mut self,
        junction: &'a EpilogueJunction,
        operands: &JunctionOperands,
        outs: &'a mut [&mut [f32]],
        ins: &[&'a [f32]],
    ) {
        let (top, stage_outs) = outs.split_at_mut(1);
        let (others, stage_ins) = ins.split_at(operands.others);
        let (steps, saves) =
            RowSteps::new(&junction.stages, &operands.stages, stage_outs, stage_ins);
        self.junction = Some(PlaneJunction {
            coeffs: &junction.coeffs,
            position: junction.position,
            others: others.to_vec(),
            top: save_pointers(top, self.count)[0],
            steps,
            saves: save_pointers(saves, self.count),
        });
    }

    /// Whether there is anything to do.
    pub(super) fn is_empty(&self) -> bool {
        self.bias.is_none() && self.steps.steps.is_empty() && self.junction.is_none()
    }

    /// Applies the epilogue to every plane of image `b`, whose output is `image`, on 16 lanes.
    ///
    /// # Safety
    /// As for [`PlaneEpilogue::apply`]: one task at a time finishes an image.
    pub(super) unsafe fn apply_image(&self, b: usize, image: &mut [f32]) {
        if self.is_empty() {
            return;
        }
        super::wide(|| {
            for (c, plane) in image.chunks_exact_mut(self.plane).enumerate() {
                // SAFETY: the caller's.
                unsafe { self.apply(b * self.channels + c, plane) };
            }
        });
    }

    /// Applies the epilogue to plane `index` (= b * channels + c) of the output.
    ///
    /// # Safety
    /// Each plane index may be applied once at a time: concurrent calls need distinct indices
    /// (they write the saves' elements of their plane through shared pointers).
    ///
    /// Inlined so that callers inside [`super::wide`] run its loops on 16 lanes.
    #[inline(always)]
    pub(super) unsafe fn apply(&self, index: usize, plane: &mut [f32]) {
        debug_assert_eq!(plane.len(), self.plane);
        let c = index % self.channels;
        if let Some(bias) = self.bias {
            let b = bias[c];
            plane.iter_mut().for_each(|v| *v += b);
        }
        let at = index * self.plane;
        // SAFETY (the saves and the junction's top below): the caller applies this plane on
        // this thread alone; they hold at least dims.count() elements (checked in new and join).
        self.steps.apply(c, at, plane, |k, values| {
            unsafe { plane_of(self.saves[k], at, values.len()) }.copy_from_slice(values);
        });
        let Some(j) = &self.junction else {
            return;
        };
        let top = unsafe { plane_of(j.top, at, plane.len()) };
        // The Eltwise SUM's arithmetic: 0 + coeffs[0] * bottoms[0], then + coeffs[k] * bottoms[k].
        let mut others = j.others.iter();
        for (k, &coeff) in j.coeffs.iter().enumerate() {
            let bottom = if k == j.position {
                &*plane
            } else {
                &others.next().expect("checked in JunctionOperands")[at..][..top.len()]
            };
            let pairs = top.iter_mut().zip(bottom);
            if k == 0 {
                pairs.for_each(|(t, &x)| *t = 0.0 + coeff * x);
            } else {
                pairs.for_each(|(t, &x)| *t += coeff * x);
            }
        }
        j.steps.apply(c, at, top, |k, values| {
            unsafe { plane_of(j.saves[k], at, values.len()) }.copy_from_slice(values);
        });
    }
}

/// A block of a [`ElementwiseKernel::ChannelStages`] pass: its first element, its values and
/// the same elements of each save.
type Block<'a> = (usize, &'a mut [f32], Vec<&'a mut [f32]>);

/// [`ElementwiseKernel::ChannelStages`]: each block of elements goes through every step while it
/// is in cache.
fn channel_stages(
    dims: ChannelDims,
    x: View,
    y: View,
    stages: &[ChannelStage],
    mem: &mut Memory,
) -> anyhow::Result<()> {
    check_len(&[x, y], dims.count())?;
    let operands = stage_operands(dims, stages)?;
    let outs: Vec<View> = [y]
        .into_iter()
        .chain(operands.outs.iter().copied())
        .collect();
    let ins: Vec<View> = [x]
        .into_iter()
        .chain(operands.ins.iter().copied())
        .collect();
    let inner = dims.inner;
    if dims.count() == 0 {
        return Ok(());
    }
    mem.with_pointwise(&outs, &ins, |io, o, i| {
        let (steps, save_outs) = RowSteps::new(stages, &operands, o, i);
        let (out, x) = match io {
            Io::Apart { out, last } => (out, Some(last)),
            Io::InPlace(out) => (out, None),
        };
        // Blocks of CHUNK elements, each with the same elements of every save; a block goes
        // through the steps in pieces of one row (one channel) each.
        let mut blocks: Vec<Block> = out
            .chunks_mut(CHUNK)
            .enumerate()
            .map(|(b, block)| (b * CHUNK, block, Vec::new()))
            .collect();
        for save in save_outs.iter_mut() {
            for (block, part) in blocks.iter_mut().zip(save.chunks_mut(CHUNK)) {
                block.2.push(part);
            }
        }
        let run_block = |(first, block, mut saves): Block| {
            wide(|| {
                if let Some(x) = x {
                    block.copy_from_slice(&x[first..first + block.len()]);
                }
                let mut at = 0;
                while at < block.len() {
                    let row = (first + at) / inner;
                    let end = ((row + 1) * inner - first).min(block.len());
                    let piece = &mut block[at..end];
                    steps.apply(row % dims.channels, first + at, piece, |k, values| {
                        saves[k][at..at + values.len()].copy_from_slice(values)
                    });
                    at = end;
                }
            })
        };
        if out_len_is_big(dims.count()) {
            blocks.into_par_iter().for_each(run_block);
        } else {
            blocks.into_iter().for_each(run_block);
        }
    });
    Ok(())
}

/// Elements per parallel block of a [`ElementwiseKernel::JunctionBackward`], and per piece of
/// a block.
const JUNCTION_BLOCK: usize = 1 << 16;
const JUNCTION_PIECE: usize = 1024;

/// [`ElementwiseKernel::JunctionBackward`]: each piece of elements goes through the sums, the
/// neuron's backward and the outs while it is in cache. Operands that share a tensor with an
/// output run as the parts.
fn junction_backward(
    kernel: &ElementwiseKernel,
    sums: &[View],
    neuron_grad: Option<(UnaryOp, View, View)>,
    dy: View,
    outs: &[(f32, View)],
    mem: &mut Memory,
) -> anyhow::Result<()> {
    let n = dy.len;
    let neuron_ins: Vec<View> = neuron_grad.iter().flat_map(|&(_, x, y)| [x, y]).collect();
    check_len(sums, n)?;
    check_len(&neuron_ins, n)?;
    let dxs: Vec<View> = outs.iter().map(|o| o.1).collect();
    check_len(&dxs, n)?;
    // dy is written when the sums or the neuron change it, read as it is otherwise.
    let writes_dy = !sums.is_empty() || neuron_grad.is_some();
    let out_views: Vec<View> = writes_dy.then_some(dy).into_iter().chain(dxs).collect();
    let in_views: Vec<View> = sums
        .iter()
        .copied()
        .chain(neuron_ins)
        .chain((!writes_dy).then_some(dy))
        .collect();
    let apart = out_views.iter().enumerate().all(|(k, o)| {
        out_views[k + 1..].iter().all(|p| p.id != o.id) && in_views.iter().all(|i| i.id != o.id)
    });
    if !apart || n == 0 {
        for part in kernel.junction_backward_parts().unwrap_or_default() {
            match part {
                StagePart::Copy { src, dst } | StagePart::Move { src, dst } => {
                    mem.with(&[dst], &[src], |o, i| o[0].copy_from_slice(i[0]))
                }
                StagePart::Launch(k) => match *k {
                    Kernel::Elementwise(k) => run(&k, mem)?,
                    Kernel::Blas(k) => super::blas::run(&k, mem)?,
                    _ => unreachable!("JunctionBackward parts are point-wise"),
                },
            }
        }
        return Ok(());
    }
    let coeffs: Vec<f32> = outs.iter().map(|o| o.0).collect();
    mem.with(&out_views, &in_views, |o, i| {
        let (sum_ins, rest) = i.split_at(sums.len());
        let (neuron_ins, rest) = rest.split_at(2 * usize::from(neuron_grad.is_some()));
        let read_dy = rest.first().copied();
        let mut blocks: Vec<(usize, Vec<&mut [f32]>)> = (0..n.div_ceil(JUNCTION_BLOCK))
            .map(|b| (b * JUNCTION_BLOCK, Vec::with_capacity(o.len())))
            .collect();
        for out in o.iter_mut() {
            for (block, part) in blocks.iter_mut().zip(out.chunks_mut(JUNCTION_BLOCK)) {
                block.1.push(part);
            }
        }
        let run_block = |(first, mut parts): (usize, Vec<&mut [f32]>)| {
            wide(|| {
                let len = (n - first).min(JUNCTION_BLOCK);
                // Pieces that stay in L1 between the steps, so every operand streams through
                // memory once, all of them side by side.
                for at in (0..len).step_by(JUNCTION_PIECE) {
                    let piece = at..(at + JUNCTION_PIECE).min(len);
                    let range = first + piece.start..first + piece.end;
                    let (dy, dxs): (&[f32], &mut [&mut [f32]]) = if writes_dy {
                        let (head, dxs) = parts.split_at_mut(1);
                        let dy: &mut [f32] = &mut head[0][piece.clone()];
                        if let Some((s0, rest)) = sum_ins.split_first() {
                            dy.copy_from_slice(&s0[range.clone()]);
                            for s in rest {
                                for (d, &v) in dy.iter_mut().zip(&s[range.clone()]) {
                                    *d += v;
                                }
                            }
                        }
                        if let Some((op, _, _)) = neuron_grad {
                            let (x, y) = (&neuron_ins[0][range.clone()], &neuron_ins[1][range]);
                            unary_backward(op, x, y, Io::InPlace(dy));
                        }
                        (dy, dxs)
                    } else {
                        (&read_dy.expect("dy is an input")[range], &mut parts[..])
                    };
                    for (dx, &c) in dxs.iter_mut().zip(&coeffs) {
                        for (d, &v) in dx[piece.clone()].iter_mut().zip(dy) {
                            *d = v * c;
                        }
                    }
                }
            })
        };
        if out_len_is_big(n) {
            blocks.into_par_iter().for_each(run_block);
        } else {
            blocks.into_iter().for_each(run_block);
        }
    });
    Ok(())
}

fn out_len_is_big(len: usize) -> bool {
    len >= PAR_MIN && rayon::current_num_threads() > 1
}

pub fn run(kernel: &ElementwiseKernel, mem: &mut Memory) -> anyhow::Result<()> {
    match kernel {
        ElementwiseKernel::JunctionBackward {
            sums,
            neuron_grad,
            dy,
            outs,
        } => junction_backward(kernel, sums, *neuron_grad, *dy, outs, mem)?,
        ElementwiseKernel::ChannelStages { dims, x, y, stages } => {
            channel_stages(*dims, *x, *y, stages, mem)?
        }
        ElementwiseKernel::Unary { op, x, y } => {
            check_len(&[*x], y.len)?;
            mem.with_pointwise(&[*y], &[*x], |io, _, _| unary(*op, io));
        }
        ElementwiseKernel::UnaryBackward { op, x, y, dy, dx } => {
            check_len(&[*x, *y, *dy], dx.len)?;
            mem.with_pointwise(&[*dx], &[*dy, *x, *y], |io, _, i| {
                unary_backward(*op, i[0], i[1], io)
            });
        }
        ElementwiseKernel::Nary { op, xs, y, argmax } => {
            anyhow::ensure!(
                xs.len() >= 2,
                "Nary kernel needs at least 2 inputs, got {}",
                xs.len()
            );
            check_len(xs, y.len)?;
            if let NaryOp::Sum { coeffs } = op {
                anyhow::ensure!(
                    coeffs.len() == xs.len(),
                    "Nary Sum: {} coefficients for {} inputs",
                    coeffs.len(),
                    xs.len()
                );
            }
            let mut outs = vec![*y];
            if let (NaryOp::Max, Some(m)) = (op, argmax) {
                check_len(&[*m], y.len)?;
                outs.push(*m);
            }
            mem.with(&outs, xs, |o, i| {
                let (first, rest) = o.split_at_mut(1);
                nary(op, i, first[0], rest.first_mut().map(|m| &mut **m));
            });
        }
        ElementwiseKernel::NaryBackward {
            op,
            index,
            xs,
            y,
            argmax,
            dy,
            dx,
        } => {
            anyhow::ensure!(
                *index < xs.len(),
                "NaryBackward index {index} out of {} inputs",
                xs.len()
            );
            check_len(xs, dx.len)?;
            check_len(&[*y, *dy], dx.len)?;
            let mut ins = xs.clone();
            ins.push(*y);
            ins.push(*dy);
            if let Some(m) = argmax {
                check_len(&[*m], dx.len)?;
                ins.push(*m);
            }
            let n = xs.len();
            mem.with(&[*dx], &ins, |o, i| {
                let mask = if argmax.is_some() {
                    Some(i[n + 2])
                } else {
                    None
                };
                nary_backward(op, *index, &i[..n], i[n], mask, i[n + 1], o[0]);
            });
        }
        ElementwiseKernel::ChannelAffine {
            dims,
            x,
            scale,
            bias,
            y,
        } => {
            check_len(&[*x], dims.count())?;
            check_len(&[*y], dims.count())?;
            let mut ins = vec![*x];
            for v in [scale, bias].into_iter().flatten() {
                check_len(&[*v], dims.channels)?;
                ins.push(*v);
            }
            let (has_scale, has_bias) = (scale.is_some(), bias.is_some());
            let dims = *dims;
            mem.with_pointwise(&[*y], &ins, |io, _, i| {
                let s = if has_scale { Some(i[0]) } else { None };
                let b = if has_bias {
                    Some(i[usize::from(has_scale)])
                } else {
                    None
                };
                let (inner, channels) = (dims.inner, dims.channels);
                match (s, b) {
                    (Some(s), Some(b)) => io.map_rows(
                        inner,
                        None,
                        |r| (s[r % channels], b[r % channels]),
                        |p, _, v| v * p.0 + p.1,
                    ),
                    (Some(s), None) => {
                        io.map_rows(inner, None, |r| s[r % channels], |sc, _, v| v * sc)
                    }
                    (None, Some(b)) => {
                        io.map_rows(inner, None, |r| b[r % channels], |bc, _, v| v + bc)
                    }
                    (None, None) => io.map1(|v| v),
                }
            });
        }
        &ElementwiseKernel::ChannelAffineBackward {
            dims,
            dy,
            neuron_grad,
            bias_grad,
            scale_grad,
            data_grad,
            norm_grad,
        } => {
            let sum_outs: Vec<View> = bias_grad
                .map(|b| b.0)
                .into_iter()
                .chain(scale_grad.map(|s| s.1))
                .collect();
            // One pass needs dx and the sums in tensors of their own, and dx = dy when the
            // neighbours' backwards join; otherwise run the parts.
            let joined = neuron_grad.is_some() || norm_grad.is_some();
            let fused = data_grad.filter(|&(_, dx)| {
                dims.count() > 0
                    && sum_outs.iter().all(|v| v.id != dx.id)
                    && sum_outs
                        .first()
                        .is_none_or(|a| sum_outs.iter().skip(1).all(|b| b.id != a.id))
                    && (!joined || dx == dy)
            });
            let Some((scale, dx)) = fused else {
                if joined {
                    for part in kernel.channel_affine_backward_joined_parts().unwrap() {
                        match part {
                            crate::engine::Kernel::Elementwise(part) => run(&part, mem)?,
                            crate::engine::Kernel::Norm(part) => super::norm::run(&part, mem)?,
                            _ => unreachable!("ChannelAffineBackward parts are point-wise"),
                        }
                    }
                    return Ok(());
                }
                for part in kernel.channel_affine_backward_parts().unwrap_or_default() {
                    run(&part, mem)?;
                }
                return Ok(());
            };
            check_len(&[dy, dx], dims.count())?;
            check_len(&[scale], dims.channels)?;
            check_len(&sum_outs, dims.channels)?;
            check_len(&norm_grad.into_iter().collect::<Vec<_>>(), dims.channels)?;
            let mut ins = vec![dy, scale];
            ins.extend(norm_grad);
            let per_element = ins.len();
            ins.extend(scale_grad.map(|s| s.0));
            ins.extend(neuron_grad.iter().flat_map(|&(_, x, y)| [x, y]));
            check_len(&ins[per_element..], dims.count())?;
            let mut outs = vec![dx];
            outs.extend(&sum_outs);
            let (channels, inner) = (dims.channels, dims.inner);
            mem.with_pointwise(&outs, &ins, |io, sum_out, i| {
                let mut i = i.iter().copied();
                let scale = i.next().unwrap();
                let std = norm_grad.map(|_| i.next().unwrap());
                let x = scale_grad.map(|_| i.next().unwrap());
                let neuron = neuron_grad.map(|(op, ..)| (op, i.next().unwrap(), i.next().unwrap()));
                let (out, dy) = match io {
                    Io::Apart { out, last } => (out, Some(last)),
                    Io::InPlace(out) => (out, None),
                };
                // Per (outer, channel) row: its sums of dy and dy * x, as ChannelSum forms them.
                let mut rows = vec![[0f32; 2]; dims.outer * channels];
                let row = |(r, (row, sums)): (usize, (&mut [f32], &mut [f32; 2]))| {
                    let range = r * inner..(r + 1) * inner;
                    if let Some((op, nx, ny)) = neuron {
                        // In place (dx is dy): the neuron's backward, as its own kernel.
                        unary_backward(
                            op,
                            &nx[range.clone()],
                            &ny[range.clone()],
                            Io::InPlace(row),
                        );
                    }
                    {
                        let d: &[f32] = dy.map_or(&*row, |dy| &dy[range.clone()]);
                        if bias_grad.is_some() {
                            sums[0] = sum(d);
                        }
                        if let Some(x) = x {
                            sums[1] = dot(d, &x[range.clone()]);
                        }
                    }
                    let k = scale[r % channels];
                    match dy {
                        Some(dy) => row
                            .iter_mut()
                            .zip(&dy[range])
                            .for_each(|(o, &v)| *o = v * k),
                        None => row.iter_mut().for_each(|o| *o *= k),
                    }
                    if let Some(std) = std {
                        // The frozen BatchNorm's backward, as its own kernel.
                        let s = std[r % channels];
                        row.iter_mut().for_each(|o| *o /= s);
                    }
                };
                if dims.count() >= PAR_MIN && rayon::current_num_threads() > 1 {
                    out.par_chunks_mut(inner)
                        .zip(rows.par_iter_mut())
                        .enumerate()
                        .with_min_len((PAR_MIN / 4 / inner).max(1))
                        .for_each(row);
                } else {
                    out.chunks_mut(inner)
                        .zip(rows.iter_mut())
                        .enumerate()
                        .for_each(row);
                }
                let betas = bias_grad
                    .map(|b| (0, b.1))
                    .into_iter()
                    .chain(scale_grad.map(|s| (1, s.2)));
                for ((which, beta), y) in betas.zip(sum_out.iter_mut()) {
                    for (c, yc) in y.iter_mut().enumerate() {
                        let total: f64 = (0..dims.outer)
                            .map(|o| rows[o * channels + c][which] as f64)
                            .sum();
                        let s = total as f32;
                        *yc = if beta == 0.0 { s } else { beta * *yc + s };
                    }
                }
            });
        }
        ElementwiseKernel::ChannelSum {
            dims,
            a,
            weight,
            beta,
            y,
        } => {
            check_len(&[*a], dims.count())?;
            check_len(&[*y], dims.channels)?;
            let mut ins = vec![*a];
            let neg = matches!(weight, SumWeight::ByNegPart(_));
            if let SumWeight::By(w) | SumWeight::ByNegPart(w) = weight {
                check_len(&[*w], dims.count())?;
                ins.push(*w);
            }
            let (dims, beta) = (*dims, *beta);
            mem.with(&[*y], &ins, |o, i| {
                let a = i[0];
                let w = i.get(1).copied();
                let one = |c: usize| -> f32 {
                    let mut total = 0f64;
                    let mut tmp = Vec::new();
                    for out in 0..dims.outer {
                        let start = (out * dims.channels + c) * dims.inner;
                        let ar = &a[start..start + dims.inner];
                        let part = match w {
                            None => sum(ar),
                            Some(w) if neg => {
                                tmp.clear();
                                tmp.extend(
                                    w[start..start + dims.inner].iter().map(|&v| v.min(0.0)),
                                );
                                dot(ar, &tmp)
                            }
                            Some(w) => dot(ar, &w[start..start + dims.inner]),
                        };
                        total += part as f64;
                    }
                    total as f32
                };
                let y = &mut *o[0];
                let update = |c: usize, yc: &mut f32| {
                    let s = one(c);
                    *yc = if beta == 0.0 { s } else { beta * *yc + s };
                };
                if dims.count() >= PAR_MIN && dims.channels > 1 && rayon::current_num_threads() > 1
                {
                    y.par_iter_mut()
                        .enumerate()
                        .for_each(|(c, yc)| update(c, yc));
                } else {
                    y.iter_mut().enumerate().for_each(|(c, yc)| update(c, yc));
                }
            });
        }
        ElementwiseKernel::PRelu { dims, x, slope, y } => {
            check_len(&[*x, *y], dims.count())?;
            check_len(&[*slope], dims.channels)?;
            let dims = *dims;
            mem.with_pointwise(&[*y], &[*x, *slope], |io, _, i| {
                let slope = i[0];
                io.map_rows(
                    dims.inner,
                    None,
                    |r| slope[r % dims.channels],
                    |a, _, v| v.max(0.0) + a * v.min(0.0),
                );
            });
        }
        ElementwiseKernel::PReluBackward {
            dims,
            x,
            slope,
            dy,
            dx,
        } => {
            check_len(&[*x, *dy, *dx], dims.count())?;
            check_len(&[*slope], dims.channels)?;
            let dims = *dims;
            mem.with_pointwise(&[*dx], &[*dy, *x, *slope], |io, _, i| {
                let (x, slope) = (i[0], i[1]);
                io.map_rows(
                    dims.inner,
                    Some(x),
                    |r| slope[r % dims.channels],
                    |a, v, d| d * (step(v > 0.0) + a * step(v <= 0.0)),
                );
            });
        }
        ElementwiseKernel::Dropout {
            seed,
            ratio,
            scale,
            x,
            y,
        } => {
            check_len(&[*x], y.len)?;
            // dropout_keep with the seed's hash and the threshold hoisted out of the loop.
            let (base, threshold, scale) = (pcg_hash(*seed), dropout_threshold(*ratio), *scale);
            mem.with_pointwise(&[*y], &[*x], |io, _, _| {
                io.map1_at(|k, v| {
                    let keep = pcg_hash((k as u32).wrapping_add(base)) >> 8 >= threshold;
                    if keep { v * scale } else { 0.0 }
                });
            });
        }
    }
    Ok(())
}

/// Every view must have `len` elements.
pub(super) fn check_len(views: &[View], len: usize) -> anyhow::Result<()> {
    for v in views {
        anyhow::ensure!(
            v.len == len,
            "kernel operand of {} elements where {len} are expected",
            v.len
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::engine::kernels::elementwise::{ChannelDims, dropout_keep};
    use crate::engine::{Engine, Kernel, whole};

    fn upload(eng: &mut CpuEngine, v: &[f32]) -> View {
        let id = eng.alloc(v.len());
        let view = whole(eng, id);
        eng.upload(view, v);
        view
    }

    /// The one-pass junction backward equals its parts bit for bit: within one block and over
    /// several blocks with a partial last one, with and without each part, in place.
    #[test]
    fn junction_backward_equals_its_parts() {
        let mut rng = crate::rng::Rng::new(9);
        let neurons = [
            None,
            Some(UnaryOp::Relu {
                negative_slope: 0.1,
            }),
            Some(UnaryOp::Elu { alpha: 0.5 }),
        ];
        let outs_of: [&[(f32, usize)]; 4] = [
            &[],
            &[(0.5, 6), (-2.0, 7)],
            &[(1.0, 6), (0.25, 7), (1.0, 8)],
            &[(0.5, 5), (-2.0, 7)],
        ];
        for n in [5, 2 * JUNCTION_BLOCK + 1000] {
            let init: Vec<Vec<f32>> = (0..9)
                .map(|_| (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect())
                .collect();
            for sums in [0, 2, 3] {
                for neuron in neurons {
                    for outs in outs_of {
                        let run = |fused: bool| {
                            let mut eng = CpuEngine::new();
                            let v: Vec<View> = init.iter().map(|d| upload(&mut eng, d)).collect();
                            let kernel = ElementwiseKernel::JunctionBackward {
                                sums: v[..sums].to_vec(),
                                neuron_grad: neuron.map(|op| (op, v[3], v[4])),
                                dy: v[5],
                                outs: outs.iter().map(|&(c, j)| (c, v[j])).collect(),
                            };
                            if fused {
                                eng.launch(&Kernel::Elementwise(kernel)).unwrap();
                            } else {
                                for part in kernel.junction_backward_parts().unwrap() {
                                    match part {
                                        StagePart::Copy { src, dst } => eng.copy(src, dst),
                                        StagePart::Move { .. } => unreachable!(),
                                        StagePart::Launch(k) => eng.launch(&k).unwrap(),
                                    }
                                }
                            }
                            v.iter().map(|&t| eng.download(t)).collect::<Vec<_>>()
                        };
                        let (fused, parts) = (run(true), run(false));
                        for (t, (a, b)) in fused.iter().zip(&parts).enumerate() {
                            assert!(
                                a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
                                "n {n} sums {sums} {neuron:?} outs {outs:?}: tensor {t} differs"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The one-pass Scale backward equals its separate kernels bit for bit: in place and apart,
    /// with every subset of its parts, on shapes below and above the parallel threshold.
    #[test]
    fn channel_affine_backward_equals_its_parts() {
        let mut rng = crate::rng::Rng::new(7);
        for (case, &(outer, channels, inner)) in
            [(2, 3, 5), (1, 4, 1), (3, 7, 1), (4, 8, 1500), (2, 2, 64)]
                .iter()
                .enumerate()
        {
            let dims = ChannelDims::new(outer, channels, inner);
            let n = dims.count();
            let values = |rng: &mut crate::rng::Rng, len: usize| -> Vec<f32> {
                (0..len).map(|_| rng.uniform_range(-2.0, 2.0)).collect()
            };
            let (dyv, xv, sv) = (
                values(&mut rng, n),
                values(&mut rng, n),
                values(&mut rng, channels),
            );
            let (bdv, sdv) = (values(&mut rng, channels), values(&mut rng, channels));
            let stdv: Vec<f32> = values(&mut rng, channels)
                .iter()
                .map(|v| v.abs() + 0.5)
                .collect();
            // joined: bit 0 a ReLU's backward before, bit 1 a frozen BatchNorm's after (in
            // place with dx only).
            for (parts, joined) in (0..8u32).flat_map(|p| (0..4u32).map(move |j| (p, j))) {
                for in_place in [false, true] {
                    if joined != 0 && !(in_place && parts & 4 != 0) {
                        continue;
                    }
                    // Both runs start from the same values; the fused one on `fused`.
                    let run = |fused: bool| -> Vec<Vec<f32>> {
                        let mut eng = CpuEngine::new();
                        let views: Vec<View> = [&dyv, &xv, &sv, &bdv, &sdv, &vec![0.0; n], &stdv]
                            .iter()
                            .map(|v| upload(&mut eng, v))
                            .collect();
                        let dx = if in_place { views[0] } else { views[5] };
                        let relu = UnaryOp::Relu {
                            negative_slope: 0.25,
                        };
                        let kernel = ElementwiseKernel::ChannelAffineBackward {
                            dims,
                            dy: views[0],
                            neuron_grad: (joined & 1 != 0).then_some((relu, views[1], views[1])),
                            bias_grad: (parts & 1 != 0).then_some((views[3], 1.0)),
                            scale_grad: (parts & 2 != 0).then_some((
                                views[1],
                                views[4],
                                case as f32 * 0.5,
                            )),
                            data_grad: (parts & 4 != 0).then_some((views[2], dx)),
                            norm_grad: (joined & 2 != 0).then_some(views[6]),
                        };
                        if fused {
                            eng.launch(&Kernel::Elementwise(kernel)).unwrap();
                        } else if joined != 0 {
                            for part in kernel.channel_affine_backward_joined_parts().unwrap() {
                                match part {
                                    Kernel::Elementwise(
                                        ElementwiseKernel::ChannelAffineBackward { .. },
                                    ) => {
                                        let Kernel::Elementwise(core) = &part else {
                                            unreachable!()
                                        };
                                        for p in core.channel_affine_backward_parts().unwrap() {
                                            eng.launch(&Kernel::Elementwise(p)).unwrap();
                                        }
                                    }
                                    _ => eng.launch(&part).unwrap(),
                                }
                            }
                        } else {
                            for part in kernel.channel_affine_backward_parts().unwrap() {
                                eng.launch(&Kernel::Elementwise(part)).unwrap();
                            }
                        }
                        views.iter().map(|&v| eng.download(v)).collect()
                    };
                    assert_eq!(
                        run(true),
                        run(false),
                        "{dims:?} parts {parts:03b} joined {joined:02b} in place {in_place}"
                    );
                }
            }
        }
    }

    /// A fused run of steps equals its separate kernels bit for bit: in place and apart, with
    /// saves, on rows shorter and longer than a parallel block.
    #[test]
    fn channel_stages_equal_their_parts() {
        use crate::engine::kernels::elementwise::{ChannelStage, StageOp, StagePart};
        use crate::engine::kernels::norm::EpsMode;
        let mut rng = crate::rng::Rng::new(11);
        for &(outer, channels, inner) in &[(2, 3, 5), (1, 4, 1), (4, 8, 1500), (3, 5, 20_000)] {
            let dims = ChannelDims::new(outer, channels, inner);
            let n = dims.count();
            let mut values = |len: usize, lo: f32| -> Vec<f32> {
                (0..len).map(|_| rng.uniform_range(lo, 2.0)).collect()
            };
            // x, mean, var, scale, bias, y, std, two saves, a second var and std, a second input.
            let data = [
                values(n, -2.0),
                values(channels, -1.0),
                values(channels, 0.1),
                values(channels, -2.0),
                values(channels, -2.0),
                values(n, -2.0),
                vec![0.0; channels],
                vec![0.0; n],
                vec![0.0; n],
                values(channels, 0.1),
                vec![0.0; channels],
                values(n, -2.0),
            ];
            for (recipe, stages_of) in [
                "bn+scale+relu",
                "scale only, bias only",
                "sigmoid saved, normalize twice",
                "nothing",
                "sum + relu",
            ]
            .iter()
            .enumerate()
            {
                for in_place in [false, true] {
                    let run = |fused: bool| -> Vec<Vec<f32>> {
                        let mut eng = CpuEngine::new();
                        let v: Vec<View> = data.iter().map(|d| upload(&mut eng, d)).collect();
                        let normalize = |var: View, std: View| StageOp::Normalize {
                            eps: 1e-5,
                            eps_mode: EpsMode::SqrtVarPlusEps,
                            mean: v[1],
                            var,
                            std,
                        };
                        let stage = |op, save| ChannelStage { op, save };
                        let stages = match recipe {
                            0 => vec![
                                stage(normalize(v[2], v[6]), None),
                                stage(
                                    StageOp::Affine {
                                        scale: Some(v[3]),
                                        bias: Some(v[4]),
                                    },
                                    Some(v[7]),
                                ),
                                stage(
                                    StageOp::Unary(UnaryOp::Relu {
                                        negative_slope: 0.1,
                                    }),
                                    None,
                                ),
                            ],
                            1 => vec![
                                stage(
                                    StageOp::Affine {
                                        scale: Some(v[3]),
                                        bias: None,
                                    },
                                    Some(v[7]),
                                ),
                                stage(
                                    StageOp::Affine {
                                        scale: None,
                                        bias: Some(v[4]),
                                    },
                                    Some(v[8]),
                                ),
                            ],
                            2 => vec![
                                stage(StageOp::Unary(UnaryOp::Sigmoid), Some(v[7])),
                                stage(normalize(v[2], v[6]), None),
                                stage(normalize(v[9], v[10]), Some(v[8])),
                            ],
                            3 => vec![],
                            _ => vec![
                                stage(
                                    StageOp::Sum {
                                        coeffs: vec![1.0, -0.5],
                                        others: vec![v[11]],
                                    },
                                    None,
                                ),
                                stage(
                                    StageOp::Unary(UnaryOp::Relu {
                                        negative_slope: 0.0,
                                    }),
                                    Some(v[7]),
                                ),
                            ],
                        };
                        let kernel = ElementwiseKernel::ChannelStages {
                            dims,
                            x: v[0],
                            y: if in_place { v[0] } else { v[5] },
                            stages,
                        };
                        if fused {
                            eng.launch(&Kernel::Elementwise(kernel)).unwrap();
                        } else {
                            for part in kernel.channel_stages_parts().unwrap() {
                                match part {
                                    StagePart::Copy { src, dst } => eng.copy(src, dst),
                                    StagePart::Move { src, dst } => eng.move_values(src, dst),
                                    StagePart::Launch(k) => eng.launch(&k).unwrap(),
                                }
                            }
                        }
                        v.iter().map(|&v| eng.download(v)).collect()
                    };
                    let (fused, parts) = (run(true), run(false));
                    for (t, (a, b)) in fused.iter().zip(&parts).enumerate() {
                        let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(
                            same,
                            "{dims:?} {stages_of} in place {in_place}: tensor {t} differs"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn channel_affine_and_sum() {
        let mut eng = CpuEngine::new();
        let dims = ChannelDims::new(2, 3, 2);
        let xv: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let x = upload(&mut eng, &xv);
        let s = upload(&mut eng, &[1.0, 2.0, -1.0]);
        let b = upload(&mut eng, &[0.5, 0.0, 1.0]);
        let y = upload(&mut eng, &[0.0; 12]);
        eng.launch(&Kernel::Elementwise(ElementwiseKernel::ChannelAffine {
            dims,
            x,
            scale: Some(s),
            bias: Some(b),
            y,
        }))
        .unwrap();
        let got = eng.download(y);
        let want: Vec<f32> = (0..12)
            .map(|i| {
                let c = (i / 2) % 3;
                i as f32 * [1.0, 2.0, -1.0][c] + [0.5, 0.0, 1.0][c]
            })
            .collect();
        assert_eq!(got, want);
        let out = upload(&mut eng, &[1.0, 1.0, 1.0]);
        eng.launch(&Kernel::Elementwise(ElementwiseKernel::ChannelSum {
            dims,
            a: x,
            weight: SumWeight::One,
            beta: 1.0,
            y: out,
        }))
        .unwrap();
        // channel 0: 0 + 1 + 6 + 7 = 14, channel 1: 2 + 3 + 8 + 9 = 22, channel 2: 4 + 5 + 10 + 11 = 30
        assert_eq!(eng.download(out), vec![15.0, 23.0, 31.0]);
    }

    #[test]
    fn big_tensors_match_sequential() {
        // Above PAR_MIN the chunked parallel path must give the same numbers.
        let mut eng = CpuEngine::new();
        let n = PAR_MIN * 2 + 37;
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let x = upload(&mut eng, &xv);
        let y = upload(&mut eng, &vec![0.0; n]);
        eng.launch(&Kernel::Elementwise(ElementwiseKernel::Unary {
            op: UnaryOp::Elu { alpha: 0.5 },
            x,
            y,
        }))
        .unwrap();
        let got = eng.download(y);
        for (g, &v) in got.iter().zip(&xv) {
            assert_eq!(*g, v.max(0.0) + 0.5 * (v.min(0.0).exp() - 1.0));
        }
    }

    #[test]
    fn dropout_kernel_uses_dropout_keep() {
        let mut eng = CpuEngine::new();
        let n = PAR_MIN + 100;
        let x = upload(&mut eng, &vec![1.0; n]);
        let y = upload(&mut eng, &vec![0.0; n]);
        let k = ElementwiseKernel::Dropout {
            seed: 99,
            ratio: 0.25,
            scale: 2.0,
            x,
            y,
        };
        eng.launch(&Kernel::Elementwise(k)).unwrap();
        for (i, v) in eng.download(y).into_iter().enumerate() {
            assert_eq!(
                v,
                if dropout_keep(99, i as u32, 0.25) {
                    2.0
                } else {
                    0.0
                }
            );
        }
        assert_eq!(dropout_threshold(0.0), 0);
        assert_eq!(dropout_threshold(0.5), 1 << 23);
    }

    /// Every point-wise kernel gives the same numbers in place (output view == its input view)
    /// as apart, on tensors big enough for the parallel path.
    #[test]
    fn in_place_kernels_match_apart() {
        use crate::engine::kernels::norm::{EpsMode, NormKernel};
        let dims = ChannelDims::new(3, 5, PAR_MIN / 4 + 7);
        let n = dims.count();
        let values = |seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 250.0)
                .collect()
        };
        let per_channel = [0.5, -1.5, 2.0, 0.25, 1.0];
        let positive = [0.5, 1.5, 2.0, 0.25, 1.0];
        // Builds the kernel from (x, y, other tensors), where y may be x.
        type Build = fn(ChannelDims, View, View, &[View]) -> Kernel;
        let cases: Vec<(&str, Build)> = vec![
            ("relu", |_, x, y, _| {
                Kernel::Elementwise(ElementwiseKernel::Unary {
                    op: UnaryOp::Relu {
                        negative_slope: 0.1,
                    },
                    x,
                    y,
                })
            }),
            ("relu backward", |_, dy, dx, o| {
                Kernel::Elementwise(ElementwiseKernel::UnaryBackward {
                    op: UnaryOp::Relu {
                        negative_slope: 0.1,
                    },
                    x: o[0],
                    y: o[0],
                    dy,
                    dx,
                })
            }),
            ("sigmoid backward", |_, dy, dx, o| {
                Kernel::Elementwise(ElementwiseKernel::UnaryBackward {
                    op: UnaryOp::Sigmoid,
                    x: o[0],
                    y: o[1],
                    dy,
                    dx,
                })
            }),
            ("swish backward", |_, dy, dx, o| {
                Kernel::Elementwise(ElementwiseKernel::UnaryBackward {
                    op: UnaryOp::Swish { beta: 1.5 },
                    x: o[0],
                    y: o[1],
                    dy,
                    dx,
                })
            }),
            ("scale and bias", |dims, x, y, o| {
                Kernel::Elementwise(ElementwiseKernel::ChannelAffine {
                    dims,
                    x,
                    scale: Some(o[2]),
                    bias: Some(o[3]),
                    y,
                })
            }),
            ("scale", |dims, x, y, o| {
                Kernel::Elementwise(ElementwiseKernel::ChannelAffine {
                    dims,
                    x,
                    scale: Some(o[2]),
                    bias: None,
                    y,
                })
            }),
            ("bias", |dims, x, y, o| {
                Kernel::Elementwise(ElementwiseKernel::ChannelAffine {
                    dims,
                    x,
                    scale: None,
                    bias: Some(o[3]),
                    y,
                })
            }),
            ("prelu", |dims, x, y, o| {
                Kernel::Elementwise(ElementwiseKernel::PRelu {
                    dims,
                    x,
                    slope: o[2],
                    y,
                })
            }),
            ("prelu backward", |dims, dy, dx, o| {
                Kernel::Elementwise(ElementwiseKernel::PReluBackward {
                    dims,
                    x: o[0],
                    slope: o[2],
                    dy,
                    dx,
                })
            }),
            ("dropout", |_, x, y, _| {
                Kernel::Elementwise(ElementwiseKernel::Dropout {
                    seed: 7,
                    ratio: 0.4,
                    scale: 1.0 / 0.6,
                    x,
                    y,
                })
            }),
            ("normalize", |dims, x, y, o| {
                Kernel::Norm(NormKernel::Normalize {
                    dims,
                    eps: 1e-5,
                    eps_mode: EpsMode::SqrtVarPlusEps,
                    x,
                    mean: o[2],
                    var: Some(o[4]),
                    std: Some(o[5]),
                    y,
                })
            }),
            ("center", |dims, x, y, o| {
                Kernel::Norm(NormKernel::Normalize {
                    dims,
                    eps: 1e-5,
                    eps_mode: EpsMode::SqrtVarPlusEps,
                    x,
                    mean: o[2],
                    var: None,
                    std: None,
                    y,
                })
            }),
        ];
        for (name, build) in cases {
            let mut results = Vec::new();
            for in_place in [false, true] {
                let mut eng = CpuEngine::new();
                let others = [
                    upload(&mut eng, &values(1)),
                    upload(
                        &mut eng,
                        &values(2).iter().map(|v| v.tanh()).collect::<Vec<_>>(),
                    ),
                    upload(&mut eng, &per_channel),
                    upload(&mut eng, &per_channel.map(|v| v * 0.1)),
                    upload(&mut eng, &positive),
                    upload(&mut eng, &[0.0; 5]),
                ];
                let x = upload(&mut eng, &values(3));
                let y = if in_place {
                    x
                } else {
                    upload(&mut eng, &vec![f32::NAN; n])
                };
                eng.launch(&build(dims, x, y, &others)).unwrap();
                results.push((eng.download(y), eng.download(others[5])));
            }
            assert!(
                results[0] == results[1],
                "{name}: in place differs from apart"
            );
            assert!(results[0].0.iter().all(|v| v.is_finite()), "{name}");
        }
    }

    #[test]
    fn dropout_mask_rate() {
        let kept = (0..100_000u32)
            .filter(|&i| dropout_keep(12345, i, 0.3))
            .count();
        assert!((kept as f64 / 100_000.0 - 0.7).abs() < 0.01, "kept {kept}");
        let kept2 = (0..100_000u32)
            .filter(|&i| dropout_keep(54321, i, 0.3) == dropout_keep(12345, i, 0.3))
            .count();
        assert!(kept2 < 70_000, "masks of different seeds must differ");
    }
}
