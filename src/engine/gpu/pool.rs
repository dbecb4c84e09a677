//! Host side of the pooling family (shaders/pool.wgsl). Work is split over images so that every
//! binding fits. STOCHASTIC pooling in TRAIN draws its uniforms with the CPU engine's counter-based
//! hash (emulated in 32-bit words), so both engines pick the same elements for the same seed.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params};
use crate::engine::View;
use crate::engine::kernels::pool::{PoolGeom, PoolKernel};

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

/// A pooling operand: bottom-shaped (planes of height x width) or top-shaped (strided images).
#[derive(Clone, Copy)]
enum Role {
    Bottom,
    Top,
}

/// Runs `entry` over images split into chunks; `views` in binding order, `outs` the indices of
/// the outputs among them, one invocation per top (forward) or bottom (backward) element. `seed`
/// is passed to the kernels as words 21 (low) and 22 (high); word 23 is the first plane of a chunk.
#[allow(clippy::too_many_arguments)]
fn run(
    e: &mut GpuEngine,
    entry: &'static str,
    g: &PoolGeom,
    views: &[(View, Role)],
    outs: &[usize],
    per_bottom: bool,
    accumulate: bool,
    seed: u64,
) -> Result<()> {
    let plane_b = g.height * g.width;
    let plane_t = g.pooled_h * g.pooled_w;
    let img_b = g.channels * plane_b;
    let img_t = g.channels * plane_t;
    if g.num * g.channels == 0 || (per_bottom && plane_b == 0) || (!per_bottom && plane_t == 0) {
        return Ok(());
    }
    let ts = g.top_num_stride.max(img_t);
    for r in e.unit_chunks(entry, g.num, &[img_b, ts])? {
        let nb = r.len();
        let window = |v: View, role: Role| match role {
            Role::Bottom => v.slice(r.start * img_b, nb * img_b),
            Role::Top => v.slice(
                r.start * g.top_num_stride,
                (nb - 1) * g.top_num_stride + img_t,
            ),
        };
        let out_views: Vec<View> = outs
            .iter()
            .map(|&i| window(views[i].0, views[i].1))
            .collect();
        let mut binds: Vec<Bound> = Vec::new();
        for (i, (v, role)) in views.iter().enumerate() {
            let w = window(*v, *role);
            binds.push(if outs.contains(&i) {
                e.bind(w)?
            } else {
                e.bind_input(["in0", "in1", "in2", "in3"][i % 4], w, &out_views, false)?
            });
        }
        let threads = nb * if per_bottom { img_b } else { img_t };
        let mut p = Params::new().u(threads);
        for b in &binds {
            p = p.shift(b);
        }
        while p.0.len() < 8 {
            p = p.u(0);
        }
        p = p
            .u(g.channels)
            .u(g.height)
            .u(g.width)
            .u(g.pooled_h)
            .u(g.pooled_w)
            .u(g.kernel_h)
            .u(g.kernel_w)
            .u(g.stride_h)
            .u(g.stride_w)
            .u(g.pad_h)
            .u(g.pad_w)
            .u(g.top_num_stride)
            .u(accumulate as usize)
            .u(seed as u32 as usize)
            .u((seed >> 32) as usize)
            .u(r.start * g.channels);
        let refs: Vec<&Bound> = binds.iter().collect();
        let gr = e.groups_1d(threads);
        e.dispatch("pool", entry, &p, &refs, gr)?;
    }
    Ok(())
}

pub fn launch(e: &mut GpuEngine, k: &PoolKernel) -> Result<()> {
    use Role::{Bottom, Top};
    match k {
        PoolKernel::MaxForward {
            g,
            bottom,
            top,
            mask,
        } => {
            check(g, &[*bottom], &[*top, *mask])?;
            ensure!(
                top.id != mask.id,
                "pooling: top and mask must be different tensors"
            );
            run(
                e,
                "max_forward",
                g,
                &[(*bottom, Bottom), (*top, Top), (*mask, Top)],
                &[1, 2],
                false,
                false,
                0,
            )
        }
        PoolKernel::AveForward { g, bottom, top } => {
            check(g, &[*bottom], &[*top])?;
            run(
                e,
                "ave_forward",
                g,
                &[(*bottom, Bottom), (*top, Top)],
                &[1],
                false,
                false,
                0,
            )
        }
        PoolKernel::StochasticTest { g, bottom, top } => {
            check(g, &[*bottom], &[*top])?;
            run(
                e,
                "sto_test_forward",
                g,
                &[(*bottom, Bottom), (*top, Top)],
                &[1],
                false,
                false,
                0,
            )
        }
        PoolKernel::StochasticTrain {
            g,
            bottom,
            top,
            mask,
            seed,
        } => {
            check(g, &[*bottom], &[*top, *mask])?;
            ensure!(
                top.id != mask.id,
                "pooling: top and mask must be different tensors"
            );
            // The uniforms are indexed by (plane * pooled_h * pooled_w + output) in 32 bits.
            ensure!(
                (g.num * g.channels)
                    .checked_mul(g.pooled_h * g.pooled_w)
                    .is_some_and(|n| n <= u32::MAX as usize),
                "stochastic pooling: more than 2^32 outputs"
            );
            run(
                e,
                "sto_train_forward",
                g,
                &[(*bottom, Bottom), (*top, Top), (*mask, Top)],
                &[1, 2],
                false,
                false,
                *seed,
            )
        }
        PoolKernel::MaskBackward {
            g,
            top_diff,
            mask,
            bottom_diff,
            accumulate,
        } => {
            check(g, &[*bottom_diff], &[*top_diff, *mask])?;
            run(
                e,
                "mask_backward",
                g,
                &[(*top_diff, Top), (*mask, Top), (*bottom_diff, Bottom)],
                &[2],
                true,
                *accumulate,
                0,
            )
        }
        PoolKernel::AveBackward {
            g,
            top_diff,
            bottom_diff,
            accumulate,
        } => {
            check(g, &[*bottom_diff], &[*top_diff])?;
            run(
                e,
                "ave_backward",
                g,
                &[(*top_diff, Top), (*top_diff, Top), (*bottom_diff, Bottom)],
                &[2],
                true,
                *accumulate,
                0,
            )
        }
        PoolKernel::StochasticTestBackward {
            g,
            bottom,
            top,
            top_diff,
            bottom_diff,
            accumulate,
        } => {
            check(g, &[*bottom, *bottom_diff], &[*top, *top_diff])?;
            run(
                e,
                "sto_test_backward",
                g,
                &[
                    (*top_diff, Top),
                    (*top, Top),
                    (*bottom_diff, Bottom),
                    (*bottom, Bottom),
                ],
                &[2],
                true,
                *accumulate,
                0,
            )
        }
    }
}
