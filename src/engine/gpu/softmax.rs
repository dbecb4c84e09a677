//! Host side of the softmax / loss family (shaders/softmax.wgsl): Softmax forward and backward
//! and the common losses / metrics (cross-entropy with optional infogain, sigmoid cross-entropy,
//! Euclidean, accuracy, loss-weight scaling) run on the GPU; MultinomialLogistic, Hinge,
//! Contrastive and ArgMax are not implemented on the GPU yet.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params};
use crate::engine::View;
use crate::engine::kernels::softmax::{Normalization, SoftmaxKernel};

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
        other => {
            let name = format!("{other:?}");
            let variant = name
                .split([' ', '(', '{'])
                .next()
                .unwrap_or("?")
                .to_string();
            Err(e.unimplemented(&format!("Softmax::{variant}")))
        }
    }
}
