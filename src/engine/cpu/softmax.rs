use anyhow::{Result, bail};
use rayon::prelude::*;

use super::Memory;
use crate::engine::kernels::softmax::{ArgMaxOut, Normalization, SoftmaxKernel};

/// Work (in elements) above which a kernel splits its outer loop across rayon threads.
const PAR_MIN: usize = 1 << 15;

/// Runs `f(index, chunk)` over `out.chunks_mut(chunk)`, in parallel when the work is big enough.
fn chunks(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if chunk == 0 {
        return;
    }
    if out.len() >= PAR_MIN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Caffe's static_cast<int> of a label, checked against `0..n`.
fn class_of(v: f32, n: usize) -> Result<usize> {
    let l = v as i32;
    if l < 0 || l as usize >= n {
        bail!("label value {v} out of range: expected an integer in [0, {n})");
    }
    Ok(l as usize)
}

fn normalizer(mode: Normalization, outer: usize, inner: usize, valid: usize) -> f32 {
    let n = match mode {
        Normalization::Full => (outer * inner) as f32,
        Normalization::Valid => valid as f32,
        Normalization::BatchSize => outer as f32,
        Normalization::None => 1.0,
    };
    n.max(1.0)
}

fn ignored(v: f32, ignore_label: Option<i32>) -> bool {
    ignore_label == Some(v as i32)
}

/// Checks that a kernel's view holds at least `need` elements.
fn need(what: &str, len: usize, need: usize) -> Result<()> {
    if len < need {
        bail!("softmax kernel: {what} has {len} elements, needs {need}");
    }
    Ok(())
}

pub fn run(kernel: &SoftmaxKernel, mem: &mut Memory) -> Result<()> {
    match *kernel {
        SoftmaxKernel::Forward {
            x,
            y,
            outer,
            channels,
            inner,
        } => {
            let n = outer * channels * inner;
            need("x", x.len, n)?;
            need("y", y.len, n)?;
            let (x, y) = (x.slice(0, n), y.slice(0, n));
            mem.with(&[y], &[x], |o, i| {
                let xs = i[0];
                chunks(o[0], channels * inner, |b, ys| {
                    let xs = &xs[b * channels * inner..(b + 1) * channels * inner];
                    let mut m = xs[..inner].to_vec();
                    for c in 1..channels {
                        for (m, &v) in m.iter_mut().zip(&xs[c * inner..(c + 1) * inner]) {
                            *m = m.max(v);
                        }
                    }
                    let mut s = vec![0f32; inner];
                    for c in 0..channels {
                        let r = c * inner..(c + 1) * inner;
                        for (((y, &x), &m), s) in ys[r.clone()]
                            .iter_mut()
                            .zip(&xs[r])
                            .zip(&m)
                            .zip(s.iter_mut())
                        {
                            *y = (x - m).exp();
                            *s += *y;
                        }
                    }
                    for c in 0..channels {
                        for (y, &s) in ys[c * inner..(c + 1) * inner].iter_mut().zip(&s) {
                            *y /= s;
                        }
                    }
                });
            });
        }
        SoftmaxKernel::Backward {
            y,
            dy,
            dx,
            outer,
            channels,
            inner,
        } => {
            let n = outer * channels * inner;
            need("y", y.len, n)?;
            need("dy", dy.len, n)?;
            need("dx", dx.len, n)?;
            let (y, dy, dx) = (y.slice(0, n), dy.slice(0, n), dx.slice(0, n));
            mem.with(&[dx], &[y, dy], |o, i| {
                let (ys, dys) = (i[0], i[1]);
                let len = channels * inner;
                chunks(o[0], len, |b, dxs| {
                    let (ys, dys) = (&ys[b * len..(b + 1) * len], &dys[b * len..(b + 1) * len]);
                    let mut s = vec![0f32; inner];
                    for c in 0..channels {
                        let r = c * inner..(c + 1) * inner;
                        for ((s, &y), &d) in s.iter_mut().zip(&ys[r.clone()]).zip(&dys[r]) {
                            *s += y * d;
                        }
                    }
                    for c in 0..channels {
                        let r = c * inner..(c + 1) * inner;
                        for (((dx, &y), &d), &s) in dxs[r.clone()]
                            .iter_mut()
                            .zip(&ys[r.clone()])
                            .zip(&dys[r])
                            .zip(&s)
                        {
                            *dx = (d - s) * y;
                        }
                    }
                });
            });
        }
        SoftmaxKernel::CrossEntropy {
            prob,
            label,
            infogain,
            loss,
            norm,
            outer,
            channels,
            inner,
            ignore_label,
            mode,
            log_min,
        } => {
            need("prob", prob.len, outer * channels * inner)?;
            need("label", label.len, outer * inner)?;
            need("loss", loss.len, 1)?;
            need("norm", norm.len, 1)?;
            let mut ins = vec![prob, label];
            if let Some(h) = infogain {
                need("infogain", h.len, channels * channels)?;
                ins.push(h);
            }
            mem.with(
                &[loss.slice(0, 1), norm.slice(0, 1)],
                &ins,
                |o, i| -> Result<()> {
                    let (p, l) = (i[0], i[1]);
                    let h = i.get(2);
                    let mut sum = 0f32;
                    let mut valid = 0usize;
                    for a in 0..outer {
                        for j in 0..inner {
                            let v = l[a * inner + j];
                            if ignored(v, ignore_label) {
                                continue;
                            }
                            let c = class_of(v, channels)?;
                            let base = a * channels * inner + j;
                            match h {
                                None => sum -= p[base + c * inner].max(log_min).ln(),
                                Some(h) => {
                                    for k in 0..channels {
                                        sum -= h[c * channels + k]
                                            * p[base + k * inner].max(log_min).ln();
                                    }
                                }
                            }
                            valid += 1;
                        }
                    }
                    let n = normalizer(mode, outer, inner, valid);
                    o[0][0] = sum / n;
                    o[1][0] = n;
                    Ok(())
                },
            )?;
        }
        SoftmaxKernel::CrossEntropyGrad {
            prob,
            label,
            infogain,
            top_diff,
            norm,
            dx,
            outer,
            channels,
            inner,
            ignore_label,
        } => {
            let n = outer * channels * inner;
            need("prob", prob.len, n)?;
            need("dx", dx.len, n)?;
            need("label", label.len, outer * inner)?;
            let mut ins = vec![
                prob.slice(0, n),
                label.slice(0, outer * inner),
                top_diff.slice(0, 1),
                norm.slice(0, 1),
            ];
            if let Some(h) = infogain {
                need("infogain", h.len, channels * channels)?;
                ins.push(h.slice(0, channels * channels));
            }
            mem.with(&[dx.slice(0, n)], &ins, |o, i| -> Result<()> {
                let (p, l, scale) = (i[0], i[1], i[2][0] / i[3][0]);
                let h = i.get(4).copied();
                // Each label must be valid before the parallel part.
                let mut classes = Vec::with_capacity(outer * inner);
                for &v in l {
                    classes.push(if ignored(v, ignore_label) {
                        None
                    } else {
                        Some(class_of(v, channels)?)
                    });
                }
                let rowsum: Vec<f32> = match h {
                    Some(h) => (0..channels)
                        .map(|r| h[r * channels..(r + 1) * channels].iter().sum())
                        .collect(),
                    None => vec![1.0; channels],
                };
                let len = channels * inner;
                chunks(o[0], len, |a, d| {
                    let p = &p[a * len..(a + 1) * len];
                    for j in 0..inner {
                        match classes[a * inner + j] {
                            None => (0..channels).for_each(|k| d[k * inner + j] = 0.0),
                            Some(c) => {
                                for k in 0..channels {
                                    let hk = match h {
                                        Some(h) => h[c * channels + k],
                                        None => f32::from(u8::from(k == c)),
                                    };
                                    d[k * inner + j] = (p[k * inner + j] * rowsum[c] - hk) * scale;
                                }
                            }
                        }
                    }
                });
                Ok(())
            })?;
        }
        SoftmaxKernel::MultinomialLogistic {
            prob,
            label,
            loss,
            outer,
            dim,
        } => {
            need("prob", prob.len, outer * dim)?;
            need("label", label.len, outer)?;
            mem.with(&[loss.slice(0, 1)], &[prob, label], |o, i| -> Result<()> {
                let mut sum = 0f32;
                for a in 0..outer {
                    let c = class_of(i[1][a], dim)?;
                    sum -= i[0][a * dim + c].max(1e-20).ln();
                }
                o[0][0] = sum / outer.max(1) as f32;
                Ok(())
            })?;
        }
        SoftmaxKernel::MultinomialLogisticGrad {
            prob,
            label,
            top_diff,
            dx,
            outer,
            dim,
        } => {
            need("prob", prob.len, outer * dim)?;
            need("dx", dx.len, outer * dim)?;
            need("label", label.len, outer)?;
            mem.with(
                &[dx.slice(0, outer * dim)],
                &[prob, label, top_diff],
                |o, i| -> Result<()> {
                    let scale = -i[2][0] / outer.max(1) as f32;
                    o[0].fill(0.0);
                    for a in 0..outer {
                        let c = class_of(i[1][a], dim)?;
                        o[0][a * dim + c] = scale / i[0][a * dim + c].max(1e-20);
                    }
                    Ok(())
                },
            )?;
        }
        SoftmaxKernel::SigmoidCrossEntropy {
            x,
            target,
            loss,
            norm,
            outer,
            inner,
            ignore_label,
            mode,
        } => {
            let n = outer * inner;
            need("x", x.len, n)?;
            need("target", target.len, n)?;
            mem.with(
                &[loss.slice(0, 1), norm.slice(0, 1)],
                &[x.slice(0, n), target.slice(0, n)],
                |o, i| {
                    let mut sum = 0f32;
                    let mut valid = 0usize;
                    for (&x, &t) in i[0].iter().zip(i[1]) {
                        if ignored(t, ignore_label) {
                            continue;
                        }
                        let pos = f32::from(u8::from(x >= 0.0));
                        sum -= x * (t - pos) - (1.0 + (x - 2.0 * x * pos).exp()).ln();
                        valid += 1;
                    }
                    let n = normalizer(mode, outer, inner, valid);
                    o[0][0] = sum / n;
                    o[1][0] = n;
                },
            );
        }
        SoftmaxKernel::SigmoidCrossEntropyGrad {
            x,
            target,
            top_diff,
            norm,
            dx,
            ignore_label,
        } => {
            let n = x.len;
            need("target", target.len, n)?;
            need("dx", dx.len, n)?;
            mem.with(
                &[dx.slice(0, n)],
                &[
                    x,
                    target.slice(0, n),
                    top_diff.slice(0, 1),
                    norm.slice(0, 1),
                ],
                |o, i| {
                    let (xs, ts, scale) = (i[0], i[1], i[2][0] / i[3][0]);
                    chunks(o[0], 4096, |b, d| {
                        let off = b * 4096;
                        for (k, d) in d.iter_mut().enumerate() {
                            let (x, t) = (xs[off + k], ts[off + k]);
                            *d = if ignored(t, ignore_label) {
                                0.0
                            } else {
                                ((0.5 * (0.5 * x).tanh() + 0.5) - t) * scale
                            };
                        }
                    });
                },
            );
        }
        SoftmaxKernel::Euclidean {
            a,
            b,
            diff,
            loss,
            outer,
        } => {
            let n = a.len;
            need("b", b.len, n)?;
            need("diff", diff.len, n)?;
            mem.with(
                &[diff.slice(0, n), loss.slice(0, 1)],
                &[a, b.slice(0, n)],
                |o, i| {
                    let mut dot = 0f64;
                    for ((d, &a), &b) in o[0].iter_mut().zip(i[0]).zip(i[1]) {
                        *d = a - b;
                        dot += f64::from(*d) * f64::from(*d);
                    }
                    o[1][0] = dot as f32 / outer.max(1) as f32 / 2.0;
                },
            );
        }
        SoftmaxKernel::ScaleByWeight {
            x,
            w,
            sign,
            divisor,
            y,
        } => {
            need("y", y.len, x.len)?;
            mem.with(&[y.slice(0, x.len)], &[x, w.slice(0, 1)], |o, i| {
                let alpha = sign * i[1][0] / divisor;
                let xs = i[0];
                chunks(o[0], 4096, |b, ys| {
                    for (y, &x) in ys.iter_mut().zip(&xs[b * 4096..]) {
                        *y = alpha * x;
                    }
                });
            });
        }
        SoftmaxKernel::Hinge {
            x,
            label,
            margin,
            loss,
            outer,
            dim,
            l2,
        } => {
            let n = outer * dim;
            need("x", x.len, n)?;
            need("margin", margin.len, n)?;
            need("label", label.len, outer)?;
            mem.with(
                &[margin.slice(0, n), loss.slice(0, 1)],
                &[x.slice(0, n), label],
                |o, i| -> Result<()> {
                    let mut sum = 0f32;
                    for a in 0..outer {
                        let c = class_of(i[1][a], dim)?;
                        for k in 0..dim {
                            let v = i[0][a * dim + k];
                            let m = (1.0 + if k == c { -v } else { v }).max(0.0);
                            o[0][a * dim + k] = m;
                            sum += if l2 { m * m } else { m };
                        }
                    }
                    o[1][0] = sum / outer.max(1) as f32;
                    Ok(())
                },
            )?;
        }
        SoftmaxKernel::HingeGrad {
            margin,
            label,
            top_diff,
            dx,
            outer,
            dim,
            l2,
        } => {
            let n = outer * dim;
            need("margin", margin.len, n)?;
            need("dx", dx.len, n)?;
            need("label", label.len, outer)?;
            mem.with(
                &[dx.slice(0, n)],
                &[margin.slice(0, n), label, top_diff.slice(0, 1)],
                |o, i| -> Result<()> {
                    let w = i[2][0];
                    let scale = if l2 {
                        w * 2.0 / outer.max(1) as f32
                    } else {
                        w / outer.max(1) as f32
                    };
                    for a in 0..outer {
                        let c = class_of(i[1][a], dim)?;
                        for k in 0..dim {
                            let m = i[0][a * dim + k];
                            let v = if k == c { -m } else { m };
                            let g = if l2 {
                                v
                            } else if v > 0.0 {
                                1.0
                            } else if v < 0.0 {
                                -1.0
                            } else {
                                0.0
                            };
                            o[0][a * dim + k] = g * scale;
                        }
                    }
                    Ok(())
                },
            )?;
        }
        SoftmaxKernel::Contrastive {
            a,
            b,
            sim,
            diff,
            dist_sq,
            loss,
            outer,
            channels,
            margin,
            legacy,
        } => {
            let n = outer * channels;
            need("a", a.len, n)?;
            need("b", b.len, n)?;
            need("diff", diff.len, n)?;
            need("dist_sq", dist_sq.len, outer)?;
            need("sim", sim.len, outer)?;
            let outs = [diff.slice(0, n), dist_sq.slice(0, outer), loss.slice(0, 1)];
            mem.with(&outs, &[a.slice(0, n), b.slice(0, n), sim], |o, i| {
                let mut sum = 0f32;
                for r in 0..outer {
                    let mut d2 = 0f32;
                    for k in r * channels..(r + 1) * channels {
                        let d = i[0][k] - i[1][k];
                        o[0][k] = d;
                        d2 += d * d;
                    }
                    o[1][r] = d2;
                    sum += if i[2][r] as i32 != 0 {
                        d2
                    } else if legacy {
                        (margin - d2).max(0.0)
                    } else {
                        let d = (margin - d2.sqrt()).max(0.0);
                        d * d
                    };
                }
                o[2][0] = sum / outer.max(1) as f32 / 2.0;
            });
        }
        SoftmaxKernel::ContrastiveGrad {
            diff,
            dist_sq,
            sim,
            top_diff,
            dx,
            outer,
            channels,
            margin,
            legacy,
            sign,
        } => {
            let n = outer * channels;
            need("diff", diff.len, n)?;
            need("dx", dx.len, n)?;
            need("dist_sq", dist_sq.len, outer)?;
            need("sim", sim.len, outer)?;
            mem.with(
                &[dx.slice(0, n)],
                &[diff.slice(0, n), dist_sq, sim, top_diff.slice(0, 1)],
                |o, i| {
                    let alpha = sign * i[3][0] / outer.max(1) as f32;
                    for r in 0..outer {
                        let (src, dst) = (
                            &i[0][r * channels..(r + 1) * channels],
                            &mut o[0][r * channels..(r + 1) * channels],
                        );
                        let coef = if i[2][r] as i32 != 0 {
                            alpha
                        } else {
                            let (m, beta) = if legacy {
                                (margin - i[1][r], -alpha)
                            } else {
                                let d = i[1][r].sqrt();
                                let m = margin - d;
                                (m, -alpha * m / (d + 1e-4))
                            };
                            if m > 0.0 { beta } else { 0.0 }
                        };
                        for (y, &x) in dst.iter_mut().zip(src) {
                            *y = coef * x;
                        }
                    }
                },
            );
        }
        SoftmaxKernel::Accuracy {
            x,
            label,
            acc,
            per_class,
            outer,
            channels,
            inner,
            top_k,
            ignore_label,
        } => {
            need("x", x.len, outer * channels * inner)?;
            need("label", label.len, outer * inner)?;
            let mut outs = vec![acc.slice(0, 1)];
            if let Some(pc) = per_class {
                need("per_class", pc.len, channels)?;
                outs.push(pc.slice(0, channels));
            }
            mem.with(&outs, &[x, label], |o, i| -> Result<()> {
                let (xs, ls) = (i[0], i[1]);
                let mut correct = 0usize;
                let mut count = 0usize;
                let mut nums = vec![0usize; channels];
                let mut hits = vec![0usize; channels];
                for a in 0..outer {
                    for j in 0..inner {
                        let v = ls[a * inner + j];
                        if ignored(v, ignore_label) {
                            continue;
                        }
                        let c = class_of(v, channels)?;
                        nums[c] += 1;
                        let base = a * channels * inner + j;
                        let truth = xs[base + c * inner];
                        let better = (0..channels)
                            .filter(|&k| xs[base + k * inner] >= truth)
                            .count();
                        // `better` includes the true class itself.
                        if better <= top_k {
                            correct += 1;
                            hits[c] += 1;
                        }
                        count += 1;
                    }
                }
                o[0][0] = if count == 0 {
                    0.0
                } else {
                    correct as f32 / count as f32
                };
                if o.len() > 1 {
                    for c in 0..channels {
                        o[1][c] = if nums[c] == 0 {
                            0.0
                        } else {
                            hits[c] as f32 / nums[c] as f32
                        };
                    }
                }
                Ok(())
            })?;
        }
        SoftmaxKernel::ArgMax {
            x,
            y,
            outer,
            channels,
            inner,
            top_k,
            out,
        } => {
            if top_k == 0 || top_k > channels {
                bail!("argmax kernel: top_k {top_k} must be in 1..={channels}");
            }
            if out == ArgMaxOut::IndicesThenValues && inner != 1 {
                bail!("argmax kernel: indices-then-values output needs inner == 1");
            }
            let ylen = outer
                * top_k
                * inner
                * if out == ArgMaxOut::IndicesThenValues {
                    2
                } else {
                    1
                };
            need("x", x.len, outer * channels * inner)?;
            need("y", y.len, ylen)?;
            mem.with(&[y.slice(0, ylen)], &[x], |o, i| {
                let xs = i[0];
                chunks(o[0], ylen / outer.max(1), |a, ys| {
                    let mut pairs: Vec<(f32, usize)> = Vec::with_capacity(channels);
                    for j in 0..inner {
                        pairs.clear();
                        pairs
                            .extend((0..channels).map(|k| (xs[(a * channels + k) * inner + j], k)));
                        let greater = |p: &(f32, usize), q: &(f32, usize)| {
                            q.0.partial_cmp(&p.0)
                                .unwrap_or(std::cmp::Ordering::Equal)
                                .then(q.1.cmp(&p.1))
                        };
                        if top_k < channels {
                            pairs.select_nth_unstable_by(top_k - 1, greater);
                        }
                        pairs[..top_k].sort_by(greater);
                        for (k, &(v, idx)) in pairs[..top_k].iter().enumerate() {
                            match out {
                                ArgMaxOut::Indices => ys[k * inner + j] = idx as f32,
                                ArgMaxOut::Values => ys[k * inner + j] = v,
                                ArgMaxOut::IndicesThenValues => {
                                    ys[k] = idx as f32;
                                    ys[top_k + k] = v;
                                }
                            }
                        }
                    }
                });
            });
        }
    }
    Ok(())
}
