//! Host side of the transfer family (shaders/transfer.wgsl): strided copies, reductions along an
//! axis and their gradient, row gathers / scatter-adds by an index tensor (an index outside the
//! rows gives a zero row here, where the CPU engine reports an error).
use anyhow::{Result, bail};

use super::{Bound, GpuEngine, Params};

use crate::engine::kernels::transfer::{ReduceOp, TransferKernel};

/// Elements spanned by a strided walk (0 when a dimension is empty).
fn extent(dims: &[usize], strides: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    dims.iter()
        .zip(strides)
        .map(|(d, s)| (d - 1) * s)
        .sum::<usize>()
        + 1
}

fn op_code(op: ReduceOp) -> usize {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Asum => 1,
        ReduceOp::Sumsq => 2,
    }
}

/// Loop iterations one invocation of `reduce` / `scatter_add_rows` runs per dispatch: lavapipe
/// (llvmpipe's gallivm) silently ends an invocation's loops after 65535 iterations in total.
const LOOP_PASS: usize = 32768;

fn pad8(mut p: Params) -> Params {
    while p.0.len() < 8 {
        p = p.u(0);
    }
    p
}

/// Runs at most this many buffer copies for one strided copy (Concat, Slice, Crop's rows)...
const MAX_COPY_RUNS: usize = 1024;
/// ... each at least this long.
const MIN_COPY_RUN: usize = 256;

/// The (src start, dst start, length) of the contiguous runs a strided walk copies, when it
/// is a few long runs: adjacent dimensions merged where both sides are contiguous across
/// them, and a last dimension of stride 1 on both sides.
fn contiguous_runs(
    dims: &[usize],
    src_strides: &[usize],
    dst_strides: &[usize],
) -> Option<Vec<(usize, usize, usize)>> {
    // (dim, src stride, dst stride), innermost last, merged where contiguous.
    let mut merged: Vec<(usize, usize, usize)> = Vec::new();
    for ((&d, &ss), &ds) in dims.iter().zip(src_strides).zip(dst_strides) {
        if d == 1 {
            continue;
        }
        match merged.last_mut() {
            Some(last) if last.1 == ss * d && last.2 == ds * d => *last = (last.0 * d, ss, ds),
            _ => merged.push((d, ss, ds)),
        }
    }
    let &(run, ss, ds) = merged.last()?;
    let outer = &merged[..merged.len() - 1];
    let count: usize = outer.iter().map(|o| o.0).product();
    if ss != 1 || ds != 1 || run < MIN_COPY_RUN || count > MAX_COPY_RUNS {
        return None;
    }
    let mut runs = Vec::with_capacity(count);
    for mut k in 0..count {
        let (mut from, mut to) = (0, 0);
        for &(d, s, t) in outer.iter().rev() {
            from += k % d * s;
            to += k % d * t;
            k /= d;
        }
        runs.push((from, to, run));
    }
    Some(runs)
}

pub fn launch(e: &mut GpuEngine, k: &TransferKernel) -> Result<()> {
    match k {
        TransferKernel::Strided {
            src,
            dst,
            dims,
            src_strides,
            dst_strides,
            add,
        } => {
            if dims.len() != src_strides.len() || dims.len() != dst_strides.len() {
                bail!(
                    "strided copy: {} dims but {} / {} strides",
                    dims.len(),
                    src_strides.len(),
                    dst_strides.len()
                );
            }
            if dims.len() > 18 {
                bail!("GPU kernel Strided: {} dimensions (at most 18)", dims.len());
            }
            let (se, de) = (extent(dims, src_strides), extent(dims, dst_strides));
            if se > src.len || de > dst.len {
                bail!(
                    "strided copy reaches {se} / {de} elements of views of {} / {}",
                    src.len,
                    dst.len
                );
            }
            if se == 0 {
                return Ok(());
            }
            let apart =
                src.id != dst.id || src.offset + se <= dst.offset || dst.offset + de <= src.offset;
            if !add
                && apart
                && let Some(runs) = contiguous_runs(dims, src_strides, dst_strides)
            {
                // Buffer copies (memcpy on lavapipe) instead of a gather per element.
                for (from, to, len) in runs {
                    e.record_copy(src.slice(from, len), dst.slice(to, len))?;
                }
                return Ok(());
            }
            // Split over the first dimension (a 0-D walk is one element).
            let (d0, s0, t0) = if dims.is_empty() {
                (1, 0, 0)
            } else {
                (dims[0], src_strides[0], dst_strides[0])
            };
            let rest: usize = dims.iter().skip(1).product();
            let (rs, rd) = if dims.is_empty() {
                (1, 1)
            } else {
                (
                    extent(&dims[1..], &src_strides[1..]),
                    extent(&dims[1..], &dst_strides[1..]),
                )
            };
            for r in e.unit_chunks("Strided", d0, &[s0.max(rs), t0.max(rd)])? {
                let sv = src.slice(r.start * s0, (r.len() - 1) * s0 + rs);
                let dv = dst.slice(r.start * t0, (r.len() - 1) * t0 + rd);
                let sb = e.bind_input("in0", sv, &[dv], false)?;
                let db = e.bind(dv)?;
                let count = r.len() * rest;
                let mut p = pad8(
                    Params::new()
                        .u(count)
                        .shift(&sb)
                        .shift(&db)
                        .u(dims.len().max(1))
                        .u(*add as usize),
                );
                if dims.is_empty() {
                    p = p.u(1).u(0).u(0);
                } else {
                    p = p.u(r.len()).u(s0).u(t0);
                    for a in 1..dims.len() {
                        p = p.u(dims[a]).u(src_strides[a]).u(dst_strides[a]);
                    }
                }
                let g = e.groups_1d(count);
                e.dispatch("transfer", "strided", &p, &[&sb, &db], g)?;
            }
            Ok(())
        }
        &TransferKernel::Reduce {
            x,
            y,
            outer,
            dim,
            inner,
            op,
            coeff,
        } => {
            if x.len < outer * dim * inner || y.len < outer * inner {
                bail!("reduce: views too short for [{outer}, {dim}, {inner}]");
            }
            if outer * inner == 0 {
                return Ok(());
            }
            for r in e.unit_chunks("Reduce", outer, &[dim * inner, inner])? {
                let yv = y.slice(r.start * inner, r.len() * inner);
                let xb = e.bind_input(
                    "in0",
                    x.slice(
                        r.start * dim * inner,
                        (r.len() * dim * inner)
                            .max(1)
                            .min(x.len - r.start * dim * inner),
                    ),
                    &[yv],
                    false,
                )?;
                let yb = e.bind(yv)?;
                let n = r.len() * inner;
                let g = e.groups_1d(n);
                // Passes of at most LOOP_PASS terms (lavapipe's loop limit); one when dim is 0.
                let passes = dim.div_ceil(LOOP_PASS).max(1);
                for pass in 0..passes {
                    let d0 = pass * LOOP_PASS;
                    let p = pad8(Params::new().u(n).shift(&xb).shift(&yb))
                        .u(dim)
                        .u(inner)
                        .u(op_code(op))
                        .f(coeff)
                        .u(d0)
                        .u((dim - d0).min(LOOP_PASS))
                        .u(usize::from(pass > 0));
                    e.dispatch("transfer", "reduce", &p, &[&xb, &yb], g)?;
                }
            }
            Ok(())
        }
        &TransferKernel::ReduceGrad {
            x,
            dy,
            dx,
            outer,
            dim,
            op,
            coeff,
        } => {
            let n = outer * dim;
            if x.len < n || dx.len < n || dy.len < outer {
                bail!("reduce grad: views too short for [{outer}, {dim}]");
            }
            if n == 0 {
                return Ok(());
            }
            for r in e.unit_chunks("ReduceGrad", outer, &[dim])? {
                let dxv = dx.slice(r.start * dim, r.len() * dim);
                let xb =
                    e.bind_input("in0", x.slice(r.start * dim, r.len() * dim), &[dxv], true)?;
                let db = e.bind_input("in1", dy.slice(r.start, r.len()), &[dxv], false)?;
                let ob = e.bind(dxv)?;
                let cnt = r.len() * dim;
                let p = pad8(Params::new().u(cnt).shift(&xb).shift(&db).shift(&ob))
                    .u(dim)
                    .u(op_code(op))
                    .f(coeff);
                let refs: [&Bound; 3] = [&xb, &db, &ob];
                let g = e.groups_1d(cnt);
                e.dispatch("transfer", "reduce_grad", &p, &refs, g)?;
            }
            Ok(())
        }
        &TransferKernel::GatherRows {
            src,
            index,
            dst,
            rows,
            row_len,
            src_rows,
        } => {
            if index.len < rows || dst.len < rows * row_len || src.len < src_rows * row_len {
                bail!("gather rows: views too short for {rows} rows of {row_len} from {src_rows}");
            }
            let n = rows * row_len;
            if n == 0 {
                return Ok(());
            }
            let dv = dst.slice(0, n);
            let sb = e.bind_input(
                "in0",
                src.slice(0, (src_rows * row_len).max(1).min(src.len)),
                &[dv],
                false,
            )?;
            let ib = e.bind_input("in1", index.slice(0, rows), &[dv], false)?;
            let db = e.bind(dv)?;
            let p = pad8(Params::new().u(n).shift(&sb).shift(&db).shift(&ib))
                .u(row_len)
                .u(src_rows);
            let g = e.groups_1d(n);
            e.dispatch("transfer", "gather_rows", &p, &[&sb, &db, &ib], g)
        }
        &TransferKernel::ScatterAddRows {
            src,
            index,
            dst,
            rows,
            row_len,
            dst_rows,
        } => {
            if index.len < rows || src.len < rows * row_len || dst.len < dst_rows * row_len {
                bail!("scatter rows: views too short for {rows} rows of {row_len} into {dst_rows}");
            }
            let n = dst_rows * row_len;
            if n == 0 {
                return Ok(());
            }
            let dv = dst.slice(0, n);
            let sb = e.bind_input(
                "in0",
                src.slice(0, (rows * row_len).max(1).min(src.len)),
                &[dv],
                false,
            )?;
            let ib = e.bind_input(
                "in1",
                index.slice(0, rows.max(1).min(index.len)),
                &[dv],
                false,
            )?;
            let db = e.bind(dv)?;
            let g = e.groups_1d(n);
            // Passes of at most LOOP_PASS rows (lavapipe's loop limit); one when there is none.
            let passes = rows.div_ceil(LOOP_PASS).max(1);
            for pass in 0..passes {
                let r0 = pass * LOOP_PASS;
                let p = pad8(Params::new().u(n).shift(&sb).shift(&db).shift(&ib))
                    .u(row_len)
                    .u(dst_rows)
                    .u(rows)
                    .u(r0)
                    .u((rows - r0).min(LOOP_PASS))
                    .u(usize::from(pass > 0));
                e.dispatch("transfer", "scatter_add_rows", &p, &[&sb, &db, &ib], g)?;
            }
            Ok(())
        }
    }
}
