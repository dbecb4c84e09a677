use anyhow::{Result, ensure};
use rayon::prelude::*;

use super::Memory;
use crate::engine::View;
use crate::engine::kernels::pool::{PoolGeom, PoolKernel};

/// Planes of work below which the kernels stay on one thread.
const GRAIN: usize = 1 << 14;

pub fn run(kernel: &PoolKernel, mem: &mut Memory) -> Result<()> {
    match kernel {
        PoolKernel::MaxForward {
            g,
            bottom,
            top,
            mask,
        } => {
            check(g, &[*bottom], &[*top, *mask])?;
            if empty(g) {
                return Ok(());
            }
            let spans = column_spans(g);
            let same = SameSizeTaps::of(g);
            let narrow = NarrowWholeWindows::of(g);
            mem.with(&[*top, *mask], &[*bottom], |o, i| {
                let [top, mask] = o else { unreachable!() };
                let planes: Vec<_> = top_planes(top, g)
                    .into_iter()
                    .zip(top_planes(mask, g))
                    .collect();
                for_planes(g, planes, |p, (top, mask)| {
                    let x = plane(i[0], g, p);
                    #[cfg(target_arch = "x86_64")]
                    if let Some(same) = &same {
                        // SAFETY: SameSizeTaps::of checked the CPU.
                        unsafe { x86::max_same_size(same, x, top, mask) };
                        return;
                    }
                    #[cfg(target_arch = "x86_64")]
                    if let Some(narrow) = &narrow {
                        // SAFETY: NarrowWholeWindows::of checked the CPU.
                        unsafe { x86::max_narrow(narrow, x, top, mask) };
                        return;
                    }
                    max_forward(g, &spans, x, top, mask)
                });
            });
        }
        PoolKernel::AveForward { g, bottom, top } => {
            check(g, &[*bottom], &[*top])?;
            if empty(g) {
                return Ok(());
            }
            let spans = column_spans(g);
            mem.with(&[*top], &[*bottom], |o, i| {
                let planes = top_planes(o[0], g);
                for_planes(g, planes, |p, top| {
                    ave_forward(g, &spans, plane(i[0], g, p), top)
                });
            });
        }
        PoolKernel::StochasticTest { g, bottom, top } => {
            check(g, &[*bottom], &[*top])?;
            if empty(g) {
                return Ok(());
            }
            mem.with(&[*top], &[*bottom], |o, i| {
                let planes = top_planes(o[0], g);
                for_planes(g, planes, |p, top| {
                    sto_test_forward(g, plane(i[0], g, p), top)
                });
            });
        }
        &PoolKernel::StochasticTrain {
            ref g,
            bottom,
            top,
            mask,
            seed,
        } => {
            check(g, &[bottom], &[top, mask])?;
            if empty(g) {
                return Ok(());
            }
            mem.with(&[top, mask], &[bottom], |o, i| {
                let [top, mask] = o else { unreachable!() };
                let planes: Vec<_> = top_planes(top, g)
                    .into_iter()
                    .zip(top_planes(mask, g))
                    .collect();
                for_planes(g, planes, |p, (top, mask)| {
                    sto_train_forward(g, plane(i[0], g, p), top, mask, seed, p)
                });
            });
        }
        &PoolKernel::MaskBackward {
            ref g,
            top_diff,
            mask,
            bottom_diff,
            accumulate,
        } => {
            check(g, &[bottom_diff], &[top_diff, mask])?;
            let same = SameSizeTaps::of(g);
            backward(
                g,
                mem,
                bottom_diff,
                &[top_diff, mask],
                accumulate,
                |p, ins, bd| {
                    let (dy, m) = (top_plane(ins[0], g, p), top_plane(ins[1], g, p));
                    #[cfg(target_arch = "x86_64")]
                    if let Some(same) = &same
                        && !accumulate
                    {
                        // SAFETY: SameSizeTaps::of checked the CPU.
                        let hits = unsafe { x86::mask_backward_same_size(same, dy, m, bd) };
                        if hits == m.iter().filter(|&&m| m >= 0.0).count() {
                            return;
                        }
                        // Some index lies outside its output's centred window (STOCHASTIC
                        // pooling ignores the padding): Caffe's scatter instead.
                        bd.fill(0.0);
                    }
                    for (&d, &m) in dy.iter().zip(m) {
                        if m >= 0.0 && (m as usize) < bd.len() {
                            bd[m as usize] += d;
                        }
                    }
                },
            );
        }
        &PoolKernel::AveBackward {
            ref g,
            top_diff,
            bottom_diff,
            accumulate,
        } => {
            check(g, &[bottom_diff], &[top_diff])?;
            backward(
                g,
                mem,
                bottom_diff,
                &[top_diff],
                accumulate,
                |p, ins, bd| {
                    let dy = top_plane(ins[0], g, p);
                    for ph in 0..g.pooled_h {
                        let (hs, he, hsize) =
                            ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
                        for pw in 0..g.pooled_w {
                            let (ws, we, wsize) =
                                ave_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
                            let d = dy[ph * g.pooled_w + pw] / (hsize * wsize) as f32;
                            for h in hs..he {
                                for v in &mut bd[h * g.width + ws..h * g.width + we] {
                                    *v += d;
                                }
                            }
                        }
                    }
                },
            );
        }
        &PoolKernel::StochasticTestBackward {
            ref g,
            bottom,
            top,
            top_diff,
            bottom_diff,
            accumulate,
        } => {
            check(g, &[bottom, bottom_diff], &[top, top_diff])?;
            backward(
                g,
                mem,
                bottom_diff,
                &[top_diff, top, bottom],
                accumulate,
                |p, ins, bd| {
                    let (dy, y, x) = (
                        top_plane(ins[0], g, p),
                        top_plane(ins[1], g, p),
                        plane(ins[2], g, p),
                    );
                    for ph in 0..g.pooled_h {
                        let (hs, he) = sto_window(ph, g.stride_h, g.kernel_h, g.height);
                        for pw in 0..g.pooled_w {
                            let (ws, we) = sto_window(pw, g.stride_w, g.kernel_w, g.width);
                            let mut sum = f32::MIN_POSITIVE;
                            for h in hs..he {
                                sum += x[h * g.width + ws..h * g.width + we].iter().sum::<f32>();
                            }
                            let (d, t) = (dy[ph * g.pooled_w + pw], y[ph * g.pooled_w + pw]);
                            for h in hs..he {
                                let row = h * g.width;
                                for (v, &xv) in bd[row + ws..row + we]
                                    .iter_mut()
                                    .zip(&x[row + ws..row + we])
                                {
                                    *v += d * (2.0 * xv - t) / sum;
                                }
                            }
                        }
                    }
                },
            );
        }
    }
    Ok(())
}

fn empty(g: &PoolGeom) -> bool {
    g.num * g.channels * g.pooled_h * g.pooled_w == 0
}

/// Checks the lengths of bottom-shaped and top-shaped views.
fn check(g: &PoolGeom, bottoms: &[View], tops: &[View]) -> Result<()> {
    ensure!(
        g.stride_h > 0 && g.stride_w > 0,
        "pooling: strides must be positive"
    );
    ensure!(
        g.num <= 1 || g.top_num_stride >= g.channels * g.pooled_h * g.pooled_w,
        "pooling: top_num_stride {} is smaller than an image's output",
        g.top_num_stride
    );
    for b in bottoms {
        ensure!(
            b.len == g.bottom_len(),
            "pooling: bottom view has {} elements, expected {}",
            b.len,
            g.bottom_len()
        );
    }
    for t in tops {
        ensure!(
            t.len == g.top_len(),
            "pooling: top view has {} elements, expected {}",
            t.len,
            g.top_len()
        );
    }
    Ok(())
}

/// Bottom plane `p` (= n * channels + c).
fn plane<'a>(bottom: &'a [f32], g: &PoolGeom, p: usize) -> &'a [f32] {
    let len = g.height * g.width;
    &bottom[p * len..][..len]
}

/// Top plane `p` in the strided top layout.
fn top_plane<'a>(top: &'a [f32], g: &PoolGeom, p: usize) -> &'a [f32] {
    let len = g.pooled_h * g.pooled_w;
    let (n, c) = (p / g.channels, p % g.channels);
    &top[n * g.top_num_stride + c * len..][..len]
}

/// The top planes in order p = n * channels + c.
fn top_planes<'a>(top: &'a mut [f32], g: &PoolGeom) -> Vec<&'a mut [f32]> {
    let len = g.pooled_h * g.pooled_w;
    let mut planes = Vec::with_capacity(g.num * g.channels);
    let mut rest = top;
    for n in 0..g.num {
        let (image, tail) = if n + 1 < g.num {
            rest.split_at_mut(g.top_num_stride)
        } else {
            (rest, &mut [][..])
        };
        planes.extend(image[..g.channels * len].chunks_mut(len));
        rest = tail;
    }
    planes
}

/// Runs `f(p, plane)` over every plane, in parallel when the work is big enough.
fn for_planes<T: Send>(g: &PoolGeom, planes: Vec<T>, f: impl Fn(usize, T) + Sync) {
    let work = g.bottom_len().max(g.top_len());
    if work < 2 * GRAIN {
        planes.into_iter().enumerate().for_each(|(p, t)| f(p, t));
    } else {
        let min = (GRAIN / (g.height * g.width).max(1)).max(1);
        planes
            .into_par_iter()
            .with_min_len(min)
            .enumerate()
            .for_each(|(p, t)| f(p, t));
    }
}

/// Shared driver of the backward kernels: zeroes (unless accumulating) each bottom-diff plane and lets
/// `f` add the plane's gradient.
fn backward(
    g: &PoolGeom,
    mem: &mut Memory,
    bottom_diff: View,
    ins: &[View],
    accumulate: bool,
    f: impl Fn(usize, &[&[f32]], &mut [f32]) + Sync,
) {
    let len = g.height * g.width;
    if len == 0 || g.num * g.channels == 0 {
        return;
    }
    mem.with(&[bottom_diff], ins, |o, i| {
        let planes: Vec<&mut [f32]> = o[0].chunks_mut(len).collect();
        for_planes(g, planes, |p, bd| {
            if !accumulate {
                bd.fill(0.0);
            }
            if g.pooled_h * g.pooled_w > 0 {
                f(p, i, bd);
            }
        });
    });
}

/// MAX window along one axis: [start, end) clipped to the image.
fn max_window(o: usize, stride: usize, pad: usize, kernel: usize, size: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + kernel as isize).min(size as isize);
    let start = start.clamp(0, size as isize);
    (start as usize, end.max(start) as usize)
}

/// AVE window along one axis: (start, end) clipped to the image and the padded extent that divides.
fn ave_window(
    o: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> (usize, usize, isize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + kernel as isize).min((size + pad) as isize);
    let extent = end - start;
    let (cs, ce) = (start.clamp(0, size as isize), end.min(size as isize));
    (cs as usize, ce.max(cs) as usize, extent)
}

/// STOCHASTIC window along one axis (no padding).
fn sto_window(o: usize, stride: usize, kernel: usize, size: usize) -> (usize, usize) {
    let start = (o * stride).min(size);
    (start, (start + kernel).min(size))
}

/// Outputs `lo..hi` of a row and the input column of output `lo`, for one kernel column.
type Span = (usize, usize, usize);

/// For each kernel column kw, the outputs `lo..hi` of a row whose window holds column
/// `pw * stride_w + kw - pad_w` inside the image, and that column for `pw = lo` (the same for
/// every row and plane, so computed once per kernel launch: per plane it cost more than global
/// pooling's 49 additions).
fn column_spans(g: &PoolGeom) -> Vec<Span> {
    let (pw_n, s) = (g.pooled_w, g.stride_w);
    let last = (g.width + g.pad_w).saturating_sub(1);
    (0..g.kernel_w)
        .filter_map(|kw| {
            let lo = if g.pad_w > kw {
                (g.pad_w - kw).div_ceil(s)
            } else {
                0
            };
            let hi = if g.width > 0 && last >= kw {
                ((last - kw) / s + 1).min(pw_n)
            } else {
                0
            };
            (lo < hi).then(|| (lo, hi, lo * s + kw - g.pad_w))
        })
        .collect()
}

/// Visits the window elements of output row `ph` kernel offset by kernel offset, in row-major
/// window order: `visit(lo, hi, first)` means outputs `lo..hi` of the row each read one element,
/// output `lo + t` the one at `first + t * stride_w`. Every output sees its window's elements in
/// the order Caffe's loops read them, and the loop over outputs has no branches, so it vectorises
/// for stride 1.
fn sweep_window_row(
    g: &PoolGeom,
    spans: &[Span],
    ph: usize,
    mut visit: impl FnMut(usize, usize, usize),
) {
    let (hs, he) = max_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
    for h in hs..he {
        let row = h * g.width;
        for &(lo, hi, column) in spans {
            visit(lo, hi, row + column);
        }
    }
}

/// `if take { a } else { b }` as a bit select, which stays branch-free (a compare-and-branch per
/// element mispredicts on real activations).
#[inline(always)]
fn select(take: bool, a: f32, b: f32) -> f32 {
    let mask = 0u32.wrapping_sub(take as u32);
    f32::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
}

/// Max pooling whose output plane is the input plane's size (stride 1, a kernel of 2 pad + 1:
/// GoogLeNet's 3x3/1/1 inception pools), vectorised along the plane itself: 16 consecutive
/// outputs (across rows) per vector, each window tap one masked load at a fixed offset, the mask
/// telling which outputs' taps lie inside the image. The row path spends much of its time on the
/// clipped ends of rows (a 7x7 plane is 7 rows of 7): this one is 4.5x faster on 7x7 planes, 3.4x
/// on 28x28 and still 1.4x on 112x112. The backward gathers each input's gradient the same way
/// (1.3-1.6x faster than the scatter).
struct SameSizeTaps {
    plane: usize,
    /// Each tap's input offset from its output, in row-major window order.
    offsets: Vec<isize>,
    /// valid[t * chunks + c]: the outputs of 16-chunk c whose tap t lies inside the image.
    valid: Vec<u16>,
}

/// Planes up to which the same-size path is used (its table of valid taps grows with the plane).
const SAME_SIZE_MAX_PLANE: usize = 1 << 16;

impl SameSizeTaps {
    fn of(g: &PoolGeom) -> Option<SameSizeTaps> {
        let same = g.stride_h == 1
            && g.stride_w == 1
            && g.pooled_h == g.height
            && g.pooled_w == g.width
            && g.kernel_h == 2 * g.pad_h + 1
            && g.kernel_w == 2 * g.pad_w + 1
            && g.kernel_h * g.kernel_w <= 49;
        let plane = g.height * g.width;
        #[cfg(target_arch = "x86_64")]
        let cpu = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = false;
        if !same || plane == 0 || plane > SAME_SIZE_MAX_PLANE || !cpu {
            return None;
        }
        let chunks = plane.div_ceil(16);
        let (mut offsets, mut valid) = (Vec::new(), Vec::new());
        for kh in 0..g.kernel_h {
            for kw in 0..g.kernel_w {
                let (dy, dx) = (
                    kh as isize - g.pad_h as isize,
                    kw as isize - g.pad_w as isize,
                );
                offsets.push(dy * g.width as isize + dx);
                for c in 0..chunks {
                    let mut bits = 0u16;
                    for l in 0..16.min(plane - 16 * c) {
                        let o = 16 * c + l;
                        let (y, x) = ((o / g.width) as isize + dy, (o % g.width) as isize + dx);
                        if y >= 0 && y < g.height as isize && x >= 0 && x < g.width as isize {
                            bits |= 1 << l;
                        }
                    }
                    valid.push(bits);
                }
            }
        }
        Some(SameSizeTaps {
            plane,
            offsets,
            valid,
        })
    }
}

/// Max pooling of narrow output planes with 2x2 windows that all lie inside the image (LeNet's
/// pools): 16 outputs per AVX-512 vector along the plane, across rows, each window tap one
/// gather. The row path fills a vector with one row's outputs (4 and 12 in LeNet), and its
/// per-row work dominates such planes: LeNet's pool2 0.23 -> 0.12 ms, pool1 0.25 -> 0.21 ms.
/// Gathers cost per tap: with CaffeNet's 3x3 windows on 13-wide rows they were slower than the
/// row path (0.78 -> 1.3 ms).
struct NarrowWholeWindows {
    /// Each output's first input (its window's top-left), row-major over the output plane.
    bases: Vec<i32>,
    /// Each tap's offset from the window's first input, in row-major window order.
    offsets: Vec<i32>,
    /// Input elements of a plane.
    plane: usize,
}

impl NarrowWholeWindows {
    /// Output widths below which the gathers beat the row path.
    const MAX_POOLED_W: usize = 16;
    /// Window taps up to which they do.
    const MAX_TAPS: usize = 4;

    fn of(g: &PoolGeom) -> Option<NarrowWholeWindows> {
        let whole = |pooled: usize, stride: usize, kernel: usize, size: usize| {
            pooled > 0 && (pooled - 1) * stride + kernel <= size
        };
        let plane = g.height * g.width;
        #[cfg(target_arch = "x86_64")]
        let cpu = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = false;
        let fits = g.pad_h == 0
            && g.pad_w == 0
            && g.pooled_w < Self::MAX_POOLED_W
            && whole(g.pooled_h, g.stride_h, g.kernel_h, g.height)
            && whole(g.pooled_w, g.stride_w, g.kernel_w, g.width)
            && g.kernel_h * g.kernel_w <= Self::MAX_TAPS
            && plane < 1 << 24;
        if !fits || !cpu {
            return None;
        }
        let bases = (0..g.pooled_h)
            .flat_map(|ph| (0..g.pooled_w).map(move |pw| (ph, pw)))
            .map(|(ph, pw)| (ph * g.stride_h * g.width + pw * g.stride_w) as i32)
            .collect();
        let offsets = (0..g.kernel_h)
            .flat_map(|kh| (0..g.kernel_w).map(move |kw| (kh * g.width + kw) as i32))
            .collect();
        Some(NarrowWholeWindows {
            bases,
            offsets,
            plane,
        })
    }
}

/// Caffe's max pooling: the first maximum in row-major window order wins (strict `>`), empty
/// windows give -FLT_MAX and index -1.
fn max_forward(g: &PoolGeom, spans: &[Span], x: &[f32], top: &mut [f32], mask: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if (g.stride_w == 1 || g.stride_w == 2)
        && x.len() <= 1 << 24
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        let cols = whole_windows(g.width, g.kernel_w, g.stride_w, g.pad_w, g.pooled_w);
        let pw_n = g.pooled_w;
        for ph in 0..g.pooled_h {
            let (best, idx) = (
                &mut top[ph * pw_n..][..pw_n],
                &mut mask[ph * pw_n..][..pw_n],
            );
            if !cols.is_empty() {
                let rows = max_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
                // SAFETY: the CPU has AVX-512F.
                unsafe { x86::max_row(g, x, rows.0..rows.1, cols.clone(), best, idx) }
            }
            for pw in (0..pw_n).filter(|pw| !cols.contains(pw)) {
                (best[pw], idx[pw]) = max_clipped(g, x, ph, pw);
            }
        }
        return;
    }
    max_forward_portable(g, spans, x, top, mask)
}

/// [`max_forward`] without vector instructions.
fn max_forward_portable(
    g: &PoolGeom,
    spans: &[Span],
    x: &[f32],
    top: &mut [f32],
    mask: &mut [f32],
) {
    let (pw_n, s) = (g.pooled_w, g.stride_w);
    // Strided 2x2 and 3x3 windows without padding: the outputs whose windows are whole take one
    // unrolled pass each (the row sweep below reads and writes every output once per window
    // element, and does not vectorise for strides above 1).
    let mut first_row = 0;
    if s > 1 && g.pad_h == 0 && g.pad_w == 0 {
        let rows = whole_windows(g.height, g.kernel_h, g.stride_h, 0, g.pooled_h).end;
        let cols = whole_windows(g.width, g.kernel_w, g.stride_w, 0, g.pooled_w).end;
        let done = match (g.kernel_h, g.kernel_w) {
            (2, 2) => max_whole_windows::<2, 2>(g, x, top, mask, rows, cols),
            (3, 3) => max_whole_windows::<3, 3>(g, x, top, mask, rows, cols),
            _ => false,
        };
        if done {
            // The clipped outputs at the end of those rows.
            for ph in 0..rows {
                for pw in cols..pw_n {
                    (top[ph * pw_n + pw], mask[ph * pw_n + pw]) = max_clipped(g, x, ph, pw);
                }
            }
            first_row = rows;
        }
    }
    // Indices go through i32, which converts to f32 in vector registers (planes beyond 2^31
    // elements cannot be pooled anyway: the mask holds f32 indices).
    let narrow = x.len() <= i32::MAX as usize;
    for ph in first_row..g.pooled_h {
        let best = &mut top[ph * pw_n..][..pw_n];
        let idx = &mut mask[ph * pw_n..][..pw_n];
        best.fill(-f32::MAX);
        idx.fill(-1.0);
        sweep_window_row(g, spans, ph, |lo, hi, first| {
            let (best, idx) = (&mut best[lo..hi], &mut idx[lo..hi]);
            let src = &x[first..first + (hi - lo - 1) * s + 1];
            if s == 1 && narrow {
                for ((b, m), (&v, at)) in best
                    .iter_mut()
                    .zip(idx.iter_mut())
                    .zip(src.iter().zip(first as i32..))
                {
                    let gt = v > *b;
                    *b = select(gt, v, *b);
                    *m = select(gt, at as f32, *m);
                }
            } else {
                for ((b, m), (&v, t)) in best
                    .iter_mut()
                    .zip(idx.iter_mut())
                    .zip(src.iter().step_by(s).zip(0..))
                {
                    let gt = v > *b;
                    *b = select(gt, v, *b);
                    *m = select(gt, (first + t * s) as f32, *m);
                }
            }
        });
    }
}

/// [`max_forward`] for the outputs `rows x cols` of a plane whose KH x KW windows lie wholly
/// inside the image (no padding): the window unrolled, Caffe's order and strict `>`. Returns
/// false (and does nothing) when the plane is too big for exact f32 indices.
fn max_whole_windows<const KH: usize, const KW: usize>(
    g: &PoolGeom,
    x: &[f32],
    top: &mut [f32],
    mask: &mut [f32],
    rows: usize,
    cols: usize,
) -> bool {
    if x.len() > 1 << 24 {
        return false;
    }
    let (w, pw_n) = (g.width, g.pooled_w);
    for ph in 0..rows {
        let (best, idx) = (
            &mut top[ph * pw_n..][..cols],
            &mut mask[ph * pw_n..][..cols],
        );
        let row = ph * g.stride_h * w;
        for (pw, (b, m)) in best.iter_mut().zip(idx.iter_mut()).enumerate() {
            let corner = row + pw * g.stride_w;
            let window: [[f32; KW]; KH] =
                std::array::from_fn(|i| x[corner + i * w..][..KW].try_into().unwrap());
            // The maximum first, then the first element equal to it: the value's compares do
            // not wait on the index's selects (one chain through the window otherwise). This is
            // what Caffe's strict `>` keeps; NaNs never win, and an index needs a value above
            // -FLT_MAX.
            let values = window.as_flattened();
            let value = values.iter().fold(-f32::MAX, |a, &v| select(v > a, v, a));
            let mut at = -1.0f32;
            for (k, &v) in values.iter().enumerate().rev() {
                at = select(v == value, (corner + k / KW * w + k % KW) as f32, at);
            }
            (*b, *m) = (value, select(value == -f32::MAX, -1.0, at));
        }
    }
    true
}

/// The outputs along one axis whose windows lie wholly inside the image.
fn whole_windows(
    size: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    pooled: usize,
) -> std::ops::Range<usize> {
    let first = pad.div_ceil(stride);
    let end = if size + pad >= kernel {
        ((size + pad - kernel) / stride + 1).min(pooled)
    } else {
        0
    };
    first.min(end)..end
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use crate::engine::kernels::pool::PoolGeom;

    /// Caffe's running maximum of one window per lane: from -FLT_MAX and index -1, a tap
    /// replaces it only when strictly greater, so ties keep the first tap and NaNs never win.
    struct RunningMax {
        value: __m512,
        at: __m512i,
    }

    impl RunningMax {
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn new() -> Self {
            RunningMax {
                value: _mm512_set1_ps(-f32::MAX),
                at: _mm512_set1_epi32(-1),
            }
        }

        /// Takes tap `v` (input indices `tap`) in the lanes `lanes`.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn take(&mut self, lanes: __mmask16, v: __m512, tap: __m512i) {
            let gt = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(lanes, v, self.value);
            self.value = _mm512_mask_blend_ps(gt, self.value, v);
            self.at = _mm512_mask_blend_epi32(gt, self.at, tap);
        }

        /// Stores the lanes `lanes` as outputs `first..` of `best` and `idx`.
        ///
        /// # Safety
        /// Those outputs lie within both slices.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn store(&self, best: &mut [f32], idx: &mut [f32], first: usize, lanes: __mmask16) {
            // SAFETY: the caller's.
            unsafe {
                _mm512_mask_storeu_ps(best.as_mut_ptr().add(first), lanes, self.value);
                _mm512_mask_storeu_ps(
                    idx.as_mut_ptr().add(first),
                    lanes,
                    _mm512_cvtepi32_ps(self.at),
                );
            }
        }
    }

    /// [`super::SameSizeTaps`]' max pooling of one plane: outputs 16 at a time along the plane,
    /// each lane running Caffe's loop over its window (row-major, strict `>`, from -FLT_MAX
    /// and index -1), taps outside the image skipped.
    #[target_feature(enable = "avx512f")]
    pub(super) fn max_same_size(
        taps: &super::SameSizeTaps,
        x: &[f32],
        best: &mut [f32],
        idx: &mut [f32],
    ) {
        let plane = taps.plane;
        assert!(x.len() >= plane && best.len() >= plane && idx.len() >= plane);
        let chunks = plane.div_ceil(16);
        let lane_step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for c in 0..chunks {
            let first = 16 * c;
            let lanes = ((1u32 << (plane - first).min(16)) - 1) as __mmask16;
            let positions = _mm512_add_epi32(lane_step, _mm512_set1_epi32(first as i32));
            let mut max = RunningMax::new();
            for (t, &offset) in taps.offsets.iter().enumerate() {
                let valid = taps.valid[t * chunks + c] & lanes;
                // SAFETY: a valid lane's tap lies inside the image, so inside x; the other
                // lanes are not accessed.
                let v = unsafe {
                    _mm512_maskz_loadu_ps(
                        valid,
                        x.as_ptr().wrapping_offset(first as isize + offset),
                    )
                };
                let tap = _mm512_add_epi32(positions, _mm512_set1_epi32(offset as i32));
                max.take(valid, v, tap);
            }
            // SAFETY: the stored lanes are outputs first..first + 16 within the plane.
            unsafe { max.store(best, idx, first, lanes) };
        }
    }

    /// [`super::NarrowWholeWindows`]' max pooling of one plane: outputs 16 at a time along the
    /// output plane, each lane running Caffe's loop over its window (row-major, strict `>`,
    /// from -FLT_MAX and index -1).
    #[target_feature(enable = "avx512f")]
    pub(super) fn max_narrow(
        taps: &super::NarrowWholeWindows,
        x: &[f32],
        best: &mut [f32],
        idx: &mut [f32],
    ) {
        let outputs = taps.bases.len();
        assert!(x.len() >= taps.plane && best.len() >= outputs && idx.len() >= outputs);
        for first in (0..outputs).step_by(16) {
            let lanes = ((1u32 << (outputs - first).min(16)) - 1) as __mmask16;
            // SAFETY: the lanes read bases first..first + 16 within the table.
            let base =
                unsafe { _mm512_maskz_loadu_epi32(lanes, taps.bases.as_ptr().add(first).cast()) };
            let mut max = RunningMax::new();
            for &offset in &taps.offsets {
                let tap = _mm512_add_epi32(base, _mm512_set1_epi32(offset));
                // SAFETY: every window lies inside the plane (NarrowWholeWindows::of), so every
                // active lane's tap indexes x; the other lanes are not accessed.
                let v = unsafe {
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), lanes, tap, x.as_ptr())
                };
                max.take(lanes, v, tap);
            }
            // SAFETY: the stored lanes are outputs first..first + 16 within the plane.
            unsafe { max.store(best, idx, first, lanes) };
        }
    }

    /// The backward of [`max_same_size`]: bd[i] += dy[o] for every output o with mask[o] = i
    /// whose window holds i, gathered per input, 16 at a time, over the outputs whose windows
    /// hold it in increasing order (Caffe's scatter loop adds them in that order too), instead
    /// of a scatter whose adds wait on each other. Returns how many outputs it took: fewer than
    /// those with an index when some index lies outside its window.
    #[target_feature(enable = "avx512f")]
    pub(super) fn mask_backward_same_size(
        taps: &super::SameSizeTaps,
        dy: &[f32],
        mask: &[f32],
        bd: &mut [f32],
    ) -> usize {
        let plane = taps.plane;
        assert!(dy.len() >= plane && mask.len() >= plane && bd.len() >= plane);
        let (chunks, count) = (plane.div_ceil(16), taps.offsets.len());
        let lane_step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut hits = 0;
        for c in 0..chunks {
            let first = 16 * c;
            let lanes = ((1u32 << (plane - first).min(16)) - 1) as __mmask16;
            let inputs =
                _mm512_cvtepi32_ps(_mm512_add_epi32(lane_step, _mm512_set1_epi32(first as i32)));
            // SAFETY: lanes lie inside the plane.
            let mut acc = unsafe { _mm512_maskz_loadu_ps(lanes, bd.as_ptr().add(first)) };
            // Input i is read by output i - offset[t] through tap t: the outputs in increasing
            // order are the taps in decreasing order. The window being symmetric, output
            // i - offset[t] exists with tap t inside the image exactly when the mirrored tap
            // count - 1 - t is valid for i as an output.
            for t in (0..count).rev() {
                let valid = taps.valid[(count - 1 - t) * chunks + c] & lanes;
                let at = first as isize - taps.offsets[t];
                // SAFETY: a valid lane's output lies inside the plane; the others are not
                // accessed.
                let (m, d) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(valid, mask.as_ptr().wrapping_offset(at)),
                        _mm512_maskz_loadu_ps(valid, dy.as_ptr().wrapping_offset(at)),
                    )
                };
                let hit = _mm512_mask_cmp_ps_mask::<_CMP_EQ_OQ>(valid, m, inputs);
                acc = _mm512_mask_add_ps(acc, hit, acc, d);
                hits += hit.count_ones() as usize;
            }
            // SAFETY: as the load above.
            unsafe { _mm512_mask_storeu_ps(bd.as_mut_ptr().add(first), lanes, acc) };
        }
        hits
    }

    /// Outputs `cols` of one output row, whose windows span image rows `rows` and lie wholly
    /// inside the image along the row: 16 at a time and the last few under a lane mask. Each lane
    /// runs Caffe's loop over its window (row-major, strict `>`, from -FLT_MAX and index -1), so
    /// ties, NaNs and -FLT_MAX come out as in Caffe. Stride 1 or 2 along the row (stride 2 takes
    /// the even elements of two loads).
    #[target_feature(enable = "avx512f")]
    pub(super) fn max_row(
        g: &PoolGeom,
        x: &[f32],
        rows: Range<usize>,
        cols: Range<usize>,
        best: &mut [f32],
        idx: &mut [f32],
    ) {
        let (w, s) = (g.width, g.stride_w);
        let lane_step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let lane_offsets = _mm512_mullo_epi32(lane_step, _mm512_set1_epi32(s as i32));
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        // Lanes of a load from x[p..] that lie inside x: the elements a lane needs always do,
        // the others read as 0 and only reach lanes that are not stored.
        let inside = |p: usize, ahead: usize| -> __mmask16 {
            let left = x.len().saturating_sub(p + ahead);
            if left >= 16 {
                0xffff
            } else {
                (1u16 << left) - 1
            }
        };
        let mut pw = cols.start;
        while pw < cols.end {
            let lanes = (cols.end - pw).min(16);
            let left = pw * s - g.pad_w;
            let mut max = RunningMax::new();
            for h in rows.clone() {
                let row = h * w + left;
                for j in 0..g.kernel_w {
                    let p = row + j;
                    // SAFETY: the masks keep every load inside x.
                    let v = unsafe {
                        let a = _mm512_maskz_loadu_ps(inside(p, 0), x.as_ptr().add(p));
                        if s == 1 {
                            a
                        } else {
                            let b = _mm512_maskz_loadu_ps(inside(p, 16), x.as_ptr().add(p + 16));
                            _mm512_permutex2var_ps(a, evens, b)
                        }
                    };
                    let tap = _mm512_add_epi32(lane_offsets, _mm512_set1_epi32(p as i32));
                    max.take(0xffff, v, tap);
                }
            }
            let store = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the stored lanes are outputs pw..pw + lanes <= cols.end <= best.len().
            unsafe { max.store(best, idx, pw, store) };
            pw += lanes;
        }
    }
}

/// One output of Caffe's max pooling over its window clipped to the image: (max, index).
fn max_clipped(g: &PoolGeom, x: &[f32], ph: usize, pw: usize) -> (f32, f32) {
    let (hs, he) = max_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
    let (ws, we) = max_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
    let (mut value, mut at) = (-f32::MAX, -1.0f32);
    for h in hs..he {
        for c in ws..we {
            let v = x[h * g.width + c];
            let gt = v > value;
            value = select(gt, v, value);
            at = select(gt, (h * g.width + c) as f32, at);
        }
    }
    (value, at)
}

/// Caffe's average pooling: each output sums its window (clipped to the image) in row-major order
/// and divides by the window's size clipped to the padded image.
fn ave_forward(g: &PoolGeom, spans: &[Span], x: &[f32], top: &mut [f32]) {
    let (pw_n, s) = (g.pooled_w, g.stride_w);
    if pw_n == 1 {
        // One output per row (global pooling): its window summed row by row, in the same
        // row-major order, without a sweep call per window element.
        let (ws, we, wsize) = ave_window(0, g.stride_w, g.pad_w, g.kernel_w, g.width);
        for (ph, out) in top[..g.pooled_h].iter_mut().enumerate() {
            let (hs, he, hsize) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
            let mut sum = 0f32;
            for h in hs..he {
                for &v in &x[h * g.width..][ws..we] {
                    sum += v;
                }
            }
            *out = sum / (hsize * wsize) as f32;
        }
        return;
    }
    for ph in 0..g.pooled_h {
        let sums = &mut top[ph * pw_n..][..pw_n];
        sums.fill(0.0);
        sweep_window_row(g, spans, ph, |lo, hi, first| {
            let src = &x[first..first + (hi - lo - 1) * s + 1];
            if s == 1 {
                for (acc, &v) in sums[lo..hi].iter_mut().zip(src) {
                    *acc += v;
                }
            } else {
                for (acc, &v) in sums[lo..hi].iter_mut().zip(src.iter().step_by(s)) {
                    *acc += v;
                }
            }
        });
        let (_, _, hsize) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for (pw, acc) in sums.iter_mut().enumerate() {
            let (_, _, wsize) = ave_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            *acc /= (hsize * wsize) as f32;
        }
    }
}

fn sto_test_forward(g: &PoolGeom, x: &[f32], top: &mut [f32]) {
    for ph in 0..g.pooled_h {
        let (hs, he) = sto_window(ph, g.stride_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_w {
            let (ws, we) = sto_window(pw, g.stride_w, g.kernel_w, g.width);
            let (mut sum, mut sq) = (f32::MIN_POSITIVE, 0f32);
            for h in hs..he {
                for &v in &x[h * g.width + ws..h * g.width + we] {
                    sum += v;
                    sq += v * v;
                }
            }
            top[ph * g.pooled_w + pw] = sq / sum;
        }
    }
}

/// A uniform number in [0, 1) from (seed, counter): splitmix64 finalisation, 24 bits.
pub(crate) fn uniform_hash(seed: u64, counter: u64) -> f32 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

fn sto_train_forward(
    g: &PoolGeom,
    x: &[f32],
    top: &mut [f32],
    mask: &mut [f32],
    seed: u64,
    p: usize,
) {
    let len = g.pooled_h * g.pooled_w;
    for ph in 0..g.pooled_h {
        let (hs, he) = sto_window(ph, g.stride_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_w {
            let (ws, we) = sto_window(pw, g.stride_w, g.kernel_w, g.width);
            let o = ph * g.pooled_w + pw;
            let mut sum = 0f32;
            for h in hs..he {
                sum += x[h * g.width + ws..h * g.width + we].iter().sum::<f32>();
            }
            let threshold = uniform_hash(seed, (p * len + o) as u64) * sum;
            let (mut value, mut idx) = (0f32, -1isize);
            let mut running = 0f32;
            'search: for h in hs..he {
                for w in ws..we {
                    let i = h * g.width + w;
                    running += x[i];
                    value = x[i];
                    idx = i as isize;
                    if running >= threshold {
                        break 'search;
                    }
                }
            }
            top[o] = value;
            mask[o] = idx as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `len` values drawn from a few, with ties, signed zeros, NaNs, infinities and -FLT_MAX:
    /// the inputs on which Caffe's strict `>` and its starting -FLT_MAX show.
    fn tie_heavy(rng: &mut Rng, len: usize) -> Vec<f32> {
        let palette = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -f32::MAX,
            2.5,
        ];
        (0..len)
            .map(|_| {
                let i = rng.uniform_range(0.0, palette.len() as f32) as usize;
                palette[i.min(palette.len() - 1)]
            })
            .collect()
    }

    /// Every output of `max_forward` (which takes the vector path or the unrolled path for whole
    /// windows) equals Caffe's loop over its window, on values full of ties, signed zeros, NaNs,
    /// infinities and -FLT_MAX, with and without padding, on rows long enough for several
    /// vectors.
    /// A mask backward on a same-size geometry whose indices lie outside their centred windows
    /// (STOCHASTIC pooling ignores the padding) still adds every output where its index says.
    #[test]
    fn mask_backward_takes_indices_outside_centred_windows() {
        use crate::engine::{Engine, View};
        let g = PoolGeom {
            num: 2,
            channels: 3,
            height: 5,
            width: 6,
            pooled_h: 5,
            pooled_w: 6,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_h: 1,
            pad_w: 1,
            top_num_stride: 3 * 30,
        };
        let mut rng = Rng::new(9);
        let n = g.num * g.channels * 30;
        let dy: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
        // STOCHASTIC's windows start at the output itself: its index o + 2 (o's window is
        // [o, o + 3) along both axes), clipped to the plane.
        let mask: Vec<f32> = (0..n)
            .map(|k| {
                let o = k % 30;
                let (y, x) = (o / 6, o % 6);
                ((y + 2).min(4) * 6 + (x + 2).min(5)) as f32
            })
            .collect();
        let mut want = vec![0f32; n];
        for (k, (&d, &m)) in dy.iter().zip(&mask).enumerate() {
            want[k / 30 * 30 + m as usize] += d;
        }
        let mut eng = crate::engine::cpu::CpuEngine::new();
        let view = |eng: &mut crate::engine::cpu::CpuEngine, data: &[f32]| {
            let v = View::new(eng.alloc(data.len()), 0, data.len());
            eng.upload(v, data);
            v
        };
        let (vdy, vm, vbd) = (
            view(&mut eng, &dy),
            view(&mut eng, &mask),
            view(&mut eng, &vec![7.0; n]),
        );
        let kernel = PoolKernel::MaskBackward {
            g,
            top_diff: vdy,
            mask: vm,
            bottom_diff: vbd,
            accumulate: false,
        };
        run(&kernel, &mut eng.mem).unwrap();
        let got = eng.download(vbd);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }

    /// The same-size path (stride 1, kernel 2 pad + 1) forward and backward against Caffe's
    /// loops, bit for bit, on inputs full of ties, NaNs and infinities.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn max_same_size_matches_caffes_loop() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut rng = Rng::new(8);
        for case in 0..200 {
            let (ph, pw) = (case % 3, (case / 3) % 3);
            let (height, width) = (1 + case % 9 + case / 50, 1 + (case / 2) % 13);
            let g = PoolGeom {
                num: 1,
                channels: 1,
                height,
                width,
                pooled_h: height,
                pooled_w: width,
                kernel_h: 2 * ph + 1,
                kernel_w: 2 * pw + 1,
                stride_h: 1,
                stride_w: 1,
                pad_h: ph,
                pad_w: pw,
                top_num_stride: 0,
            };
            let taps = SameSizeTaps::of(&g).expect("a same-size geometry");
            let x = tie_heavy(&mut rng, height * width);
            let n = height * width;
            let (mut top, mut mask) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { x86::max_same_size(&taps, &x, &mut top, &mut mask) };
            // The backward against Caffe's scatter loop, accumulating into a gradient that
            // already holds values (so that the order of the additions shows).
            let dy: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            let before: Vec<f32> = (0..n).map(|_| rng.uniform_range(-1e-3, 1e-3)).collect();
            let mut want = before.clone();
            for (&d, &m) in dy.iter().zip(&mask) {
                if m >= 0.0 {
                    want[m as usize] += d;
                }
            }
            let mut got = before;
            // SAFETY: as above.
            let hits = unsafe { x86::mask_backward_same_size(&taps, &dy, &mask, &mut got) };
            assert_eq!(hits, mask.iter().filter(|&&m| m >= 0.0).count(), "{g:?}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "backward of {g:?} on {x:?}");
            for oh in 0..height {
                for ow in 0..width {
                    let (value, at) = max_clipped(&g, &x, oh, ow);
                    let o = oh * width + ow;
                    assert_eq!(
                        (top[o].to_bits(), mask[o]),
                        (value.to_bits(), at),
                        "output ({oh}, {ow}) of {g:?} on {x:?}"
                    );
                }
            }
        }
    }

    /// Average pooling (the row sweep, and the per-output path of one-column outputs) against
    /// Caffe's loop, bit for bit: window sums in row-major order divided by the padded size.
    #[test]
    fn ave_forward_matches_caffes_loop() {
        let mut rng = Rng::new(4);
        for case in 0..300 {
            let (kh, kw) = (1 + case % 4, 1 + (case / 4) % 4);
            let (sh, sw) = (1 + case % 3, 1 + (case / 3) % 3);
            let (ph, pw) = ((case / 5) % kh, (case / 7) % kw);
            let (height, width) = (kh + case % 5, kw + (case / 2) % 6);
            // The whole width as one window for every fifth case (global pooling's one column).
            let (kw, pw, sw) = if case % 5 == 0 {
                (width, 0, 1)
            } else {
                (kw, pw, sw)
            };
            let pooled = |size: usize, k: usize, s: usize, p: usize| {
                let n = (size + 2 * p - k).div_ceil(s) + 1;
                if p > 0 && (n - 1) * s >= size + p {
                    n - 1
                } else {
                    n
                }
            };
            let g = PoolGeom {
                num: 1,
                channels: 1,
                height,
                width,
                pooled_h: pooled(height, kh, sh, ph),
                pooled_w: pooled(width, kw, sw, pw),
                kernel_h: kh,
                kernel_w: kw,
                stride_h: sh,
                stride_w: sw,
                pad_h: ph,
                pad_w: pw,
                top_num_stride: 0,
            };
            let x: Vec<f32> = (0..height * width)
                .map(|_| rng.uniform_range(-1.0, 1.0))
                .collect();
            let mut top = vec![f32::NAN; g.pooled_h * g.pooled_w];
            ave_forward(&g, &column_spans(&g), &x, &mut top);
            for oh in 0..g.pooled_h {
                for ow in 0..g.pooled_w {
                    let (hs, he, hsize) = ave_window(oh, sh, ph, kh, height);
                    let (ws, we, wsize) = ave_window(ow, sw, pw, kw, width);
                    let mut sum = 0f32;
                    for h in hs..he {
                        for w in ws..we {
                            sum += x[h * width + w];
                        }
                    }
                    let want = sum / (hsize * wsize) as f32;
                    assert_eq!(
                        top[oh * g.pooled_w + ow].to_bits(),
                        want.to_bits(),
                        "output ({oh}, {ow}) of {g:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn max_forward_matches_caffes_loop() {
        let mut rng = Rng::new(3);
        let mut narrow_cases = 0;
        for case in 0..400 {
            let k = 2 + case % 2;
            let stride = 1 + case % 3;
            let pad = (case / 3) % k;
            let (height, width) = (1 + case % 7 + case / 40, 1 + case % 11 + case / 8);
            // Caffe's ceil rule: the last window may be clipped, and must start inside the
            // image or its left padding.
            let pooled = |size: usize| {
                let p = (size + 2 * pad).saturating_sub(k).div_ceil(stride) + 1;
                if pad > 0 && (p - 1) * stride >= size + pad {
                    p - 1
                } else {
                    p
                }
            };
            let g = PoolGeom {
                num: 1,
                channels: 1,
                height,
                width,
                pooled_h: pooled(height),
                pooled_w: pooled(width),
                kernel_h: k,
                kernel_w: k,
                stride_h: stride,
                stride_w: stride,
                pad_h: pad,
                pad_w: pad,
                top_num_stride: 0,
            };
            let x = tie_heavy(&mut rng, height * width);
            let n = g.pooled_h * g.pooled_w;
            let mut results = Vec::new();
            for run in [max_forward, max_forward_portable] {
                let (mut top, mut mask) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                run(&g, &column_spans(&g), &x, &mut top, &mut mask);
                results.push((top, mask));
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(narrow) = NarrowWholeWindows::of(&g) {
                narrow_cases += 1;
                let (mut top, mut mask) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                // SAFETY: NarrowWholeWindows::of checked the CPU.
                unsafe { x86::max_narrow(&narrow, &x, &mut top, &mut mask) };
                results.push((top, mask));
            }
            for (top, mask) in &results {
                for ph in 0..g.pooled_h {
                    for pw in 0..g.pooled_w {
                        let (value, at) = max_clipped(&g, &x, ph, pw);
                        let o = ph * g.pooled_w + pw;
                        assert_eq!(
                            (top[o].to_bits(), mask[o]),
                            (value.to_bits(), at),
                            "output ({ph}, {pw}) of {g:?} on {x:?}"
                        );
                    }
                }
            }
        }
        // Windows without padding that all lie inside the image take the gathers (AVX-512).
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert!(narrow_cases >= 10, "{narrow_cases} cases took the gathers");
        }
    }
}
