//! Whole convolutions ([`ConvKernel::ConvForward`], [`ConvKernel::ConvBackwardData`],
//! [`ConvKernel::ConvWeightGrad`]) as GEMMs whose operands are packed straight from the images
//! (implicit im2col: no column buffer is written and read back; shaders/conv_gemm.wgsl) and then
//! multiplied by the GEMM micro-kernels (blas.rs).
//!
//! - Forward: per image and group, out = [W | bias] * [im2col(im); 1]: the bias is one more k
//!   (a column of A and a row of ones in B), so no separate pass adds it.
//! - Data gradient of a convolution with stride 1: the convolution of the output gradient with the
//!   flipped, transposed weights (pad d(k-1) - p), again implicit: no col2im.
//! - Weight gradient: one product per group over k = (image, position) of all images, dW +=
//!   dY * im2col(im)^T, with both operands packed from the tensors.
//!
//! Strides above 1 read the images through a "phase" rearrangement (see the shader). Other cases
//! (more than 2 spatial axes, data gradients of strided convolutions, sizes past the float-exact
//! index range or one binding) run [`run_composed`]: im2col / col2im and the plain GEMM.
use anyhow::{Result, bail};

use super::blas::{self, Micro};
use super::{GpuEngine, Params, Res};
use crate::engine::View;
use crate::engine::kernels::conv::{ConvGemm, ConvKernel, run_composed};

/// Longest k block of one micro-kernel run: the micro-kernels step k by 2 or 4 and lavapipe ends
/// an invocation's loops after 65535 iterations.
const MAX_K: usize = 1 << 16;
/// The packers divide indices in floats (exact below 2^24).
const EXACT: usize = 1 << 24;
/// Columns of a B panel (TN of every micro-kernel).
const TN: usize = 64;
/// [`AOperand::d1`] of a one-level k decomposition.
const ONE_LEVEL: usize = EXACT - 1;

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
    let forced = std::env::var("CAFFE_RS_CONV_COMPOSED").is_ok_and(|v| v != "0");
    let Some(g) = Geo::of(k).filter(|_| !forced) else {
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
        // Axis a of the two (0 = h), or 1 / 0 for the missing leading ones.
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

    /// Where each element of an image of `channels` channels sits in the texture the packers read.
    fn layout(&self, channels: usize) -> Layout {
        if self.sh == 1 && self.sw == 1 {
            let plane = self.h * self.w;
            return Layout {
                phase: false,
                hr: self.h,
                wr: self.w,
                pplane: plane,
                cstride: plane,
                image: channels * plane,
            };
        }
        let (hr, wr) = (
            self.h.div_ceil(self.sh),
            self.w.div_ceil(self.sw).next_multiple_of(4),
        );
        let cstride = self.sh * self.sw * hr * wr;
        Layout {
            phase: true,
            hr,
            wr,
            pplane: hr * wr,
            cstride,
            image: channels * cstride,
        }
    }

    /// The image geometry words (5..29) of cg_pack_cols / cg_pack_colt after words 0..4.
    fn words(&self, p: Params, lay: &Layout, base: usize, dst_entry: usize) -> Params {
        let s = self.positions();
        let sp = s.next_multiple_of(4);
        p.u(base)
            .u(lay.image)
            .u(lay.cstride)
            .u(lay.pplane)
            .u(lay.wr)
            .u(self.ow)
            .u(self.h)
            .u(self.w)
            .u(self.sh)
            .u(self.sw)
            .u(self.ph as i32 as u32 as usize)
            .u(self.pw as i32 as u32 as usize)
            .u(self.dh)
            .u(self.dw)
            .u(self.kw)
            .u(self.kprod())
            .u(dst_entry)
            .f(1.0 / self.kprod() as f32)
            .f(1.0 / self.kw as f32)
            .f(1.0 / self.ow as f32)
            .u(self.kh)
            .u(s)
            .f(1.0 / sp as f32)
            .f(1.0 / self.sh as f32)
            .f(1.0 / self.sw as f32)
    }

    /// Pipeline constants of a column packer: how it reads runs (see the shader) when a unit of
    /// `unit` columns must wrap at most once for the two-run mode.
    fn constants(&self, lay: &Layout, unit: usize) -> [(&'static str, f64); 2] {
        let mode = if lay.wr == self.ow && self.ow >= 4 {
            0
        } else if self.ow >= unit {
            1
        } else {
            2
        };
        let strided = self.sh > 1 || self.sw > 1;
        [
            ("CG_MODE", mode as f64),
            ("CG_STRIDED", if strided { 1.0 } else { 0.0 }),
        ]
    }

    /// Whether the packers' index arithmetic stays exact and in range for images of `channels`
    /// channels (per group `group_channels`).
    fn fits(&self, group_channels: usize, lay: &Layout) -> bool {
        let s = self.positions();
        let pads_ok = self.ph.abs() < 1 << 30 && self.pw.abs() < 1 << 30;
        s > 0
            && s + TN < EXACT
            && group_channels * self.kprod() + TN < EXACT
            && lay.image < 1 << 30
            && pads_ok
    }
}

/// The texture layout of images for the packers (see the shader: phase layout).
#[derive(Clone, Copy, Debug)]
struct Layout {
    phase: bool,
    hr: usize,
    wr: usize,
    pplane: usize,
    cstride: usize,
    /// Elements per image.
    image: usize,
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
    if !lay.phase {
        let (tex, shift) = e.buffer_tex(name, &buf, window.offset, window.len)?;
        return Ok((tex, shift as usize));
    }
    let (src, shift) = e.buffer_tex("cg_phase_src", &buf, window.offset, window.len)?;
    let dst = e.scratch("cg_phase", count * lay.image)?;
    let per_image = lay.image / 4; // texels (wr is a multiple of 4)
    let per = ((EXACT - 1) / per_image.max(1)).max(1);
    for b0 in (0..count).step_by(per) {
        let nb = per.min(count - b0);
        let texels = nb * per_image;
        let p = Params::new()
            .u(texels)
            .u(shift as usize + b0 * len)
            .u(len)
            .u(g.h * g.w)
            .u(g.h)
            .u(g.w)
            .u(g.sh)
            .u(g.sw)
            .u(lay.hr)
            .u(lay.wr / 4)
            .u(channels)
            .f(4.0 / lay.wr as f32)
            .f(1.0 / lay.hr as f32)
            .f(1.0 / g.sw as f32)
            .f(1.0 / g.sh as f32)
            .f(1.0 / channels as f32);
        let out = e.bind_buffer(&dst.buf, b0 * lay.image, texels * 4)?;
        let groups = e.groups_1d(texels);
        e.dispatch_res(
            "conv_gemm",
            "cg_phase",
            &p,
            &[Res::T(&src), Res::T(&src), Res::B(&out)],
            groups,
        )?;
    }
    let tex = e.scratch_tex(name, count * lay.image)?;
    e.copy_to_tex(&dst.buf, 0, count * lay.image, &tex);
    Ok((tex.create_view(&Default::default()), 0))
}

/// The tap table of `g` (see cg_taps) as a texture.
fn taps(e: &mut GpuEngine, g: &Geo, lay: &Layout) -> Result<wgpu::TextureView> {
    let kp = g.kprod();
    let dst = e.scratch("cg_tapbuf", kp * 4)?;
    let words = g.words(Params::new().u(0).u(0).u(0).u(0).u(0), lay, 0, 0);
    let tex = e.scratch_tex("cg_taps", kp * 4)?;
    let view = tex.create_view(&Default::default());
    // The texture fills the (unread) texture bindings of cg_taps.
    e.dispatch_spec(
        "conv_gemm",
        "cg_taps",
        &g.constants(lay, 16),
        &words,
        &[Res::T(&view), Res::T(&view), Res::B(&dst)],
        [kp.div_ceil(64) as u32, 1, 1],
    )?;
    e.copy_to_tex(&dst.buf, 0, kp * 4, &tex);
    Ok(view)
}

/// An A operand for cg_pack_kc: element (x, k), k = k1 * d + k2, k1 = k0' * d1 + k1', of entry z
/// at src + z * entry + x * sx + k0' * s0 + k1' * s1 + (flip ? d - 1 - k2 : k2) for k < kreal
/// and k2 < dvalid; column kreal is the bias when there is one.
struct AOperand {
    m: usize,
    sx: usize,
    d: usize,
    s1: usize,
    /// k1 = k0' * d1 + k1' reads k0' * s0 + k1' * s1 (d1 past every k1: one level).
    d1: usize,
    s0: usize,
    flip: bool,
    kreal: usize,
    /// Elements with k2 >= dvalid are 0.
    dvalid: usize,
    entry: usize,
    /// Read one element at a time (needed for flip and for groups of 4 k across a multiple of d).
    elem: bool,
}

/// Packs A rows [0, m) and k block [k0, k0 + klen) of `entries` entries into panels of `tm`
/// rows, and the bias (`bias` texture, element, row kreal) into column kreal when the block holds
/// it; returns the texture (entry z starts z * pm * klen * tm / 4 texels in).
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
        .f(1.0 / a.d as f32)
        .u(a.d1)
        .u(a.s0)
        .f(1.0 / a.d1 as f32);
    let groups = [
        (klen.div_ceil(4) * w4).div_ceil(64) as u32,
        pm as u32,
        entries as u32,
    ];
    let constants = [("CG_KC_ELEM", if a.elem { 1.0 } else { 0.0 })];
    e.dispatch_spec(
        "conv_gemm",
        "cg_pack_kc",
        &constants,
        &p,
        &[Res::T(src), Res::T(src), Res::B(&dst)],
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
/// C_bg [m x S] = A_g [m x K] * [im2col(src_b)_g ; 1 when biased], S = g.oh * g.ow output
/// positions, K = group_channels * kprod (+ 1).
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
    /// C: view, elements per image, elements between groups.
    c: View,
    c_len: usize,
    c_group: usize,
}

/// Runs an [`Implicit`] product; Ok(false) when it does not fit the packers' limits.
///
/// With subgroups the micro-kernel reads B from the images itself (B layout I of
/// gen_gemm_sg.py) when a lane's 8 columns are one run of the source or wrap at most once, and
/// adds the bias as one more k of A; otherwise cg_pack_cols packs B into panels first (and the
/// bias is a row of ones there).
fn implicit(e: &mut GpuEngine, p: &Implicit) -> Result<bool> {
    let g = &p.g;
    let s = g.positions();
    let lay = g.layout(p.channels);
    if !g.fits(p.group_channels, &lay) {
        return Ok(false);
    }
    // The fused kernels spend about as much per k on B as a 96-row block of FMAs: packing
    // B once wins for more rows (measured on lavapipe: 48 rows 1.8x faster fused, 96-128 even,
    // 256-384 1.2x slower).
    let fused = e.uses_subgroups()
        && (lay.wr == g.ow || g.ow >= 8)
        && p.a.m <= 128
        && !std::env::var("CAFFE_RS_CONV_PACKED").is_ok_and(|v| v != "0");
    let kd = p.group_channels * g.kprod();
    // Packed B: the bias is row kd of B (ones) and column kd of A, within the k range. Fused:
    // the kernels' bias step reads column kd of A after the k loop.
    let kt = kd + (p.bias.is_some() && !fused) as usize;
    let m = p.a.m;
    let max = e.max_bind();
    let aligned = s.is_multiple_of(4)
        && p.c.offset.is_multiple_of(4)
        && p.c_len.is_multiple_of(4)
        && p.c_group.is_multiple_of(4);
    let tile = blas::tile(e.uses_subgroups(), m, aligned);
    let tm = tile.0;
    let (pn, pm) = (s.div_ceil(TN), m.div_ceil(tm));
    // k blocks: the loop limit, one image's B panels (packed) and all groups' A panels (with the
    // bias column) in one binding.
    let mut kc = kt.min(MAX_K).min((max / (p.groups * pm * tm)).saturating_sub(1));
    if !fused {
        kc = kc.min(max / (pn * TN));
    }
    // One image's C and source must fit a binding, the panels a dispatch.
    let c_one = (p.groups - 1) * p.c_group + m * s;
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
                let cb = e.bind_buffer(
                    &cbuf,
                    p.c.offset + b0 * p.c_len + grp * p.c_group,
                    (nbi - 1) * p.c_len + m * s,
                )?;
                let micro = |tb, b_stride, implicit| Micro {
                    tile,
                    ta: &ta,
                    a_k,
                    bias: bias_step,
                    implicit,
                    a_base: grp * a_entry,
                    a_stride: 0,
                    tb,
                    b_base: 0,
                    b_stride,
                    c: &cb,
                    ldc: s,
                    c_stride: p.c_len,
                    m,
                    n: s,
                    k: klen,
                    alpha: 1.0,
                    beta: if k0 == 0 { 0.0 } else { 1.0 },
                    batch: nbi,
                };
                if fused {
                    let words = Params::new()
                        .u(gbase)
                        .u(lay.image)
                        .u(lay.cstride)
                        .u(lay.wr)
                        .u(g.ow)
                        .u(g.h)
                        .u(g.w)
                        .u(g.sh)
                        .u(g.sw)
                        .u(g.kprod())
                        .u(k0)
                        .f(1.0 / g.ow as f32)
                        .f(1.0 / g.kprod() as f32)
                        .u((lay.wr as i64 - g.ow as i64) as i32 as u32 as usize);
                    let im = blas::Implicit {
                        taps: &tap_tex,
                        two_runs: lay.wr != g.ow,
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
                let words = g.words(words, &lay, gbase, b_entry);
                e.dispatch_spec(
                    "conv_gemm",
                    "cg_pack_cols",
                    &g.constants(&lay, 16),
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
    implicit(
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
                d1: ONE_LEVEL,
                s0: 0,
                flip: false,
                kreal: kd,
                dvalid: kd + 4,
                entry: og * kd,
                elem: false,
            },
            weight: k.weight,
            bias: k.bias.map(|b| b.slice(0, k.out_channels)),
            c: k.out,
            c_len: k.out_len(),
            c_group: og * k.out_spatial(),
        },
    )
}

fn data_grad(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    if g.sh != 1 || g.sw != 1 {
        return Ok(false);
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
                d1: ONE_LEVEL,
                s0: 0,
                flip: true,
                kreal: og * kp,
                dvalid: kp,
                entry: og * cg * kp,
                elem: true,
            },
            weight: k.weight,
            bias: None,
            c: k.im,
            c_len: k.im_len(),
            c_group: cg * g.h * g.w,
        },
    )
}

fn weight_grad(e: &mut GpuEngine, k: &ConvGemm, g: &Geo) -> Result<bool> {
    let (cg, og) = (k.channels / k.group, k.out_channels / k.group);
    let kd = cg * g.kprod();
    let s = g.positions();
    let lay = g.layout(k.channels);
    if !g.fits(cg, &lay) {
        return Ok(false);
    }
    // The k space, in runs of 8 that cg_pack_colt reads in one go (padding rows are 0 in both
    // operands): image * S' + position with S' = S rounded up to 8 where consecutive positions
    // are consecutive in the source (linear), else (image * OH + oh) * OW' + ow with OW' = OW
    // rounded up to 8.
    let linear = lay.wr == g.ow;
    let owp = g.ow.next_multiple_of(8);
    let per = if linear {
        s.next_multiple_of(8)
    } else {
        g.oh * owp
    };
    let max = e.max_bind();
    let aligned = kd.is_multiple_of(4) && k.weight.offset.is_multiple_of(4);
    let tile = blas::tile(e.uses_subgroups(), og, aligned);
    let tm = tile.0;
    let (pn, pm) = (kd.div_ceil(TN), og.div_ceil(tm));
    let out_len = k.out_len();
    // k blocks: the loop limit and both operands' panels within one binding.
    let kc = MAX_K.min(max / (pm * tm)).min(max / (pn * TN)) / 8 * 8;
    if kc == 0 || per >= EXACT || lay.image > max || out_len > max || pn > 65535 || pm > 65535 {
        return Ok(false);
    }
    // Blocks of whole images when an image fits one, else blocks of one image's k.
    let mut blocks = Vec::new();
    if per <= kc {
        let nb = (kc / per)
            .min(max / lay.image)
            .min(max / out_len)
            .min((EXACT - 1) / per)
            .max(1);
        for b0 in (0..k.batch).step_by(nb) {
            let nb = nb.min(k.batch - b0);
            blocks.push((b0, nb, 0, nb * per));
        }
    } else {
        for b in 0..k.batch {
            for p0 in (0..per).step_by(kc) {
                blocks.push((b, 1, p0, kc.min(per - p0)));
            }
        }
    }
    let constants = [
        ("CG_MODE", if linear { 0.0 } else { 1.0 }),
        ("CG_STRIDED", if g.sh > 1 || g.sw > 1 { 1.0 } else { 0.0 }),
    ];
    let dy = if linear {
        AOperand {
            m: og,
            sx: s,
            d: per,
            s1: out_len,
            d1: ONE_LEVEL,
            s0: 0,
            flip: false,
            kreal: 0xffff_ffff,
            dvalid: s,
            entry: 0,
            elem: false,
        }
    } else {
        AOperand {
            m: og,
            sx: s,
            d: owp,
            s1: g.ow,
            d1: g.oh,
            s0: out_len,
            flip: false,
            kreal: 0xffff_ffff,
            dvalid: g.ow,
            entry: 0,
            elem: false,
        }
    };
    let tap_tex = taps(e, g, &lay)?;
    let cbuf = e.buffer(k.weight.id);
    let ybuf = e.buffer(k.out.id);
    for (b0, nb, p0, klen) in blocks {
        let (src, base) = source(e, "cg_src", k.im, k.im_len(), (b0, nb), k.channels, g, &lay)?;
        let ywin = k.out.slice(b0 * out_len, nb * out_len);
        let (ytex, yshift) = e.buffer_tex("cg_dy", &ybuf, ywin.offset, ywin.len)?;
        for grp in 0..k.group {
            // A = dY_g: rows oc, k = positions.
            let ta = pack_a(
                e,
                &dy,
                (&ytex, yshift as usize + grp * og * s),
                None,
                (p0, klen),
                tm,
                1,
            )?;
            // B = im2col(im)_g^T: rows k = positions, columns (c, kh, kw).
            let b_len = pn * klen * TN;
            let bp = e.scratch("cg_bp", b_len)?;
            let words = Params::new().u(kd).u(p0).u(klen).u(owp).u(per);
            let words = g
                .words(words, &lay, base + grp * cg * lay.cstride, 0)
                .f(1.0 / per as f32)
                .f(1.0 / owp as f32);
            e.dispatch_spec(
                "conv_gemm",
                "cg_pack_colt",
                &constants,
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
                },
            )?;
        }
    }
    Ok(true)
}
