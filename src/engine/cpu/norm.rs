//! CPU normalisation kernels: per-channel statistics in f64, element passes split by rows across
//! rayon threads, LRN per image.
use rayon::prelude::*;

use super::Memory;
use super::elementwise::{PAR_MIN, check_len, dot, for_rows, sum};
use crate::engine::kernels::elementwise::ChannelDims;
use crate::engine::kernels::norm::{EpsMode, Lrn, LrnRegion, NormGrad, NormKernel};

fn parallel(work: usize) -> bool {
    work >= PAR_MIN && rayon::current_num_threads() > 1
}

/// For each channel c: `f(c)` over all rows of that channel, written to `out[c]`.
fn per_channel(out: &mut [f32], work: usize, f: impl Fn(usize) -> f32 + Sync + Send) {
    if parallel(work) && out.len() > 1 {
        out.par_iter_mut().enumerate().for_each(|(c, o)| *o = f(c));
    } else {
        out.iter_mut().enumerate().for_each(|(c, o)| *o = f(c));
    }
}

/// The rows (length inner) of channel c.
fn rows<'a>(x: &'a [f32], dims: ChannelDims, c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
    (0..dims.outer).map(move |o| {
        let start = (o * dims.channels + c) * dims.inner;
        &x[start..start + dims.inner]
    })
}

fn channel_mean(x: &[f32], dims: ChannelDims, c: usize) -> f32 {
    let m = (dims.outer * dims.inner).max(1) as f64;
    (rows(x, dims, c).map(|r| sum(r) as f64).sum::<f64>() / m) as f32
}

fn channel_var(x: &[f32], dims: ChannelDims, c: usize, mean: f32) -> f32 {
    let m = (dims.outer * dims.inner).max(1) as f64;
    let total: f64 = rows(x, dims, c)
        .map(|r| {
            // 8 lanes so the loop vectorises.
            let mut acc = [0f32; 8];
            let mut chunks = r.chunks_exact(8);
            for c in &mut chunks {
                for l in 0..8 {
                    let d = c[l] - mean;
                    acc[l] += d * d;
                }
            }
            let tail: f32 = chunks
                .remainder()
                .iter()
                .map(|&v| (v - mean) * (v - mean))
                .sum();
            (acc.iter().sum::<f32>() + tail) as f64
        })
        .sum();
    (total / m) as f32
}

pub(super) fn std_of(var: f32, eps: f32, mode: EpsMode) -> f32 {
    match mode {
        EpsMode::SqrtVarPlusEps => (var + eps).sqrt(),
        EpsMode::SqrtVarThenEps => var.sqrt() + eps,
    }
}

pub fn run(kernel: &NormKernel, mem: &mut Memory) -> anyhow::Result<()> {
    match kernel {
        NormKernel::Moments { dims, x, mean, var } => {
            let dims = *dims;
            check_len(&[*x], dims.count())?;
            check_len(&[*mean], dims.channels)?;
            match var {
                Some(var) => {
                    check_len(&[*var], dims.channels)?;
                    mem.with(&[*mean, *var], &[*x], |o, i| {
                        let x = i[0];
                        let (mo, vo) = o.split_at_mut(1);
                        per_channel(mo[0], dims.count(), |c| channel_mean(x, dims, c));
                        let means: &[f32] = mo[0];
                        per_channel(vo[0], dims.count(), |c| channel_var(x, dims, c, means[c]));
                    });
                }
                None => mem.with(&[*mean], &[*x], |o, i| {
                    per_channel(o[0], dims.count(), |c| channel_mean(i[0], dims, c));
                }),
            }
        }
        NormKernel::StoredStats {
            sums,
            sq_sums,
            count,
            mean,
            var,
        } => {
            check_len(&[*sq_sums, *mean, *var], sums.len)?;
            check_len(&[*count], 1)?;
            mem.with(&[*mean, *var], &[*sums, *sq_sums, *count], |o, i| {
                let f = if i[2][0] == 0.0 { 0.0 } else { 1.0 / i[2][0] };
                let (mo, vo) = o.split_at_mut(1);
                for (m, &s) in mo[0].iter_mut().zip(i[0]) {
                    *m = f * s;
                }
                for (v, &s) in vo[0].iter_mut().zip(i[1]) {
                    *v = f * s;
                }
            });
        }
        NormKernel::StatsUpdate {
            maf,
            correction,
            mean,
            var,
            sums,
            sq_sums,
            count,
        } => {
            check_len(&[*var, *sums, *sq_sums], mean.len)?;
            check_len(&[*count], 1)?;
            let (maf, corr) = (*maf, *correction);
            mem.with(&[*sums, *sq_sums, *count], &[*mean, *var], |o, i| {
                for (s, &m) in o[0].iter_mut().zip(i[0]) {
                    *s = m + maf * *s;
                }
                for (s, &v) in o[1].iter_mut().zip(i[1]) {
                    *s = corr * v + maf * *s;
                }
                o[2][0] = o[2][0] * maf + 1.0;
            });
        }
        NormKernel::Normalize {
            dims,
            eps,
            eps_mode,
            x,
            mean,
            var,
            std,
            y,
        } => {
            let dims = *dims;
            check_len(&[*x, *y], dims.count())?;
            check_len(&[*mean], dims.channels)?;
            let (eps, mode) = (*eps, *eps_mode);
            match (var, std) {
                (Some(var), Some(std)) => {
                    check_len(&[*var, *std], dims.channels)?;
                    mem.with_pointwise(&[*y, *std], &[*x, *mean, *var], |io, o, i| {
                        let (mean, var) = (i[0], i[1]);
                        for (s, &v) in o[0].iter_mut().zip(var) {
                            *s = std_of(v, eps, mode);
                        }
                        let std: &[f32] = o[0];
                        io.map_rows(
                            dims.inner,
                            None,
                            |r| (mean[r % dims.channels], std[r % dims.channels]),
                            |(m, s), _, v| (v - m) / s,
                        );
                    });
                }
                (None, None) => mem.with_pointwise(&[*y], &[*x, *mean], |io, _, i| {
                    let mean = i[0];
                    io.map_rows(
                        dims.inner,
                        None,
                        |r| mean[r % dims.channels],
                        |m, _, v| v - m,
                    );
                }),
                _ => anyhow::bail!("Normalize needs both var and std, or neither"),
            }
        }
        NormKernel::NormalizeBackward {
            dims,
            grad,
            y,
            dy,
            std,
            dx,
        } => {
            let dims = *dims;
            check_len(&[*y, *dy, *dx], dims.count())?;
            let mut ins = vec![*y, *dy];
            if *grad != NormGrad::CenterOnly {
                let std =
                    std.ok_or_else(|| anyhow::anyhow!("NormalizeBackward {grad:?} needs std"))?;
                check_len(&[std], dims.channels)?;
                ins.push(std);
            }
            let grad = *grad;
            if grad == NormGrad::Frozen {
                // Point-wise: in place when dx is dy (BatchNorm run in place), no spare buffer.
                mem.with_pointwise(&[*dx], &[*dy, ins[2]], |io, _, i| {
                    let std = i[0];
                    io.map_rows(
                        dims.inner,
                        None,
                        |r| std[r % dims.channels],
                        |s, _, d| d / s,
                    )
                });
                return Ok(());
            }
            let m = (dims.outer * dims.inner).max(1);
            let inv_m = (1.0 / m as f64) as f32;
            mem.with_overwrite(&[*dx], &ins, |o, i| {
                let (y, dy) = (i[0], i[1]);
                let (mut s_dy, mut s_dyy) = (vec![0f32; dims.channels], vec![0f32; dims.channels]);
                if grad != NormGrad::Frozen {
                    per_channel(&mut s_dy, dims.count(), |c| {
                        rows(dy, dims, c).map(|r| sum(r) as f64).sum::<f64>() as f32
                    });
                }
                if grad == NormGrad::Full {
                    per_channel(&mut s_dyy, dims.count(), |c| {
                        rows(dy, dims, c)
                            .zip(rows(y, dims, c))
                            .map(|(a, b)| dot(a, b) as f64)
                            .sum::<f64>() as f32
                    });
                }
                let std = i.get(2).copied();
                for_rows(o[0], dims.inner, |r, row| {
                    let c = r % dims.channels;
                    let range = r * dims.inner..(r + 1) * dims.inner;
                    let (yr, dr) = (&y[range.clone()], &dy[range]);
                    match grad {
                        NormGrad::Full => {
                            let (a, b, s) = (s_dyy[c], s_dy[c], std.map_or(1.0, |s| s[c]));
                            for ((o, &yv), &d) in row.iter_mut().zip(yr).zip(dr) {
                                *o = (d - inv_m * (a * yv + b)) / s;
                            }
                        }
                        NormGrad::Frozen => unreachable!("frozen statistics are handled above"),
                        NormGrad::CenterOnly => {
                            let mean = s_dy[c] * inv_m;
                            for (o, &d) in row.iter_mut().zip(dr) {
                                *o = d - mean;
                            }
                        }
                    }
                });
            });
        }
        NormKernel::Lrn { lrn, x, scale, y } => {
            check_len(&[*x, *scale, *y], lrn.count())?;
            let lrn = *lrn;
            mem.with(&[*scale, *y], &[*x], |o, i| {
                let x = i[0];
                let (so, yo) = o.split_at_mut(1);
                let img = lrn.channels * lrn.height * lrn.width;
                per_image(lrn, so[0], yo[0], |n, sc, yc| {
                    lrn_forward_image(&lrn, &x[n * img..(n + 1) * img], sc, yc)
                });
            });
        }
        NormKernel::LrnBackward {
            lrn,
            x,
            y,
            scale,
            dy,
            dx,
        } => {
            check_len(&[*x, *y, *scale, *dy, *dx], lrn.count())?;
            let lrn = *lrn;
            mem.with(&[*dx], &[*x, *y, *scale, *dy], |o, i| {
                let img = lrn.channels * lrn.height * lrn.width;
                let work = |n: usize, dxc: &mut [f32]| {
                    let r = n * img..(n + 1) * img;
                    lrn_backward_image(
                        &lrn,
                        &i[0][r.clone()],
                        &i[1][r.clone()],
                        &i[2][r.clone()],
                        &i[3][r],
                        dxc,
                    );
                };
                if img == 0 {
                    return;
                }
                if parallel(lrn.count()) && lrn.num > 1 {
                    o[0].par_chunks_mut(img)
                        .enumerate()
                        .for_each(|(n, c)| work(n, c));
                } else {
                    for (n, c) in o[0].chunks_mut(img).enumerate() {
                        work(n, c);
                    }
                }
            });
        }
    }
    Ok(())
}

/// Runs `f(n, scale_n, y_n)` for each image n (in parallel when big).
fn per_image(
    lrn: Lrn,
    scale: &mut [f32],
    y: &mut [f32],
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) {
    let img = lrn.channels * lrn.height * lrn.width;
    if img == 0 {
        return;
    }
    if parallel(lrn.count()) && lrn.num > 1 {
        scale
            .par_chunks_mut(img)
            .zip(y.par_chunks_mut(img))
            .enumerate()
            .for_each(|(n, (s, y))| f(n, s, y));
    } else {
        for (n, (s, y)) in scale.chunks_mut(img).zip(y.chunks_mut(img)).enumerate() {
            f(n, s, y);
        }
    }
}

/// Window [lo, hi) of length `size` centred on `p` (pre-pad (size - 1) / 2), clipped to [0, len).
fn window(p: usize, size: usize, len: usize) -> (usize, usize) {
    let pre = (size - 1) / 2;
    (p.saturating_sub(pre), (p + size - pre).min(len))
}

fn lrn_forward_image(lrn: &Lrn, x: &[f32], scale: &mut [f32], y: &mut [f32]) {
    let (cs, s) = (lrn.channels, lrn.height * lrn.width);
    match lrn.region {
        LrnRegion::AcrossChannels => {
            // Caffe's running sum over a zero-padded stack of squared channels.
            let pre = (lrn.size - 1) / 2;
            let a = lrn.alpha / lrn.size as f32;
            let sq = |p: usize| -> Option<&[f32]> {
                if p >= pre && p - pre < cs {
                    Some(&x[(p - pre) * s..(p - pre + 1) * s])
                } else {
                    None
                }
            };
            scale[..s].fill(lrn.k);
            for p in 0..lrn.size {
                if let Some(xc) = sq(p) {
                    for (o, &v) in scale[..s].iter_mut().zip(xc) {
                        *o += a * (v * v);
                    }
                }
            }
            for c in 1..cs {
                let (prev, cur) = scale.split_at_mut(c * s);
                let (prev, cur) = (&prev[(c - 1) * s..], &mut cur[..s]);
                cur.copy_from_slice(prev);
                if let Some(xc) = sq(c + lrn.size - 1) {
                    for (o, &v) in cur.iter_mut().zip(xc) {
                        *o += a * (v * v);
                    }
                }
                if let Some(xc) = sq(c - 1) {
                    for (o, &v) in cur.iter_mut().zip(xc) {
                        *o += -a * (v * v);
                    }
                }
            }
        }
        LrnRegion::WithinChannel => {
            // Caffe's AVE pooling of x^2 (stride 1, zero padding, divisor size^2), then k + alpha * avg.
            let (h, w) = (lrn.height, lrn.width);
            let pool = (lrn.size * lrn.size) as f32;
            for c in 0..cs {
                let plane = &x[c * s..(c + 1) * s];
                for ph in 0..h {
                    let (h0, h1) = window(ph, lrn.size, h);
                    for pw in 0..w {
                        let (w0, w1) = window(pw, lrn.size, w);
                        let mut acc = 0f32;
                        for hh in h0..h1 {
                            for ww in w0..w1 {
                                let v = plane[hh * w + ww];
                                acc += v * v;
                            }
                        }
                        let avg = acc / pool;
                        scale[c * s + ph * w + pw] = avg * lrn.alpha + lrn.k;
                    }
                }
            }
        }
    }
    scaled_by_neg_power(y, scale, x, lrn.beta);
}

/// `out[i] = scale[i]^-beta * v[i]`. The betas real nets use (0.75 in AlexNet, CaffeNet and
/// GoogLeNet; 0.5; 1) go through square roots, which vectorise, instead of `powf`, which does not
/// and dominated LRN's time; the result differs from `powf` by about one ulp.
fn scaled_by_neg_power(out: &mut [f32], scale: &[f32], v: &[f32], beta: f32) {
    let pairs = out.iter_mut().zip(scale.iter().zip(v));
    if beta == 0.75 {
        pairs.for_each(|(o, (&sc, &v))| {
            let root = sc.sqrt();
            *o = v / (root * root.sqrt());
        });
    } else if beta == 0.5 {
        pairs.for_each(|(o, (&sc, &v))| *o = v / sc.sqrt());
    } else if beta == 1.0 {
        pairs.for_each(|(o, (&sc, &v))| *o = v / sc);
    } else {
        pairs.for_each(|(o, (&sc, &v))| *o = sc.powf(-beta) * v);
    }
}

fn lrn_backward_image(lrn: &Lrn, x: &[f32], y: &[f32], scale: &[f32], dy: &[f32], dx: &mut [f32]) {
    let (cs, s) = (lrn.channels, lrn.height * lrn.width);
    scaled_by_neg_power(dx, scale, dy, lrn.beta);
    let ratio: Vec<f32> = dy
        .iter()
        .zip(y)
        .zip(scale)
        .map(|((&d, &t), &sc)| d * t / sc)
        .collect();
    match lrn.region {
        LrnRegion::AcrossChannels => {
            let coef = 2.0 * lrn.alpha * lrn.beta / lrn.size as f32;
            // Caffe's running window sum of the ratios over channels.
            let inv_pre = lrn.size - lrn.size.div_ceil(2);
            let padded = |p: usize| -> Option<&[f32]> {
                if p >= inv_pre && p - inv_pre < cs {
                    Some(&ratio[(p - inv_pre) * s..(p - inv_pre + 1) * s])
                } else {
                    None
                }
            };
            let mut accum = vec![0f32; s];
            for p in 0..lrn.size - 1 {
                if let Some(r) = padded(p) {
                    accum.iter_mut().zip(r).for_each(|(a, &v)| *a += v);
                }
            }
            for c in 0..cs {
                if let Some(r) = padded(c + lrn.size - 1) {
                    accum.iter_mut().zip(r).for_each(|(a, &v)| *a += v);
                }
                let (xc, dc) = (&x[c * s..(c + 1) * s], &mut dx[c * s..(c + 1) * s]);
                for ((o, &xv), &a) in dc.iter_mut().zip(xc).zip(&accum) {
                    *o += -coef * (xv * a);
                }
                if let Some(r) = padded(c) {
                    accum.iter_mut().zip(r).for_each(|(a, &v)| *a -= v);
                }
            }
        }
        LrnRegion::WithinChannel => {
            let coef = 2.0 * lrn.alpha * lrn.beta / (lrn.size * lrn.size) as f32;
            let (h, w) = (lrn.height, lrn.width);
            for c in 0..cs {
                let rp = &ratio[c * s..(c + 1) * s];
                for hh in 0..h {
                    let (h0, h1) = window(hh, lrn.size, h);
                    for ww in 0..w {
                        let (w0, w1) = window(ww, lrn.size, w);
                        let mut acc = 0f32;
                        for ph in h0..h1 {
                            for pw in w0..w1 {
                                acc += rp[ph * w + pw];
                            }
                        }
                        let k = c * s + hh * w + ww;
                        dx[k] -= coef * x[k] * acc;
                    }
                }
            }
        }
    }
}
