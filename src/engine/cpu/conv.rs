use anyhow::{Result, ensure};
use rayon::prelude::*;

use super::blas::sgemm;
use super::elementwise::{JunctionOperands, PlaneEpilogue, stage_operands};
use super::implicit::LanePattern;
use super::{Memory, wide};
use crate::engine::View;
use crate::engine::kernels::blas::Gemm;
use crate::engine::kernels::conv::{ConvGemm, ConvKernel, Im2col};

/// Spatial axes im2col handles (Caffe's GPU im2col stops at 10 axes in all).
const MAX_AXES: usize = 8;

/// Elements a rayon task should at least get before splitting is worth it.
const GRAIN: usize = 1 << 14;

pub fn run(kernel: &ConvKernel, mem: &mut Memory) -> Result<()> {
    match kernel {
        ConvKernel::ConvForward(_)
        | ConvKernel::ConvBackwardData(_)
        | ConvKernel::ConvWeightGrad(_) => {
            anyhow::bail!("internal: whole convolutions run through kernels::conv::run_composed")
        }
        ConvKernel::Im2col(k) => {
            let geo = Geo::new(k)?;
            let (im, col) = spans(k)?;
            mem.with(&[col], &[im], |o, i| {
                if k.col_stride >= k.col_len() && k.col_len() > 0 {
                    o[0].par_chunks_mut(k.col_stride)
                        .enumerate()
                        .for_each(|(b, col_b)| {
                            let im_b = &i[0][b * k.im_stride..][..k.im_len()];
                            im2col_image(&geo, im_b, &mut col_b[..k.col_len()], true);
                        });
                } else {
                    for b in 0..k.batch {
                        let im_b = &i[0][b * k.im_stride..][..k.im_len()];
                        let col_b = &mut o[0][b * k.col_stride..][..k.col_len()];
                        im2col_image(&geo, im_b, col_b, true);
                    }
                }
            });
        }
        ConvKernel::Col2im(k) => {
            let geo = Geo::new(k)?;
            let (im, col) = spans(k)?;
            mem.with(&[im], &[col], |o, i| {
                if k.im_stride >= k.im_len() && k.im_len() > 0 {
                    o[0].par_chunks_mut(k.im_stride)
                        .enumerate()
                        .for_each(|(b, im_b)| {
                            let col_b = &i[0][b * k.col_stride..][..k.col_len()];
                            col2im_image(&geo, col_b, &mut im_b[..k.im_len()], true);
                        });
                } else {
                    for b in 0..k.batch {
                        let col_b = &i[0][b * k.col_stride..][..k.col_len()];
                        let im_b = &mut o[0][b * k.im_stride..][..k.im_len()];
                        col2im_image(&geo, col_b, im_b, true);
                    }
                }
            });
        }
        &ConvKernel::AddChannelBias {
            y,
            bias,
            outer,
            channels,
            inner,
        } => {
            ensure!(
                y.len == outer * channels * inner,
                "AddChannelBias: y has {} elements, expected {}",
                y.len,
                outer * channels * inner
            );
            ensure!(
                bias.len == channels,
                "AddChannelBias: bias has {} elements, expected {channels}",
                bias.len
            );
            if y.len == 0 {
                return Ok(());
            }
            mem.with(&[y], &[bias], |o, i| {
                let bias = i[0];
                if inner == 1 {
                    let min = (GRAIN / channels.max(1)).max(1);
                    o[0].par_chunks_mut(channels)
                        .with_min_len(min)
                        .for_each(|row| {
                            for (v, b) in row.iter_mut().zip(bias) {
                                *v += b;
                            }
                        });
                } else {
                    let min = (GRAIN / inner).max(1);
                    o[0].par_chunks_mut(inner)
                        .with_min_len(min)
                        .enumerate()
                        .for_each(|(r, row)| {
                            let b = bias[r % channels];
                            row.iter_mut().for_each(|v| *v += b);
                        });
                }
            });
        }
        &ConvKernel::ChannelSum {
            x,
            out,
            outer,
            channels,
            inner,
            alpha,
            beta,
        } => {
            ensure!(
                x.len == outer * channels * inner,
                "ChannelSum: x has {} elements, expected {}",
                x.len,
                outer * channels * inner
            );
            ensure!(
                out.len == channels,
                "ChannelSum: out has {} elements, expected {channels}",
                out.len
            );
            mem.with(&[out], &[x], |o, i| {
                let x = i[0];
                let sums: Vec<f64> = if inner == 1 {
                    let mut acc = vec![0f64; channels];
                    for row in x.chunks(channels.max(1)) {
                        for (a, v) in acc.iter_mut().zip(row) {
                            *a += *v as f64;
                        }
                    }
                    acc
                } else {
                    // Each row summed in 8 lanes: a serial sum waits on every add.
                    (0..channels)
                        .into_par_iter()
                        .map(|c| {
                            (0..outer)
                                .map(|n| {
                                    let row = &x[(n * channels + c) * inner..][..inner];
                                    super::wide(|| super::elementwise::sum(row)) as f64
                                })
                                .sum::<f64>()
                        })
                        .collect()
                };
                for (v, s) in o[0].iter_mut().zip(sums) {
                    let base = if beta == 0.0 { 0.0 } else { beta * *v };
                    *v = base + alpha * s as f32;
                }
            });
        }
        &ConvKernel::GatherRows {
            indices,
            weight,
            top,
            rows,
            width,
        } => {
            ensure!(
                weight.len == rows * width,
                "GatherRows: weight has {} elements, expected {}",
                weight.len,
                rows * width
            );
            ensure!(
                top.len == indices.len * width,
                "GatherRows: top has {} elements, expected {}",
                top.len,
                indices.len * width
            );
            if width == 0 || rows == 0 {
                mem.write(top).fill(0.0);
                return Ok(());
            }
            mem.with(&[top], &[indices, weight], |o, i| {
                let (idx, w) = (i[0], i[1]);
                o[0].par_chunks_mut(width)
                    .with_min_len((GRAIN / width).max(1))
                    .enumerate()
                    .for_each(|(m, row)| {
                        let r = row_index(idx[m], rows);
                        row.copy_from_slice(&w[r * width..][..width]);
                    });
            });
        }
        &ConvKernel::ScatterAddRows {
            indices,
            top_diff,
            weight_diff,
            rows,
            width,
        } => {
            ensure!(
                weight_diff.len == rows * width,
                "ScatterAddRows: weight_diff has {} elements, expected {}",
                weight_diff.len,
                rows * width
            );
            ensure!(
                top_diff.len == indices.len * width,
                "ScatterAddRows: top_diff has {} elements, expected {}",
                top_diff.len,
                indices.len * width
            );
            if width == 0 || rows == 0 {
                return Ok(());
            }
            mem.with(&[weight_diff], &[indices, top_diff], |o, i| {
                let (idx, dy) = (i[0], i[1]);
                for (m, &v) in idx.iter().enumerate() {
                    let r = row_index(v, rows);
                    for (w, d) in o[0][r * width..][..width]
                        .iter_mut()
                        .zip(&dy[m * width..][..width])
                    {
                        *w += d;
                    }
                }
            });
        }
    }
    Ok(())
}

/// Caffe's static_cast<int>(index), clamped into [0, rows).
fn row_index(v: f32, rows: usize) -> usize {
    if v.is_nan() || v < 1.0 {
        0
    } else {
        (v as usize).min(rows - 1)
    }
}

/// The full views of the batch: (image span, column span).
/// Runs a whole convolution's forward, data gradient or weight gradient by Winograd when it
/// qualifies ([`crate::engine::kernels::conv::ConvGemm::winograd`]); returns whether it did.
pub(super) fn run_winograd(kernel: &ConvKernel, mem: &mut Memory) -> Result<bool> {
    let (g, adjoint) = match kernel {
        ConvKernel::ConvForward(g) | ConvKernel::ConvWeightGrad(g) => (g, false),
        ConvKernel::ConvBackwardData(g) => (g, true),
        _ => return Ok(false),
    };
    g.check()?;
    let Some(k) = g.winograd(adjoint) else {
        return Ok(false);
    };
    if let ConvKernel::ConvWeightGrad(_) = kernel {
        // Here `weight` is the weight diff (accumulated into) and `output` the output diff.
        mem.with(&[k.weight], &[k.input, k.output], |o, i| {
            super::winograd::weight_grad(&k, i[0], i[1], o[0])
        });
        return Ok(true);
    }
    if adjoint {
        mem.with(&[k.output], &[k.input, k.weight], |o, i| {
            super::winograd::forward(&k, i[0], i[1], o[0], None)
        });
    } else {
        with_epilogue(
            mem,
            g,
            &[k.output],
            &[k.input, k.weight],
            |o, i, epilogue| super::winograd::forward(&k, i[0], i[1], o[0], Some(epilogue)),
        )?;
    }
    Ok(true)
}

/// Runs a convolution's forward, or its data gradient at stride 1, as an implicit GEMM when it
/// qualifies ([`super::implicit::Implicit::of`]: small images); returns whether it did.
pub(super) fn run_implicit(kernel: &ConvKernel, mem: &mut Memory) -> Result<bool> {
    use super::implicit::{Implicit, forward};
    let (g, adjoint) = match kernel {
        ConvKernel::ConvForward(g) => (g, false),
        ConvKernel::ConvBackwardData(g) => (g, true),
        _ => return Ok(false),
    };
    g.check()?;
    let implicit = if adjoint {
        Implicit::of_adjoint(g)
    } else {
        Implicit::of(g)
    };
    let Some(k) = implicit else {
        return Ok(false);
    };
    let (im, out) = (
        g.im.slice(0, g.batch * g.im_len()),
        g.out.slice(0, g.batch * g.out_len()),
    );
    let weight = g.weight.slice(0, g.out_channels * g.kernel_dim());
    if adjoint {
        // Here `im` is the data gradient (overwritten) and `out` the output gradient.
        mem.with(&[im], &[out, weight], |o, i| {
            forward(&k, i[0], i[1], o[0], None)
        });
    } else {
        with_epilogue(mem, g, &[out], &[im, weight], |o, i, epilogue| {
            forward(&k, i[0], i[1], o[0], Some(epilogue))
        })?;
    }
    Ok(true)
}

/// Runs a convolution's forward or weight gradient directly when it qualifies
/// ([`super::direct::Direct::of`]: few input channels); returns whether it did.
pub(super) fn run_direct(kernel: &ConvKernel, mem: &mut Memory) -> Result<bool> {
    let (ConvKernel::ConvForward(g) | ConvKernel::ConvWeightGrad(g)) = kernel else {
        return Ok(false);
    };
    g.check()?;
    let Some(d) = super::direct::Direct::of(g) else {
        return Ok(false);
    };
    let (im, out) = (
        g.im.slice(0, g.batch * g.im_len()),
        g.out.slice(0, g.batch * g.out_len()),
    );
    let weight = g.weight.slice(0, g.out_channels * g.kernel_dim());
    if let ConvKernel::ConvWeightGrad(_) = kernel {
        // Here `weight` is the weight diff (accumulated into) and `out` the output diff.
        mem.with(&[weight], &[im, out], |o, i| {
            super::direct::weight_grad(&d, i[0], i[1], o[0])
        });
        return Ok(true);
    }
    with_epilogue(mem, g, &[out], &[im, weight], |o, i, epilogue| {
        super::direct::forward(&d, i[0], i[1], o[0], epilogue)
    })?;
    Ok(true)
}

/// The output of one image, written in disjoint parts (rows or channels) from several threads.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub *mut f32);
// SAFETY: the threads of one call write disjoint parts of the image.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

thread_local! {
    /// One image's form for [`forward_by_image`] (padded, or split into phases), kept between
    /// calls (no page faults for fresh buffers every pass).
    static IMAGE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A convolution forward that computes images from a form of their own (a padded copy, row
/// phases): with at least as many images as cores, each core takes whole images, their form
/// `prepare(b, form)` (`form_len` floats), `compute(form, 0..units, out)`, then the epilogue on
/// each of the image's planes while they are in its cache. With fewer images, each image's form
/// is made once and its `units` (output rows or channels) split into `parts` on the cores. `dims`
/// = (images, output channels, positions per plane).
pub(super) fn forward_by_image(
    (batch, channels, plane): (usize, usize, usize),
    out: &mut [f32],
    epilogue: Option<&PlaneEpilogue>,
    (form_len, units, parts): (usize, usize, usize),
    prepare: impl Fn(usize, &mut [f32]) + Sync,
    compute: impl Fn(&[f32], std::ops::Range<usize>, OutPtr) + Sync,
) {
    let out_len = channels * plane;
    assert!(out.len() >= batch * out_len);
    if batch == 0 || out_len == 0 {
        return;
    }
    let finish = |index: usize, p: &mut [f32]| {
        if let Some(epilogue) = epilogue.filter(|e| !e.is_empty()) {
            // SAFETY: each plane is finished by one task.
            wide(|| unsafe { epilogue.apply(index, p) });
        }
    };
    if batch >= rayon::current_num_threads() {
        out[..batch * out_len]
            .par_chunks_mut(out_len)
            .enumerate()
            .for_each(|(b, out)| {
                IMAGE.with(|cell| {
                    let mut form = cell.borrow_mut();
                    form.resize(form_len, 0.0);
                    prepare(b, &mut form);
                    compute(&form, 0..units, OutPtr(out.as_mut_ptr()));
                });
                if let Some(epilogue) = epilogue {
                    // SAFETY: each image is finished by one task.
                    unsafe { epilogue.apply_image(b, out) };
                }
            });
        return;
    }
    let mut form = vec![0f32; form_len];
    let parts = parts.clamp(1, units.max(1));
    for (b, out) in out[..batch * out_len].chunks_mut(out_len).enumerate() {
        prepare(b, &mut form);
        let ptr = OutPtr(out.as_mut_ptr());
        (0..parts).into_par_iter().for_each(|p| {
            compute(&form, p * units / parts..(p + 1) * units / parts, ptr);
        });
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(c, p)| finish(b * channels + c, p));
    }
}

/// Runs `f(outs, ins, epilogue)` on the slices of `outs` and `ins` with the forward epilogue of
/// `g` (its bias and steps, see [`PlaneEpilogue`]), whose operands it borrows as well.
fn with_epilogue<R>(
    mem: &mut Memory,
    g: &ConvGemm,
    outs: &[View],
    ins: &[View],
    f: impl FnOnce(&mut [&mut [f32]], &[&[f32]], &PlaneEpilogue) -> R,
) -> Result<R> {
    let dims = g.out_dims();
    let operands = stage_operands(dims, &g.epilogue)?;
    let junction = g
        .junction
        .as_ref()
        .map(|j| JunctionOperands::new(dims, j))
        .transpose()?;
    let bias = g.bias.map(|b| b.slice(0, g.out_channels));
    let all_outs: Vec<View> = (outs.iter().chain(&operands.outs))
        .chain(junction.iter().flat_map(|j| &j.outs))
        .copied()
        .collect();
    let all_ins: Vec<View> = ins
        .iter()
        .chain(&bias)
        .chain(&operands.ins)
        .chain(junction.iter().flat_map(|j| &j.ins))
        .copied()
        .collect();
    Ok(mem.with(&all_outs, &all_ins, |o, i| {
        let (own_outs, o) = o.split_at_mut(outs.len());
        let (stage_outs, junction_outs) = o.split_at_mut(operands.outs.len());
        let (own_ins, i) = i.split_at(ins.len());
        let (bias, i) = i.split_at(usize::from(bias.is_some()));
        let (stage_ins, junction_ins) = i.split_at(operands.ins.len());
        let mut epilogue = PlaneEpilogue::new(
            dims,
            bias.first().copied(),
            &g.epilogue,
            &operands,
            stage_outs,
            stage_ins,
        );
        if let (Some(spec), Some(operands)) = (&g.junction, &junction) {
            epilogue.join(spec, operands, junction_outs, junction_ins);
        }
        f(own_outs, own_ins, &epilogue)
    }))
}

/// Planes of at most this many positions (7x7, 8x8) make [`run_per_image`]'s 1x1 forward one
/// product of the images side by side: products of so few columns per image waste much of the
/// gemm crate's tiles (ResNet's and GoogLeNet's 7x7 1x1 layers ran 10-14% faster so, their
/// 14x14 ones 5-14% slower).
const SIDE_BY_SIDE_PLANE: usize = 64;

thread_local! {
    /// The inputs and outputs of [`forward_1x1_side_by_side`], kept between calls.
    static SIDE_BY_SIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The forward of a 1x1 convolution with one group: each input channel's planes are copied side
/// by side (image b's at columns b * plane..), multiplied by the weights in one product on all
/// cores, and each image's output planes copied back, its epilogue applied while they are in
/// cache.
fn forward_1x1_side_by_side(
    g: &ConvGemm,
    im: &[f32],
    weight: &[f32],
    out: &mut [f32],
    epilogue: &PlaneEpilogue,
) {
    let (plane, channels, outputs) = (g.out_spatial(), g.channels, g.out_channels);
    let columns = g.batch * plane;
    SIDE_BY_SIDE.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.resize((channels + outputs) * columns, 0.0);
        let (inputs, products) = scratch.split_at_mut(channels * columns);
        inputs
            .par_chunks_mut(columns)
            .enumerate()
            .for_each(|(c, row)| {
                for (b, dst) in row.chunks_exact_mut(plane).enumerate() {
                    dst.copy_from_slice(&im[(b * channels + c) * plane..][..plane]);
                }
            });
        // The views only describe the operands.
        let op = Gemm::single(
            false, false, outputs, columns, channels, 1.0, g.weight, g.im, 0.0, g.out,
        );
        sgemm(&op, weight, inputs, products, true);
        let products = &*products;
        out[..g.batch * outputs * plane]
            .par_chunks_mut(outputs * plane)
            .enumerate()
            .for_each(|(b, image)| {
                for (c, dst) in image.chunks_exact_mut(plane).enumerate() {
                    dst.copy_from_slice(&products[c * columns + b * plane..][..plane]);
                }
                // SAFETY: each image is finished by one task.
                unsafe { epilogue.apply_image(b, image) };
            });
    });
}

/// Runs a whole convolution (forward, data gradient or weight gradient) one image at a time per
/// core: each core forms an image's columns in its own slot of the column scratch and multiplies
/// them right away, while they are in its cache (the composed path writes a whole chunk's columns
/// first and reads them back after); a forward's bias and epilogue run on each image while it is
/// in cache. Returns whether it ran: it needs columns (not 1x1, except for a forward with an
/// epilogue, which multiplies the images themselves), and at least two images and two slots.
pub(super) fn run_per_image(kernel: &ConvKernel, mem: &mut Memory) -> Result<bool> {
    let g = match kernel {
        ConvKernel::ConvForward(g)
        | ConvKernel::ConvBackwardData(g)
        | ConvKernel::ConvWeightGrad(g) => g,
        _ => return Ok(false),
    };
    let slots = g.chunk().min(rayon::current_num_threads());
    // A 1x1 convolution needs no columns: the composed path's batched product does as well,
    // except that here the epilogue runs on each image while it is in cache, and small planes
    // are multiplied side by side.
    let forward_1x1 = matches!(kernel, ConvKernel::ConvForward(_))
        && (!g.epilogue.is_empty()
            || g.junction.is_some()
            || (g.group == 1 && g.out_spatial() <= SIDE_BY_SIDE_PLANE));
    if (g.is_1x1() && !forward_1x1) || slots < 2 || g.batch < 2 {
        return Ok(false);
    }
    g.check()?;
    let geo = (!g.is_1x1())
        .then(|| Geo::new(&g.im2col(0, 1)))
        .transpose()?;
    let (in_len, out_len, col_len) = (g.im_len(), g.out_len(), g.col_len());
    let (kd, s, og, groups) = (
        g.kernel_dim(),
        g.out_spatial(),
        g.out_channels / g.group,
        g.group,
    );
    let (im, out) = (
        g.im.slice(0, g.batch * in_len),
        g.out.slice(0, g.batch * out_len),
    );
    let weight = g.weight.slice(0, g.out_channels * kd);
    let col = if g.is_1x1() {
        g.col.slice(0, 0)
    } else {
        g.col.slice(0, slots * col_len)
    };
    // Images per slot.
    let per = g.batch.div_ceil(slots);
    // One group's product on this core (the views only describe the operands).
    let product = |trans: (bool, bool), (m, n, k), beta, a: &[f32], b: &[f32], c: &mut [f32]| {
        let op = Gemm::single(trans.0, trans.1, m, n, k, 1.0, weight, col, beta, out);
        sgemm(&op, a, b, c, false);
    };
    let (w_group, col_group, out_group) = (og * kd, kd * s, og * s);
    match kernel {
        ConvKernel::ConvForward(_) => {
            let one_by_one = g.is_1x1();
            let outs = if one_by_one {
                vec![out]
            } else {
                vec![out, col]
            };
            with_epilogue(mem, g, &outs, &[im, weight], |o, i, epilogue| {
                let (outs, cols) = o.split_at_mut(1);
                let (im, w) = (i[0], i[1]);
                if one_by_one && groups == 1 && s <= SIDE_BY_SIDE_PLANE {
                    forward_1x1_side_by_side(g, im, w, outs[0], epilogue);
                    return;
                }
                let slot_cols: Vec<&mut [f32]> = match cols.first_mut() {
                    Some(cols) => cols.chunks_mut(col_len).collect(),
                    None => (0..slots).map(|_| Default::default()).collect(),
                };
                outs[0]
                    .par_chunks_mut(per * out_len)
                    .zip(slot_cols)
                    .enumerate()
                    .for_each(|(j, (outs, col))| {
                        for (n, out) in outs.chunks_mut(out_len).enumerate() {
                            let image = j * per + n;
                            let im = &im[image * in_len..][..in_len];
                            let columns: &[f32] = match &geo {
                                Some(geo) => {
                                    im2col_image(geo, im, col, false);
                                    col
                                }
                                None => im,
                            };
                            for gi in 0..groups {
                                product(
                                    (false, false),
                                    (og, s, kd),
                                    0.0,
                                    &w[gi * w_group..][..w_group],
                                    &columns[gi * col_group..][..col_group],
                                    &mut out[gi * out_group..][..out_group],
                                );
                            }
                            // SAFETY: each image is computed by one task.
                            unsafe { epilogue.apply_image(image, out) };
                        }
                    });
            })?;
        }
        ConvKernel::ConvBackwardData(_) => {
            let geo = geo
                .as_ref()
                .expect("gradients of 1x1 convolutions run composed");
            mem.with(&[im, col], &[weight, out], |o, i| {
                let (ims, cols) = o.split_at_mut(1);
                let (w, dy) = (i[0], i[1]);
                ims[0]
                    .par_chunks_mut(per * in_len)
                    .zip(cols[0].par_chunks_mut(col_len))
                    .enumerate()
                    .for_each(|(j, (ims, col))| {
                        for (n, im) in ims.chunks_mut(in_len).enumerate() {
                            let dy = &dy[(j * per + n) * out_len..][..out_len];
                            for gi in 0..groups {
                                product(
                                    (true, false),
                                    (kd, s, og),
                                    0.0,
                                    &w[gi * w_group..][..w_group],
                                    &dy[gi * out_group..][..out_group],
                                    &mut col[gi * col_group..][..col_group],
                                );
                            }
                            col2im_image(geo, col, im, false);
                        }
                    });
            });
        }
        _ => {
            let geo = geo
                .as_ref()
                .expect("gradients of 1x1 convolutions run composed");
            let blocks = g.batch.div_ceil(per);
            mem.with(&[weight, col], &[im, out], |o, i| {
                let (wd, cols) = o.split_at_mut(1);
                let (im, dy) = (i[0], i[1]);
                // Each slot sums its images' products; the weight diff then gets the sums (each
                // group's transpose where that product is faster).
                let transposed = super::blas::transposed_sum_pays(og, kd, s);
                let shares: Vec<Vec<f32>> = cols[0]
                    .par_chunks_mut(col_len)
                    .take(blocks)
                    .enumerate()
                    .map(|(j, col)| {
                        let mut acc = vec![0f32; wd[0].len()];
                        for image in j * per..((j + 1) * per).min(g.batch) {
                            im2col_image(geo, &im[image * in_len..][..in_len], col, false);
                            let dy = &dy[image * out_len..][..out_len];
                            for gi in 0..groups {
                                let dy = &dy[gi * out_group..][..out_group];
                                let col = &col[gi * col_group..][..col_group];
                                let acc = &mut acc[gi * w_group..][..w_group];
                                if transposed {
                                    product((false, true), (kd, og, s), 1.0, col, dy, acc);
                                } else {
                                    product((false, true), (og, kd, s), 1.0, dy, col, acc);
                                }
                            }
                        }
                        acc
                    })
                    .collect();
                for share in &shares {
                    for (d, v) in wd[0].chunks_mut(w_group).zip(share.chunks(w_group)) {
                        if transposed {
                            // v is [kernel element][output] for this group.
                            super::blas::add_transposed(d, og, kd, v);
                        } else {
                            for (d, x) in d.iter_mut().zip(v) {
                                *d += x;
                            }
                        }
                    }
                }
            });
        }
    }
    Ok(true)
}

fn spans(k: &Im2col) -> Result<(View, View)> {
    if k.batch == 0 {
        return Ok((k.im.slice(0, 0), k.col.slice(0, 0)));
    }
    let im_len = (k.batch - 1) * k.im_stride + k.im_len();
    let col_len = (k.batch - 1) * k.col_stride + k.col_len();
    ensure!(
        k.im.len >= im_len,
        "im2col: image view has {} elements, needs {im_len}",
        k.im.len
    );
    ensure!(
        k.col.len >= col_len,
        "im2col: column view has {} elements, needs {col_len}",
        k.col.len
    );
    Ok((k.im.slice(0, im_len), k.col.slice(0, col_len)))
}

/// Normalised geometry: at least one spatial axis, the last axis handled as whole lines.
struct Geo {
    channels: usize,
    im: Vec<usize>,
    out: Vec<usize>,
    kernel: Vec<usize>,
    pad: Vec<usize>,
    stride: Vec<usize>,
    dilation: Vec<usize>,
    /// Elements of one image channel.
    plane: usize,
    /// Column positions (prod(out)).
    cols: usize,
    /// Kernel positions (prod(kernel)).
    kprod: usize,
}

impl Geo {
    fn new(k: &Im2col) -> Result<Geo> {
        let d = k.im_shape.len();
        ensure!(
            k.col_shape.len() == d
                && k.kernel.len() == d
                && k.pad.len() == d
                && k.stride.len() == d
                && k.dilation.len() == d,
            "im2col: every spatial vector needs {d} entries"
        );
        ensure!(
            k.stride.iter().all(|&s| s > 0),
            "im2col: strides must be positive"
        );
        ensure!(
            d <= MAX_AXES,
            "im2col: at most {MAX_AXES} spatial axes are supported, got {d}"
        );
        let norm = |v: &[usize]| if d == 0 { vec![1] } else { v.to_vec() };
        let zero = |v: &[usize]| if d == 0 { vec![0] } else { v.to_vec() };
        let g = Geo {
            channels: k.channels,
            im: norm(&k.im_shape),
            out: norm(&k.col_shape),
            kernel: norm(&k.kernel),
            pad: zero(&k.pad),
            stride: norm(&k.stride),
            dilation: norm(&k.dilation),
            plane: k.im_shape.iter().product(),
            cols: k.col_shape.iter().product(),
            kprod: k.kernel.iter().product(),
        };
        Ok(g)
    }

    /// The positions `lo..hi` of a line (last axis) that read the image for the kernel offset
    /// `off` along that axis; the others are padding.
    fn line_span(&self, off: isize) -> (usize, usize) {
        let last = self.im.len() - 1;
        let (w, ow, s) = (
            self.im[last] as isize,
            self.out[last],
            self.stride[last] as isize,
        );
        let lo = if off >= 0 {
            0
        } else {
            ((-off + s - 1) / s) as usize
        }
        .min(ow);
        let hi = if w - off <= 0 {
            0
        } else {
            ((w - off + s - 1) / s) as usize
        }
        .clamp(lo, ow);
        (lo, hi)
    }

    /// Calls `f(col_line_start, im_line_start, lo, hi, off)` for every line (fixed outer output
    /// position) of the kernel offset `kpos`: positions `lo..hi` of the line read
    /// `im[im_line_start + pos * stride + off]`, the others are padding. `im_line_start` is None when
    /// the whole line lies in the padding.
    fn lines(&self, kpos: usize, mut f: impl FnMut(usize, Option<usize>, usize, usize, isize)) {
        let d = self.im.len();
        let last = d - 1;
        // Kernel multi-index, last axis fastest.
        let mut kidx = [0usize; MAX_AXES];
        let mut rest = kpos;
        for a in (0..d).rev() {
            kidx[a] = rest % self.kernel[a];
            rest /= self.kernel[a];
        }
        let ow = self.out[last];
        let off = (kidx[last] * self.dilation[last]) as isize - self.pad[last] as isize;
        let (lo, hi) = self.line_span(off);
        let lines: usize = self.out[..last].iter().product();
        let mut oidx = [0usize; MAX_AXES];
        for line in 0..lines {
            // Input offset of this line's outer coordinates.
            let mut base = Some(0usize);
            for a in 0..last {
                let i = (oidx[a] * self.stride[a] + kidx[a] * self.dilation[a]) as isize
                    - self.pad[a] as isize;
                if i < 0 || i >= self.im[a] as isize {
                    base = None;
                    break;
                }
                base = base.map(|b| b * self.im[a] + i as usize);
            }
            let base = base.map(|b| b * self.im[last]);
            f(line * ow, base, lo, hi, off);
            for a in (0..last).rev() {
                oidx[a] += 1;
                if oidx[a] < self.out[a] {
                    break;
                }
                oidx[a] = 0;
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short lines of small images, where a call to memmove
/// costs more than the copy: fixed-size blocks (the last one overlapping) copy inline.
#[inline(always)]
fn copy_line(dst: &mut [f32], src: &[f32]) {
    fn block<const N: usize>(dst: &mut [f32], src: &[f32], at: usize) {
        let d: &mut [f32; N] = (&mut dst[at..at + N]).try_into().unwrap();
        *d = src[at..at + N].try_into().unwrap();
    }
    let n = dst.len();
    assert_eq!(n, src.len());
    match n {
        64.. => dst.copy_from_slice(src),
        8.. => {
            for at in (0..n - 7).step_by(8) {
                block::<8>(dst, src, at);
            }
            if !n.is_multiple_of(8) {
                block::<8>(dst, src, n - 8);
            }
        }
        4.. => {
            block::<4>(dst, src, 0);
            block::<4>(dst, src, n - 4);
        }
        2.. => {
            block::<2>(dst, src, 0);
            block::<2>(dst, src, n - 2);
        }
        1 => dst[0] = src[0],
        0 => {}
    }
}

/// Writes one line of columns: positions `lo..hi` read `plane[base + pos * s + off]`, the others
/// (and the whole line when `base` is None) are padding.
#[inline(always)]
fn fill_line(
    dst: &mut [f32],
    plane: &[f32],
    base: Option<usize>,
    (lo, hi): (usize, usize),
    off: isize,
    s: usize,
) {
    let Some(base) = base else {
        dst.fill(0.0);
        return;
    };
    if lo > 0 {
        dst[..lo].fill(0.0);
    }
    if hi < dst.len() {
        dst[hi..].fill(0.0);
    }
    if hi == lo {
        return;
    }
    let first = (base as isize + (lo * s) as isize + off) as usize;
    let n = hi - lo;
    let src = &plane[first..first + (n - 1) * s + 1];
    #[cfg(target_arch = "x86_64")]
    if s <= 2 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { x86::copy_lines(&mut dst[lo..hi], src, 0, n, s) };
    }
    copy_run(&mut dst[lo..hi], src, s);
}

/// dst[i] = src[i * s] (`src` ends at the last element read), through the fixed-stride copies.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32], s: usize) {
    match s {
        1 => copy_line(dst, src),
        2 => copy_strided::<2>(dst, src),
        3 => copy_strided::<3>(dst, src),
        4 => copy_strided::<4>(dst, src),
        _ => {
            for (v, x) in dst.iter_mut().zip(src.iter().step_by(s)) {
                *v = *x;
            }
        }
    }
}

/// dst[i] = src[i * S]: fixed-size chunks compile to straight loads (and vectorise for S = 2);
/// step_by does neither. `src` ends at the last element read.
#[inline(always)]
fn copy_strided<const S: usize>(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    for (v, chunk) in dst[..n - 1].iter_mut().zip(src.chunks_exact(S)) {
        *v = chunk[0];
    }
    dst[n - 1] = src[(n - 1) * S];
}

fn im2col_image(g: &Geo, im: &[f32], col: &mut [f32], parallel: bool) {
    if g.cols == 0 || col.is_empty() {
        return;
    }
    let s = g.stride[g.stride.len() - 1];
    let ow = g.out[g.out.len() - 1];
    let parallel = parallel && col.len() >= 2 * GRAIN;
    if g.im.len() == 2 {
        return im2col_image_2d(g, im, col, parallel);
    }
    let fill_row = |r: usize, row: &mut [f32]| {
        let c = r / g.kprod;
        let plane = &im[c * g.plane..][..g.plane];
        g.lines(r % g.kprod, |start, base, lo, hi, off| {
            fill_line(&mut row[start..start + ow], plane, base, (lo, hi), off, s);
        });
    };
    if !parallel {
        col.chunks_mut(g.cols)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    } else {
        let min = (GRAIN / g.cols).max(1);
        col.par_chunks_mut(g.cols)
            .with_min_len(min)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    }
}

/// [`im2col_image`] for 2-D images, the common case: the line spans of each kernel column are
/// computed once per image, and the serial path walks (channel, kernel row, kernel column) without
/// divisions (small images have rows of a few dozen elements, where those costs showed).
fn im2col_image_2d(g: &Geo, im: &[f32], col: &mut [f32], parallel: bool) {
    let (h, w) = (g.im[0], g.im[1]);
    let (oh, ow) = (g.out[0], g.out[1]);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let spans: Vec<(isize, (usize, usize))> = (0..kw)
        .map(|j| {
            let off = (j * g.dilation[1]) as isize - g.pad[1] as isize;
            (off, g.line_span(off))
        })
        .collect();
    let avx512 = super::has_avx512();
    // Lines shorter than a vector: one permutation of two loads per 16 columns.
    let short_lines = (avx512 && ow < 16 && g.stride[1] <= 2)
        .then(|| LanePattern::new(g.stride[0] * w, ow, oh, g.stride[1]))
        .flatten();
    let fill_row = |c: usize, i: usize, j: usize, row: &mut [f32]| {
        let plane = &im[c * g.plane..][..g.plane];
        let (off, span) = spans[j];
        let top = (i * g.dilation[0]) as isize - g.pad[0] as isize;
        if span == (0, ow) && top >= 0 && ((oh - 1) * g.stride[0]) as isize + top < h as isize {
            // Every line lies inside the image (no padding to write): straight copies.
            let step = g.stride[0] * w;
            let first = top as usize * w + off as usize;
            let run = (ow - 1) * g.stride[1] + 1;
            if let Some(lines) = &short_lines {
                // The rest of the plane: loads need no masks where it reaches past the lines.
                let src = &plane[first..];
                lines.copy(&mut row[..oh * ow], src);
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if avx512 && g.stride[1] <= 2 {
                let src = &plane[first..first + (oh - 1) * step + run];
                // SAFETY: the CPU has AVX-512F (checked once per image).
                unsafe { x86::copy_lines(&mut row[..oh * ow], src, step, ow, g.stride[1]) };
                return;
            }
            for (y, dst) in row.chunks_exact_mut(ow).take(oh).enumerate() {
                copy_run(dst, &plane[first + y * step..][..run], g.stride[1]);
            }
            return;
        }
        for (y, dst) in row.chunks_exact_mut(ow).take(oh).enumerate() {
            let ih = (y * g.stride[0]) as isize + top;
            let base = (ih >= 0 && ih < h as isize).then(|| ih as usize * w);
            fill_line(dst, plane, base, span, off, g.stride[1]);
        }
    };
    if parallel {
        let min = (GRAIN / g.cols).max(1);
        col.par_chunks_mut(g.cols)
            .with_min_len(min)
            .enumerate()
            .for_each(|(r, row)| {
                let kpos = r % g.kprod;
                fill_row(r / g.kprod, kpos / kw, kpos % kw, row);
            });
    } else {
        let mut rows = col.chunks_mut(g.cols);
        for c in 0..g.channels {
            for i in 0..kh {
                for j in 0..kw {
                    match rows.next() {
                        Some(row) => fill_row(c, i, j, row),
                        None => return,
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `dst` holds lines of `ow` elements; line y takes `src[y * step + t * stride]` for t in
    /// 0..ow (stride 1 or 2), where `src` ends at the last element read. Small images have lines
    /// of a few elements, where a masked load and store per 16 beat a copy loop's overhead.
    #[target_feature(enable = "avx512f")]
    pub(super) fn copy_lines(dst: &mut [f32], src: &[f32], step: usize, ow: usize, stride: usize) {
        if ow == 0 {
            return;
        }
        let lines = dst.len() / ow;
        assert!(
            lines == 0 || (lines - 1) * step + (ow - 1) * stride < src.len(),
            "copy_lines: source too short"
        );
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        // Lanes of a load from src[p..] that lie inside src (the others are never stored).
        let inside = |p: usize| -> __mmask16 {
            let left = src.len().saturating_sub(p);
            if left >= 16 {
                0xffff
            } else {
                (1u16 << left) - 1
            }
        };
        let load = |p: usize| {
            // SAFETY: a full load only where 16 elements remain in src, else under the mask.
            unsafe {
                if p + 16 <= src.len() {
                    _mm512_loadu_ps(src.as_ptr().add(p))
                } else {
                    _mm512_maskz_loadu_ps(inside(p), src.as_ptr().add(p))
                }
            }
        };
        let out = dst.as_mut_ptr();
        for y in 0..lines {
            let mut t = 0;
            while t < ow {
                let lanes = (ow - t).min(16);
                let p = y * step + t * stride;
                let v = if stride == 1 {
                    load(p)
                } else {
                    _mm512_permutex2var_ps(load(p), evens, load(p + 16))
                };
                let at = y * ow + t;
                // SAFETY: a full store only where 16 elements remain in dst (the lanes past
                // this line land on later lines, which are written afterwards), else under the
                // mask of this line's lanes.
                unsafe {
                    if at + 16 <= dst.len() {
                        _mm512_storeu_ps(out.add(at), v);
                    } else {
                        _mm512_mask_storeu_ps(out.add(at), ((1u32 << lanes) - 1) as __mmask16, v);
                    }
                }
                t += lanes;
            }
        }
    }
}

fn col2im_image(g: &Geo, col: &[f32], im: &mut [f32], parallel: bool) {
    if g.plane == 0 || im.is_empty() {
        return;
    }
    let s = g.stride[g.stride.len() - 1];
    let ow = g.out[g.out.len() - 1];
    let fill_plane = |c: usize, plane: &mut [f32]| {
        plane.fill(0.0);
        if g.cols == 0 {
            return;
        }
        for kpos in 0..g.kprod {
            let row = &col[(c * g.kprod + kpos) * g.cols..][..g.cols];
            if add_inside_2d(g, kpos, row, plane) {
                continue;
            }
            g.lines(kpos, |start, base, lo, hi, off| {
                if let (Some(base), true) = (base, hi > lo) {
                    let src = &row[start..start + ow];
                    let first = (base as isize + (lo * s) as isize + off) as usize;
                    if s == 1 {
                        for (v, x) in plane[first..first + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *v += x;
                        }
                    } else {
                        for (v, x) in plane[first..].iter_mut().step_by(s).zip(&src[lo..hi]) {
                            *v += x;
                        }
                    }
                }
            });
        }
    };
    // Lines of a few elements (an 8x8 output) add in one or two vectors on 16 lanes.
    if !parallel || g.channels * g.kprod * g.cols < 2 * GRAIN {
        im.chunks_mut(g.plane)
            .enumerate()
            .for_each(|(c, p)| wide(|| fill_plane(c, p)));
    } else {
        im.par_chunks_mut(g.plane)
            .enumerate()
            .for_each(|(c, p)| wide(|| fill_plane(c, p)));
    }
}

/// col2im of kernel offset `kpos` of a 2-D image when every line of it lies inside the image
/// (no padding to skip): `plane` gets `row`'s lines added at their places. Returns whether it
/// applied. The same additions in the same order as the general path, without its per-line
/// bookkeeping, which cost more than the additions on small outputs.
#[inline(always)]
fn add_inside_2d(g: &Geo, kpos: usize, row: &[f32], plane: &mut [f32]) -> bool {
    if g.im.len() != 2 {
        return false;
    }
    let ((h, w), (oh, ow)) = ((g.im[0], g.im[1]), (g.out[0], g.out[1]));
    let (i, j) = (kpos / g.kernel[1], kpos % g.kernel[1]);
    let top = (i * g.dilation[0]) as isize - g.pad[0] as isize;
    let off = (j * g.dilation[1]) as isize - g.pad[1] as isize;
    let inside = g.line_span(off) == (0, ow)
        && top >= 0
        && ((oh.saturating_sub(1) * g.stride[0]) as isize + top) < h as isize;
    if !inside || oh == 0 || ow == 0 {
        return false;
    }
    let (step, s) = (g.stride[0] * w, g.stride[1]);
    let first = top as usize * w + off as usize;
    for (y, src) in row.chunks_exact(ow).take(oh).enumerate() {
        let dst = &mut plane[first + y * step..];
        if s == 1 {
            add_line(&mut dst[..ow], src);
        } else {
            for (v, x) in dst.iter_mut().step_by(s).zip(src) {
                *v += x;
            }
        }
    }
    true
}

/// dst += src for short lines: fixed-size blocks of 16 and 8 compile to single vector adds.
#[inline(always)]
fn add_line(dst: &mut [f32], src: &[f32]) {
    fn block<const N: usize>(dst: &mut [f32], src: &[f32], at: usize) {
        let d: &mut [f32; N] = (&mut dst[at..at + N]).try_into().unwrap();
        let s: &[f32; N] = src[at..at + N].try_into().unwrap();
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    }
    let n = dst.len();
    assert_eq!(n, src.len());
    let mut at = 0;
    while at + 16 <= n {
        block::<16>(dst, src, at);
        at += 16;
    }
    if at + 8 <= n {
        block::<8>(dst, src, at);
        at += 8;
    }
    for k in at..n {
        dst[k] += src[k];
    }
}

#[cfg(test)]
mod tests {
    use super::copy_line;
    use crate::engine::View;
    use crate::rng::Rng;

    /// im2col by its definition, for 2-D images.
    fn naive_im2col(k: &super::Im2col, im: &[f32]) -> Vec<f32> {
        let (h, w) = (k.im_shape[0] as isize, k.im_shape[1] as isize);
        let (oh, ow) = (k.col_shape[0], k.col_shape[1]);
        let mut col = Vec::new();
        for c in 0..k.channels {
            for i in 0..k.kernel[0] {
                for j in 0..k.kernel[1] {
                    for y in 0..oh {
                        for x in 0..ow {
                            let ih =
                                (y * k.stride[0] + i * k.dilation[0]) as isize - k.pad[0] as isize;
                            let iw =
                                (x * k.stride[1] + j * k.dilation[1]) as isize - k.pad[1] as isize;
                            let inside = ih >= 0 && ih < h && iw >= 0 && iw < w;
                            col.push(if inside {
                                im[c * (h * w) as usize + (ih * w + iw) as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        col
    }

    /// col2im by its definition: every column element added to the image element it was taken
    /// from, channel by channel, kernel offsets and positions in order.
    fn naive_col2im(k: &super::Im2col, col: &[f32]) -> Vec<f32> {
        let (h, w) = (k.im_shape[0] as isize, k.im_shape[1] as isize);
        let (oh, ow) = (k.col_shape[0], k.col_shape[1]);
        let mut im = vec![0f32; k.channels * (h * w) as usize];
        let mut values = col.iter();
        for c in 0..k.channels {
            for i in 0..k.kernel[0] {
                for j in 0..k.kernel[1] {
                    for y in 0..oh {
                        for x in 0..ow {
                            let v = values.next().unwrap();
                            let ih =
                                (y * k.stride[0] + i * k.dilation[0]) as isize - k.pad[0] as isize;
                            let iw =
                                (x * k.stride[1] + j * k.dilation[1]) as isize - k.pad[1] as isize;
                            if ih >= 0 && ih < h && iw >= 0 && iw < w {
                                im[c * (h * w) as usize + (ih * w + iw) as usize] += v;
                            }
                        }
                    }
                }
            }
        }
        im
    }

    #[test]
    fn im2col_and_col2im_2d_match_definitions() {
        let mut rng = Rng::new(11);
        let mut rng_values = Rng::new(12);
        let mut pick = |n: usize| (rng.uniform_range(0.0, n as f32) as usize).min(n - 1);
        for case in 0..300 {
            let kernel = vec![1 + pick(5), 1 + pick(5)];
            let dilation = vec![1 + pick(2), 1 + pick(2)];
            // Every third case without padding: the straight-copy lines.
            let pad = if case % 3 == 0 {
                vec![0, 0]
            } else {
                vec![pick(3), pick(3)]
            };
            let stride = vec![1 + pick(5), 1 + pick(5)];
            let im_shape: Vec<usize> = (0..2)
                .map(|a| {
                    let extent = dilation[a] * (kernel[a] - 1) + 1;
                    extent.saturating_sub(2 * pad[a]).max(1) + pick(30)
                })
                .collect();
            let col_shape: Vec<usize> = (0..2)
                .map(|a| {
                    (im_shape[a] + 2 * pad[a] - (dilation[a] * (kernel[a] - 1) + 1)) / stride[a] + 1
                })
                .collect();
            let channels = 1 + pick(4);
            let im: Vec<f32> = (0..channels * im_shape[0] * im_shape[1])
                .map(|v| v as f32 + 1.0)
                .collect();
            let k = super::Im2col {
                im: View::new(crate::engine::TensorId(0), 0, im.len()),
                col: View::new(crate::engine::TensorId(1), 0, 0),
                batch: 1,
                im_stride: 0,
                col_stride: 0,
                channels,
                im_shape,
                col_shape,
                kernel,
                pad,
                stride,
                dilation,
            };
            let want = naive_im2col(&k, &im);
            let geo = super::Geo::new(&k).unwrap();
            for parallel in [false, true] {
                let mut col = vec![f32::NAN; want.len()];
                super::im2col_image(&geo, &im, &mut col, parallel);
                assert_eq!(col, want, "{k:?} parallel {parallel}");
            }
            // col2im, the adjoint, adds in the same order: the same sums bit for bit.
            let col: Vec<f32> = (0..want.len())
                .map(|_| rng_values.uniform_range(-1.0, 1.0))
                .collect();
            let want_im = naive_col2im(&k, &col);
            for parallel in [false, true] {
                let mut got = vec![f32::NAN; want_im.len()];
                super::col2im_image(&geo, &col, &mut got, parallel);
                assert_eq!(got, want_im, "col2im {k:?} parallel {parallel}");
            }
        }
    }

    #[test]
    fn copy_strided_takes_every_sth() {
        for n in 1..20 {
            let src: Vec<f32> = (0..(n - 1) * 4 + 1).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; n];
            super::copy_strided::<4>(&mut dst, &src);
            assert_eq!(dst, (0..n).map(|i| (4 * i) as f32).collect::<Vec<_>>());
            super::copy_strided::<3>(&mut dst, &src[..(n - 1) * 3 + 1]);
            assert_eq!(dst, (0..n).map(|i| (3 * i) as f32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn copy_line_copies_every_length() {
        for n in 0..80 {
            let src: Vec<f32> = (0..n).map(|v| v as f32 + 0.5).collect();
            let mut dst = vec![f32::NAN; n];
            copy_line(&mut dst, &src);
            assert_eq!(dst, src, "length {n}");
        }
    }
}
