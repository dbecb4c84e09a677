//! Host side of the softmax / loss family (shaders/softmax.wgsl): Softmax forward and backward
//! and the common losses / metrics (cross-entropy with optional infogain, sigmoid cross-entropy,
//! Euclidean, accuracy, loss-weight scaling, multinomial logistic, hinge, contrastive) and ArgMax.
//!
//! Lavapipe (llvmpipe's gallivm) silently ends every loop of a shader invocation once the loops
//! have run 65535 iterations in total, so every kernel here keeps the loops of one invocation
//! within [`LOOP_BUDGET`]: per-position kernels give way to one workgroup per position when a row
//! is long, and scalar losses are reduced by as many workgroups as needed, whose partial sums a
//! second kernel (`finish`) combines. Per-element kernels split over `outer` so bindings fit.
use anyhow::{Result, bail, ensure};

use super::{Bound, GpuEngine, Params};
use crate::engine::View;
use crate::engine::kernels::softmax::{ArgMaxOut, Normalization, SoftmaxKernel};

/// Loop iterations one shader invocation may run: half of lavapipe's 65535.
const LOOP_BUDGET: usize = 32768;
/// Loop iterations per invocation the multi-workgroup reductions aim at (more workgroups run in
/// parallel; each one reduces 256 lanes).
const LANE_ITERS: usize = 512;

/// Fails when one invocation would have to loop `iters` times.
fn check_budget(what: &str, iters: usize) -> Result<()> {
    if iters > LOOP_BUDGET {
        bail!(
            "GPU kernel {what}: one invocation would loop {iters} times, more than the {LOOP_BUDGET} \
             the kernels allow (software Vulkan ends loops after 65535 iterations)"
        );
    }
    Ok(())
}

/// Softmax along `channels`: one invocation per (outer, inner) position, or (`wg`) one workgroup
/// of 256 per position; split over `outer`.
#[allow(clippy::too_many_arguments)]
fn run(
    e: &mut GpuEngine,
    entry: &'static str,
    ins: &[View],
    out: View,
    outer: usize,
    channels: usize,
    inner: usize,
    wg: bool,
) -> Result<()> {
    let per = channels * inner;
    if outer * per == 0 {
        return Ok(());
    }
    let lanes = if wg { 256 } else { 1 };
    for r in e.unit_chunks(entry, outer, &[per])? {
        let w = |v: View| v.slice(r.start * per, r.len() * per);
        let oc = w(out);
        let mut binds: Vec<Bound> = Vec::new();
        for (i, v) in ins.iter().enumerate() {
            binds.push(e.bind_input(["in0", "in1"][i % 2], w(*v), &[oc], false)?);
        }
        binds.push(e.bind(oc)?);
        let threads = r.len() * inner * lanes;
        ensure!(
            threads <= u32::MAX as usize,
            "GPU kernel {entry}: too many positions"
        );
        let mut p = Params::new().u(threads);
        for b in &binds {
            p = p.shift(b);
        }
        while p.0.len() < 8 {
            p = p.u(0);
        }
        p = p.u(channels).u(inner);
        let refs: Vec<&Bound> = binds.iter().collect();
        let g = e.groups_1d(threads);
        e.dispatch("softmax", entry, &p, &refs, g)?;
    }
    Ok(())
}

/// Softmax forward or backward (`entry` "forward" / "backward", `loops` full passes over a row per
/// position): per-position kernel while a row fits the loop budget, else one workgroup per row.
#[allow(clippy::too_many_arguments)]
fn softmax(
    e: &mut GpuEngine,
    entry: &'static str,
    entry_wg: &'static str,
    loops: usize,
    ins: &[View],
    out: View,
    outer: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    if loops * channels <= LOOP_BUDGET {
        run(e, entry, ins, out, outer, channels, inner, false)
    } else {
        check_budget(entry_wg, loops * channels.div_ceil(256) + 32)?;
        run(e, entry_wg, ins, out, outer, channels, inner, true)
    }
}

/// Workgroups for a reduction over `items` items of `cost` loop iterations each.
fn reduction_groups(what: &str, items: usize, cost: usize) -> Result<usize> {
    let cost = cost.max(1);
    let groups = (items * cost).div_ceil(256 * LANE_ITERS).clamp(1, 65535);
    check_budget(what, items.div_ceil(256 * groups) * cost + 16)?;
    Ok(groups)
}

/// How `finish` turns the summed partial pairs (sum, count) into results.
enum Finish {
    /// out[0] = sum / n, out[1] = n, n = max(1, normaliser(count)) per the words of [`words`].
    Normalized(Vec<u32>),
    /// out[0] = sum / count (0 without count).
    Ratio,
    /// out[0] = sum / d1 / d2.
    Scaled(f32, f32),
}

/// A scalar reduction: `entry` runs over `items` items (`cost` loop iterations each) in as many
/// workgroups as the loop budget needs, reading `ins`, writing `direct` (element-wise outputs such
/// as Euclidean's diff) and partial (sum, count) pairs; `finish` then writes `outs`.
#[allow(clippy::too_many_arguments)]
fn reduce(
    e: &mut GpuEngine,
    entry: &'static str,
    items: usize,
    cost: usize,
    ins: &[View],
    direct: &[View],
    words: &[u32],
    finish: Finish,
    outs: &[View],
) -> Result<()> {
    let groups = reduction_groups(entry, items, cost)?;
    let written: Vec<View> = direct.iter().chain(outs).copied().collect();
    let mut binds: Vec<Bound> = Vec::new();
    for (i, v) in ins.iter().enumerate() {
        binds.push(e.bind_input(
            ["in0", "in1", "in2", "in3", "in4"][i % 5],
            *v,
            &written,
            false,
        )?);
    }
    for v in direct {
        binds.push(e.bind(*v)?);
    }
    binds.push(e.scratch("loss_partials", 2 * groups)?);
    let mut p = Params::new().u(groups);
    for b in &binds {
        p = p.shift(b);
    }
    while p.0.len() < 8 {
        p = p.u(0);
    }
    p.0.extend_from_slice(words);
    let refs: Vec<&Bound> = binds.iter().collect();
    e.dispatch("softmax", entry, &p, &refs, [groups as u32, 1, 1])?;

    // words 8..=19 of `finish`
    let mut fw = vec![0u32; 12];
    let (kind, d1, d2) = match finish {
        Finish::Normalized(w) => {
            fw[..w.len().min(9)].copy_from_slice(&w[..w.len().min(9)]);
            (0, 1.0, 1.0)
        }
        Finish::Ratio => (1, 1.0, 1.0),
        Finish::Scaled(d1, d2) => (2, d1, d2),
    };
    fw[9] = kind;
    fw[10] = f32::to_bits(d1);
    fw[11] = f32::to_bits(d2);
    let partials = e.scratch("loss_partials", 2 * groups)?;
    let o0 = e.bind(outs[0])?;
    let o1 = e.bind(*outs.get(1).unwrap_or(&outs[0]))?;
    let mut p = Params::new()
        .u(groups)
        .shift(&partials)
        .shift(&o0)
        .shift(&o1);
    while p.0.len() < 8 {
        p = p.u(0);
    }
    p.0.extend(fw);
    e.dispatch("softmax", "finish", &p, &[&partials, &o0, &o1], [1, 1, 1])
}

/// A dispatch over bound windows: word 0 `n`, then their shifts, then `words` from word 8.
fn dispatch_bound(
    e: &mut GpuEngine,
    entry: &'static str,
    n: usize,
    binds: &[&Bound],
    words: &[u32],
    groups: [u32; 3],
) -> Result<()> {
    let mut p = Params::new().u(n);
    for b in binds {
        p = p.shift(b);
    }
    while p.0.len() < 8 {
        p = p.u(0);
    }
    p.0.extend_from_slice(words);
    e.dispatch("softmax", entry, &p, binds, groups)
}

fn need(what: &str, len: usize, need: usize) -> Result<()> {
    ensure!(
        len >= need,
        "softmax kernel: {what} has {len} elements, needs {need}"
    );
    Ok(())
}

fn mode_code(m: Normalization) -> u32 {
    match m {
        Normalization::Full => 0,
        Normalization::Valid => 1,
        Normalization::BatchSize => 2,
        Normalization::None => 3,
    }
}

/// Words 8.. of the loss kernels.
#[allow(clippy::too_many_arguments)]
fn words(
    outer: usize,
    channels: usize,
    inner: usize,
    ignore: Option<i32>,
    mode: u32,
    log_min: f32,
    infogain: bool,
    top_k: usize,
) -> Vec<u32> {
    vec![
        outer as u32,
        channels as u32,
        inner as u32,
        ignore.is_some() as u32,
        ignore.unwrap_or(0) as u32,
        mode,
        log_min.to_bits(),
        infogain as u32,
        top_k as u32,
    ]
}

/// A dispatch of `n` invocations over whole views: inputs then outputs. The views must fit one
/// binding each.
fn call_n(
    e: &mut GpuEngine,
    entry: &'static str,
    n: usize,
    ins: &[View],
    outs: &[View],
    words: Vec<u32>,
    groups: [u32; 3],
) -> Result<()> {
    let mut binds: Vec<Bound> = Vec::new();
    for (i, v) in ins.iter().enumerate() {
        binds.push(e.bind_input(["in0", "in1", "in2", "in3", "in4"][i % 5], *v, outs, false)?);
    }
    for o in outs {
        binds.push(e.bind(*o)?);
    }
    let mut p = Params::new().u(n);
    for b in &binds {
        p = p.shift(b);
    }
    while p.0.len() < 8 {
        p = p.u(0);
    }
    p.0.extend(words);
    let refs: Vec<&Bound> = binds.iter().collect();
    e.dispatch("softmax", entry, &p, &refs, groups)
}

/// One invocation per element of `per_row` elements of each of `outer` rows, split over `outer` so
/// every binding fits. `operands` are (view, elements per row) in binding order, the last `n_outs`
/// of them outputs; 0 elements per row binds the view as it is (a scalar such as a loss weight).
/// `words` go from word 8 on (word 8 should hold the whole `outer`).
fn per_row(
    e: &mut GpuEngine,
    entry: &'static str,
    outer: usize,
    per_row: usize,
    operands: &[(View, usize)],
    n_outs: usize,
    words: &[u32],
) -> Result<()> {
    if outer * per_row == 0 {
        return Ok(());
    }
    const NAMES: [&str; 6] = ["in0", "in1", "in2", "in3", "in4", "in5"];
    let widths: Vec<usize> = operands.iter().map(|&(_, w)| w).collect();
    let n_ins = operands.len() - n_outs;
    for r in e.unit_chunks(entry, outer, &widths)? {
        let window = |(v, w): (View, usize)| {
            if w == 0 {
                v
            } else {
                v.slice(r.start * w, r.len() * w)
            }
        };
        let outs: Vec<View> = operands[n_ins..].iter().map(|&o| window(o)).collect();
        let mut binds: Vec<Bound> = Vec::new();
        for (i, &op) in operands[..n_ins].iter().enumerate() {
            binds.push(e.bind_input(NAMES[i], window(op), &outs, false)?);
        }
        for o in &outs {
            binds.push(e.bind(*o)?);
        }
        let threads = r.len() * per_row;
        let mut p = Params::new().u(threads);
        for b in &binds {
            p = p.shift(b);
        }
        while p.0.len() < 8 {
            p = p.u(0);
        }
        p.0.extend_from_slice(words);
        let refs: Vec<&Bound> = binds.iter().collect();
        let g = e.groups_1d(threads);
        e.dispatch("softmax", entry, &p, &refs, g)?;
    }
    Ok(())
}

pub fn launch(e: &mut GpuEngine, k: &SoftmaxKernel) -> Result<()> {
    match k {
        SoftmaxKernel::Forward {
            x,
            y,
            outer,
            channels,
            inner,
        } => {
            let n = outer * channels * inner;
            ensure!(
                x.len >= n && y.len >= n,
                "softmax: views of {} / {} elements, {n} needed",
                x.len,
                y.len
            );
            softmax(
                e,
                "forward",
                "forward_wg",
                3,
                &[x.slice(0, n)],
                y.slice(0, n),
                *outer,
                *channels,
                *inner,
            )
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
            ensure!(
                y.len >= n && dy.len >= n && dx.len >= n,
                "softmax backward: views of {} / {} / {} elements, {n} needed",
                y.len,
                dy.len,
                dx.len
            );
            softmax(
                e,
                "backward",
                "backward_wg",
                2,
                &[y.slice(0, n), dy.slice(0, n)],
                dx.slice(0, n),
                *outer,
                *channels,
                *inner,
            )
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
            let n = outer * channels * inner;
            need("prob", prob.len, n)?;
            need("label", label.len, outer * inner)?;
            need("loss", loss.len, 1)?;
            need("norm", norm.len, 1)?;
            if let Some(h) = infogain {
                need("infogain", h.len, channels * channels)?;
            }
            let outs = [loss.slice(0, 1), norm.slice(0, 1)];
            let ins = [
                prob.slice(0, n.max(1).min(prob.len)),
                label.slice(0, (outer * inner).max(1).min(label.len)),
                infogain.unwrap_or(*prob),
            ];
            let words = words(
                *outer,
                *channels,
                *inner,
                *ignore_label,
                mode_code(*mode),
                *log_min,
                infogain.is_some(),
                0,
            );
            let cost = 1 + if infogain.is_some() { *channels } else { 0 };
            reduce(
                e,
                "cross_entropy",
                outer * inner,
                cost,
                &ins,
                &[],
                &words,
                Finish::Normalized(words.clone()),
                &outs,
            )
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
            if let Some(h) = infogain {
                need("infogain", h.len, channels * channels)?;
            }
            let positions = outer * inner;
            if positions == 0 {
                return Ok(());
            }
            let words = words(
                *outer,
                *channels,
                *inner,
                *ignore_label,
                0,
                0.0,
                infogain.is_some(),
                0,
            );
            let row = channels * inner;
            match infogain {
                // One invocation per element.
                None => per_row(
                    e,
                    "cross_entropy_grad",
                    *outer,
                    row,
                    &[
                        (*prob, row),
                        (*label, *inner),
                        (*prob, row),
                        (top_diff.slice(0, 1), 0),
                        (norm.slice(0, 1), 0),
                        (*dx, row),
                    ],
                    1,
                    &words,
                ),
                // One invocation per position (two passes over the infogain row).
                Some(h) => {
                    check_budget("infogain_grad", 2 * channels + 8)?;
                    let ins = [
                        prob.slice(0, n),
                        label.slice(0, positions),
                        *h,
                        top_diff.slice(0, 1),
                        norm.slice(0, 1),
                    ];
                    let g = e.groups_1d(positions);
                    call_n(
                        e,
                        "infogain_grad",
                        positions,
                        &ins,
                        &[dx.slice(0, n)],
                        words,
                        g,
                    )
                }
            }
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
            need("acc", acc.len, 1)?;
            let ins = [
                x.slice(0, (outer * channels * inner).max(1).min(x.len)),
                label.slice(0, (outer * inner).max(1).min(label.len)),
            ];
            let words = words(
                *outer,
                *channels,
                *inner,
                *ignore_label,
                0,
                0.0,
                false,
                *top_k,
            );
            // Each position scans its `channels` scores.
            let cost = 1 + channels;
            reduce(
                e,
                "accuracy",
                outer * inner,
                cost,
                &ins,
                &[],
                &words,
                Finish::Ratio,
                &[acc.slice(0, 1)],
            )?;
            if let Some(pc) = per_class {
                need("per_class", pc.len, *channels)?;
                if *channels > 0 {
                    // One invocation per (class, chunk of positions), then one per class.
                    check_budget("accuracy_per_class", cost)?;
                    let chunk = (LOOP_BUDGET / cost).max(1);
                    let chunks = (outer * inner).div_ceil(chunk).max(1);
                    check_budget("accuracy_per_class_finish", chunks)?;
                    let threads = channels * chunks;
                    let mut w = words.clone();
                    w.resize(9, 0);
                    w.extend([chunks as u32, chunk as u32]);
                    let xb = e.bind(ins[0])?;
                    let lb = e.bind(ins[1])?;
                    let partials = e.scratch("acc_partials", 2 * threads)?;
                    let g = e.groups_1d(threads);
                    dispatch_bound(
                        e,
                        "accuracy_per_class",
                        threads,
                        &[&xb, &lb, &partials],
                        &w,
                        g,
                    )?;
                    let out = e.bind(pc.slice(0, *channels))?;
                    let g = e.groups_1d(*channels);
                    dispatch_bound(
                        e,
                        "accuracy_per_class_finish",
                        *channels,
                        &[&partials, &out],
                        &w,
                        g,
                    )?;
                }
            }
            Ok(())
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
            let ins = [
                x.slice(0, n.max(1).min(x.len)),
                target.slice(0, n.max(1).min(target.len)),
            ];
            let outs = [loss.slice(0, 1), norm.slice(0, 1)];
            let words = words(
                *outer,
                1,
                *inner,
                *ignore_label,
                mode_code(*mode),
                0.0,
                false,
                0,
            );
            reduce(
                e,
                "sigmoid_ce",
                n,
                1,
                &ins,
                &[],
                &words,
                Finish::Normalized(words.clone()),
                &outs,
            )
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
            if n == 0 {
                return Ok(());
            }
            let ins = [
                *x,
                target.slice(0, n),
                *x,
                top_diff.slice(0, 1),
                norm.slice(0, 1),
            ];
            let words = words(1, 1, n, *ignore_label, 0, 0.0, false, 0);
            let g = e.groups_1d(n);
            call_n(e, "sigmoid_ce_grad", n, &ins, &[dx.slice(0, n)], words, g)
        }
        SoftmaxKernel::ScaleByWeight {
            x,
            w,
            sign,
            divisor,
            y,
        } => {
            need("y", y.len, x.len)?;
            if x.len == 0 {
                return Ok(());
            }
            let g = e.groups_1d(x.len);
            call_n(
                e,
                "scale_by_weight",
                x.len,
                &[*x, w.slice(0, 1)],
                &[y.slice(0, x.len)],
                vec![sign.to_bits(), divisor.to_bits()],
                g,
            )
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
            need("loss", loss.len, 1)?;
            ensure!(
                diff.id != loss.id,
                "Euclidean: diff and loss must be different tensors"
            );
            let ins = [
                a.slice(0, n.max(1).min(a.len)),
                b.slice(0, n.max(1).min(b.len)),
            ];
            reduce(
                e,
                "euclidean",
                n,
                1,
                &ins,
                &[diff.slice(0, n.max(1).min(diff.len))],
                &[n as u32],
                Finish::Scaled((*outer).max(1) as f32, 2.0),
                &[loss.slice(0, 1)],
            )
        }
        SoftmaxKernel::MultinomialLogistic {
            prob,
            label,
            loss,
            outer,
            dim,
        } => {
            need("prob", prob.len, outer * dim)?;
            need("label", label.len, *outer)?;
            need("loss", loss.len, 1)?;
            let ins = [
                prob.slice(0, (outer * dim).max(1).min(prob.len)),
                label.slice(0, (*outer).max(1).min(label.len)),
            ];
            reduce(
                e,
                "multinomial_logistic",
                *outer,
                1,
                &ins,
                &[],
                &[*outer as u32, *dim as u32],
                Finish::Scaled((*outer).max(1) as f32, 1.0),
                &[loss.slice(0, 1)],
            )
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
            need("label", label.len, *outer)?;
            need("top_diff", top_diff.len, 1)?;
            per_row(
                e,
                "multinomial_logistic_grad",
                *outer,
                *dim,
                &[
                    (*prob, *dim),
                    (*label, 1),
                    (top_diff.slice(0, 1), 0),
                    (*dx, *dim),
                ],
                1,
                &[*outer as u32, *dim as u32],
            )
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
            need("label", label.len, *outer)?;
            need("loss", loss.len, 1)?;
            ensure!(
                margin.id != loss.id,
                "Hinge: margin and loss must be different tensors"
            );
            let ins = [
                x.slice(0, n.max(1).min(x.len)),
                label.slice(0, (*outer).max(1).min(label.len)),
            ];
            reduce(
                e,
                "hinge",
                n,
                1,
                &ins,
                &[margin.slice(0, n.max(1).min(margin.len))],
                &[*outer as u32, *dim as u32, *l2 as u32],
                Finish::Scaled((*outer).max(1) as f32, 1.0),
                &[loss.slice(0, 1)],
            )
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
            need("label", label.len, *outer)?;
            need("top_diff", top_diff.len, 1)?;
            per_row(
                e,
                "hinge_grad",
                *outer,
                *dim,
                &[
                    (*margin, *dim),
                    (*label, 1),
                    (top_diff.slice(0, 1), 0),
                    (*dx, *dim),
                ],
                1,
                &[*outer as u32, *dim as u32, *l2 as u32],
            )
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
            need("dist_sq", dist_sq.len, *outer)?;
            need("sim", sim.len, *outer)?;
            need("loss", loss.len, 1)?;
            ensure!(
                dist_sq.id != loss.id,
                "Contrastive: dist_sq and loss must be different tensors"
            );
            let words = vec![
                *outer as u32,
                *channels as u32,
                margin.to_bits(),
                *legacy as u32,
            ];
            // Each row's difference and squared distance (one invocation, or for long rows one
            // workgroup, per row), then the loss from the distances.
            let (entry, lanes) = if *channels + 8 <= LOOP_BUDGET {
                ("contrastive_rows", 1)
            } else {
                check_budget("contrastive_rows_wg", channels.div_ceil(256) + 16)?;
                ("contrastive_rows_wg", 256)
            };
            per_row(
                e,
                entry,
                *outer,
                lanes,
                &[
                    (*a, *channels),
                    (*b, *channels),
                    (*diff, *channels),
                    (*dist_sq, 1),
                ],
                2,
                &words,
            )?;
            let ins = [
                dist_sq.slice(0, (*outer).max(1).min(dist_sq.len)),
                sim.slice(0, (*outer).max(1).min(sim.len)),
            ];
            reduce(
                e,
                "contrastive_loss",
                *outer,
                1,
                &ins,
                &[],
                &words,
                Finish::Scaled((*outer).max(1) as f32, 2.0),
                &[loss.slice(0, 1)],
            )
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
            need("dist_sq", dist_sq.len, *outer)?;
            need("sim", sim.len, *outer)?;
            need("top_diff", top_diff.len, 1)?;
            per_row(
                e,
                "contrastive_grad",
                *outer,
                *channels,
                &[
                    (*diff, *channels),
                    (*dist_sq, 1),
                    (*sim, 1),
                    (top_diff.slice(0, 1), 0),
                    (*dx, *channels),
                ],
                1,
                &[
                    *outer as u32,
                    *channels as u32,
                    margin.to_bits(),
                    *legacy as u32,
                    sign.to_bits(),
                ],
            )
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
            ensure!(
                *top_k >= 1 && top_k <= channels,
                "argmax kernel: top_k {top_k} must be in 1..={channels}"
            );
            let (mode, y_row) = match out {
                ArgMaxOut::Indices => (0u32, top_k * inner),
                ArgMaxOut::Values => (1, top_k * inner),
                ArgMaxOut::IndicesThenValues => {
                    ensure!(
                        *inner == 1,
                        "argmax kernel: indices-then-values output needs inner == 1"
                    );
                    (2, 2 * top_k)
                }
            };
            need("x", x.len, outer * channels * inner)?;
            need("y", y.len, outer * y_row)?;
            let words = [
                *outer as u32,
                *channels as u32,
                *inner as u32,
                *top_k as u32,
                mode,
            ];
            // top_k selection passes over the row: in one invocation per position while they
            // fit the loop budget, else one dispatch per pass with a workgroup per position.
            if top_k * (channels + 1) + 8 <= LOOP_BUDGET {
                return per_row(
                    e,
                    "argmax",
                    *outer,
                    *inner,
                    &[(*x, channels * inner), (*y, y_row)],
                    1,
                    &words,
                );
            }
            check_budget("argmax_pass", channels.div_ceil(256) + 16)?;
            let row = channels * inner;
            for r in e.unit_chunks("argmax", *outer, &[row, y_row])? {
                let yv = y.slice(r.start * y_row, r.len() * y_row);
                let xb =
                    e.bind_input("in0", x.slice(r.start * row, r.len() * row), &[yv], false)?;
                let yb = e.bind(yv)?;
                let positions = r.len() * inner;
                ensure!(
                    positions * 256 <= u32::MAX as usize,
                    "GPU kernel argmax: too many positions"
                );
                let picks = e.scratch("argmax_picks", positions)?;
                let g = e.groups_1d(positions * 256);
                for j in 0..*top_k {
                    let mut w = words.to_vec();
                    w.push(j as u32);
                    dispatch_bound(
                        e,
                        "argmax_pass",
                        positions * 256,
                        &[&xb, &yb, &picks],
                        &w,
                        g,
                    )?;
                }
            }
            Ok(())
        }
    }
}
