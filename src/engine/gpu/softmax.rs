//! Host side of the softmax / loss family (shaders/softmax.wgsl): Softmax forward and backward
//! and the common losses / metrics (cross-entropy with optional infogain, sigmoid cross-entropy,
//! Euclidean, accuracy, loss-weight scaling, multinomial logistic, hinge, contrastive) and ArgMax.
//! Scalar losses are reduced by one workgroup; per-element kernels split over `outer`.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params};
use crate::engine::View;
use crate::engine::kernels::softmax::{ArgMaxOut, Normalization, SoftmaxKernel};

/// One invocation per (outer, inner) position, split over `outer`.
fn run(
    e: &mut GpuEngine,
    entry: &'static str,
    ins: &[View],
    out: View,
    outer: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    let per = channels * inner;
    if outer * per == 0 {
        return Ok(());
    }
    for r in e.unit_chunks(entry, outer, &[per])? {
        let w = |v: View| v.slice(r.start * per, r.len() * per);
        let oc = w(out);
        let mut binds: Vec<Bound> = Vec::new();
        for (i, v) in ins.iter().enumerate() {
            binds.push(e.bind_input(["in0", "in1"][i % 2], w(*v), &[oc], false)?);
        }
        binds.push(e.bind(oc)?);
        let mut p = Params::new().u(r.len() * inner);
        for b in &binds {
            p = p.shift(b);
        }
        while p.0.len() < 8 {
            p = p.u(0);
        }
        p = p.u(channels).u(inner);
        let refs: Vec<&Bound> = binds.iter().collect();
        let g = e.groups_1d(r.len() * inner);
        e.dispatch("softmax", entry, &p, &refs, g)?;
    }
    Ok(())
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

/// A single-workgroup (or explicitly sized) dispatch over whole views: inputs then outputs.
/// The views must fit one binding each.
fn call(
    e: &mut GpuEngine,
    entry: &'static str,
    ins: &[View],
    outs: &[View],
    words: Vec<u32>,
    groups: [u32; 3],
) -> Result<()> {
    call_n(e, entry, 0, ins, outs, words, groups)
}

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
            run(
                e,
                "forward",
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
            run(
                e,
                "backward",
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
            call(e, "cross_entropy", &ins, &outs, words, [1, 1, 1])
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
            let ins = [
                prob.slice(0, n),
                label.slice(0, positions),
                infogain.unwrap_or(*prob),
                top_diff.slice(0, 1),
                norm.slice(0, 1),
            ];
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
            let g = e.groups_1d(positions);
            call_n(
                e,
                "cross_entropy_grad",
                positions,
                &ins,
                &[dx.slice(0, n)],
                words,
                g,
            )
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
            call(
                e,
                "accuracy",
                &ins,
                &[acc.slice(0, 1)],
                words.clone(),
                [1, 1, 1],
            )?;
            if let Some(pc) = per_class {
                need("per_class", pc.len, *channels)?;
                if *channels > 0 {
                    call(
                        e,
                        "accuracy_per_class",
                        &ins,
                        &[pc.slice(0, *channels)],
                        words,
                        [channels.div_ceil(64) as u32, 1, 1],
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
                x.slice(0, n.max(1).min(x.len)),
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
            call(e, "sigmoid_ce", &ins, &outs, words, [1, 1, 1])
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
            call(
                e,
                "euclidean",
                &ins,
                &[diff.slice(0, n.max(1).min(diff.len)), loss.slice(0, 1)],
                vec![n as u32, *outer as u32],
                [1, 1, 1],
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
            let words = vec![*outer as u32, *dim as u32];
            call(
                e,
                "multinomial_logistic",
                &ins,
                &[loss.slice(0, 1)],
                words,
                [1, 1, 1],
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
            let outs = [margin.slice(0, n.max(1).min(margin.len)), loss.slice(0, 1)];
            let words = vec![*outer as u32, *dim as u32, *l2 as u32];
            call(e, "hinge", &ins, &outs, words, [1, 1, 1])
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
            // Each row's difference and squared distance, then the loss from the distances.
            per_row(
                e,
                "contrastive_rows",
                *outer,
                1,
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
            call(
                e,
                "contrastive_loss",
                &ins,
                &[loss.slice(0, 1)],
                words,
                [1, 1, 1],
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
            per_row(
                e,
                "argmax",
                *outer,
                *inner,
                &[(*x, channels * inner), (*y, y_row)],
                1,
                &[
                    *outer as u32,
                    *channels as u32,
                    *inner as u32,
                    *top_k as u32,
                    mode,
                ],
            )
        }
    }
}
