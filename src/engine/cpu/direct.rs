//! Direct convolution (forward and weight gradient) for images with few channels: the first
//! layers of image nets (RGB 7x7 stride 2, 11x11 stride 4). Their im2col columns hold channels x
//! kernel elements per output position, dozens of times the image (147 rows of 12544 floats per
//! image for a 7x7 layer at 224x224), which the product then reads back through memory. Here
//! each output row is computed in registers from the image itself: 8 output channels x 32
//! positions at a time, the kernel taps in im2col's order (channel, kernel row, kernel column),
//! one fused multiply-add per tap, as the product accumulates them. The weight gradient sums
//! the output gradient times each tap's input over positions, 4 channels x 6 taps at a time.
//!
//! Strided rows are split into `stride` phases (phase r of a padded row holds its elements r,
//! r + stride, ...), so that the 32 positions of a block read consecutive elements of one phase
//! for every tap.
use rayon::prelude::*;

use super::conv::{OutPtr, forward_by_image};
use super::elementwise::PlaneEpilogue;
use super::has_avx512;
use crate::engine::kernels::conv::ConvGemm;

/// Input channels up to which the forward runs directly.
const MAX_CHANNELS: usize = 4;
/// Output channels per register block.
const CO: usize = 8;
/// Output positions per register block (two vectors of 16).
const XS: usize = 32;

/// The geometry of a convolution that runs directly (2-D, one group, undilated).
pub(super) struct Direct {
    batch: usize,
    channels: usize,
    out_channels: usize,
    /// Image height and width.
    h: usize,
    w: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    /// Padded image rows.
    rows: usize,
    /// Elements of one phase of a padded row (with room for a block's full-vector loads).
    phase_len: usize,
    /// Each kernel tap's first element relative to its output row's first padded row and the
    /// block's first position, in im2col's tap order.
    offsets: Vec<usize>,
}

impl Direct {
    /// `g`'s forward as a direct convolution, when it has at most [`MAX_CHANNELS`] input
    /// channels, one group, two spatial axes, no dilation, a kernel bigger than 1x1, and the CPU
    /// has AVX-512F.
    pub(super) fn of(g: &ConvGemm) -> Option<Direct> {
        let two_d = g.im_shape.len() == 2
            && g.col_shape.len() == 2
            && g.kernel.len() == 2
            && g.stride.len() == 2
            && g.pad.len() == 2
            && g.dilation.iter().all(|&d| d == 1);
        if !two_d
            || g.group != 1
            || g.channels == 0
            || g.channels > MAX_CHANNELS
            || g.is_1x1()
            || g.stride.contains(&0)
            || !has_avx512()
        {
            return None;
        }
        let (oh, ow) = (g.col_shape[0], g.col_shape[1]);
        let (kh, kw, sh, sw) = (g.kernel[0], g.kernel[1], g.stride[0], g.stride[1]);
        let (h, w, ph, pw) = (g.im_shape[0], g.im_shape[1], g.pad[0], g.pad[1]);
        // Caffe's output size, on which the padded extents below rely.
        let fits = |size: usize, pad: usize, k: usize, s: usize, out: usize| {
            size + 2 * pad >= k && (size + 2 * pad - k) / s + 1 == out
        };
        if !fits(h, ph, kh, sh, oh) || !fits(w, pw, kw, sw, ow) {
            return None;
        }
        let (rows, phase_len) = (h + 2 * ph, ow.next_multiple_of(XS) + (kw - 1) / sw);
        let offsets = (0..g.channels)
            .flat_map(|c| {
                (0..kh).flat_map(move |i| {
                    (0..kw).map(move |j| ((c * rows + i) * sw + j % sw) * phase_len + j / sw)
                })
            })
            .collect();
        Some(Direct {
            batch: g.batch,
            channels: g.channels,
            out_channels: g.out_channels,
            h,
            w,
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            rows,
            phase_len,
            offsets,
        })
    }

    fn taps(&self) -> usize {
        self.channels * self.kh * self.kw
    }

    /// Phase elements between the first padded rows of consecutive output rows.
    fn row_step(&self) -> usize {
        self.sh * self.sw * self.phase_len
    }

    fn phases_len(&self) -> usize {
        self.channels * self.rows * self.sw * self.phase_len
    }

    /// The weights in blocks of [`CO`] output channels, each [tap][CO] (channels past the last
    /// are zero).
    fn pack_weights(&self, weight: &[f32]) -> Vec<f32> {
        let (taps, blocks) = (self.taps(), self.out_channels.div_ceil(CO));
        let mut packed = vec![0f32; blocks * taps * CO];
        for (o, row) in weight
            .chunks_exact(taps)
            .take(self.out_channels)
            .enumerate()
        {
            let block = &mut packed[o / CO * taps * CO..][..taps * CO];
            for (t, &v) in row.iter().enumerate() {
                block[t * CO + o % CO] = v;
            }
        }
        packed
    }

    /// Splits one image into its padded row phases: element t of phase r of padded row y of
    /// channel c is the padded image's (y, t * sw + r), zero outside the image.
    fn split_phases(&self, image: &[f32], phases: &mut [f32]) {
        let (sw, len) = (self.sw, self.phase_len);
        for (c, channel) in phases.chunks_exact_mut(self.rows * sw * len).enumerate() {
            for (y, row) in channel.chunks_exact_mut(sw * len).enumerate() {
                row.fill(0.0);
                let Some(iy) = y.checked_sub(self.ph).filter(|&iy| iy < self.h) else {
                    continue;
                };
                let src = &image[(c * self.h + iy) * self.w..][..self.w];
                for (r, phase) in row.chunks_exact_mut(len).enumerate() {
                    // Element t of phase r is image column t * sw + r - pw.
                    let first = (self.pw.saturating_sub(r)).div_ceil(sw);
                    for (t, v) in phase.iter_mut().enumerate().skip(first) {
                        let Some(&x) = src.get(t * sw + r - self.pw) else {
                            break;
                        };
                        *v = x;
                    }
                }
            }
        }
    }
}

/// out = the convolution of every image of `input` with `weight`, then `epilogue` (bias and
/// steps) on each output plane.
pub(super) fn forward(
    d: &Direct,
    input: &[f32],
    weight: &[f32],
    out: &mut [f32],
    epilogue: &PlaneEpilogue,
) {
    let in_len = d.channels * d.h * d.w;
    assert!(input.len() >= d.batch * in_len);
    assert!(weight.len() >= d.out_channels * d.taps());
    let packed = d.pack_weights(weight);
    forward_by_image(
        (d.batch, d.out_channels, d.oh * d.ow),
        out,
        Some(epilogue),
        (d.phases_len(), d.oh, 4 * rayon::current_num_threads()),
        |b, phases| d.split_phases(&input[b * in_len..][..in_len], phases),
        |phases, ys, out| rows(d, phases, &packed, ys, out),
    );
}

/// Output channels per block of the weight gradient (each task owns whole rows of the diff).
const WG_CO: usize = 4;
/// Kernel taps per register block of the weight gradient.
const WG_TAPS: usize = 6;
/// Floats of the images' phases the weight gradient splits at a time (a group of images).
const WG_PHASES: usize = 1 << 21;

/// weight_diff += the weight gradient of the forward [`forward`] computes, from the images and
/// the output gradient: for each output channel o and tap t, the sum over images, output rows
/// and positions of dy[o] times the tap's phase row, 16 positions per vector. Images go in
/// order; each core takes blocks of [`WG_CO`] output channels, so the result does not depend
/// on the number of cores.
pub(super) fn weight_grad(d: &Direct, input: &[f32], out_diff: &[f32], weight_diff: &mut [f32]) {
    let (in_len, plane, taps) = (d.channels * d.h * d.w, d.oh * d.ow, d.taps());
    let out_len = d.out_channels * plane;
    assert!(input.len() >= d.batch * in_len && out_diff.len() >= d.batch * out_len);
    assert!(weight_diff.len() >= d.out_channels * taps);
    if d.batch == 0 || out_len == 0 {
        return;
    }
    // Whole blocks of taps: the padding repeats tap 0, whose extra sums are dropped.
    let mut offsets = d.offsets.clone();
    offsets.resize(taps.next_multiple_of(WG_TAPS), d.offsets[0]);
    // The phases of a group of images are split on all cores, then each core takes its blocks
    // of channels through the group's images (one synchronisation per group, not per image).
    let phases_len = d.phases_len();
    let group = (WG_PHASES / phases_len.max(1)).clamp(1, d.batch);
    let mut phases = vec![0f32; group * phases_len];
    for first in (0..d.batch).step_by(group) {
        let images = group.min(d.batch - first);
        phases[..images * phases_len]
            .par_chunks_mut(phases_len)
            .enumerate()
            .for_each(|(b, phases)| {
                d.split_phases(&input[(first + b) * in_len..][..in_len], phases)
            });
        let phases = &phases[..images * phases_len];
        weight_diff[..d.out_channels * taps]
            .par_chunks_mut(WG_CO * taps)
            .enumerate()
            .for_each(|(block, dw)| {
                for (b, phases) in phases.chunks_exact(phases_len).enumerate() {
                    let dy = &out_diff[(first + b) * out_len..][..out_len];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: Direct::of checked the CPU; see x86::weight_grad_block.
                    unsafe {
                        x86::weight_grad_block(d, phases, dy, &offsets, block * WG_CO, dw)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        let _ = (block, dw, phases, dy);
                        unreachable!("Direct::of needs AVX-512");
                    }
                }
            });
    }
}

/// Output rows `ys` of one image (every channel) from its phases.
fn rows(d: &Direct, phases: &[f32], packed: &[f32], ys: std::ops::Range<usize>, out: OutPtr) {
    assert!(phases.len() >= d.phases_len() && ys.end <= d.oh);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: Direct::of checked the CPU; the asserts above and Direct's extents keep every
    // access inside phases, packed and the image's output (see x86::rows).
    unsafe {
        x86::rows(d, phases, packed, ys, out.0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (d, phases, packed, ys, out);
        unreachable!("Direct::of needs AVX-512");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CO, Direct, WG_CO, WG_TAPS, XS};

    /// # Safety
    /// The CPU has AVX-512F; `phases` holds the image's phases, `packed` the packed weights and
    /// `out` the image's output (out_channels planes of oh x ow); `ys` lies within oh.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(
        d: &Direct,
        phases: &[f32],
        packed: &[f32],
        ys: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let (taps, plane) = (d.taps(), d.oh * d.ow);
        let offsets = &d.offsets;
        let row_step = d.row_step();
        for y in ys {
            // SAFETY: padded row y * sh + i of every tap lies within d.rows (Direct::of checked
            // the output size).
            let first_row = unsafe { phases.as_ptr().add(y * row_step) };
            let mut x = 0;
            while x < d.ow {
                let lanes = (d.ow - x).min(XS);
                // SAFETY: a block's loads end within its phase rows (phase_len covers the last
                // block's 32 positions plus the furthest tap), its stores within the row.
                unsafe {
                    let block = first_row.add(x);
                    let dst = out.add(y * d.ow + x);
                    for (ob, weights) in packed.chunks_exact(taps * CO).enumerate() {
                        let channels = (d.out_channels - ob * CO).min(CO);
                        let dst = dst.add(ob * CO * plane);
                        // The last block of a row takes one vector when its positions fit.
                        if lanes > 16 {
                            block_of::<2>(block, offsets, weights, dst, plane, channels, lanes);
                        } else {
                            block_of::<1>(block, offsets, weights, dst, plane, channels, lanes);
                        }
                    }
                }
                x += lanes;
            }
        }
    }

    /// Output positions `0..lanes` (at most 16 V) of `channels` (at most CO) output channels:
    /// `dst` is the first position of the first channel, `plane` the channel stride of the
    /// output; the taps read `block + offsets[t]` and weight `weights[t * CO + o]`.
    #[inline(always)]
    unsafe fn block_of<const V: usize>(
        block: *const f32,
        offsets: &[usize],
        weights: &[f32],
        dst: *mut f32,
        plane: usize,
        channels: usize,
        lanes: usize,
    ) {
        // SAFETY: the caller's (see rows).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; CO];
            let mut wp = weights.as_ptr();
            for &off in offsets {
                let src = block.add(off);
                let v: [__m512; V] = std::array::from_fn(|k| _mm512_loadu_ps(src.add(16 * k)));
                for (o, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*wp.add(o));
                    for k in 0..V {
                        acc[k] = _mm512_fmadd_ps(w, v[k], acc[k]);
                    }
                }
                wp = wp.add(CO);
            }
            for (o, acc) in acc.iter().enumerate().take(channels) {
                let row = dst.add(o * plane);
                for (k, &a) in acc.iter().enumerate() {
                    // A masked-off lane touches no memory (hence wrapping_add past the row).
                    let mask = lane_mask(lanes.saturating_sub(16 * k).min(16));
                    _mm512_mask_storeu_ps(row.wrapping_add(16 * k), mask, a);
                }
            }
        }
    }

    /// dw (output channels `o0..o0 + dw.len() / taps`, [channel][tap]) += the weight gradient
    /// of one image: `phases` its phases, `dy` its output gradient, `offsets` the taps'
    /// offsets padded to whole blocks of [`WG_TAPS`] (the padding's sums are dropped).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `phases` holds d.phases_len() elements and `dy` the image's
    /// out_channels x oh x ow gradient; every offset is one of d.offsets.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_block(
        d: &Direct,
        phases: &[f32],
        dy: &[f32],
        offsets: &[usize],
        o0: usize,
        dw: &mut [f32],
    ) {
        let (taps, plane) = (d.taps(), d.oh * d.ow);
        let channels = dw.len() / taps;
        assert!(phases.len() >= d.phases_len() && dy.len() >= (o0 + channels) * plane);
        assert!(channels <= WG_CO && offsets.len().is_multiple_of(WG_TAPS));
        let row_step = d.row_step();
        for (tb, block) in offsets.chunks_exact(WG_TAPS).enumerate() {
            let mut acc = [[_mm512_setzero_ps(); WG_TAPS]; WG_CO];
            for y in 0..d.oh {
                let mut x = 0;
                while x < d.ow {
                    let lanes = (d.ow - x).min(16);
                    let mask = lane_mask(lanes);
                    // SAFETY: the masks keep the loads within dy's rows and the phase rows
                    // (positions x..x + lanes plus a tap's offset lie inside, see rows).
                    unsafe {
                        let g: [__m512; WG_CO] = std::array::from_fn(|o| {
                            if o < channels {
                                let at = (o0 + o) * plane + y * d.ow + x;
                                _mm512_maskz_loadu_ps(mask, dy.as_ptr().add(at))
                            } else {
                                _mm512_setzero_ps()
                            }
                        });
                        let first = phases.as_ptr().add(y * row_step + x);
                        for (t, &off) in block.iter().enumerate() {
                            let v = _mm512_maskz_loadu_ps(mask, first.add(off));
                            for o in 0..WG_CO {
                                acc[o][t] = _mm512_fmadd_ps(g[o], v, acc[o][t]);
                            }
                        }
                    }
                    x += lanes;
                }
            }
            for (o, sums) in acc.iter().enumerate().take(channels) {
                for (t, &sum) in sums.iter().enumerate() {
                    let tap = tb * WG_TAPS + t;
                    if tap < taps {
                        dw[o * taps + tap] += _mm512_reduce_add_ps(sum);
                    }
                }
            }
        }
    }

    fn lane_mask(lanes: usize) -> __mmask16 {
        ((1u32 << lanes) - 1) as __mmask16
    }
}
