//! Host side of the convolution family (shaders/conv.wgsl); the per-channel bias and sum reuse
//! the element-wise kernels.
use anyhow::{Result, bail, ensure};

use super::{Bound, GpuEngine, Params, Res, elementwise};
use crate::engine::View;
use crate::engine::kernels::conv::{ConvKernel, Im2col};
use crate::engine::kernels::elementwise::{ChannelDims, ElementwiseKernel};

/// Spatial axes the shaders take (6 words each after word 12).
const MAX_AXES: usize = 8;

pub fn launch(e: &mut GpuEngine, k: &ConvKernel) -> Result<()> {
    match k {
        ConvKernel::ConvForward(_)
        | ConvKernel::ConvBackwardData(_)
        | ConvKernel::ConvWeightGrad(_) => super::conv_gemm::launch(e, k),
        ConvKernel::Im2col(g) => im2col(e, g, false),
        ConvKernel::Col2im(g) => im2col(e, g, true),
        &ConvKernel::AddChannelBias {
            y,
            bias,
            outer,
            channels,
            inner,
        } => {
            ensure!(
                y.len == outer * channels * inner,
                "AddChannelBias: y has {} elements, expected {}",
                y.len,
                outer * channels * inner
            );
            ensure!(
                bias.len == channels,
                "AddChannelBias: bias has {} elements, expected {channels}",
                bias.len
            );
            if e.prefers_textures() && (4..1 << 22).contains(&inner) && inner <= e.max_bind() {
                return add_channel_bias(e, y, bias, outer * channels, channels, inner);
            }
            elementwise::launch(
                e,
                &ElementwiseKernel::ChannelAffine {
                    dims: ChannelDims::new(outer, channels, inner),
                    x: y,
                    scale: None,
                    bias: Some(bias),
                    y,
                },
            )
        }
        &ConvKernel::ChannelSum {
            x,
            out,
            outer,
            channels,
            inner,
            alpha,
            beta,
        } => {
            ensure!(
                x.len == outer * channels * inner,
                "ChannelSum: x has {} elements, expected {}",
                x.len,
                outer * channels * inner
            );
            ensure!(
                out.len == channels,
                "ChannelSum: out has {} elements, expected {channels}",
                out.len
            );
            if e.prefers_textures() && x.len > 0 && x.len <= 1 << 26 {
                return channel_sum_tex(e, x, out, outer, channels, inner, alpha, beta);
            }
            elementwise::channel_sum(
                e,
                &ChannelDims::new(outer, channels, inner),
                x,
                x,
                0,
                alpha,
                beta,
                out,
            )
        }
        &ConvKernel::GatherRows {
            indices,
            weight,
            top,
            rows,
            width,
        } => {
            ensure!(
                weight.len == rows * width,
                "GatherRows: weight has {} elements, expected {}",
                weight.len,
                rows * width
            );
            ensure!(
                top.len == indices.len * width,
                "GatherRows: top has {} elements, expected {}",
                top.len,
                indices.len * width
            );
            if width == 0 || rows == 0 {
                return e.record_fill(top, 0.0);
            }
            let wb = e.bind_input("in1", weight, &[top], false)?;
            for r in e.unit_chunks("GatherRows", indices.len, &[width])? {
                let ic = e.bind_input("in0", indices.slice(r.start, r.len()), &[top], false)?;
                let tb = e.bind(top.slice(r.start * width, r.len() * width))?;
                let n = r.len() * width;
                let p = Params::new()
                    .u(n)
                    .shift(&ic)
                    .shift(&wb)
                    .shift(&tb)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(rows)
                    .u(width);
                let g = e.groups_1d(n);
                e.dispatch("conv", "gather_rows", &p, &[&ic, &wb, &tb], g)?;
            }
            Ok(())
        }
        &ConvKernel::ScatterAddRows {
            indices,
            top_diff,
            weight_diff,
            rows,
            width,
        } => {
            ensure!(
                weight_diff.len == rows * width,
                "ScatterAddRows: weight_diff has {} elements, expected {}",
                weight_diff.len,
                rows * width
            );
            ensure!(
                top_diff.len == indices.len * width,
                "ScatterAddRows: top_diff has {} elements, expected {}",
                top_diff.len,
                indices.len * width
            );
            if width == 0 || rows == 0 || indices.len == 0 {
                return Ok(());
            }
            let ib = e.bind_input("in0", indices, &[weight_diff], false)?;
            let db = e.bind_input("in1", top_diff, &[weight_diff], false)?;
            let wb = e.bind(weight_diff)?;
            let p = Params::new()
                .u(width)
                .shift(&ib)
                .shift(&db)
                .shift(&wb)
                .u(0)
                .u(0)
                .u(0)
                .u(0)
                .u(rows)
                .u(indices.len);
            let g = e.groups_1d(width);
            e.dispatch("conv", "scatter_add_rows", &p, &[&ib, &db, &wb], g)
        }
    }
}

fn im2col(e: &mut GpuEngine, k: &Im2col, backward: bool) -> Result<()> {
    let d = k.im_shape.len();
    ensure!(
        k.col_shape.len() == d
            && k.kernel.len() == d
            && k.pad.len() == d
            && k.stride.len() == d
            && k.dilation.len() == d,
        "im2col: every spatial vector needs {d} entries"
    );
    ensure!(
        k.stride.iter().all(|&s| s > 0),
        "im2col: strides must be positive"
    );
    if d > MAX_AXES {
        bail!("GPU kernel Im2col: {d} spatial axes (at most {MAX_AXES})");
    }
    if k.batch == 0 {
        return Ok(());
    }
    let (im_len, col_len) = (k.im_len(), k.col_len());
    let im_span = (k.batch - 1) * k.im_stride + im_len;
    let col_span = (k.batch - 1) * k.col_stride + col_len;
    ensure!(
        k.im.len >= im_span,
        "im2col: image view has {} elements, needs {im_span}",
        k.im.len
    );
    ensure!(
        k.col.len >= col_span,
        "im2col: column view has {} elements, needs {col_span}",
        k.col.len
    );
    // Normalised axes: a 0-D image is one 1x1 position.
    let axes: Vec<[usize; 6]> = if d == 0 {
        vec![[1, 1, 1, 0, 1, 1]]
    } else {
        (0..d)
            .map(|a| {
                [
                    k.im_shape[a],
                    k.col_shape[a],
                    k.kernel[a],
                    k.pad[a],
                    k.stride[a],
                    k.dilation[a],
                ]
            })
            .collect()
    };
    if !backward
        && e.prefers_textures()
        && d == 2
        && k.col_stride == col_len
        && col_len < 1 << 22
        && im_len < 1 << 24
        && col_len <= e.max_bind()
        && k.im_stride.max(im_len) <= e.max_bind()
    {
        return im2col_flat(e, k, &axes);
    }
    let per = |stride: usize, one: usize| stride.max(one);
    let chunks = e.unit_chunks(
        if backward { "Col2im" } else { "Im2col" },
        k.batch,
        &[per(k.im_stride, im_len), per(k.col_stride, col_len)],
    )?;
    // Float-assisted index division is exact below 2^24.
    let fast = col_len < 1 << 24 && im_len < 1 << 24;
    let plane: usize = k.im_shape.iter().product();
    let cols: usize = k.col_shape.iter().product();
    let kprod: usize = k.kernel.iter().product();
    for r in chunks {
        let nb = r.len();
        let im_v =
            k.im.slice(r.start * k.im_stride, (nb - 1) * k.im_stride + im_len);
        let col_v = k
            .col
            .slice(r.start * k.col_stride, (nb - 1) * k.col_stride + col_len);
        // On CPU adapters the forward reads the images through a texture copy, the 2-D backward
        // the columns.
        let col_tex = backward && e.prefers_textures() && fast && axes.len() == 2;
        let tex = if !backward && e.prefers_textures() {
            let buf = e.buffer(im_v.id);
            Some(e.buffer_tex("im2col_src", &buf, im_v.offset, im_v.len)?)
        } else if col_tex {
            let buf = e.buffer(col_v.id);
            Some(e.buffer_tex("col2im_src", &buf, col_v.offset, col_v.len)?)
        } else {
            None
        };
        let (imb, colb) = if col_tex {
            (e.bind(im_v)?, e.bind(col_v.slice(0, 1))?)
        } else if backward {
            (e.bind(im_v)?, e.bind_input("in0", col_v, &[im_v], false)?)
        } else if tex.is_some() {
            (e.bind(im_v.slice(0, 1))?, e.bind(col_v)?)
        } else {
            (e.bind_input("in0", im_v, &[col_v], false)?, e.bind(col_v)?)
        };
        let threads = if backward { im_len } else { col_len };
        let mut p = Params::new()
            .u(threads)
            .shift(&imb)
            .shift(&colb)
            .u(axes.len())
            .u(k.channels)
            .u(cols.max(1))
            .u(kprod.max(1))
            .u(plane.max(1))
            .u(k.im_stride)
            .u(k.col_stride)
            .u(0)
            .u(0);
        for a in &axes {
            for &v in a {
                p = p.u(v);
            }
        }
        if col_tex {
            // col2im_2d: 1 / stride h, 1 / stride w, 1 / image w, 1 / plane, 1 / dilation h,
            // 1 / dilation w.
            for d in [
                axes[0][4], axes[1][4], axes[1][0], plane, axes[0][5], axes[1][5],
            ] {
                p = p.f(1.0 / d.max(1) as f32);
            }
        }
        for b0 in (0..nb).step_by(65535) {
            let nbz = (nb - b0).min(65535);
            let mut p = p.clone();
            // Later z-slices start further into the bindings.
            p.0[1] += (b0 * k.im_stride) as u32;
            p.0[2] += (b0 * k.col_stride) as u32;
            let g = e.groups_1d(threads);
            let groups = [g[0], g[1], nbz as u32];
            match &tex {
                Some((view, shift)) if col_tex => {
                    p.0[2] = p.0[2] + shift - colb.shift;
                    e.dispatch_res(
                        "conv",
                        "col2im_2d",
                        &p,
                        &[Res::T(view), Res::B(&imb)],
                        groups,
                    )?;
                }
                Some((view, shift)) => {
                    p.0[1] = p.0[1] + shift - imb.shift;
                    let entry = match (fast, axes.len()) {
                        (true, 2) => "im2col_2d",
                        (true, _) => "im2col_tex_f",
                        _ => "im2col_tex",
                    };
                    e.dispatch_res("conv", entry, &p, &[Res::T(view), Res::B(&colb)], groups)?;
                }
                None => {
                    let entry = match (backward, fast) {
                        (true, true) => "col2im_f",
                        (true, false) => "col2im",
                        (false, true) => "im2col_f",
                        (false, false) => "im2col",
                    };
                    e.dispatch("conv", entry, &p, &[&imb, &colb], groups)?;
                }
            }
        }
    }
    Ok(())
}

/// Splits `len` elements starting at buffer element `offset` into a head and a tail of single
/// elements around whole texels: (head, texels). The tail starts at head + 4 * texels.
fn texel_split(offset: usize, len: usize) -> (usize, usize) {
    let head = ((4 - offset % 4) % 4).min(len);
    (head, (len - head) / 4)
}

/// Records the dispatches of a flat kernel with a vec4 entry for whole texels and a scalar entry
/// for the elements around them. `words(count, first binding unit, first element)` gives the
/// parameters of one dispatch; bindings are `res` followed by the output window.
#[allow(clippy::too_many_arguments)]
fn flat_dispatch(
    e: &mut GpuEngine,
    shader: &'static str,
    (v4, s1): (&'static str, &'static str),
    res: &[Res],
    out: View,
    words: &dyn Fn(usize, usize, usize) -> Params,
) -> Result<()> {
    let ob = e.bind(out)?;
    let ob4 = e.texel_binding(&ob);
    let (head, texels) = texel_split(out.offset, out.len);
    let tail = head + 4 * texels;
    fn with<'a>(res: &[Res<'a>], b: &'a Bound) -> Vec<Res<'a>> {
        let mut r: Vec<Res<'a>> = res
            .iter()
            .map(|r| match *r {
                Res::B(b) => Res::B(b),
                Res::T(t) => Res::T(t),
            })
            .collect();
        r.push(Res::B(b));
        r
    }
    if head > 0 {
        let p = words(head, ob.shift as usize, 0);
        let g = e.groups_1d(head);
        e.dispatch_res(shader, s1, &p, &with(res, &ob), g)?;
    }
    if texels > 0 {
        let p = words(texels, (ob.shift as usize + head) / 4, head);
        let g = e.groups_1d(texels);
        e.dispatch_res(shader, v4, &p, &with(res, &ob4), g)?;
    }
    if tail < out.len {
        let p = words(out.len - tail, ob.shift as usize + tail, tail);
        let g = e.groups_1d(out.len - tail);
        e.dispatch_res(shader, s1, &p, &with(res, &ob), g)?;
    }
    Ok(())
}

/// y[r, i] += bias[r % channels] for y viewed as [rows, inner] (rows = outer * channels), reading
/// through texture copies and storing whole texels as vec4.
fn add_channel_bias(
    e: &mut GpuEngine,
    y: View,
    bias: View,
    rows: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let bbuf = e.buffer(bias.id);
    let (btex, bshift) = e.buffer_tex("bias_b", &bbuf, bias.offset, bias.len)?;
    let ybuf = e.buffer(y.id);
    // Whole rows per dispatch, flat indices below 2^24, windows within one binding.
    let per = ((1usize << 24) / inner).min(e.max_bind() / inner).max(1);
    for r0 in (0..rows).step_by(per) {
        let nr = per.min(rows - r0);
        let yv = y.slice(r0 * inner, nr * inner);
        let (ytex, yshift) = e.buffer_tex("bias_y", &ybuf, yv.offset, yv.len)?;
        let ch0 = r0 % channels;
        flat_dispatch(
            e,
            "conv",
            ("bias_v4", "bias_s"),
            &[Res::T(&ytex), Res::T(&btex)],
            yv,
            &|count, base, first| {
                Params::new()
                    .u(count)
                    .u(yshift as usize)
                    .u(base)
                    .u(first)
                    .u(inner)
                    .u(channels)
                    .u(ch0)
                    .u(bshift as usize)
                    .f(1.0 / inner as f32)
                    .f(1.0 / channels as f32)
            },
        )?;
    }
    Ok(())
}

/// Forward 2-D im2col over images back to back (col stride = col len): flat ranges of column
/// elements, 4 per invocation stored as vec4, images read through a texture copy.
fn im2col_flat(e: &mut GpuEngine, k: &Im2col, axes: &[[usize; 6]]) -> Result<()> {
    let (im_len, col_len) = (k.im_len(), k.col_len());
    let plane: usize = k.im_shape.iter().product();
    let cols: usize = k.col_shape.iter().product();
    let kprod: usize = k.kernel.iter().product();
    // Images per dispatch: flat indices below 2^24, windows within one binding.
    let per = ((1usize << 24) / col_len)
        .min(e.max_bind() / col_len.max(1))
        .min(e.max_bind() / k.im_stride.max(im_len))
        .max(1);
    for b0 in (0..k.batch).step_by(per) {
        let nb = per.min(k.batch - b0);
        let im_v =
            k.im.slice(b0 * k.im_stride, (nb - 1) * k.im_stride + im_len);
        let col_v = k.col.slice(b0 * col_len, nb * col_len);
        let buf = e.buffer(im_v.id);
        let (tex, shift) = e.buffer_tex("im2col_src", &buf, im_v.offset, im_v.len)?;
        flat_dispatch(
            e,
            "conv",
            ("im2col_2d_v4", "im2col_2d_s"),
            &[Res::T(&tex)],
            col_v,
            &|count, base, first| {
                let mut p = Params::new()
                    .u(count)
                    .u(shift as usize)
                    .u(base)
                    .u(first)
                    .u(k.channels)
                    .u(cols.max(1))
                    .u(kprod.max(1))
                    .u(plane.max(1))
                    .u(k.im_stride)
                    .u(col_len)
                    .u(0)
                    .u(0);
                for a in axes {
                    for &v in a {
                        p = p.u(v);
                    }
                }
                for d in [col_len, cols, kprod, axes[1][1], axes[1][2]] {
                    p = p.f(1.0 / d.max(1) as f32);
                }
                p
            },
        )?;
    }
    Ok(())
}

/// out[c] = beta * out[c] + alpha * sum_{o, i} x[o, c, i], reading x through a texture copy (the
/// element-wise reduction loads x from a storage buffer, lane by lane on lavapipe).
#[allow(clippy::too_many_arguments)]
fn channel_sum_tex(
    e: &mut GpuEngine,
    x: View,
    out: View,
    outer: usize,
    channels: usize,
    inner: usize,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    if channels == 0 {
        return Ok(());
    }
    let xbuf = e.buffer(x.id);
    let (xtex, shift) = e.buffer_tex("chsum_src", &xbuf, x.offset, x.len)?;
    let ob = e.bind(out)?;
    let constants = [("BETA0", if beta == 0.0 { 1.0 } else { 0.0 })];
    let mut first = 0;
    while first < channels {
        let nch = (channels - first).min(65535 * 65535);
        let p = Params::new()
            .u(outer)
            .u(shift as usize)
            .shift(&ob)
            .u(inner)
            .u(channels)
            .f(alpha)
            .f(beta)
            .u(first);
        let groups = [nch.min(65535) as u32, nch.div_ceil(65535) as u32, 1];
        e.dispatch_spec(
            "conv",
            "channel_sum_tex",
            &constants,
            &p,
            &[Res::T(&xtex), Res::B(&ob)],
            groups,
        )?;
        first += nch;
    }
    Ok(())
}
