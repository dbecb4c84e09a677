//! Host side of the element-wise family (shaders/elementwise.wgsl).
//!
//! Point-wise kernels bind their inputs then their outputs and are split into dispatches of at
//! most one binding's worth of elements. Inputs that overlap an output other than exactly (an
//! in-place layer) are read from a copy, as the CPU engine does.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params, Wide};
use crate::engine::Engine;
use crate::engine::View;
use crate::engine::kernels::elementwise::{
    ChannelDims, ChannelStage, ElementwiseKernel, NaryOp, StageOp, StagePart, SumWeight, UnaryOp,
    dropout_threshold, pcg_hash,
};
use crate::engine::kernels::norm::EpsMode;

const SCRATCH: [&str; 4] = ["in0", "in1", "in2", "in3"];

const UNARY: [&str; 12] = [
    "unary_0", "unary_1", "unary_2", "unary_3", "unary_4", "unary_5", "unary_6", "unary_7",
    "unary_8", "unary_9", "unary_10", "unary_11",
];
const UNARY_BACKWARD: [&str; 12] = [
    "unary_backward_0",
    "unary_backward_1",
    "unary_backward_2",
    "unary_backward_3",
    "unary_backward_4",
    "unary_backward_5",
    "unary_backward_6",
    "unary_backward_7",
    "unary_backward_8",
    "unary_backward_9",
    "unary_backward_10",
    "unary_backward_11",
];

fn check_len(views: &[View], len: usize) -> Result<()> {
    for v in views {
        ensure!(
            v.len == len,
            "kernel operand of {} elements where {len} are expected",
            v.len
        );
    }
    Ok(())
}

/// Runs `entry` over `n` elements: bindings are `ins` then `outs` (all of `n` elements, or of
/// `per_channel` length when listed in `whole`), words 8.. are `words(first_index)`; `wide` is its
/// vec4 twin (see [`GpuEngine::dispatch_pointwise`]).
#[allow(clippy::too_many_arguments)]
fn pointwise(
    e: &mut GpuEngine,
    entry: &'static str,
    wide: Option<Wide>,
    n: usize,
    ins: &[View],
    outs: &[View],
    whole: &[View],
    words: &dyn Fn(usize) -> Vec<u32>,
) -> Result<()> {
    for r in e.unit_chunks(entry, n, &[1])? {
        let outs_c: Vec<View> = outs.iter().map(|o| o.slice(r.start, r.len())).collect();
        let mut binds: Vec<Bound> = Vec::new();
        for (i, v) in ins.iter().enumerate() {
            binds.push(e.bind_input(SCRATCH[i % 4], v.slice(r.start, r.len()), &outs_c, true)?);
        }
        for o in &outs_c {
            binds.push(e.bind(*o)?);
        }
        for (i, w) in whole.iter().enumerate() {
            binds.push(e.bind_input(SCRATCH[(ins.len() + i) % 4], *w, &outs_c, false)?);
        }
        let per_element: Vec<bool> = (0..binds.len())
            .map(|i| i < ins.len() + outs.len())
            .collect();
        e.dispatch_pointwise(
            ("elementwise", entry),
            wide,
            r.len(),
            r.start,
            &binds,
            &per_element,
            &words(r.start),
        )?;
    }
    Ok(())
}

/// (op code, a, b, c) of a unary op.
fn code(op: UnaryOp) -> (u32, f32, f32, f32) {
    match op {
        UnaryOp::Relu { negative_slope } => (0, negative_slope, 0.0, 0.0),
        UnaryOp::Sigmoid => (1, 0.0, 0.0, 0.0),
        UnaryOp::TanH => (2, 0.0, 0.0, 0.0),
        UnaryOp::AbsVal => (3, 0.0, 0.0, 0.0),
        UnaryOp::Bnll => (4, 0.0, 0.0, 0.0),
        UnaryOp::Elu { alpha } => (5, alpha, 0.0, 0.0),
        UnaryOp::Power {
            power,
            scale,
            shift,
        } => (6, power, scale, shift),
        UnaryOp::Exp {
            inner_scale,
            outer_scale,
        } => (7, inner_scale, outer_scale, 0.0),
        UnaryOp::Log {
            scale,
            shift,
            base_scale,
        } => (8, scale, shift, base_scale),
        UnaryOp::Threshold { threshold } => (9, threshold, 0.0, 0.0),
        UnaryOp::Clip { min, max } => (10, min, max, 0.0),
        UnaryOp::Swish { beta } => (11, beta, 0.0, 0.0),
    }
}

fn channel_words(d: &ChannelDims, first: usize, flags: u32) -> Vec<u32> {
    vec![
        d.inner.max(1) as u32,
        d.channels.max(1) as u32,
        first as u32,
        flags,
    ]
}

/// BatchNorm's, Scale's and ReLU's steps of a [`ElementwiseKernel::ChannelStages`], each at most
/// once and in that order, the Scale's input saved or not: what the fused point-wise kernels and
/// the GEMM micro-kernels' epilogue (see shaders/blas_subgroup.wgsl) run in one pass.
pub(super) struct StagePattern {
    /// 1 normalize, 2 scale, 4 bias, 8 save (the Scale's input), 16 ReLU.
    pub flags: u32,
    /// eps, its mode, mean, var, std.
    pub normalize: Option<(f32, EpsMode, View, View, View)>,
    pub scale: Option<View>,
    pub bias: Option<View>,
    pub save: Option<View>,
    pub slope: f32,
}

impl StagePattern {
    /// The pattern of `stages`; None for other step lists.
    pub fn of(stages: &[ChannelStage]) -> Option<StagePattern> {
        let mut p = StagePattern {
            flags: 0,
            normalize: None,
            scale: None,
            bias: None,
            save: None,
            slope: 0.0,
        };
        let mut rest = stages.iter().peekable();
        if let Some(ChannelStage {
            op:
                StageOp::Normalize {
                    eps,
                    eps_mode,
                    mean,
                    var,
                    std,
                },
            save: None,
        }) = rest.peek()
        {
            p.normalize = Some((*eps, *eps_mode, *mean, *var, *std));
            p.flags |= 1;
            rest.next();
        }
        if let Some(ChannelStage {
            op: StageOp::Affine { scale, bias },
            save,
        }) = rest.peek()
        {
            (p.scale, p.bias, p.save) = (*scale, *bias, *save);
            p.flags |= u32::from(scale.is_some()) * 2 + u32::from(bias.is_some()) * 4;
            p.flags |= u32::from(save.is_some()) * 8;
            rest.next();
        }
        if let Some(ChannelStage {
            op: StageOp::Unary(UnaryOp::Relu { negative_slope }),
            save: None,
        }) = rest.peek()
        {
            p.slope = *negative_slope;
            p.flags |= 16;
            rest.next();
        }
        rest.next().is_none().then_some(p)
    }

    /// Checks the per-channel operands against `channels` and writes std from var.
    pub fn prepare(&self, e: &mut GpuEngine, channels: usize) -> Result<()> {
        if let Some((eps, mode, _, var, std)) = self.normalize {
            check_len(&[var, std], channels)?;
            super::norm::std_of(e, var, std, eps, mode)?;
        }
        for v in self.per_channel().iter().flatten() {
            check_len(&[*v], channels)?;
        }
        Ok(())
    }

    /// mean, std, scale, bias.
    pub fn per_channel(&self) -> [Option<View>; 4] {
        [
            self.normalize.map(|n| n.2),
            self.normalize.map(|n| n.4),
            self.scale,
            self.bias,
        ]
    }
}

/// Runs a [`ElementwiseKernel::ChannelStages`] of a two-input Eltwise SUM's or a
/// [`StagePattern`]'s steps (at least two steps) as one pass; false for other step lists, which
/// run as their parts.
fn channel_stages(
    e: &mut GpuEngine,
    dims: ChannelDims,
    x: View,
    y: View,
    stages: &[ChannelStage],
) -> Result<bool> {
    let mut sum = None;
    let mut rest = stages;
    if let Some(ChannelStage {
        op: StageOp::Sum { coeffs, others },
        save: None,
    }) = stages.first()
        && let ([c0, c1], [other]) = (&coeffs[..], &others[..])
    {
        sum = Some((*c0, *c1, *other));
        rest = &stages[1..];
    }
    let Some(pattern) = StagePattern::of(rest).filter(|_| stages.len() >= 2) else {
        return Ok(false);
    };
    let flags = pattern.flags | (u32::from(sum.is_some()) * 32);
    let (save, slope) = (pattern.save, pattern.slope);
    let n = dims.count();
    check_len(&[x], n)?;
    check_len(&[y], n)?;
    pattern.prepare(e, dims.channels)?;
    if x != y && sum.is_none() {
        e.copy(x, y);
    }
    let per_channel = pattern.per_channel();
    if let Some(save) = save {
        check_len(&[save], n)?;
    }
    if let Some((_, _, other)) = sum {
        check_len(&[other], n)?;
    }
    for r in e.unit_chunks("channel_stages", n, &[1])? {
        let yc = y.slice(r.start, r.len());
        let mut binds = vec![e.bind(yc)?];
        // The sum's inputs take the statistics' bindings (a sum starts the run: no BatchNorm).
        let summed = match sum {
            Some((_, _, other)) => [Some(other), Some(x)],
            None => [None, None],
        };
        for (i, v) in per_channel.iter().enumerate() {
            let bound = match (summed.get(i).copied().flatten(), v) {
                (Some(input), _) => {
                    e.bind_input(SCRATCH[i], input.slice(r.start, r.len()), &[yc], true)?
                }
                (None, Some(v)) => e.bind_input(SCRATCH[i], *v, &[yc], false)?,
                // Never read: its flag is off.
                (None, None) => binds[0].clone(),
            };
            binds.push(bound);
        }
        binds.push(match save {
            Some(s) => e.bind(s.slice(r.start, r.len()))?,
            None => binds[0].clone(),
        });
        let summing = sum.is_some();
        let per_element = [true, summing, summing, false, false, save.is_some()];
        let (c0, c1) = sum.map_or((0.0, 0.0), |s| (s.0, s.1));
        let words = [
            dims.inner.max(1) as u32,
            dims.channels.max(1) as u32,
            r.start as u32,
            flags,
            slope.to_bits(),
            c0.to_bits(),
            c1.to_bits(),
        ];
        e.dispatch_pointwise(
            ("elementwise", "channel_stages"),
            Some(Wide::channels("channel_stages4", flags, dims.inner)),
            r.len(),
            r.start,
            &binds,
            &per_element,
            &words,
        )?;
    }
    Ok(true)
}

/// Runs a [`ElementwiseKernel::JunctionBackward`] of two sums or none, a ReLU or no neuron, and
/// up to two outs as one pass; false for others, which run as their parts.
fn junction_backward(
    e: &mut GpuEngine,
    sums: &[View],
    neuron_grad: Option<(UnaryOp, View, View)>,
    dy: View,
    outs: &[(f32, View)],
) -> Result<bool> {
    let slope = match neuron_grad {
        Some((UnaryOp::Relu { negative_slope }, _, _)) => Some(negative_slope),
        Some(_) => return Ok(false),
        None => None,
    };
    // dy and the outs in tensors of their own (an in-place Eltwise's bottom diff is dy: its
    // parts scale dy in place before the next out reads it).
    let diffs: Vec<View> = std::iter::once(dy)
        .chain(outs.iter().map(|o| o.1))
        .collect();
    let apart = (0..diffs.len()).all(|j| diffs[j + 1..].iter().all(|b| b.id != diffs[j].id));
    if !matches!(sums.len(), 0 | 2) || outs.len() > 2 || !apart {
        return Ok(false);
    }
    let n = dy.len;
    let x = neuron_grad.map(|(_, x, _)| x);
    check_len(sums, n)?;
    check_len(&x.into_iter().collect::<Vec<_>>(), n)?;
    check_len(&outs.iter().map(|o| o.1).collect::<Vec<_>>(), n)?;
    let flags = u32::from(sums.len() == 2)
        | u32::from(slope.is_some()) << 1
        | outs.iter().enumerate().map(|(j, _)| 4 << j).sum::<u32>();
    let writes_dy = flags & 3 != 0;
    for r in e.unit_chunks("junction_backward", n, &[1])? {
        let piece = |v: View| v.slice(r.start, r.len());
        let dyc = piece(dy);
        let written: Vec<View> = writes_dy
            .then_some(dyc)
            .into_iter()
            .chain(outs.iter().map(|o| piece(o.1)))
            .collect();
        let dy_bound = if writes_dy {
            e.bind(dyc)?
        } else {
            e.bind_input(SCRATCH[3], dyc, &written, true)?
        };
        let mut binds = Vec::with_capacity(6);
        for (j, input) in [sums.first(), sums.get(1), x.as_ref()]
            .into_iter()
            .enumerate()
        {
            binds.push(match input {
                Some(v) => e.bind_input(SCRATCH[j], piece(*v), &written, true)?,
                // Never read: its flag is off.
                None => dy_bound.clone(),
            });
        }
        binds.push(dy_bound.clone());
        for j in 0..2 {
            binds.push(match outs.get(j) {
                Some(o) => e.bind(piece(o.1))?,
                None => dy_bound.clone(),
            });
        }
        let per_element = [
            !sums.is_empty(),
            !sums.is_empty(),
            x.is_some(),
            true,
            !outs.is_empty(),
            outs.len() > 1,
        ];
        let coeff = |j: usize| outs.get(j).map_or(0.0, |o| o.0).to_bits();
        let words = [flags, slope.unwrap_or(0.0).to_bits(), coeff(0), coeff(1)];
        e.dispatch_pointwise(
            ("elementwise", "junction_backward"),
            Some(Wide::new("junction_backward4", flags)),
            r.len(),
            r.start,
            &binds,
            &per_element,
            &words,
        )?;
    }
    Ok(true)
}

/// Runs the copies and kernels a fused kernel stands for.
fn run_parts(e: &mut GpuEngine, parts: Vec<StagePart>) -> Result<()> {
    for part in parts {
        match part {
            StagePart::Copy { src, dst } => e.copy(src, dst),
            StagePart::Move { src, dst } => e.move_values(src, dst),
            StagePart::Launch(kernel) => e.launch(&kernel)?,
        }
    }
    Ok(())
}

pub fn launch(e: &mut GpuEngine, k: &ElementwiseKernel) -> Result<()> {
    match k {
        ElementwiseKernel::JunctionBackward {
            sums,
            neuron_grad,
            dy,
            outs,
        } => {
            if junction_backward(e, sums, *neuron_grad, *dy, outs)? {
                return Ok(());
            }
            run_parts(e, k.junction_backward_parts().unwrap_or_default())
        }
        &ElementwiseKernel::ChannelStages {
            dims,
            x,
            y,
            ref stages,
        } => {
            if channel_stages(e, dims, x, y, stages)? {
                return Ok(());
            }
            run_parts(e, k.channel_stages_parts().unwrap_or_default())
        }
        ElementwiseKernel::Unary { op, x, y } => {
            check_len(&[*x], y.len)?;
            let (c, a, b, cc) = code(*op);
            if let UnaryOp::Power {
                power,
                scale,
                shift,
            } = op
                && power * scale == 0.0
            {
                let value = if *power == 0.0 {
                    1.0
                } else {
                    shift.powf(*power)
                };
                return e.record_fill(*y, value);
            }
            let wide = Some(Wide::new("unary4", c));
            pointwise(
                e,
                UNARY[c as usize],
                wide,
                y.len,
                &[*x],
                &[*y],
                &[],
                &|_| vec![c, a.to_bits(), b.to_bits(), cc.to_bits()],
            )
        }
        ElementwiseKernel::UnaryBackward { op, x, y, dy, dx } => {
            check_len(&[*x, *y, *dy], dx.len)?;
            let (c, a, b, cc) = code(*op);
            let sub = match *op {
                UnaryOp::Power {
                    power,
                    scale,
                    shift,
                } => {
                    if power * scale == 0.0 {
                        0
                    } else if power == 1.0 {
                        1
                    } else if power == 2.0 {
                        2
                    } else if shift == 0.0 {
                        3
                    } else {
                        4
                    }
                }
                _ => 0,
            };
            pointwise(
                e,
                UNARY_BACKWARD[c as usize],
                Some(Wide::new("unary_backward4", c)),
                dx.len,
                &[*x, *y, *dy],
                &[*dx],
                &[],
                &|_| vec![c, a.to_bits(), b.to_bits(), cc.to_bits(), sub],
            )
        }
        ElementwiseKernel::Nary { op, xs, y, argmax } => {
            ensure!(
                xs.len() >= 2,
                "Nary kernel needs at least 2 inputs, got {}",
                xs.len()
            );
            check_len(xs, y.len)?;
            let n = y.len;
            // Inputs that overlap the outputs are copied first (the steps write y as they go).
            let mut outs = vec![*y];
            if let (NaryOp::Max, Some(m)) = (op, argmax) {
                check_len(&[*m], n)?;
                outs.push(*m);
            }
            let mask = match (op, argmax) {
                (NaryOp::Max, Some(m)) => *m,
                (NaryOp::Max, None) => {
                    // Caffe keeps a mask either way; use scratch when the caller gives none.
                    let s = e.scratch("nary_mask", n)?;
                    return nary_max_into(e, xs, *y, Some(s), n);
                }
                _ => *y,
            };
            match op {
                NaryOp::Sum { coeffs } => {
                    ensure!(
                        coeffs.len() == xs.len(),
                        "Nary Sum: {} coefficients for {} inputs",
                        coeffs.len(),
                        xs.len()
                    );
                    nary_steps(e, xs, *y, None, n, &|j| {
                        if j == 0 {
                            (0, coeffs[0])
                        } else {
                            (1, coeffs[j])
                        }
                    })
                }
                NaryOp::Prod { .. } => nary_steps(e, xs, *y, None, n, &|j| {
                    if j == 0 { (0, 1.0) } else { (2, 1.0) }
                }),
                NaryOp::Max => nary_steps(e, xs, *y, Some(mask), n, &|j| match j {
                    0 => (3, 1.0),
                    1 => (4, 1.0),
                    _ => (5, 1.0),
                }),
            }
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
            ensure!(
                *index < xs.len(),
                "NaryBackward index {index} out of {} inputs",
                xs.len()
            );
            check_len(xs, dx.len)?;
            check_len(&[*y, *dy], dx.len)?;
            let n = dx.len;
            match op {
                NaryOp::Sum { coeffs } => back(e, n, &[*dy, *dy, *dy], *dx, 0, coeffs[*index], 0.0),
                NaryOp::Prod { stable: false } => {
                    back(e, n, &[*y, xs[*index], *dy], *dx, 1, 0.0, 0.0)
                }
                NaryOp::Prod { stable: true } => {
                    // dx = dy * prod_{j != index} x_j, built in scratch when dx aliases an input.
                    let aliased = xs.iter().chain([dy]).any(|v| overlaps(v, dx));
                    let target = if aliased { None } else { Some(*dx) };
                    let acc = match target {
                        Some(d) => Acc::View(d),
                        None => Acc::Scratch(e.scratch("nary_acc", n)?),
                    };
                    acc_back(e, n, dy, &acc, 3)?;
                    for (j, x) in xs.iter().enumerate() {
                        if j != *index {
                            acc_back(e, n, x, &acc, 4)?;
                        }
                    }
                    if let Acc::Scratch(s) = acc {
                        e.copy_from_bound(&s, *dx)?;
                    }
                    Ok(())
                }
                NaryOp::Max => {
                    let m = argmax.ok_or_else(|| {
                        anyhow::anyhow!("Eltwise MAX backward needs the forward's argmax")
                    })?;
                    check_len(&[m], n)?;
                    back(e, n, &[m, *dy, *dy], *dx, 2, 0.0, *index as f32)
                }
            }
        }
        ElementwiseKernel::ChannelAffine {
            dims,
            x,
            scale,
            bias,
            y,
        } => {
            check_len(&[*x, *y], dims.count())?;
            let flags = scale.is_some() as u32 | (bias.is_some() as u32) << 1;
            for v in [scale, bias].into_iter().flatten() {
                check_len(&[*v], dims.channels)?;
            }
            // scale / bias fall back to a tiny slice of x when absent (never read).
            let (s, b) = (
                scale.unwrap_or(x.slice(0, x.len.min(1))),
                bias.unwrap_or(x.slice(0, x.len.min(1))),
            );
            let d = *dims;
            pointwise(
                e,
                "channel_affine",
                Some(Wide::channels("channel_affine4", flags, d.inner)),
                x.len,
                &[*x],
                &[*y],
                &[s, b],
                &|first| channel_words(&d, first, flags),
            )
        }
        ElementwiseKernel::PRelu { dims, x, slope, y } => {
            check_len(&[*x, *y], dims.count())?;
            check_len(&[*slope], dims.channels)?;
            let d = *dims;
            pointwise(e, "prelu", None, x.len, &[*x], &[*y], &[*slope], &|first| {
                channel_words(&d, first, 0)
            })
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
            let d = *dims;
            // Binding order: x, dy, slope, dx.
            for r in e.unit_chunks("PReluBackward", dx.len, &[1])? {
                let dxc = dx.slice(r.start, r.len());
                let xb = e.bind_input("in0", x.slice(r.start, r.len()), &[dxc], true)?;
                let db = e.bind_input("in1", dy.slice(r.start, r.len()), &[dxc], true)?;
                let sb = e.bind_input("in2", *slope, &[dxc], false)?;
                let ob = e.bind(dxc)?;
                let mut p = Params::new()
                    .u(r.len())
                    .shift(&xb)
                    .shift(&db)
                    .shift(&sb)
                    .shift(&ob);
                while p.0.len() < 8 {
                    p = p.u(0);
                }
                p.0.extend(channel_words(&d, r.start, 0));
                let g = e.groups_1d(r.len());
                e.dispatch(
                    "elementwise",
                    "prelu_backward",
                    &p,
                    &[&xb, &db, &sb, &ob],
                    g,
                )?;
            }
            Ok(())
        }
        ElementwiseKernel::Dropout {
            seed,
            ratio,
            scale,
            x,
            y,
        } => {
            check_len(&[*x], y.len)?;
            let (base, threshold, scale) = (pcg_hash(*seed), dropout_threshold(*ratio), *scale);
            pointwise(e, "dropout", None, y.len, &[*x], &[*y], &[], &|first| {
                vec![base, threshold, first as u32, scale.to_bits()]
            })
        }
        ElementwiseKernel::ChannelAffineBackward {
            neuron_grad,
            norm_grad,
            ..
        } => {
            if neuron_grad.is_some() || norm_grad.is_some() {
                if channel_affine_backward(e, k)? {
                    return Ok(());
                }
                // The neighbours' steps as kernels of their own around the Scale's pass.
                for part in k.channel_affine_backward_joined_parts().unwrap() {
                    crate::engine::Engine::launch(e, &part)?;
                }
                return Ok(());
            }
            if channel_affine_backward(e, k)? {
                return Ok(());
            }
            for part in k.channel_affine_backward_parts().unwrap_or_default() {
                launch(e, &part)?;
            }
            Ok(())
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
            let (mode, w) = match weight {
                SumWeight::One => (0u32, *a),
                SumWeight::By(w) => (1, *w),
                SumWeight::ByNegPart(w) => (2, *w),
            };
            check_len(&[w], dims.count())?;
            channel_sum(e, dims, *a, w, mode, 1.0, *beta, *y)
        }
    }
}

fn overlaps(a: &View, b: &View) -> bool {
    a.id == b.id && a.offset < b.offset + b.len && b.offset < a.offset + a.len
}

enum Acc {
    View(View),
    Scratch(Bound),
}

/// One accumulation step of a stable product gradient: mode 3 sets acc = src, 4 multiplies.
fn acc_back(e: &mut GpuEngine, n: usize, src: &View, acc: &Acc, mode: u32) -> Result<()> {
    match acc {
        Acc::View(d) => back(e, n, &[*src, *src, *src], *d, mode, 0.0, 0.0),
        Acc::Scratch(s) => {
            let b = e.bind(*src)?;
            let mut p = Params::new().u(n).shift(&b).shift(&b).shift(&b).shift(s);
            while p.0.len() < 8 {
                p = p.u(0);
            }
            p = p.u(mode as usize);
            let g = e.groups_1d(n);
            e.dispatch("elementwise", "nary_back", &p, &[&b, &b, &b, s], g)
        }
    }
}

/// `nary_back` over three inputs (a, b, c) into dx.
fn back(
    e: &mut GpuEngine,
    n: usize,
    ins: &[View; 3],
    dx: View,
    mode: u32,
    c: f32,
    idx: f32,
) -> Result<()> {
    for r in e.unit_chunks("NaryBackward", n, &[1])? {
        let dxc = dx.slice(r.start, r.len());
        let mut binds = Vec::new();
        for (i, v) in ins.iter().enumerate() {
            binds.push(e.bind_input(SCRATCH[i], v.slice(r.start, r.len()), &[dxc], true)?);
        }
        binds.push(e.bind(dxc)?);
        e.dispatch_pointwise(
            ("elementwise", "nary_back"),
            Some(Wide::new("nary_back4", mode)),
            r.len(),
            r.start,
            &binds,
            &[true; 4],
            &[mode, c.to_bits(), idx.to_bits()],
        )?;
    }
    Ok(())
}

/// Forward n-ary op as a sequence of steps over the inputs; `mode(j)` gives (step mode, coeff).
fn nary_steps(
    e: &mut GpuEngine,
    xs: &[View],
    y: View,
    mask: Option<View>,
    n: usize,
    mode: &dyn Fn(usize) -> (u32, f32),
) -> Result<()> {
    let outs: Vec<View> = std::iter::once(y).chain(mask).collect();
    let aliased = xs.iter().any(|x| outs.iter().any(|o| overlaps(x, o)));
    for r in e.unit_chunks("Nary", n, &[1])? {
        // With aliasing, every input chunk is copied to its own scratch slot first.
        let mut inputs = Vec::new();
        for (j, x) in xs.iter().enumerate() {
            let xc = x.slice(r.start, r.len());
            inputs.push(if aliased {
                e.scratch_copy(NARY_SCRATCH[j % NARY_SCRATCH.len()], xc)?
            } else {
                e.bind(xc)?
            });
            if aliased && j >= NARY_SCRATCH.len() {
                anyhow::bail!(
                    "Nary with more than {} inputs aliasing its output",
                    NARY_SCRATCH.len()
                );
            }
        }
        let yb = e.bind(y.slice(r.start, r.len()))?;
        let mb = match mask {
            Some(m) => e.bind(m.slice(r.start, r.len()))?,
            None => yb.clone(),
        };
        // A weighted sum starts with its first two inputs in one pass.
        let mut done = 0;
        if inputs.len() >= 2 && mode(0).0 == 0 && mode(1).0 == 1 {
            let (c0, c1) = (mode(0).1, mode(1).1);
            e.dispatch_pointwise(
                ("elementwise", "nary_sum2"),
                Some(Wide::new("nary_sum2_4", 0)),
                r.len(),
                r.start,
                &[inputs[0].clone(), inputs[1].clone(), yb.clone()],
                &[true; 3],
                &[c0.to_bits(), c1.to_bits()],
            )?;
            done = 2;
        }
        for (j, xb) in inputs.iter().enumerate().skip(done) {
            let (m, c) = mode(j);
            e.dispatch_pointwise(
                ("elementwise", "nary_step"),
                Some(Wide::new("nary_step4", m)),
                r.len(),
                r.start,
                &[xb.clone(), yb.clone(), mb.clone()],
                &[true; 3],
                &[m, c.to_bits(), j as u32],
            )?;
        }
    }
    Ok(())
}

const NARY_SCRATCH: [&str; 8] = [
    "nary0", "nary1", "nary2", "nary3", "nary4", "nary5", "nary6", "nary7",
];

fn nary_max_into(
    e: &mut GpuEngine,
    xs: &[View],
    y: View,
    mask: Option<Bound>,
    n: usize,
) -> Result<()> {
    let mask = mask.expect("scratch mask");
    for r in e.unit_chunks("Nary", n, &[1])? {
        let yb = e.bind(y.slice(r.start, r.len()))?;
        let mut inputs = Vec::new();
        for (j, x) in xs.iter().enumerate() {
            let xc = x.slice(r.start, r.len());
            let clash = overlaps(&xc, &y.slice(r.start, r.len()));
            inputs.push(if clash {
                e.scratch_copy(NARY_SCRATCH[j % 8], xc)?
            } else {
                e.bind(xc)?
            });
        }
        for (j, xb) in inputs.iter().enumerate() {
            let m = match j {
                0 => 3,
                1 => 4,
                _ => 5,
            };
            let mut p = Params::new().u(r.len()).shift(xb).shift(&yb).u(r.start);
            while p.0.len() < 8 {
                p = p.u(0);
            }
            p = p.u(m).f(1.0).u(j);
            let g = e.groups_1d(r.len());
            e.dispatch("elementwise", "nary_step", &p, &[xb, &yb, &mask], g)?;
        }
    }
    Ok(())
}

/// Elements of one channel a `channel_sum` / `chan_reduce` dispatch adds: each of the 256 lanes
/// of a channel's workgroup loops at most 32768 times (lavapipe, i.e. llvmpipe's gallivm, silently
/// ends an invocation's loops once they have run 65535 iterations in total).
pub(crate) const CHANNEL_SEGMENT: usize = 256 * 32768;

/// y[c] = beta * y[c] + alpha * sum_{o,i} a * weight (mode 0 one, 1 by w, 2 by min(w, 0)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn channel_sum(
    e: &mut GpuEngine,
    d: &ChannelDims,
    a: View,
    w: View,
    mode: u32,
    alpha: f32,
    beta: f32,
    y: View,
) -> Result<()> {
    if d.channels == 0 {
        return Ok(());
    }
    let per_outer = d.channels * d.inner;
    let chunks = if d.outer == 0 {
        std::iter::once(0..0).collect()
    } else {
        e.unit_chunks("ChannelSum", d.outer, &[per_outer])?
    };
    for (ci, r) in chunks.into_iter().enumerate() {
        let ac = a.slice(r.start * per_outer, r.len() * per_outer);
        let wc = w.slice(r.start * per_outer, r.len() * per_outer);
        let ab = e.bind_input("in0", ac, &[y], false)?;
        let wb = e.bind_input("in1", wc, &[y], false)?;
        let yb = e.bind(y)?;
        // Words of both entries: the segment [j0, j1) of each channel's (row, inner) indices and
        // the first channel are channel_sum's only.
        let params = |beta: f32, first: usize, (j0, j1): (usize, usize)| {
            Params::new()
                .u(0)
                .shift(&ab)
                .shift(&wb)
                .shift(&yb)
                .u(0)
                .u(0)
                .u(0)
                .u(0)
                .u(d.inner)
                .u(d.channels)
                .u(r.len())
                .u(mode as usize)
                .f(beta)
                .u(first)
                .f(alpha)
                .u(j0)
                .u(j1)
        };
        if d.inner < 256 && d.channels >= 64 && r.len() <= 65535 {
            // Short rows: one invocation per channel.
            let p = params(if ci == 0 { beta } else { 1.0 }, 0, (0, 0));
            let wgs = d.channels.div_ceil(64);
            let groups = [wgs.min(65535) as u32, wgs.div_ceil(65535) as u32, 1];
            let bufs = [&ab, &wb, &yb];
            e.dispatch("elementwise", "channel_sum_rows", &p, &bufs, groups)?;
            continue;
        }
        // Segments of at most CHANNEL_SEGMENT elements per channel (lavapipe's loop limit).
        let total = r.len() * d.inner;
        for j0 in (0..total.max(1)).step_by(CHANNEL_SEGMENT) {
            let b = if ci == 0 && j0 == 0 { beta } else { 1.0 };
            let mut first = 0;
            while first < d.channels {
                let nch = (d.channels - first).min(65535 * 65535);
                let p = params(b, first, (j0, j0 + CHANNEL_SEGMENT));
                let groups = [nch.min(65535) as u32, nch.div_ceil(65535) as u32, 1];
                e.dispatch("elementwise", "channel_sum", &p, &[&ab, &wb, &yb], groups)?;
                first += nch;
            }
        }
    }
    Ok(())
}

/// [`ElementwiseKernel::ChannelAffineBackward`] in one pass (one workgroup per channel, vec4
/// lanes) when the tensors fit one binding each, rows hold whole vec4s, the element-wise views
/// are aligned to them and the loops stay within lavapipe's 65535 iterations; returns whether
/// it ran (else the caller runs the parts).
fn channel_affine_backward(e: &mut GpuEngine, k: &ElementwiseKernel) -> Result<bool> {
    let &ElementwiseKernel::ChannelAffineBackward {
        dims,
        dy,
        neuron_grad,
        bias_grad,
        scale_grad,
        data_grad,
        norm_grad,
    } = k
    else {
        return Ok(false);
    };
    // Of the neurons, the pass applies a plain ReLU's backward (which reads x); the others run
    // apart. With a slope, the compiler may fuse the product dy * slope into the sums' adds,
    // which would round unlike the separate kernels (products by 1 and 0 are exact).
    let relu = match neuron_grad {
        None => None,
        Some((UnaryOp::Relu { negative_slope }, x, _)) if negative_slope == 0.0 => {
            Some((negative_slope, x))
        }
        Some(_) => return Ok(false),
    };
    if (relu.is_some() || norm_grad.is_some()) && data_grad.is_none_or(|(_, dx)| dx != dy) {
        return Ok(false);
    }
    // Views the kernel leaves unread stand in for the missing parts.
    let Some(some_per_channel) = data_grad
        .map(|d| d.0)
        .or(bias_grad.map(|b| b.0))
        .or(scale_grad.map(|s| s.1))
    else {
        return Ok(false);
    };
    let (scale, dx) = data_grad.unwrap_or((some_per_channel, dy));
    let n = dims.count();
    // Its loops: `outer` rows, and at most inner / 4 / 256 steps along one (n fits a binding).
    if n == 0
        || !dims.inner.is_multiple_of(4)
        || n > e.max_bind()
        || dims.outer > 65535
        || !e.wide_pointwise()
    {
        return Ok(false);
    }
    check_len(&[dy, dx], n)?;
    check_len(&[scale], dims.channels)?;
    // Bindings the kernel leaves unread get a tensor it only reads: binding the tensor it writes
    // twice made lavapipe's pass several times slower.
    let unread = data_grad
        .map(|d| d.0)
        .or(scale_grad.map(|s| s.0))
        .unwrap_or(dy);
    let x = scale_grad.map_or(unread, |s| s.0);
    check_len(&scale_grad.map(|s| s.0).into_iter().collect::<Vec<_>>(), n)?;
    let bias_diff = bias_grad.map_or(some_per_channel, |b| b.0);
    let scale_diff = scale_grad.map_or(some_per_channel, |s| s.1);
    check_len(&[bias_diff, scale_diff], dims.channels)?;
    // Each element of dy is read just before its dx is written, so dx may be dy itself, but no
    // other operand may share dx's tensor.
    let writes_dx = data_grad.is_some();
    if writes_dx
        && ([x, scale, bias_diff, scale_diff]
            .iter()
            .any(|v| v.id == dx.id)
            || (dy.id == dx.id && dy != dx))
    {
        return Ok(false);
    }
    let relu_x = relu.map_or(unread, |r| r.1);
    let std = norm_grad.unwrap_or(unread);
    check_len(&relu.map(|r| r.1).into_iter().collect::<Vec<_>>(), n)?;
    check_len(&norm_grad.into_iter().collect::<Vec<_>>(), dims.channels)?;
    if writes_dx && [relu_x, std].iter().any(|v| v.id == dx.id) {
        return Ok(false);
    }
    let views = [dy, x, scale, dx, bias_diff, scale_diff, relu_x, std];
    let mut binds = Vec::with_capacity(8);
    for v in views {
        match e.bind(v)?.widened() {
            Some(b) => binds.push(b),
            None => return Ok(false),
        }
    }
    // The element-wise operands the kernel reads as vec4s.
    let element_wise = [
        (0, true),
        (1, scale_grad.is_some()),
        (3, true),
        (6, relu.is_some()),
    ];
    if element_wise
        .iter()
        .any(|&(i, read)| read && !binds[i].shift.is_multiple_of(4))
    {
        return Ok(false);
    }
    let parts = u32::from(bias_grad.is_some())
        | u32::from(scale_grad.is_some()) << 1
        | u32::from(writes_dx) << 2
        | u32::from(relu.is_some()) << 3
        | u32::from(norm_grad.is_some()) << 4;
    let refs: Vec<super::Res> = binds.iter().map(super::Res::B).collect();
    let constants = [("OP", f64::from(parts)), ("ROWS4", 1.0)];
    let words = |first: usize| {
        let mut p = Params::new().u(0);
        for b in &binds[..6] {
            p = p.shift(b);
        }
        p.u(0)
            .u(dims.inner / 4)
            .u(dims.channels)
            .u(dims.outer)
            .u(first)
            .f(bias_grad.map_or(0.0, |b| b.1))
            .f(scale_grad.map_or(0.0, |s| s.2))
            .f(relu.map_or(0.0, |r| r.0))
            .shift(&binds[6])
            .shift(&binds[7])
    };
    if dims.inner / 4 < 256 && dims.channels >= 64 {
        // Many channels of short rows: one invocation per channel, no workgroup reduction
        // (whose barriers cost more than the rows on lavapipe).
        let wgs = dims.channels.div_ceil(64);
        let groups = [wgs.min(65535) as u32, wgs.div_ceil(65535) as u32, 1];
        let entry = "channel_affine_backward_rows4";
        e.dispatch_spec("elementwise4", entry, &constants, &words(0), &refs, groups)?;
        return Ok(true);
    }
    let mut first = 0;
    while first < dims.channels {
        let nch = (dims.channels - first).min(65535 * 65535);
        let groups = [nch.min(65535) as u32, nch.div_ceil(65535) as u32, 1];
        let entry = "channel_affine_backward4";
        e.dispatch_spec(
            "elementwise4",
            entry,
            &constants,
            &words(first),
            &refs,
            groups,
        )?;
        first += nch;
    }
    Ok(true)
}
