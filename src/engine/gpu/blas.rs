//! Host side of the BLAS family (shaders/blas.wgsl, shaders/blas_subgroup.wgsl).
//!
//! GEMM packs op(A) into panels of TM rows and op(B) into panels of TN columns (transposes, edge
//! tiles, misalignment and batch strides are resolved there; on lavapipe a kernel reading packed
//! panels runs 20-50% faster than one reading the operands in place, far more than packing costs),
//! then runs a micro-kernel over TM x TN blocks of C: a subgroup kernel where the adapter has
//! subgroups of at least 8 lanes (32x64 tiles, 16x64 or 8x64 when op(A) has at most 16 or 8 rows),
//! the portable register-tiled one (32x64) elsewhere. C is stored as vec4 where its rows are whole
//! texels. Products whose operands exceed one storage binding are split over batch entries, rows of
//! C, columns of C and the k dimension (later k blocks accumulate with beta = 1).
use anyhow::{Result, bail};

use super::{Bound, GpuEngine, Params, Res, Wide};
use crate::engine::kernels::blas::{BlasKernel, Gemm};
use crate::engine::{TensorId, View};

pub fn launch(e: &mut GpuEngine, k: &BlasKernel) -> Result<()> {
    match k {
        BlasKernel::Gemm(g) => gemm(e, g),
        BlasKernel::Axpby { alpha, x, beta, y } => {
            let n = x.len.min(y.len);
            for r in e.unit_chunks("Axpby", n, &[1])? {
                let yv = y.slice(r.start, r.len());
                let xb = e.bind_input("in0", x.slice(r.start, r.len()), &[yv], true)?;
                let yb = e.bind(yv)?;
                e.dispatch_pointwise(
                    ("blas", "axpby"),
                    Some(Wide::new("axpby4", 0)),
                    r.len(),
                    r.start,
                    &[xb, yb],
                    &[true, true],
                    &[alpha.to_bits(), beta.to_bits()],
                )?;
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

/// A GEMM operand: a buffer and the element offset of batch entry 0; `tensor` when it is read in
/// place (not from a copy).
struct Operand {
    buf: wgpu::Buffer,
    offset: usize,
    tensor: Option<TensorId>,
}

/// What the packed-A texture holds (see [`GpuEngine::packed_a`]): the source tensor and
/// everything that shapes the packing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct PackedKey {
    pub tensor: TensorId,
    offset: usize,
    len: usize,
    x_contiguous: bool,
    x: usize,
    k: usize,
    ld: usize,
    src_stride: usize,
    width: usize,
    batch: usize,
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
        if e.packed_a.as_ref().is_some_and(|p| p.tensor == c_view.id) {
            e.packed_a = None;
        }
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
                tensor: None,
            })
        } else {
            Ok(Operand {
                buf: e.buffer(v.id),
                offset: v.offset,
                tensor: Some(v.id),
            })
        }
    };
    let a = operand(e, g.a.slice(0, a_len), "gemm_alias_a")?;
    let b = operand(e, g.b.slice(0, b_len), "gemm_alias_b")?;
    let cbuf = e.buffer(c_view.id);

    let (lda, ldb) = (if g.trans_a { m } else { k }, if g.trans_b { k } else { n });
    let aligned_c = n.is_multiple_of(4)
        && c_view.offset.is_multiple_of(4)
        && (g.batch == 1 || g.stride_c.is_multiple_of(4));
    let (tm, tn, shader, entry) = tile(e.uses_subgroups(), m, aligned_c);
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
    if mc < m && mc >= tm {
        mc = mc / tm * tm;
    }
    let mut nc = n;
    if g.trans_b {
        nc = nc.min(max / k.max(1));
    }
    if nc < n && nc >= tn {
        nc = nc / tn * tn;
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
        .min(max / mc.next_multiple_of(tm))
        .min(max / nc.next_multiple_of(tn))
        .min(1 << 21); // packing indexes k in floats
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
        let (pa, pb) = (m.next_multiple_of(tm) * k, n.next_multiple_of(tn) * k);
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

    for b0 in (0..g.batch).step_by(nb) {
        let nbg = nb.min(g.batch - b0);
        let nba = if g.stride_a == 0 { 1 } else { nbg };
        let nbb = if g.stride_b == 0 { 1 } else { nbg };
        for mr in ranges(m, mc) {
            let mlen = mr.len();
            let panels_m = mlen.div_ceil(tm);
            for (ki, kr) in ranges(k, kc).into_iter().enumerate() {
                let klen = kr.len();
                let beta = if ki == 0 { g.beta } else { 1.0 };
                // op(A)[row, k] of the block: rows along A's rows (x) with trans_a, else along k.
                let (start, one) = if g.trans_a {
                    (kr.start * lda + mr.start, (klen - 1) * lda + mlen)
                } else {
                    (mr.start * lda + kr.start, (mlen - 1) * lda + klen)
                };
                let ap_stride = panels_m * klen * tm / 4; // texels
                let ta = pack_cached(
                    e,
                    &a,
                    a.offset + b0 * g.stride_a + start,
                    window(g.stride_a, nba, one),
                    Panels {
                        x: mlen,
                        k: klen,
                        ld: lda,
                        x_contiguous: g.trans_a,
                        src_stride: g.stride_a,
                        width: tm,
                        batch: nba,
                        dst: "gemm_ap",
                        tex: "gemm_ta",
                    },
                )?;
                for nr in ranges(n, nc) {
                    let nlen = nr.len();
                    let panels_n = nlen.div_ceil(tn);
                    let (start, one) = if g.trans_b {
                        (nr.start * ldb + kr.start, (nlen - 1) * ldb + klen)
                    } else {
                        (kr.start * ldb + nr.start, (klen - 1) * ldb + nlen)
                    };
                    let bp_stride = panels_n * klen * tn / 4; // texels
                    let tb = pack(
                        e,
                        &b,
                        b.offset + b0 * g.stride_b + start,
                        window(g.stride_b, nbb, one),
                        Panels {
                            x: nlen,
                            k: klen,
                            ld: ldb,
                            x_contiguous: !g.trans_b,
                            src_stride: g.stride_b,
                            width: tn,
                            batch: nbb,
                            dst: "gemm_bp",
                            tex: "gemm_tb",
                        },
                    )?;
                    let cb = e.bind_buffer(
                        &cbuf,
                        c_view.offset + b0 * g.stride_c + mr.start * n + nr.start,
                        window(g.stride_c, nbg, (mlen - 1) * n + nlen),
                    )?;
                    run_micro(
                        e,
                        &Micro {
                            tile: (tm, tn, shader, entry),
                            ta: &ta,
                            a_k: klen,
                            bias: false,
                            implicit: None,
                            c_map: None,
                            a_base: 0,
                            a_stride: if g.stride_a == 0 { 0 } else { ap_stride },
                            tb: &tb,
                            b_base: 0,
                            b_stride: if g.stride_b == 0 { 0 } else { bp_stride },
                            c: &cb,
                            ldc: n,
                            c_stride: g.stride_c,
                            m: mlen,
                            n: nlen,
                            k: klen,
                            alpha: g.alpha,
                            beta,
                            batch: nbg,
                            epilogue: None,
                        },
                    )?;
                    if e.packed_a.as_ref().is_some_and(|k| k.tensor == c_view.id) {
                        e.packed_a = None;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One run of a micro-kernel over packed operands (blas.wgsl): textures `ta` / `tb` hold op(A) in
/// panels of TM rows and op(B) in panels of TN columns, `k` deep (batch entry z starts
/// `a_stride` / `b_stride` texels after `a_base` / `b_base`, 0 for an operand shared by all entries); C is the
/// window `c` (row stride `ldc`, entry z at `z * c_stride` elements):
/// C = alpha * op(A) op(B) + beta * C over `batch` entries.
pub(crate) struct Micro<'a> {
    pub tile: (usize, usize, &'static str, &'static str),
    pub ta: &'a wgpu::TextureView,
    /// k rows of each A panel: `k`, or `k + 1` with `bias` (C += column k of A).
    pub a_k: usize,
    pub bias: bool,
    /// B layout I (implicit im2col, see gen_gemm_sg.py): then `tb` is the source images.
    pub implicit: Option<Implicit<'a>>,
    /// Subgroup kernels: C column i * wr + j of a row is stored at i * rs + j * cs (wr, rs, cs).
    pub c_map: Option<(usize, usize, usize)>,
    pub a_base: usize,
    pub a_stride: usize,
    pub tb: &'a wgpu::TextureView,
    pub b_base: usize,
    pub b_stride: usize,
    pub c: &'a Bound,
    pub ldc: usize,
    pub c_stride: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
    /// Point-wise steps on C as it is stored (subgroup kernels only).
    pub epilogue: Option<MicroEpilogue<'a>>,
}

/// The EPI epilogue of the subgroup micro-kernels (see `sg_epi` in shaders/blas_subgroup.wgsl).
#[derive(Clone, Copy)]
pub(crate) struct MicroEpilogue<'a> {
    /// [`super::elementwise::StagePattern::flags`].
    pub flags: u32,
    /// C row r's (mean, std, scale, bias) is vec4 `first_row + r` of the table (shift 0).
    pub table: &'a Bound,
    pub first_row: usize,
    /// Receives the normalized values in C's layout: the window of the same extent as `c`.
    pub save: Option<&'a Bound>,
    pub slope: f32,
}

/// The extra operands of B layout I: the tap table, whether to mask reads outside the images,
/// params words 16..25.
pub(crate) struct Implicit<'a> {
    pub taps: &'a wgpu::TextureView,
    pub mask: bool,
    /// Every lane's first element of every k is at a multiple of 4 (I_ALIGNED).
    pub aligned: bool,
    pub words: Params,
}

/// Records one [`Micro`] dispatch (C rows of whole texels are stored as vec4).
pub(crate) fn run_micro(e: &mut GpuEngine, u: &Micro) -> Result<()> {
    let (tm, tn, shader, entry) = u.tile;
    let save = u.epilogue.as_ref().and_then(|ep| ep.save);
    let c4 = u.c_map.is_none()
        && u.ldc.is_multiple_of(4)
        && u.n.is_multiple_of(4)
        && [Some(u.c), save]
            .iter()
            .flatten()
            .all(|b| b.shift.is_multiple_of(4) && b.offset.is_multiple_of(16))
        && (u.batch == 1 || u.c_stride.is_multiple_of(4));
    let p = Params::new()
        .u(u.m)
        .u(u.n)
        .u(u.k)
        .u(u.ldc)
        .shift(u.c)
        .u(u.c_stride)
        .u(u.a_base)
        .u(u.a_stride)
        .u(tm / 4)
        .u(u.b_base)
        .u(u.b_stride)
        .u(tn / 4)
        .f(u.alpha)
        .f(u.beta)
        .u(u.a_k * tm / 4)
        .u(u.k * tn / 4);
    let groups = [
        u.n.div_ceil(tn) as u32,
        u.m.div_ceil(tm) as u32,
        u.batch as u32,
    ];
    let cb4 = e.texel_binding(u.c);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut constants = vec![("BETA0", flag(u.beta == 0.0)), ("C4", flag(c4))];
    if u.bias {
        constants.push(("HAS_BIAS", 1.0));
    }
    let mut p = p;
    if let Some((wr, rs, cs)) = u.c_map {
        if !shader.ends_with("subgroup") {
            bail!("internal: C_MAP needs the subgroup micro-kernels");
        }
        constants.push(("C_MAP", 1.0));
        let mut words = vec![0u32; 10];
        if let Some(im) = &u.implicit {
            words[..im.words.0.len()].copy_from_slice(&im.words.0);
        }
        p.0.extend_from_slice(&words);
        p = p.u(wr).u(rs).u(cs).f(1.0 / wr as f32);
    }
    if !shader.ends_with("subgroup") {
        if u.epilogue.is_some() {
            bail!("internal: an epilogue needs the subgroup micro-kernels");
        }
        let res = [Res::T(u.ta), Res::T(u.tb), Res::B(u.c), Res::B(&cb4)];
        return e.dispatch_spec(shader, entry, &constants, &p, &res, groups);
    }
    let entry = match &u.implicit {
        None => entry,
        Some(im) => {
            if u.c_map.is_none() {
                p.0.extend_from_slice(&im.words.0);
            }
            constants.push(("IM_MASK", flag(im.mask)));
            constants.push(("I_ALIGNED", flag(im.aligned)));
            implicit_entry(entry)
        }
    };
    // Bindings 5..8 are in every subgroup kernel's layout: what a kernel does not read is bound
    // to an operand it has.
    let (table, save_b, save4) = match &u.epilogue {
        Some(ep) => {
            constants.push(("EPI", f64::from(ep.flags)));
            p.0.resize(p.0.len().max(30), 0);
            let save_shift = ep.save.map_or(0, |b| b.shift as usize);
            p = p.u(ep.first_row).u(save_shift).f(ep.slope);
            let save = ep.save.unwrap_or(u.c);
            (ep.table, save, e.texel_binding(save))
        }
        None => (&cb4, u.c, cb4.clone()),
    };
    let res = [
        Res::T(u.ta),
        Res::T(u.tb),
        Res::B(u.c),
        Res::B(&cb4),
        Res::T(u.implicit.as_ref().map_or(u.ta, |im| im.taps)),
        Res::B(table),
        Res::B(save_b),
        Res::B(&save4),
    ];
    e.dispatch_spec(shader, entry, &constants, &p, &res, groups)
}

/// The B layout I twin of a packed-operand subgroup micro-kernel.
fn implicit_entry(entry: &'static str) -> &'static str {
    match entry {
        "gemm_8x64_tn" => "gemm_8x64_ti",
        "gemm_16x64_tn" => "gemm_16x64_ti",
        "gemm_32x64_tn" => "gemm_32x64_ti",
        "gemm_48x64_tn_k2" => "gemm_48x64_ti_k2",
        _ => "gemm_64x64_ti_k2",
    }
}

/// The micro-kernel for a product with `m` rows: (TM, TN, shader, entry point).
///
/// Measured on lavapipe (CPU time at 1024^3, relative): 64x64 tiles 1.0, 48x64 1.06, 32x64 1.08
/// per row of C, but the bigger tiles lose their lead when C rows are not whole texels (their
/// long scalar-store epilogue), so they are used for aligned C only; small m takes the smallest
/// tile that holds it. Among equal costs the bigger tile wins (fewer, longer workgroups).
pub(crate) fn tile(
    subgroups: bool,
    m: usize,
    aligned_c: bool,
) -> (usize, usize, &'static str, &'static str) {
    if !subgroups {
        return (32, 64, "blas", "gemm_tiled");
    }
    let entry = |tm: usize| match tm {
        8 => "gemm_8x64_tn",
        16 => "gemm_16x64_tn",
        32 => "gemm_32x64_tn",
        48 => "gemm_48x64_tn_k2",
        _ => "gemm_64x64_tn_k2",
    };
    let tm = if m <= 8 {
        8
    } else if m <= 16 {
        16
    } else if m <= 32 {
        32
    } else {
        let cands: &[(usize, f64)] = if aligned_c {
            &[(64, 1.0), (48, 1.06), (32, 1.08)]
        } else {
            &[(48, 1.0), (32, 1.0)]
        };
        let cost = |&(tm, w): &(usize, f64)| m.next_multiple_of(tm) as f64 * w;
        cands
            .iter()
            .min_by(|a, b| cost(a).total_cmp(&cost(b)))
            .map_or(32, |c| c.0)
    };
    (tm, 64, "blas_subgroup", entry(tm))
}

/// How to pack one GEMM operand block into panels (see blas.wgsl).
struct Panels {
    /// Rows of op(A) / columns of op(B) in the block.
    x: usize,
    k: usize,
    ld: usize,
    /// Whether consecutive x are consecutive in memory (else consecutive k are).
    x_contiguous: bool,
    /// Source elements between batch entries.
    src_stride: usize,
    /// Panel width (TM or TN).
    width: usize,
    batch: usize,
    dst: &'static str,
    tex: &'static str,
}

/// [`pack`] of op(A), skipped when the packed-A texture already holds the same block of the same
/// tensor and nothing has written to that tensor since (the engine forgets the packed block at
/// every command that may write memory other than a GEMM's C or an im2col's columns, and when
/// those overlap it): a convolution multiplies the same weights with every image.
fn pack_cached(
    e: &mut GpuEngine,
    op: &Operand,
    offset: usize,
    len: usize,
    pn: Panels,
) -> Result<wgpu::TextureView> {
    let key = op.tensor.map(|tensor| PackedKey {
        tensor,
        offset,
        len,
        x_contiguous: pn.x_contiguous,
        x: pn.x,
        k: pn.k,
        ld: pn.ld,
        src_stride: pn.src_stride,
        width: pn.width,
        batch: pn.batch,
    });
    if key.is_some() && e.packed_a == key {
        let floats = pn.batch * pn.x.div_ceil(pn.width) * pn.k * pn.width;
        let tex = e.scratch_tex(pn.tex, floats)?;
        return Ok(tex.create_view(&Default::default()));
    }
    let view = pack(e, op, offset, len, pn)?;
    e.packed_a = key;
    Ok(view)
}

/// Packs the `len` source elements of `op` from element `offset` (batch entries included) into
/// panels and returns the texture holding them.
fn pack(
    e: &mut GpuEngine,
    op: &Operand,
    offset: usize,
    len: usize,
    pn: Panels,
) -> Result<wgpu::TextureView> {
    let (src, shift) = e.buffer_tex("gemm_src", &op.buf, offset, len)?;
    let panels = pn.x.div_ceil(pn.width);
    let w4 = pn.width / 4;
    let stride = panels * pn.k * w4; // texels per batch entry
    let dst = e.scratch(pn.dst, pn.batch * stride * 4)?;
    let aligned = shift.is_multiple_of(4)
        && pn.ld.is_multiple_of(4)
        && (pn.batch == 1 || pn.src_stride.is_multiple_of(4));
    // Packing divides invocation indices in floats (exact below 2^24).
    if pn.k.next_multiple_of(4) * w4 >= 1 << 24 {
        bail!("internal: Gemm block of k {} too long to pack", pn.k);
    }
    let p = Params::new()
        .u(pn.x)
        .u(pn.k)
        .u(pn.ld)
        .u(shift as usize)
        .u(pn.src_stride)
        .u(w4)
        .u(stride);
    // Runs along x fill 4 texels at a time where a panel's texels per k allow.
    let wide = pn.x_contiguous && w4.is_multiple_of(4);
    let invocations = if wide {
        pn.k * w4 / 4
    } else {
        pn.k.div_ceil(4) * w4
    };
    let groups = [
        invocations.div_ceil(64) as u32,
        panels as u32,
        pn.batch as u32,
    ];
    let entry = match (pn.x_contiguous, wide) {
        (true, true) => "pack_xc4",
        (true, false) => "pack_xc",
        _ => "pack_kc",
    };
    let constants = [("PK_ALIGNED", if aligned { 1.0 } else { 0.0 })];
    e.dispatch_spec(
        "blas",
        entry,
        &constants,
        &p,
        &[Res::T(&src), Res::B(&dst)],
        groups,
    )?;
    let tex = e.scratch_tex(pn.tex, pn.batch * stride * 4)?;
    e.copy_to_tex(&dst.buf, 0, pn.batch * stride * 4, &tex);
    Ok(tex.create_view(&Default::default()))
}
