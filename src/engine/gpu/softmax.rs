//! Host side of the softmax / loss family (shaders/softmax.wgsl): Softmax forward and backward
//! run on the GPU; the loss and metric kernels are not implemented on the GPU yet.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params};
use crate::engine::View;
use crate::engine::kernels::softmax::SoftmaxKernel;

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
