//! Host side of the BLAS family (shaders/blas.wgsl, shaders/blas_subgroup.wgsl).
//!
//! GEMM packs op(A) into 32-row panels and op(B) into 64-column panels (transposes, edge tiles and
//! batch strides are resolved there), then runs a micro-kernel over 32x64 blocks of C: the subgroup
//! kernel where the adapter has subgroups of at least 8 lanes, the portable register-tiled one
//! elsewhere. Products whose operands exceed one storage binding are split over batch entries,
//! rows of C, columns of C and the k dimension (later k blocks accumulate with beta = 1).
use anyhow::{Result, bail};

use super::{GpuEngine, Params, Res};
use crate::engine::View;
use crate::engine::kernels::blas::{BlasKernel, Gemm};

pub fn launch(e: &mut GpuEngine, k: &BlasKernel) -> Result<()> {
    match k {
        BlasKernel::Gemm(g) => gemm(e, g),
        BlasKernel::Axpby { alpha, x, beta, y } => {
            let n = x.len.min(y.len);
            for r in e.unit_chunks("Axpby", n, &[1])? {
                let yv = y.slice(r.start, r.len());
                let xb = e.bind_input("in0", x.slice(r.start, r.len()), &[yv], true)?;
                let yb = e.bind(yv)?;
                let p = Params::new()
                    .u(r.len())
                    .shift(&xb)
                    .shift(&yb)
                    .f(*alpha)
                    .f(*beta);
                let g = e.groups_1d(r.len());
                e.dispatch("blas", "axpby", &p, &[&xb, &yb], g)?;
            }
            Ok(())
        }
        BlasKernel::Scale { alpha, y } => {
            for r in e.unit_chunks("Scale", y.len, &[1])? {
                let yb = e.bind(y.slice(r.start, r.len()))?;
                let p = Params::new().u(r.len()).shift(&yb).f(*alpha);
                let g = e.groups_1d(r.len());
                e.dispatch("blas", "scale", &p, &[&yb], g)?;
            }
            Ok(())
        }
    }
}

/// A GEMM operand: a buffer and the element offset of batch entry 0.
struct Operand {
    buf: wgpu::Buffer,
    offset: usize,
}

fn ranges(total: usize, step: usize) -> Vec<std::ops::Range<usize>> {
    if total == 0 {
        return std::iter::once(0..0).collect();
    }
    (0..total)
        .step_by(step.max(1))
        .map(|s| s..(s + step).min(total))
        .collect()
}

fn gemm(e: &mut GpuEngine, g: &Gemm) -> Result<()> {
    let (m, n, k) = (g.m, g.n, g.k);
    if m == 0 || n == 0 || g.batch == 0 {
        return Ok(());
    }
    let span = |stride: usize, one: usize| stride * (g.batch - 1) + one;
    let (a_len, b_len, c_len) = (
        span(g.stride_a, m * k),
        span(g.stride_b, k * n),
        span(g.stride_c, m * n),
    );
    if g.a.len < a_len || g.b.len < b_len || g.c.len < c_len {
        bail!(
            "Gemm operands too short: A {} < {a_len}, B {} < {b_len} or C {} < {c_len} (m {m}, n {n}, k {k}, batch {})",
            g.a.len,
            g.b.len,
            g.c.len,
            g.batch
        );
    }
    if g.stride_c == 0 && g.batch > 1 {
        // Every entry accumulates into the same C: one after the other.
        for b in 0..g.batch {
            let one = Gemm {
                a: g.a.slice(b * g.stride_a, m * k),
                b: g.b.slice(b * g.stride_b, k * n),
                batch: 1,
                ..g.clone()
            };
            gemm(e, &one)?;
        }
        return Ok(());
    }
    let c_view = g.c.slice(0, c_len);
    e.check_view(c_view)?;
    if k == 0 {
        // C = beta * C, exactly as the CPU engine does (0 * NaN stays NaN).
        for b in 0..g.batch {
            launch(
                e,
                &BlasKernel::Scale {
                    alpha: g.beta,
                    y: g.c.slice(b * g.stride_c, m * n),
                },
            )?;
        }
        return Ok(());
    }
    // Inputs overlapping C are read from a copy taken first (as the CPU engine does).
    let operand = |e: &mut GpuEngine, v: View, name: &'static str| -> Result<Operand> {
        e.check_view(v)?;
        let overlaps = v.id == c_view.id
            && v.offset < c_view.offset + c_view.len
            && c_view.offset < v.offset + v.len;
        if overlaps && v.len > 0 {
            let s = e.scratch_copy(name, v)?;
            Ok(Operand {
                buf: s.buf,
                offset: 0,
            })
        } else {
            Ok(Operand {
                buf: e.buffer(v.id),
                offset: v.offset,
            })
        }
    };
    let a = operand(e, g.a.slice(0, a_len), "gemm_alias_a")?;
    let b = operand(e, g.b.slice(0, b_len), "gemm_alias_b")?;
    let cbuf = e.buffer(c_view.id);

    let (lda, ldb) = (if g.trans_a { m } else { k }, if g.trans_b { k } else { n });
    let max = e.max_bind();
    let too_big = || {
        anyhow::anyhow!("Gemm m {m}, n {n}, k {k} cannot be split into bindings of {max} elements")
    };
    // Block sizes: every window (source blocks, packed blocks, C block) must fit one binding.
    if n > max || (!g.trans_a && k > max) || (g.trans_b && k > max) || (g.trans_a && m > max) {
        return Err(too_big());
    }
    let mut mc = (max / n).min(m);
    if !g.trans_a {
        mc = mc.min(max / k.max(1));
    }
    if mc < m && mc >= 32 {
        mc = mc / 32 * 32;
    }
    let mut nc = n;
    if g.trans_b {
        nc = nc.min(max / k.max(1));
    }
    if nc < n && nc >= 64 {
        nc = nc / 64 * 64;
    }
    let mut kc = k;
    if g.trans_a {
        kc = kc.min(max / m);
    }
    if !g.trans_b {
        kc = kc.min(max / n);
    }
    if mc == 0 || nc == 0 {
        return Err(too_big());
    }
    kc = kc
        .min(max / mc.next_multiple_of(32))
        .min(max / nc.next_multiple_of(64));
    if kc < k {
        kc = kc / 4 * 4; // packed k is padded to a multiple of 4
    }
    if k > 0 && kc == 0 {
        return Err(too_big());
    }
    // Batch entries per dispatch (only when one entry is a single block).
    let window = |stride: usize, nb: usize, one: usize| {
        if stride == 0 {
            one
        } else {
            (nb - 1) * stride + one
        }
    };
    let mut nb = 1;
    if mc == m && nc == n && kc == k {
        let kp = k.next_multiple_of(4);
        let (pa, pb) = (m.next_multiple_of(32) * kp, n.next_multiple_of(64) * kp);
        let fits = |nb: usize| {
            window(g.stride_a, nb, m * k) <= max
                && window(g.stride_b, nb, k * n) <= max
                && window(g.stride_c, nb, m * n) <= max
                && (if g.stride_a == 0 { pa } else { nb * pa }) <= max
                && (if g.stride_b == 0 { pb } else { nb * pb }) <= max
        };
        nb = g.batch.min(65535);
        while nb > 1 && !fits(nb) {
            nb = (nb / 2).max(1);
        }
    }

    let sub = e.uses_subgroups();
    for b0 in (0..g.batch).step_by(nb) {
        let nbg = nb.min(g.batch - b0);
        let nba = if g.stride_a == 0 { 1 } else { nbg };
        let nbb = if g.stride_b == 0 { 1 } else { nbg };
        for mr in ranges(m, mc) {
            let mlen = mr.len();
            let panels_m = mlen.div_ceil(32);
            for (ki, kr) in ranges(k, kc).into_iter().enumerate() {
                let klen = kr.len();
                let kp = klen.next_multiple_of(4);
                let beta = if ki == 0 { g.beta } else { 1.0 };
                // Pack the A block (rows mr, k kr) of nba entries, then copy it into a texture.
                let ap_stride = panels_m * kp * 8; // texels
                let (start, one) = if g.trans_a {
                    (kr.start * lda + mr.start, (klen - 1) * lda + mlen)
                } else {
                    (mr.start * lda + kr.start, (mlen - 1) * lda + klen)
                };
                let (src, shift) = e.buffer_tex(
                    "gemm_src",
                    &a.buf,
                    a.offset + b0 * g.stride_a + start,
                    window(g.stride_a, nba, one),
                )?;
                let ap = e.scratch("gemm_ap", nba * ap_stride * 4)?;
                let p = Params::new()
                    .u(mlen)
                    .u(klen)
                    .u(kp)
                    .u(g.trans_a as usize)
                    .u(lda)
                    .u(shift as usize)
                    .u(g.stride_a)
                    .u(ap_stride)
                    .u(panels_m);
                let gr = [(kp * 8).div_ceil(64) as u32, panels_m as u32, nba as u32];
                e.dispatch_res("blas", "pack_a", &p, &[Res::T(&src), Res::B(&ap)], gr)?;
                let ta = e.scratch_tex("gemm_ta", nba * ap_stride * 4)?;
                e.copy_to_tex(&ap.buf, 0, nba * ap_stride * 4, &ta);
                let ta = ta.create_view(&Default::default());
                for nr in ranges(n, nc) {
                    let nlen = nr.len();
                    let panels_n = nlen.div_ceil(64);
                    let bp_stride = panels_n * kp * 16; // texels
                    let (start, one) = if g.trans_b {
                        (nr.start * ldb + kr.start, (nlen - 1) * ldb + klen)
                    } else {
                        (kr.start * ldb + nr.start, (klen - 1) * ldb + nlen)
                    };
                    let (src, shift) = e.buffer_tex(
                        "gemm_src",
                        &b.buf,
                        b.offset + b0 * g.stride_b + start,
                        window(g.stride_b, nbb, one),
                    )?;
                    let bp = e.scratch("gemm_bp", nbb * bp_stride * 4)?;
                    let p = Params::new()
                        .u(nlen)
                        .u(klen)
                        .u(kp)
                        .u(g.trans_b as usize)
                        .u(ldb)
                        .u(shift as usize)
                        .u(g.stride_b)
                        .u(bp_stride)
                        .u(panels_n);
                    let gr = [(kp * 16).div_ceil(64) as u32, panels_n as u32, nbb as u32];
                    e.dispatch_res("blas", "pack_b", &p, &[Res::T(&src), Res::B(&bp)], gr)?;
                    let tb = e.scratch_tex("gemm_tb", nbb * bp_stride * 4)?;
                    e.copy_to_tex(&bp.buf, 0, nbb * bp_stride * 4, &tb);
                    let tb = tb.create_view(&Default::default());
                    let cb = e.bind_buffer(
                        &cbuf,
                        c_view.offset + b0 * g.stride_c + mr.start * n + nr.start,
                        window(g.stride_c, nbg, (mlen - 1) * n + nlen),
                    )?;
                    let p = Params::new()
                        .u(mlen)
                        .u(nlen)
                        .u(kp)
                        .u(n)
                        .shift(&cb)
                        .u(g.stride_c)
                        .u(if g.stride_a == 0 { 0 } else { ap_stride })
                        .u(if g.stride_b == 0 { 0 } else { bp_stride })
                        .f(g.alpha)
                        .f(beta);
                    let groups = [panels_n as u32, panels_m as u32, nbg as u32];
                    let res = [Res::T(&ta), Res::T(&tb), Res::B(&cb)];
                    if sub {
                        e.dispatch_res("blas_subgroup", "gemm_sg", &p, &res, groups)?;
                    } else {
                        e.dispatch_res("blas", "gemm_tiled", &p, &res, groups)?;
                    }
                }
            }
        }
    }
    Ok(())
}
