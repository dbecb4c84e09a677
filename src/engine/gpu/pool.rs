//! Host side of the pooling family (shaders/pool.wgsl). Work is split over images so that every
//! binding fits. STOCHASTIC pooling in TRAIN draws its uniforms with the CPU engine's counter-based
//! hash (emulated in 32-bit words), so both engines pick the same elements for the same seed.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params, Res};
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

/// Loop iterations one invocation may run per dispatch: lavapipe (llvmpipe's gallivm) silently
/// ends an invocation's loops once they have run 65535 iterations in total.
const LOOP_BUDGET: usize = 32768;

/// Elements of the largest (clipped) window: an upper bound of every window's size.
fn max_window(g: &PoolGeom) -> usize {
    g.kernel_h.min(g.height) * g.kernel_w.min(g.width)
}

/// Whether the one-invocation forward kernels would loop past the budget (rows + elements; the
/// STOCHASTIC TRAIN kernel walks its window twice).
fn needs_passes(g: &PoolGeom) -> bool {
    2 * g.kernel_h.min(g.height) * (g.kernel_w.min(g.width) + 1) + 16 > LOOP_BUDGET
}

/// Fails when the backward kernels (one invocation per bottom element, looping over the outputs
/// whose windows may contain it) would loop past the budget.
fn check_backward_loops(g: &PoolGeom) -> Result<()> {
    let outs = |pooled: usize, k: usize, s: usize, p: usize| pooled.min((k + p) / s + 2);
    let n = outs(g.pooled_h, g.kernel_h, g.stride_h, g.pad_h)
        * (outs(g.pooled_w, g.kernel_w, g.stride_w, g.pad_w) + 1);
    ensure!(
        n + 16 <= LOOP_BUDGET,
        "GPU pooling backward: an element lies in up to {n} windows (kernel {}x{}, stride {}x{}), \
         more than one invocation may loop over ({LOOP_BUDGET}; software Vulkan ends loops after \
         65535 iterations)",
        g.kernel_h,
        g.kernel_w,
        g.stride_h,
        g.stride_w
    );
    Ok(())
}

/// How `run` dispatches each chunk of images.
#[derive(Clone, Copy)]
enum Mode {
    /// One dispatch of the entry point.
    Plain,
    /// `window_pass` of these kinds, each over the window in passes of at most `LOOP_BUDGET`
    /// elements (state in the scratch buffer `pool_state`).
    Passes(&'static [u32]),
    /// `window_pass` kind 5 (window sums into `pool_state`), then the entry point with the sums
    /// bound last.
    WithSums,
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
    mode: Mode,
) -> Result<()> {
    let plane_b = g.height * g.width;
    let plane_t = g.pooled_h * g.pooled_w;
    let img_b = g.channels * plane_b;
    let img_t = g.channels * plane_t;
    if g.num * g.channels == 0 || (per_bottom && plane_b == 0) || (!per_bottom && plane_t == 0) {
        return Ok(());
    }
    if per_bottom {
        check_backward_loops(g)?;
    }
    let ts = g.top_num_stride.max(img_t);
    let state_per_img = match mode {
        Mode::Plain => 0,
        _ => 8 * img_t,
    };
    for r in e.unit_chunks(entry, g.num, &[img_b, ts, state_per_img])? {
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
        let state = match mode {
            Mode::Plain => None,
            _ => Some(e.scratch("pool_state", nb * state_per_img)?),
        };
        let params = |threads: usize, binds: &[&Bound]| {
            let mut p = Params::new().u(threads);
            for b in binds {
                p = p.shift(b);
            }
            while p.0.len() < 8 {
                p = p.u(0);
            }
            p.u(g.channels)
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
                .u(r.start * g.channels)
        };
        // Window passes: bottom, top, mask (or top again), state; one invocation per output.
        let passes = |e: &mut GpuEngine, kinds: &[u32], refs: &[&Bound]| -> Result<()> {
            let threads = nb * img_t;
            let win = max_window(g);
            for &kind in kinds {
                for k0 in (0..win.max(1)).step_by(LOOP_BUDGET) {
                    let p = params(threads, refs)
                        .u(k0)
                        .u(k0 + LOOP_BUDGET)
                        .u(kind as usize);
                    let gr = e.groups_1d(threads);
                    e.dispatch("pool", "window_pass", &p, refs, gr)?;
                }
            }
            Ok(())
        };
        match mode {
            Mode::Plain => {
                let refs: Vec<&Bound> = binds.iter().collect();
                let res: Vec<Res> = refs.iter().map(|b| Res::B(b)).collect();
                // Small max windows get their size as constants: lavapipe then unrolls the loops.
                // With strides up to 4 across, one invocation computes 4 rows of 4 outputs,
                // which share the input rows their windows overlap on, and stores vec4s
                // (bindings grown to whole vec4s).
                let tiles: Option<Vec<Bound>> = (entry == "max_forward"
                    && g.kernel_h * g.kernel_w <= 16
                    && g.stride_w <= 4
                    && e.wide_pointwise())
                .then(|| binds.iter().map(Bound::widened).collect())
                .flatten();
                if let Some(tiles) = tiles {
                    let window = [
                        ("KH", g.kernel_h as f64),
                        ("KW", g.kernel_w as f64),
                        ("SH", g.stride_h as f64),
                        ("SW", g.stride_w as f64),
                    ];
                    let threads = nb * g.channels * g.pooled_h.div_ceil(4) * g.pooled_w.div_ceil(4);
                    let refs: Vec<&Bound> = tiles.iter().collect();
                    let res: Vec<Res> = tiles.iter().map(Res::B).collect();
                    let p = params(threads, &refs);
                    let gr = e.groups_1d(threads);
                    e.dispatch_spec("pool4", "max_forward_tile4", &window, &p, &res, gr)?;
                } else if entry == "max_forward" && g.kernel_h * g.kernel_w <= 16 {
                    let window = [("KH", g.kernel_h as f64), ("KW", g.kernel_w as f64)];
                    let p = params(nb * img_t, &refs);
                    let gr = e.groups_1d(nb * img_t);
                    e.dispatch_spec("pool", "max_forward", &window, &p, &res, gr)?;
                } else if entry == "mask_backward" && e.wide_pointwise() {
                    // Eight elements of a bottom row per invocation, which read each mask value
                    // and top gradient once for the eight.
                    let threads = nb * g.channels * g.height * g.width.div_ceil(8);
                    let p = params(threads, &refs);
                    let gr = e.groups_1d(threads);
                    e.dispatch_spec("pool", "mask_backward_row8", &[], &p, &res, gr)?;
                } else {
                    let threads = nb * if per_bottom { img_b } else { img_t };
                    let p = params(threads, &refs);
                    let gr = e.groups_1d(threads);
                    e.dispatch_spec("pool", entry, &[], &p, &res, gr)?;
                }
            }
            Mode::Passes(kinds) => {
                let st = state.as_ref().expect("state");
                let mask = binds.get(2).unwrap_or(&binds[1]);
                passes(e, kinds, &[&binds[0], &binds[1], mask, st])?;
            }
            Mode::WithSums => {
                // views: top_diff, top, bottom_diff, bottom
                let st = state.as_ref().expect("state");
                passes(e, &[5], &[&binds[3], &binds[1], &binds[1], st])?;
                let threads = nb * img_b;
                let mut refs: Vec<&Bound> = binds.iter().collect();
                refs.push(st);
                let p = params(threads, &refs);
                let gr = e.groups_1d(threads);
                e.dispatch("pool", entry, &p, &refs, gr)?;
            }
        }
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
                if needs_passes(g) {
                    Mode::Passes(&[0])
                } else {
                    Mode::Plain
                },
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
                if needs_passes(g) {
                    Mode::Passes(&[1])
                } else {
                    Mode::Plain
                },
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
                if needs_passes(g) {
                    Mode::Passes(&[2])
                } else {
                    Mode::Plain
                },
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
                if needs_passes(g) {
                    Mode::Passes(&[3, 4])
                } else {
                    Mode::Plain
                },
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
                Mode::Plain,
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
                Mode::Plain,
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
                "sto_test_backward_sums",
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
                Mode::WithSums,
            )
        }
    }
}
