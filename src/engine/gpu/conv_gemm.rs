//! Whole convolutions ([`ConvKernel::ConvForward`], [`ConvKernel::ConvBackwardData`],
//! [`ConvKernel::ConvWeightGrad`]) as GEMMs whose image operand is formed from the images on the
//! fly (implicit im2col: no column buffer is written and read back; shaders/conv_gemm.wgsl and
//! the B layout I micro-kernels of scripts/gen_gemm_sg.py).
//!
//! - Forward: per image and group, out = W * im2col(im) + bias. With subgroups and 16 to 128
//!   output channels per group the micro-kernel reads im2col(im) from the images itself and adds
//!   the bias as one more column of the packed weights; otherwise im2col(im) is packed into the
//!   GEMM's panels first (B costs about as much per k as 100 rows of FMAs in the kernel, and a
//!   packing pass about as much as 50 to 100 rows, measured on lavapipe).
//! - Data gradient (16 or more input channels per group): for stride 1 the convolution of the
//!   output gradient with the flipped, transposed weights (pad d(k-1) - p), the same way: no
//!   col2im; for larger strides one such convolution per phase (rh, rw) of the input positions,
//!   with the kernel taps that reach it, stored straight into its positions.
//! - Weight gradient: dW += dY * im2col(im)^T over k = (image, position) of all images. With
//!   subgroups, for 1x1 kernels and up to 128 output channels per group: slices of k whose
//!   products read both operands in place (`gemm_*_ju`), their partial sums then added into dW
//!   ([`weight_grad_sliced`]). Otherwise one product per group with both operands packed
//!   straight from the tensors (1x1 kernels with stride 1 and no pad: the plain products of the
//!   composed path).
//!
//! The images are read in a "linear" layout (see the shader): the images themselves for stride-1
//! convolutions whose output rows are as wide as the input's, else an expanded copy with the
//! padding written out. Other cases (more than 2 spatial axes, data gradients of convolutions with
//! few input channels, strided data gradients without subgroups, sizes past the float-exact index
//! range or one binding) run [`run_composed`]:
//! im2col / col2im and the plain GEMM. `CAFFE_RS_CONV_COMPOSED=1` forces that path and
//! `CAFFE_RS_CONV_PACKED=1` the packing one (for comparisons).
use anyhow::{Context, Result, bail, ensure};

use super::blas::{self, Micro, MicroEpilogue};
use super::elementwise::StagePattern;
use super::{GpuEngine, Params, Res};
use crate::engine::kernels::conv::{ConvGemm, ConvKernel, run_composed};
use crate::engine::{Engine, View};

/// Longest k block of one micro-kernel run: the micro-kernels step k by 2 or 4 and lavapipe ends
/// an invocation's loops after 65535 iterations.
const MAX_K: usize = 1 << 16;
/// The packers divide indices in floats (exact below 2^24).
const EXACT: usize = 1 << 24;
/// Columns of a B panel (TN of every micro-kernel).
const TN: usize = 64;
/// Rows of A (per group) for which the micro-kernel forms B itself.
const FUSED_ROWS: std::ops::RangeInclusive<usize> = 16..=128;
/// Data gradients with fewer input channels per group run the composed path: B (the output
/// gradient's columns, out_channels / group * kprod deep) would cost far more than the few rows
/// of products made from it.
const DATA_GRAD_MIN_CHANNELS: usize = 16;

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v != "0")
}

pub fn launch(e: &mut GpuEngine, kernel: &ConvKernel) -> Result<()> {
    let k = match kernel {
        ConvKernel::ConvForward(k)
        | ConvKernel::ConvBackwardData(k)
        | ConvKernel::ConvWeightGrad(k) => k,
        _ => bail!("internal: conv_gemm::launch takes whole convolutions only"),
    };
    k.check()?;
    if k.batch == 0 || k.out_spatial() == 0 || k.im_len() == 0 || k.out_channels == 0 {
        return run_composed(e, kernel);
    }
    let Some(g) = Geo::of(k).filter(|_| !env_flag("CAFFE_RS_CONV_COMPOSED")) else {
        return run_composed(e, kernel);
    };
    let done = match kernel {
        ConvKernel::ConvForward(k) => forward(e, k, &g)?,
        ConvKernel::ConvBackwardData(k) => data_grad(e, k, &g)?,
        _ => weight_grad(e, k, &g)?,
    };
    if !done {
        run_composed(e, kernel)?;
    }
    Ok(())
}

/// The spatial geometry on two axes (1-D and 0-D convolutions get unit leading axes): the image
/// (h x w) the columns are read from, the output positions (oh x ow), kernel, stride, pad,
/// dilation.
#[derive(Clone, Copy, Debug)]
struct Geo {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: i64,
    pw: i64,
    dh: usize,
    dw: usize,
}

impl Geo {
    fn of(k: &ConvGemm) -> Option<Geo> {
        let d = k.im_shape.len();
        if d > 2 {
            return None;
        }
        // Entry `a` (0 = h, 1 = w) of a spatial vector, `unit` for missing leading axes.
        let ax = |v: &[usize], a: usize, unit: usize| {
            if a + d >= 2 { v[a + d - 2] } else { unit }
        };
        let g = |a| Geo {
            h: ax(&k.im_shape, a, 1),
            w: 0,
            oh: ax(&k.col_shape, a, 1),
            ow: 0,
            kh: ax(&k.kernel, a, 1),
            kw: 0,
            sh: ax(&k.stride, a, 1),
            sw: 0,
            ph: ax(&k.pad, a, 0) as i64,
            pw: 0,
            dh: ax(&k.dilation, a, 1),
            dw: 0,
        };
        let (r, c) = (g(0), g(1));
        Some(Geo {
            w: c.h,
            ow: c.oh,
            kw: c.kh,
            sw: c.sh,
            pw: c.ph,
            dw: c.dh,
            ..r
        })
    }

    fn kprod(&self) -> usize {
        self.kh * self.kw
    }

    /// One kernel tap without pad: it reads where each output position sits in the layouts
    /// (tap base 0), so channel rows that start at whole texels are read without shifts.
    fn unit_taps(&self) -> bool {
        self.kprod() == 1 && self.ph == 0 && self.pw == 0
    }

    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// The same convolution seen from its output: the data gradient of a stride-1 convolution is
    /// the convolution of the output gradient (oh x ow) with the flipped kernel, pad d(k-1) - p,
    /// giving the h x w image positions.
    fn transposed(&self) -> Geo {
        Geo {
            h: self.oh,
            w: self.ow,
            oh: self.h,
            ow: self.w,
            ph: (self.dh * (self.kh - 1)) as i64 - self.ph,
            pw: (self.dw * (self.kw - 1)) as i64 - self.pw,
            ..*self
        }
    }

    /// How the packers and kernels read images of `channels` channels (see the shader).
    fn layout(&self, channels: usize) -> Layout {
        if self.sh == 1 && self.sw == 1 && self.w == self.ow && self.ow >= 4 {
            let plane = self.h * self.w;
            return Layout {
                expanded: false,
                // A 1x1 kernel without pad over as many positions as the image has reads
                // inside it only.
                masked: self.kh * self.kw != 1 || self.ph != 0 || self.pw != 0 || self.h != self.oh,
                per_kh: false,
                slots: 0,
                rows: 0,
                qmin: 0,
                p4: 0,
                cstride: plane,
                image: channels * plane,
            };
        }
        // Expanded: input row (i + qmin) * sh + rh for the taps' rows uh = kh * dh - ph,
        // uh = qh * sh + rh, output rows oh + qh - qmin = i.
        // Row slots: the kernel rows (each its own rows: the im2col rows) when that is smaller
        // than the input row phases (kernels no taller than the stride).
        let fdiv = |a: i64, b: i64| a.div_euclid(b);
        let sh = self.sh as i64;
        let qmin = fdiv(-self.ph, sh);
        let qmax = fdiv((self.dh * (self.kh - 1)) as i64 - self.ph, sh);
        let phase_rows = self.oh + (qmax - qmin) as usize;
        let per_kh = self.kh * self.oh <= self.sh * phase_rows;
        let (slots, rows) = if per_kh {
            (self.kh, self.oh)
        } else {
            (self.sh, phase_rows)
        };
        let p4 = (rows * self.ow).next_multiple_of(4);
        let cstride = slots * self.kw * p4;
        Layout {
            expanded: true,
            masked: false,
            per_kh,
            slots,
            rows,
            qmin,
            p4,
            cstride,
            image: channels * cstride,
        }
    }

    /// The image geometry words (5..13) of the packers after words 0..4.
    fn words(&self, p: Params, lay: &Layout, base: usize) -> Params {
        p.u(base)
            .u(lay.image)
            .u(lay.cstride)
            .u(self.ow)
            .u(self.h)
            .u(self.w)
            .u(self.kprod())
            .f(1.0 / self.kprod() as f32)
            .f(1.0 / self.ow as f32)
    }

    /// Whether the index arithmetic stays exact and in range for images laid out as `lay`
    /// (`group_channels` channels per group).
    fn fits(&self, group_channels: usize, lay: &Layout) -> bool {
        let s = self.positions();
        s > 0
            && s + TN < EXACT
            && group_channels * self.kprod() + TN < EXACT
            && lay.image < 1 << 30
            && self.ph.abs() < 1 << 20
            && self.pw.abs() < 1 << 20
            && self.h < 1 << 20
            && self.w < 1 << 20
    }
}

/// The layout of images for the packers and kernels (see the shader).
#[derive(Clone, Copy, Debug)]
struct Layout {
    expanded: bool,
    /// Reads outside the images are masked (identity layout with padding).
    masked: bool,
    /// Expanded: row slots are kernel rows (else input row phases), their count, rows of a
    /// plane, the first one's row offset (phases), elements per plane.
    per_kh: bool,
    slots: usize,
    rows: usize,
    qmin: i64,
    p4: usize,
    cstride: usize,
    /// Elements per image.
    image: usize,
}

impl Layout {
    /// Pipeline constant of the packers.
    fn mask(&self) -> (&'static str, f64) {
        ("CG_MASK", if self.masked { 1.0 } else { 0.0 })
    }
}

/// Images [first, first + count) of `v` (each `len` elements of `channels` channels of g.h x
/// g.w) as a linear texture in layout `lay`: the texture and the element where image `first`
/// starts in it.
#[allow(clippy::too_many_arguments)]
fn source(
    e: &mut GpuEngine,
    name: &'static str,
    v: View,
    len: usize,
    (first, count): (usize, usize),
    channels: usize,
    g: &Geo,
    lay: &Layout,
) -> Result<(wgpu::TextureView, usize)> {
    let buf = e.buffer(v.id);
    let window = v.slice(first * len, count * len);
    if !lay.expanded {
        let (tex, shift) = e.buffer_tex(name, &buf, window.offset, window.len)?;
        return Ok((tex, shift as usize));
    }
    let (src, shift) = e.buffer_tex("cg_expand_src", &buf, window.offset, window.len)?;
    let dst = e.scratch("cg_expand", count * lay.image)?;
    // Plane groups (image, channel, row slot, 4 kernel columns), whole (image, channel, row
    // slot) runs of them per dispatch, texel indices below 2^24 (the shader divides in floats).
    let quads = g.kw.div_ceil(4);
    let per = lay.p4 / 4; // texels per plane
    let groups_total = count * channels * lay.slots * quads;
    let step = ((EXACT - 1) / per / quads).max(1) * quads;
    let constants = [("CG_KW_RUN", if g.dw == 1 { 1.0 } else { 0.0 })];
    for p0 in (0..groups_total).step_by(step) {
        let np = step.min(groups_total - p0);
        let texels = np * per;
        let p = Params::new()
            .u(texels)
            .u(lay.rows * g.ow)
            .u(shift as usize)
            .u(len)
            .u(g.h * g.w)
            .u(g.h)
            .u(g.w)
            .u(g.sh)
            .u(g.sw)
            .u(g.dw)
            .u(g.pw as i32 as u32 as usize)
            .u(lay.qmin as i32 as u32 as usize)
            .u(g.kw)
            .u(p0)
            .u(g.ow)
            .u(channels)
            .f(1.0 / g.ow as f32)
            .u(per)
            .f(1.0 / per as f32)
            .u(quads)
            .f(1.0 / quads as f32)
            .u(lay.slots)
            .f(1.0 / lay.slots as f32)
            .f(1.0 / channels as f32)
            .u(lay.per_kh as usize)
            .u(g.dh)
            .u(g.ph as i32 as u32 as usize);
        let first_plane = p0 / quads * g.kw;
        let planes = np / quads * g.kw;
        let out = e.bind_buffer(&dst.buf, first_plane * lay.p4, planes * lay.p4)?;
        let groups = e.groups_1d(texels);
        e.dispatch_spec(
            "conv_gemm",
            "cg_expand",
            &constants,
            &p,
            &[Res::T(&src), Res::T(&src), Res::B(&out)],
            groups,
        )?;
    }
    let tex = e.scratch_tex(name, count * lay.image)?;
    e.copy_to_tex(&dst.buf, 0, count * lay.image, &tex);
    Ok((tex.create_view(&Default::default()), 0))
}

/// The tap table of `g` in layout `lay` (see cg_taps) as a texture.
fn taps(e: &mut GpuEngine, g: &Geo, lay: &Layout) -> Result<wgpu::TextureView> {
    let kp = g.kprod();
    let dst = e.scratch("cg_tapbuf", kp * 4)?;
    let p = Params::new()
        .u(g.kw)
        .u(g.dh)
        .u(g.dw)
        .u(g.ph as i32 as u32 as usize)
        .u(g.pw as i32 as u32 as usize)
        .u(g.w)
        .u(lay.expanded as usize)
        .u(g.sh)
        .u(lay.p4)
        .u(lay.qmin as i32 as u32 as usize)
        .u(g.ow)
        .u(kp)
        .u(lay.per_kh as usize);
    let tex = e.scratch_tex("cg_taps", kp * 4)?;
    let view = tex.create_view(&Default::default());
    // The texture fills the (unread) texture bindings of cg_taps.
    e.dispatch_res(
        "conv_gemm",
        "cg_taps",
        &p,
        &[Res::T(&view), Res::T(&view), Res::B(&dst)],
        [kp.div_ceil(64) as u32, 1, 1],
    )?;
    e.copy_to_tex(&dst.buf, 0, kp * 4, &tex);
    Ok(view)
}

/// An A operand for cg_pack_kc: element (x, k), k = k1 * d + k2, of entry z at
/// src + z * entry + x * sx + k1 * s1 + (flip ? d - 1 - k2 : k2) for k < kreal and k2 < dvalid;
/// column kreal is the bias when there is one.
struct AOperand {
    m: usize,
    sx: usize,
    d: usize,
    s1: usize,
    flip: bool,
    kreal: usize,
    dvalid: usize,
    entry: usize,
    /// Read one element at a time (needed for flip and for groups of 4 k across a multiple of d).
    elem: bool,
    /// Element mode: k2 maps through this table of taps (see cg_phase_taps).
    table: Option<wgpu::TextureView>,
}

/// Packs A rows [0, m) and k block [k0, k0 + klen) of `entries` entries into panels of `tm`
/// rows, and the bias (`bias` texture, element) into column kreal when the block holds it;
/// returns the texture (entry z starts z * pm * klen * tm / 4 texels in).
fn pack_a(
    e: &mut GpuEngine,
    a: &AOperand,
    (src, base): (&wgpu::TextureView, usize),
    bias: Option<(&wgpu::TextureView, usize)>,
    (k0, klen): (usize, usize),
    tm: usize,
    entries: usize,
) -> Result<wgpu::TextureView> {
    let w4 = tm / 4;
    let pm = a.m.div_ceil(tm);
    let entry = pm * klen * w4; // texels
    let dst = e.scratch("cg_ap", entries * entry * 4)?;
    let p = Params::new()
        .u(a.m)
        .u(k0)
        .u(klen)
        .u(a.kreal)
        .u(base)
        .u(a.sx)
        .u(a.d)
        .u(a.s1)
        .u(a.flip as usize)
        .u(w4)
        .u(a.dvalid)
        .u(a.entry)
        .u(entry)
        .f(1.0 / w4 as f32)
        .f(1.0 / a.d as f32);
    let groups = [
        (klen.div_ceil(4) * w4).div_ceil(64) as u32,
        pm as u32,
        entries as u32,
    ];
    let constants = [
        ("CG_KC_ELEM", if a.elem { 1.0 } else { 0.0 }),
        ("CG_KC_TABLE", if a.table.is_some() { 1.0 } else { 0.0 }),
    ];
    let aux = a.table.as_ref().unwrap_or(src);
    e.dispatch_spec(
        "conv_gemm",
        "cg_pack_kc",
        &constants,
        &p,
        &[Res::T(src), Res::T(aux), Res::B(&dst)],
        groups,
    )?;
    if let Some((btex, bbase)) = bias
        && (k0..k0 + klen).contains(&a.kreal)
    {
        let p = Params::new()
            .u(a.m)
            .u(a.kreal - k0)
            .u(klen)
            .u(0)
            .u(0)
            .u(0)
            .u(0)
            .u(0)
            .u(0)
            .u(w4)
            .u(bbase)
            .u(0)
            .u(entry);
        e.dispatch_res(
            "conv_gemm",
            "cg_pack_bias",
            &p,
            &[Res::T(src), Res::T(btex), Res::B(&dst)],
            [w4.div_ceil(64) as u32, pm as u32, entries as u32],
        )?;
    }
    let tex = e.scratch_tex("cg_ta", entries * entry * 4)?;
    e.copy_to_tex(&dst.buf, 0, entries * entry * 4, &tex);
    Ok(tex.create_view(&Default::default()))
}

/// An implicit-im2col product, per image b and group g:
/// C_bg [m x S] = A_g [m x K] * im2col(src_b)_g (+ bias), S = g.oh * g.ow output positions,
/// K = group_channels * kprod.
struct Implicit {
    g: Geo,
    /// Source images: view, elements per image, channels per image, channels per group.
    src: View,
    src_len: usize,
    channels: usize,
    group_channels: usize,
    groups: usize,
    batch: usize,
    a: AOperand,
    weight: View,
    bias: Option<View>,
    /// C: view, elements per image, elements between groups, between rows; and the strided
    /// position map of a phase ([`Micro::c_map`]) with the extent of one row.
    c: View,
    c_len: usize,
    c_group: usize,
    ldc: usize,
    c_map: Option<((usize, usize, usize), usize)>,
    /// Point-wise steps on C as the micro-kernels store it (C rows are channels
    /// `group * m + row`), with the number of channels.
    epilogue: Option<(StagePattern, usize)>,
}

/// Runs an [`Implicit`] product; Ok(false) when it does not fit the packers' limits.
fn implicit(e: &mut GpuEngine, p: &Implicit) -> Result<bool> {
    let g = &p.g;
    let s = g.positions();
    let lay = g.layout(p.channels);
    if !g.fits(p.group_channels, &lay) {
        return Ok(false);
    }
    let m = p.a.m;
    let fused = e.uses_subgroups() && FUSED_ROWS.contains(&m) && !env_flag("CAFFE_RS_CONV_PACKED");
    let kd = p.group_channels * g.kprod();
    // Packed B: the bias is row kd of B (ones) and column kd of A, within the k range. Fused:
    // the kernels' bias step adds column kd of A after the k loop.
    let kt = kd + (p.bias.is_some() && !fused) as usize;
    let max = e.max_bind();
    let aligned = p.c_map.is_none()
        && p.ldc.is_multiple_of(4)
        && p.c.offset.is_multiple_of(4)
        && p.c_len.is_multiple_of(4)
        && p.c_group.is_multiple_of(4);
    let tile = blas::tile(e.uses_subgroups(), m, aligned);
    let tm = tile.0;
    let (pn, pm) = (s.div_ceil(TN), m.div_ceil(tm));
    let row = p.c_map.map_or(s, |(_, extent)| extent);
    // k blocks: the loop limit, all groups' A panels (with the bias column) and (packed) one
    // image's B panels in one binding.
    let mut kc = kt
        .min(MAX_K)
        .min((max / (p.groups * pm * tm)).saturating_sub(1));
    if !fused {
        kc = kc.min(max / (pn * TN));
    }
    // One image's C and source must fit a binding, the panels a dispatch.
    let c_one = (p.groups - 1) * p.c_group + (m - 1) * p.ldc + row;
    if kc == 0 || c_one > max || lay.image > max || pn > 65535 || pm > 65535 {
        return Ok(false);
    }
    let per_image = if fused { 1 } else { pn * TN * kc };
    let nb = (max / per_image)
        .min(max / lay.image)
        .min((max - c_one) / p.c_len.max(1) + 1)
        .clamp(1, 65535);
    let wbuf = e.buffer(p.weight.id);
    let (wtex, wshift) = e.buffer_tex("cg_w", &wbuf, p.weight.offset, p.weight.len)?;
    let bias_tex = match p.bias {
        Some(b) => {
            let buf = e.buffer(b.id);
            let (t, shift) = e.buffer_tex("cg_bias", &buf, b.offset, b.len)?;
            Some((t, shift as usize))
        }
        None => None,
    };
    let cbuf = e.buffer(p.c.id);
    let tap_tex = taps(e, g, &lay)?;
    let epilogue = match &p.epilogue {
        Some((pattern, channels)) => {
            pattern.prepare(e, *channels)?;
            let table = e.scratch("cg_epilogue", 4 * channels)?;
            super::norm::epilogue_table(e, *channels, pattern.per_channel(), &table)?;
            let save = match pattern.save {
                Some(v) => {
                    ensure!(
                        v.len >= p.batch * p.c_len,
                        "convolution epilogue: the save has {} elements, needs {}",
                        v.len,
                        p.batch * p.c_len
                    );
                    Some(e.buffer(v.id))
                }
                None => None,
            };
            Some((pattern, table, save))
        }
        None => None,
    };
    for k0 in (0..kt).step_by(kc) {
        let klen = kc.min(kt - k0);
        // Fused: the last block's A panels end with the bias column.
        let bias_step = fused && p.bias.is_some() && k0 + klen == kd;
        let a_k = klen + bias_step as usize;
        let ta = pack_a(
            e,
            &p.a,
            (&wtex, wshift as usize),
            bias_tex.as_ref().map(|(t, s)| (t, *s)),
            (k0, a_k),
            tm,
            p.groups,
        )?;
        let a_entry = pm * a_k * tm / 4;
        let b_entry = pn * klen * TN / 4;
        for b0 in (0..p.batch).step_by(nb) {
            let nbi = nb.min(p.batch - b0);
            let (src, base) = source(
                e,
                "cg_src",
                p.src,
                p.src_len,
                (b0, nbi),
                p.channels,
                g,
                &lay,
            )?;
            for grp in 0..p.groups {
                let gbase = base + grp * p.group_channels * lay.cstride;
                let c_start = b0 * p.c_len + grp * p.c_group;
                let c_extent = (nbi - 1) * p.c_len + (m - 1) * p.ldc + row;
                let cb = e.bind_buffer(&cbuf, p.c.offset + c_start, c_extent)?;
                let saved = match &epilogue {
                    Some((pattern, _, Some(buf))) => {
                        let at = pattern.save.map_or(0, |v| v.offset) + c_start;
                        Some(e.bind_buffer(buf, at, c_extent)?)
                    }
                    _ => None,
                };
                // The steps run on the last k block's stores.
                let epi =
                    epilogue
                        .as_ref()
                        .filter(|_| k0 + klen == kt)
                        .map(|(pattern, table, _)| MicroEpilogue {
                            flags: pattern.flags,
                            table,
                            first_row: grp * m,
                            save: saved.as_ref(),
                            slope: pattern.slope,
                        });
                let micro = |tb, b_stride, implicit| Micro {
                    tile,
                    ta: &ta,
                    a_k,
                    bias: bias_step,
                    implicit,
                    c_map: p.c_map.map(|(map, _)| map),
                    a_base: grp * a_entry,
                    a_stride: 0,
                    tb,
                    b_base: 0,
                    b_stride,
                    c: &cb,
                    ldc: p.ldc,
                    c_stride: p.c_len,
                    m,
                    n: s,
                    k: klen,
                    alpha: 1.0,
                    beta: if k0 == 0 { 0.0 } else { 1.0 },
                    batch: nbi,
                    epilogue: epi,
                };
                if fused {
                    let words = Params::new()
                        .u(gbase)
                        .u(lay.image)
                        .u(lay.cstride)
                        .u(g.ow)
                        .u(g.h)
                        .u(g.w)
                        .u(g.kprod())
                        .u(k0)
                        .f(1.0 / g.ow as f32)
                        .f(1.0 / g.kprod() as f32);
                    let im = blas::Implicit {
                        taps: &tap_tex,
                        mask: lay.masked,
                        aligned: g.unit_taps()
                            && [gbase, lay.image, lay.cstride]
                                .iter()
                                .all(|v| v.is_multiple_of(4)),
                        words,
                    };
                    blas::run_micro(e, &micro(&src, 0, Some(im)))?;
                    continue;
                }
                let bp = e.scratch("cg_bp", nbi * b_entry * 4)?;
                let words = Params::new()
                    .u(s)
                    .u(k0)
                    .u(klen)
                    .u(kd)
                    .u(if p.bias.is_some() { kd } else { 0xffff_ffff });
                let words = g.words(words, &lay, gbase).u(b_entry);
                e.dispatch_spec(
                    "conv_gemm",
                    "cg_pack_cols",
                    &[lay.mask()],
                    &words,
                    &[Res::T(&src), Res::T(&tap_tex), Res::B(&bp)],
                    [klen.div_ceil(16) as u32, pn as u32, nbi as u32],
                )?;
                let tb = e.scratch_tex("cg_tb", nbi * b_entry * 4)?;
                e.copy_to_tex(&bp.buf, 0, nbi * b_entry * 4, &tb);
                let tb = tb.create_view(&Default::default());
                blas::run_micro(e, &micro(&tb, b_entry, None))?;
            }
        }
    }
    Ok(true)
}

fn forward(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    let (cg, og) = (k.channels / k.group, k.out_channels / k.group);
    let kd = cg * g.kprod();
    // The micro-kernels store C through the epilogue when they can run its steps; otherwise
    // they run as a pass of their own after the product.
    let pattern = (!k.epilogue.is_empty() && e.uses_subgroups())
        .then(|| StagePattern::of(&k.epilogue))
        .flatten();
    let in_kernel = pattern.is_some();
    let done = implicit(
        e,
        &Implicit {
            g: *g,
            src: k.im,
            src_len: k.im_len(),
            channels: k.channels,
            group_channels: cg,
            groups: k.group,
            batch: k.batch,
            a: AOperand {
                m: og,
                sx: kd,
                // k1 = 0 for every k: runs along whole rows of W.
                d: kd + 4,
                s1: 0,
                flip: false,
                kreal: kd,
                dvalid: kd + 4,
                entry: og * kd,
                elem: false,
                table: None,
            },
            weight: k.weight,
            bias: k.bias.map(|b| b.slice(0, k.out_channels)),
            c: k.out,
            c_len: k.out_len(),
            c_group: og * k.out_spatial(),
            ldc: k.out_spatial(),
            c_map: None,
            epilogue: pattern.map(|p| (p, k.out_channels)),
        },
    )?;
    if done {
        for kernel in k.finishing_kernels(in_kernel) {
            e.launch(&kernel)?;
        }
    }
    Ok(done)
}

fn data_grad(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    if k.channels / k.group < DATA_GRAD_MIN_CHANNELS {
        return Ok(false);
    }
    if g.sh != 1 || g.sw != 1 {
        return strided_data_grad(e, k, g);
    }
    let (cg, og, kp) = (k.channels / k.group, k.out_channels / k.group, g.kprod());
    // dX_g [cg x HW] = W'_g [cg x og kprod] * im2col'(dY_g), W'[ic, (oc, t)] = W[oc, ic, kprod-1-t].
    implicit(
        e,
        &Implicit {
            g: g.transposed(),
            src: k.out,
            src_len: k.out_len(),
            channels: k.out_channels,
            group_channels: og,
            groups: k.group,
            batch: k.batch,
            a: AOperand {
                m: cg,
                sx: kp,
                d: kp,
                s1: cg * kp,
                flip: true,
                kreal: og * kp,
                dvalid: kp,
                entry: og * cg * kp,
                elem: true,
                table: None,
            },
            weight: k.weight,
            bias: None,
            c: k.im,
            c_len: k.im_len(),
            c_group: cg * g.h * g.w,
            ldc: g.h * g.w,
            c_map: None,
            epilogue: None,
        },
    )
}

fn weight_grad(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    if e.uses_subgroups() && !env_flag("CAFFE_RS_CONV_PACKED") && weight_grad_sliced(e, k, g)? {
        return Ok(true);
    }
    if k.is_1x1() {
        // The images are the columns: the plain products pack them as cheaply (measured 15-25%
        // faster on lavapipe).
        return Ok(false);
    }
    let (cg, og) = (k.channels / k.group, k.out_channels / k.group);
    let kd = cg * g.kprod();
    let s = g.positions();
    let lay = g.layout(k.channels);
    if !g.fits(cg, &lay) {
        return Ok(false);
    }
    // k = image * S' + position, S' = S rounded up to 8 (cg_pack_colt reads runs of 8 positions
    // of one image; the padding rows are 0 in both operands).
    let sp = s.next_multiple_of(8);
    let max = e.max_bind();
    let aligned = kd.is_multiple_of(4) && k.weight.offset.is_multiple_of(4);
    let tile = blas::tile(e.uses_subgroups(), og, aligned);
    let tm = tile.0;
    let (pn, pm) = (kd.div_ceil(TN), og.div_ceil(tm));
    let out_len = k.out_len();
    // k blocks: the loop limit and both operands' panels within one binding.
    let kc = MAX_K.min(max / (pm * tm)).min(max / (pn * TN)) / 8 * 8;
    if kc == 0 || sp >= EXACT || lay.image > max || out_len > max || pn > 65535 || pm > 65535 {
        return Ok(false);
    }
    // Blocks of whole images when an image fits one, else blocks of one image's positions.
    let mut blocks = Vec::new();
    if sp <= kc {
        let nb = (kc / sp)
            .min(max / lay.image)
            .min(max / out_len)
            .min((EXACT - 1) / sp)
            .max(1);
        for b0 in (0..k.batch).step_by(nb) {
            let nb = nb.min(k.batch - b0);
            blocks.push((b0, nb, 0, nb * sp));
        }
    } else {
        for b in 0..k.batch {
            for p0 in (0..sp).step_by(kc) {
                blocks.push((b, 1, p0, kc.min(sp - p0)));
            }
        }
    }
    // A = dY_g: rows oc, k = (image, position).
    let dy = AOperand {
        m: og,
        sx: s,
        d: sp,
        s1: out_len,
        flip: false,
        kreal: 0xffff_ffff,
        dvalid: s,
        entry: 0,
        elem: false,
        table: None,
    };
    let tap_tex = taps(e, g, &lay)?;
    let cbuf = e.buffer(k.weight.id);
    let ybuf = e.buffer(k.out.id);
    for (b0, nb, p0, klen) in blocks {
        let (src, base) = source(e, "cg_src", k.im, k.im_len(), (b0, nb), k.channels, g, &lay)?;
        let ywin = k.out.slice(b0 * out_len, nb * out_len);
        let (ytex, yshift) = e.buffer_tex("cg_dy", &ybuf, ywin.offset, ywin.len)?;
        for grp in 0..k.group {
            let ta = pack_a(
                e,
                &dy,
                (&ytex, yshift as usize + grp * og * s),
                None,
                (p0, klen),
                tm,
                1,
            )?;
            // B = im2col(im)_g^T: rows k = (image, position), columns (c, kernel tap).
            let b_len = pn * klen * TN;
            let bp = e.scratch("cg_bp", b_len)?;
            let words = Params::new().u(kd).u(p0).u(klen).u(s).u(sp);
            let words = g
                .words(words, &lay, base + grp * cg * lay.cstride)
                .f(1.0 / sp as f32);
            e.dispatch_spec(
                "conv_gemm",
                "cg_pack_colt",
                &[lay.mask()],
                &words,
                &[Res::T(&src), Res::T(&tap_tex), Res::B(&bp)],
                [klen.div_ceil(32) as u32, pn as u32, 1],
            )?;
            let tb = e.scratch_tex("cg_tb", b_len)?;
            e.copy_to_tex(&bp.buf, 0, b_len, &tb);
            let tb = tb.create_view(&Default::default());
            let cb = e.bind_buffer(&cbuf, k.weight.offset + grp * og * kd, og * kd)?;
            blas::run_micro(
                e,
                &Micro {
                    tile,
                    ta: &ta,
                    a_k: klen,
                    bias: false,
                    implicit: None,
                    c_map: None,
                    a_base: 0,
                    a_stride: 0,
                    tb: &tb,
                    b_base: 0,
                    b_stride: 0,
                    c: &cb,
                    ldc: kd,
                    c_stride: 0,
                    m: og,
                    n: kd,
                    k: klen,
                    alpha: 1.0,
                    beta: 1.0,
                    batch: 1,
                    epilogue: None,
                },
            )?;
        }
    }
    Ok(true)
}

/// Positions (image, output position) one slice of [`weight_grad_sliced`] aims at: its partial
/// sums cost a store and a read per element of C, against 2 * k FLOPs per element.
const SLICE_K: usize = 1 << 13;
/// Most positions per slice: the kernel's loop runs a quarter of them and lavapipe ends an
/// invocation's loops after 65535 iterations.
const SLICE_MAX: usize = 4 * 60000;
/// Output channels per group up to which k x k (or strided) weight gradients are sliced: with
/// more, packing im2col^T costs less than the sliced kernel's shifts and masks (measured on
/// lavapipe: 3x3 over 14x14 with 128 outputs 73% of the GEMM rate against 65% packed, with 256
/// over 7x7 53% against 67%).
const SLICED_MAX_OUT: usize = 128;
/// Workgroups a weight gradient aims at, so that lavapipe's threads get even shares.
const SLICE_GROUPS: usize = 24;

/// The weight gradient as slices over k = (image, position), each a product of the images'
/// im2col and the output gradient read in place by `gemm_*_ju` (blas_subgroup.wgsl: no operand
/// is packed), written as its own partial C^T and then added in order into dW (`wgrad_sum`).
/// Slices are whole images or runs of one image's positions, enough of them to occupy every
/// thread when C is small (a 64 x 147 C has 5 tiles).
fn weight_grad_sliced(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    let (cg, og) = (k.channels / k.group, k.out_channels / k.group);
    let kd = cg * g.kprod();
    let s = g.positions();
    let lay = g.layout(k.channels);
    let max = e.max_bind();
    let out_len = k.out_len();
    // The kernel's shifts and masks cost about a third of its FMAs; packing costs per FMA
    // about 1 / og + 1 / kd of a pass over B, and 1x1 kernels' products pack both operands.
    if !(k.is_1x1() || og <= SLICED_MAX_OUT) {
        return Ok(false);
    }
    if !g.fits(cg, &lay)
        || lay.image > max
        || out_len > max
        || og * kd >= EXACT
        || k.weight.len < k.group * og * kd
    {
        return Ok(false);
    }
    let (tm, tn, entry) = if og <= 32 {
        (32, 32, "gemm_32x32_ju")
    } else {
        (32, 64, "gemm_32x64_ju")
    };
    let (pm, pn) = (kd.div_ceil(tm), og.div_ceil(tn));
    if pm > 65535 || pn > 65535 {
        return Ok(false);
    }
    // Blocks of whole images whose images and output gradients fit one binding each.
    let per_block = (max / lay.image).min(max / out_len).max(1);
    let ldc = og.next_multiple_of(4);
    let slice_len = kd * ldc;
    let tap_tex = taps(e, g, &lay)?;
    let wbuf = e.buffer(k.weight.id);
    let ybuf = e.buffer(k.out.id);
    // Slices of about `target` positions: runs of one image's positions or whole images.
    // Enough slices for the threads, at least SLICE_K positions each, at most what one
    // invocation's loop runs; fewer while their partial sums overflow a binding.
    let slicing = |target: usize| {
        if s >= target {
            let per_image = s.div_ceil(target);
            (per_image, s.div_ceil(per_image).next_multiple_of(4), 1)
        } else {
            (1, s, target / s)
        }
    };
    // (positions' slices per image, positions per slice, images per slice, slices) of `nb`
    // images.
    let plan = |nb: usize| {
        let want = SLICE_GROUPS.div_ceil(pm * pn);
        let mut target = (nb * s / want).clamp(SLICE_K, SLICE_MAX);
        loop {
            let (per_image, len, images) = slicing(target);
            let slices = nb.div_ceil(images) * per_image;
            if slices * slice_len <= max && slices <= 65535 {
                return Some((per_image, len, images, slices));
            }
            if target == SLICE_MAX {
                return None;
            }
            target = (2 * target).min(SLICE_MAX);
        }
    };
    // Decided before anything is dispatched: the fallback must not add to dW a second time.
    if plan(per_block.min(k.batch)).is_none() {
        return Ok(false);
    }
    for b0 in (0..k.batch).step_by(per_block) {
        let nb = per_block.min(k.batch - b0);
        let (per_image, len, images, slices) =
            plan(nb).context("internal: a smaller block of images has no slicing")?;
        let (src, base) = source(e, "cg_src", k.im, k.im_len(), (b0, nb), k.channels, g, &lay)?;
        let ywin = k.out.slice(b0 * out_len, nb * out_len);
        let (ytex, yshift) = e.buffer_tex("cg_dy", &ybuf, ywin.offset, ywin.len)?;
        let part = e.scratch("cg_wslices", slices * slice_len)?;
        let part4 = e.texel_binding(&part);
        for grp in 0..k.group {
            let (a0, y0) = (
                base + grp * cg * lay.cstride,
                yshift as usize + grp * og * s,
            );
            // Rows of A (1x1 kernels without pad: channels) and columns of B (output channels)
            // starting at whole texels are read without shifts.
            let a_aligned = g.unit_taps()
                && [a0, lay.cstride, lay.image]
                    .iter()
                    .all(|v| v.is_multiple_of(4));
            let b_aligned = s.is_multiple_of(4) && y0.is_multiple_of(4);
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            let constants = [
                ("IM_MASK", flag(lay.masked)),
                ("A_ALIGNED", flag(a_aligned)),
                ("B_ALIGNED", flag(b_aligned)),
            ];
            let p = Params::new()
                .u(kd)
                .u(og)
                .u(s)
                .u(ldc)
                .shift(&part)
                .u(slice_len)
                .u(a0)
                .u(lay.image)
                .u(lay.cstride)
                .u(y0)
                .u(out_len)
                .u(per_image)
                .u(len)
                .u(g.ow)
                .u(g.h)
                .u(g.w)
                .u(g.kprod())
                .f(1.0 / g.ow as f32)
                .f(1.0 / g.kprod() as f32)
                .u(images)
                .u(nb);
            e.dispatch_spec(
                "blas_subgroup",
                entry,
                &constants,
                &p,
                &[
                    Res::T(&src),
                    Res::T(&ytex),
                    Res::B(&part),
                    Res::B(&part4),
                    Res::T(&tap_tex),
                    Res::B(&part),
                    Res::B(&part),
                    Res::B(&part4),
                ],
                [pn as u32, pm as u32, slices as u32],
            )?;
            let dw = e.bind_buffer(&wbuf, k.weight.offset + grp * og * kd, og * kd)?;
            let p = Params::new()
                .u(og * kd)
                .shift(&part)
                .shift(&dw)
                .u(kd)
                .u(ldc)
                .u(slice_len)
                .u(slices);
            let groups = e.groups_1d(og * kd);
            e.dispatch_spec(
                "blas",
                "wgrad_sum",
                &[],
                &p,
                &[Res::B(&part), Res::B(&dw)],
                groups,
            )?;
        }
    }
    Ok(true)
}

/// The kernel taps (ascending) of one axis that reach input positions r (mod s): those with
/// (r + p - t * d) a multiple of s.
fn phase_taps(r: usize, s: usize, p: i64, d: usize, kn: usize) -> Vec<usize> {
    (0..kn)
        .filter(|&t| (r as i64 + p - (t * d) as i64).rem_euclid(s as i64) == 0)
        .collect()
}

/// The data gradient of a strided convolution, phase by phase: the input positions
/// (i * sh + rh, j * sw + rw) of phase (rh, rw) receive the convolution, with stride 1, of the
/// output gradient with the kernel taps that reach them, flipped; the micro-kernels store each
/// phase's columns straight into its positions ([`Micro::c_map`]). Phases no tap reaches are 0.
fn strided_data_grad(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    if !e.uses_subgroups() {
        return Ok(false);
    }
    let (cg, og, kp) = (k.channels / k.group, k.out_channels / k.group, g.kprod());
    let plane = g.h * g.w;
    let mut phases = Vec::new();
    let mut all_reached = true;
    for rh in 0..g.sh.min(g.h) {
        for rw in 0..g.sw.min(g.w) {
            let th = phase_taps(rh, g.sh, g.ph, g.dh, g.kh);
            let tw = phase_taps(rw, g.sw, g.pw, g.dw, g.kw);
            if th.is_empty() || tw.is_empty() {
                all_reached = false;
            } else {
                phases.push((rh, rw, th, tw));
            }
        }
    }
    // Each phase reads dY rows i + e (e = (r + p - t * d) / s for its taps t): as a stride-1
    // convolution of dY with the taps flipped, pad -e(last tap), dilation e(t) - e(next t).
    let axis = |r: usize, s: usize, p: i64, d: usize, taps: &[usize]| {
        let e = |t: usize| (r as i64 + p - (t * d) as i64).div_euclid(s as i64);
        let last = *taps.last().unwrap();
        let step = if taps.len() > 1 { taps[1] - taps[0] } else { 1 };
        let dil = if taps.len() > 1 {
            (e(taps[0]) - e(taps[1])) as usize
        } else {
            1
        };
        (-e(last), dil, last, step)
    };
    let mut geos = Vec::new();
    for (rh, rw, th, tw) in &phases {
        let (ph, dh, kh_top, step_h) = axis(*rh, g.sh, g.ph, g.dh, th);
        let (pw, dw, kw_top, step_w) = axis(*rw, g.sw, g.pw, g.dw, tw);
        let pg = Geo {
            h: g.oh,
            w: g.ow,
            oh: (g.h - rh).div_ceil(g.sh),
            ow: (g.w - rw).div_ceil(g.sw),
            kh: th.len(),
            kw: tw.len(),
            sh: 1,
            sw: 1,
            ph,
            pw,
            dh,
            dw,
        };
        if !pg.fits(og, &pg.layout(k.out_channels)) {
            return Ok(false);
        }
        geos.push((pg, *rh, *rw, kh_top, step_h, kw_top, step_w));
    }
    if !all_reached {
        e.record_fill(k.im.slice(0, k.batch * k.im_len()), 0.0)?;
    }
    for (pg, rh, rw, kh_top, step_h, kw_top, step_w) in geos {
        let nt = pg.kprod();
        // The phase's taps, flipped: A[ic, (oc, t')] = W[oc, ic, table[t']].
        let dst = e.scratch("cg_phasetaps", nt * 4)?;
        let tex = e.scratch_tex("cg_phase_taps", nt * 4)?;
        let table = tex.create_view(&Default::default());
        let p = Params::new()
            .u(pg.kw)
            .u(kh_top)
            .u(step_h)
            .u(kw_top)
            .u(step_w)
            .u(g.kw)
            .u(nt);
        e.dispatch_res(
            "conv_gemm",
            "cg_phase_taps",
            &p,
            &[Res::T(&table), Res::T(&table), Res::B(&dst)],
            [nt.div_ceil(64) as u32, 1, 1],
        )?;
        e.copy_to_tex(&dst.buf, 0, nt * 4, &tex);
        let first = rh * g.w + rw;
        let extent = (pg.oh - 1) * g.sh * g.w + (pg.ow - 1) * g.sw + 1;
        let done = implicit(
            e,
            &Implicit {
                g: pg,
                src: k.out,
                src_len: k.out_len(),
                channels: k.out_channels,
                group_channels: og,
                groups: k.group,
                batch: k.batch,
                a: AOperand {
                    m: cg,
                    sx: kp,
                    d: nt,
                    s1: cg * kp,
                    flip: false,
                    kreal: og * nt,
                    dvalid: nt,
                    entry: og * cg * kp,
                    elem: true,
                    table: Some(table),
                },
                weight: k.weight,
                bias: None,
                c: k.im.slice(first, k.im.len - first),
                c_len: k.im_len(),
                c_group: cg * plane,
                ldc: plane,
                c_map: Some(((pg.ow, g.sh * g.w, g.sw), extent)),
                epilogue: None,
            },
        )?;
        if !done {
            // The composed path overwrites every element.
            return Ok(false);
        }
    }
    Ok(true)
}
