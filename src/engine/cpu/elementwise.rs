//! CPU element-wise kernels. Each op is matched once outside its loop so the inner loops stay
//! simple (and vectorisable); big tensors are split across rayon threads.
use rayon::prelude::*;

use super::Memory;
use crate::engine::View;
use crate::engine::kernels::elementwise::{
    ElementwiseKernel, NaryOp, SumWeight, UnaryOp, dropout_threshold, pcg_hash,
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
            .for_each(|(k, c)| f(k * CHUNK, c));
    } else {
        f(0, out);
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
            .for_each(|(r, row)| f(r, row));
    } else {
        for (r, row) in out.chunks_mut(inner).enumerate() {
            f(r, row);
        }
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

fn map1(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    for_chunks(y, |s, yc| {
        let n = yc.len();
        for (o, &a) in yc.iter_mut().zip(&x[s..s + n]) {
            *o = f(a);
        }
    });
}

fn map2(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) {
    for_chunks(y, |s, yc| {
        let (ac, bc) = (&a[s..s + yc.len()], &b[s..s + yc.len()]);
        for ((o, &p), &q) in yc.iter_mut().zip(ac).zip(bc) {
            *o = f(p, q);
        }
    });
}

fn map3(
    y: &mut [f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync + Send,
) {
    for_chunks(y, |s, yc| {
        let n = yc.len();
        let (ac, bc, cc) = (&a[s..s + n], &b[s..s + n], &c[s..s + n]);
        for (((o, &p), &q), &r) in yc.iter_mut().zip(ac).zip(bc).zip(cc) {
            *o = f(p, q, r);
        }
    });
}

/// Caffe's sigmoid: 0.5 * tanh(0.5 * x) + 0.5 (evaluated in double as the C++ literals make it).
fn sigmoid(x: f32) -> f32 {
    (0.5 * (0.5 * x as f64).tanh() + 0.5) as f32
}

const BNLL_THRESHOLD: f32 = 50.0;

fn unary(op: UnaryOp, x: &[f32], y: &mut [f32]) {
    match op {
        UnaryOp::Relu { negative_slope: s } => map1(y, x, move |x| x.max(0.0) + s * x.min(0.0)),
        UnaryOp::Sigmoid => map1(y, x, sigmoid),
        UnaryOp::TanH => map1(y, x, f32::tanh),
        UnaryOp::AbsVal => map1(y, x, f32::abs),
        UnaryOp::Bnll => map1(y, x, |x| {
            if x > 0.0 {
                (x as f64 + (1.0 + (-x).exp() as f64).ln()) as f32
            } else {
                (1.0 + x.exp() as f64).ln() as f32
            }
        }),
        UnaryOp::Elu { alpha } => {
            map1(y, x, move |x| x.max(0.0) + alpha * (x.min(0.0).exp() - 1.0))
        }
        UnaryOp::Power {
            power,
            scale,
            shift,
        } => {
            if power * scale == 0.0 {
                let value = if power == 0.0 { 1.0 } else { shift.powf(power) };
                y.fill(value);
            } else {
                map1(y, x, move |x| {
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
        } => map1(y, x, move |x| {
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
        } => map1(y, x, move |x| {
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
        UnaryOp::Threshold { threshold } => {
            map1(y, x, move |x| if x > threshold { 1.0 } else { 0.0 })
        }
        UnaryOp::Clip { min, max } => map1(y, x, move |x| min.max(x.min(max))),
        UnaryOp::Swish { beta } => map1(y, x, move |x| x * sigmoid(x * beta)),
    }
}

fn step(c: bool) -> f32 {
    if c { 1.0 } else { 0.0 }
}

/// dx from (x, y, dy).
fn unary_backward(op: UnaryOp, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    match op {
        UnaryOp::Relu { negative_slope: s } => map2(dx, x, dy, move |x, d| {
            d * (step(x > 0.0) + s * step(x <= 0.0))
        }),
        UnaryOp::Sigmoid => map2(dx, y, dy, |y, d| {
            (d as f64 * y as f64 * (1.0 - y as f64)) as f32
        }),
        UnaryOp::TanH => map2(dx, y, dy, |y, d| d * (1.0 - y * y)),
        UnaryOp::AbsVal => map2(dx, x, dy, |x, d| (step(0.0 < x) - step(x < 0.0)) * d),
        UnaryOp::Bnll => map2(dx, x, dy, |x, d| {
            let e = x.min(BNLL_THRESHOLD).exp() as f64;
            (d as f64 * e / (e + 1.0)) as f32
        }),
        UnaryOp::Elu { alpha } => map3(dx, x, y, dy, move |x, y, d| {
            d * (step(x > 0.0) + (alpha + y) * step(x <= 0.0))
        }),
        UnaryOp::Power {
            power,
            scale,
            shift,
        } => {
            let diff_scale = power * scale;
            if diff_scale == 0.0 {
                dx.fill(0.0);
            } else if power == 1.0 {
                map1(dx, dy, move |d| d * diff_scale);
            } else if power == 2.0 {
                let (a, b) = (diff_scale * scale, diff_scale * shift);
                if shift != 0.0 {
                    map2(dx, x, dy, move |x, d| d * (a * x + b));
                } else {
                    map2(dx, x, dy, move |x, d| d * (a * x));
                }
            } else if shift == 0.0 {
                map3(dx, x, y, dy, move |x, y, d| d * ((y / x) * power));
            } else {
                map3(dx, x, y, dy, move |x, y, d| {
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
        UnaryOp::Exp { inner_scale, .. } => map2(dx, y, dy, move |y, d| {
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
            map2(dx, x, dy, move |x, d| {
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
        UnaryOp::Threshold { .. } => dx.fill(0.0),
        UnaryOp::Clip { min, max } => map2(dx, x, dy, move |x, d| d * step(x >= min && x <= max)),
        UnaryOp::Swish { beta } => map3(dx, x, y, dy, move |x, y, d| {
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

pub fn run(kernel: &ElementwiseKernel, mem: &mut Memory) -> anyhow::Result<()> {
    match kernel {
        ElementwiseKernel::Unary { op, x, y } => {
            check_len(&[*x], y.len)?;
            mem.with_overwrite(&[*y], &[*x], |o, i| unary(*op, i[0], o[0]));
        }
        ElementwiseKernel::UnaryBackward { op, x, y, dy, dx } => {
            check_len(&[*x, *y, *dy], dx.len)?;
            mem.with_overwrite(&[*dx], &[*x, *y, *dy], |o, i| {
                unary_backward(*op, i[0], i[1], i[2], o[0])
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
            mem.with_overwrite(&[*y], &ins, |o, i| {
                let x = i[0];
                let s = if has_scale { Some(i[1]) } else { None };
                let b = if has_bias {
                    Some(i[1 + usize::from(has_scale)])
                } else {
                    None
                };
                for_rows(o[0], dims.inner, |r, row| {
                    let c = r % dims.channels;
                    let xr = &x[r * dims.inner..(r + 1) * dims.inner];
                    match (s, b) {
                        (Some(s), Some(b)) => {
                            let (sc, bc) = (s[c], b[c]);
                            row.iter_mut().zip(xr).for_each(|(o, &v)| *o = v * sc + bc);
                        }
                        (Some(s), None) => {
                            let sc = s[c];
                            row.iter_mut().zip(xr).for_each(|(o, &v)| *o = v * sc);
                        }
                        (None, Some(b)) => {
                            let bc = b[c];
                            row.iter_mut().zip(xr).for_each(|(o, &v)| *o = v + bc);
                        }
                        (None, None) => row.copy_from_slice(xr),
                    }
                });
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
            mem.with_overwrite(&[*y], &[*x, *slope], |o, i| {
                let (x, slope) = (i[0], i[1]);
                for_rows(o[0], dims.inner, |r, row| {
                    let a = slope[r % dims.channels];
                    let xr = &x[r * dims.inner..(r + 1) * dims.inner];
                    row.iter_mut()
                        .zip(xr)
                        .for_each(|(o, &v)| *o = v.max(0.0) + a * v.min(0.0));
                });
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
            mem.with_overwrite(&[*dx], &[*x, *slope, *dy], |o, i| {
                let (x, slope, dy) = (i[0], i[1], i[2]);
                for_rows(o[0], dims.inner, |r, row| {
                    let a = slope[r % dims.channels];
                    let range = r * dims.inner..(r + 1) * dims.inner;
                    for ((o, &v), &d) in row.iter_mut().zip(&x[range.clone()]).zip(&dy[range]) {
                        *o = d * (step(v > 0.0) + a * step(v <= 0.0));
                    }
                });
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
            mem.with_overwrite(&[*y], &[*x], |o, i| {
                let x = i[0];
                for_chunks(o[0], |s, yc| {
                    let n = yc.len();
                    for (k, (o, &v)) in yc.iter_mut().zip(&x[s..s + n]).enumerate() {
                        let keep = pcg_hash(((s + k) as u32).wrapping_add(base)) >> 8 >= threshold;
                        *o = if keep { v * scale } else { 0.0 };
                    }
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
