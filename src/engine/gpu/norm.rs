//! Host side of the normalisation family (shaders/norm.wgsl). Per-channel statistics are
//! reductions split over `outer` (later chunks accumulate); element passes split over elements;
//! LRN splits over images.
use anyhow::{Result, anyhow, bail, ensure};

use super::elementwise::CHANNEL_SEGMENT;
use super::{Bound, GpuEngine, Params, Wide};
use crate::engine::View;
use crate::engine::kernels::blas::BlasKernel;
use crate::engine::kernels::elementwise::ChannelDims;
use crate::engine::kernels::norm::{EpsMode, Lrn, LrnRegion, NormGrad, NormKernel};

fn check_len(views: &[View], len: usize) -> Result<()> {
    for v in views {
        ensure!(
            v.len == len,
            "kernel operand of {} elements where {len} are expected",
            v.len
        );
    }
    Ok(())
}

fn pad8(mut p: Params) -> Params {
    while p.0.len() < 8 {
        p = p.u(0);
    }
    p
}

/// out[c] = sum over channel c of f(a, b, m) (mode 0 a, 1 (a - m[c])^2, 2 a * b).
fn reduce(
    e: &mut GpuEngine,
    d: &ChannelDims,
    a: View,
    b: View,
    m: &Bound,
    mode: u32,
    out: &Bound,
) -> Result<()> {
    if d.channels == 0 {
        return Ok(());
    }
    let per = d.channels * d.inner;
    // With no element the loop runs once over nothing and writes zeros.
    let chunks = if d.outer * per == 0 {
        std::iter::once(0..0).collect()
    } else {
        e.unit_chunks("channel reduction", d.outer, &[per])?
    };
    for (ci, r) in chunks.into_iter().enumerate() {
        let ab = e.bind(a.slice(r.start * per, r.len() * per))?;
        let bb = e.bind(b.slice(r.start * per, r.len() * per))?;
        // Segments of at most CHANNEL_SEGMENT elements per channel (lavapipe's loop limit).
        let total = r.len() * d.inner;
        for j0 in (0..total.max(1)).step_by(CHANNEL_SEGMENT) {
            let p = pad8(Params::new().u(0).shift(&ab).shift(&bb).shift(m).shift(out))
                .u(d.inner)
                .u(d.channels)
                .u(r.len())
                .u(mode as usize)
                .u((ci > 0 || j0 > 0) as usize);
            dispatch_reduce(e, d.channels, p, [&ab, &bb, m, out], j0)?;
        }
    }
    Ok(())
}

/// `chan_reduce` over every channel for elements [j0, j0 + CHANNEL_SEGMENT) of each channel.
fn dispatch_reduce(
    e: &mut GpuEngine,
    channels: usize,
    p: Params,
    b: [&Bound; 4],
    j0: usize,
) -> Result<()> {
    let mut first = 0;
    while first < channels {
        let n = (channels - first).min(65535 * 65535);
        let mut p = p.clone();
        p.0.truncate(13);
        p = p.u(first).u(j0).u(j0 + CHANNEL_SEGMENT);
        e.dispatch(
            "norm",
            "chan_reduce",
            &p,
            &b,
            [n.min(65535) as u32, n.div_ceil(65535) as u32, 1],
        )?;
        first += n;
    }
    Ok(())
}

/// Per-channel kernel over `channels` invocations.
fn per_channel(
    e: &mut GpuEngine,
    entry: &'static str,
    channels: usize,
    binds: &[&Bound],
    words: &[u32],
) -> Result<()> {
    if channels == 0 {
        return Ok(());
    }
    let mut p = Params::new().u(channels);
    for b in binds {
        p = p.shift(b);
    }
    let mut p = pad8(p);
    p.0.extend_from_slice(words);
    e.dispatch(
        "norm",
        entry,
        &p,
        binds,
        [channels.div_ceil(64) as u32, 1, 1],
    )
}

/// std[c] = std_of(var[c]) (per channel, as Normalize forms it).
pub(super) fn std_of(
    e: &mut GpuEngine,
    var: View,
    std: View,
    eps: f32,
    mode: EpsMode,
) -> Result<()> {
    let vb = small(e, "in0", var, &[std])?;
    let sb = e.bind(std)?;
    let mode = match mode {
        EpsMode::SqrtVarPlusEps => 0,
        EpsMode::SqrtVarThenEps => 1,
    };
    per_channel(e, "std_of", var.len, &[&vb, &sb], &[eps.to_bits(), mode])
}

/// The per-channel table of a GEMM epilogue (shaders/blas_subgroup.wgsl's sg_ep): vec4 c of
/// `table` = (mean, std, scale, bias)[c], 0, 1, 1, 0 for the operands there are not.
pub(super) fn epilogue_table(
    e: &mut GpuEngine,
    channels: usize,
    [mean, std, scale, bias]: [Option<View>; 4],
    table: &Bound,
) -> Result<()> {
    let have = u32::from(mean.is_some() && std.is_some())
        + u32::from(scale.is_some()) * 2
        + u32::from(bias.is_some()) * 4;
    let mut binds = vec![table.clone()];
    for v in [mean, std, scale, bias] {
        binds.push(match v {
            Some(v) => e.bind(v.slice(0, channels))?,
            None => table.clone(),
        });
    }
    let refs: Vec<&Bound> = binds.iter().collect();
    per_channel(e, "epilogue_table", channels, &refs, &[have])
}

/// Scales a bound window in place (the final 1/m of a mean or variance).
fn scale_view(e: &mut GpuEngine, v: View, alpha: f32) -> Result<()> {
    super::blas::launch(e, &BlasKernel::Scale { alpha, y: v })
}

/// A per-element channel pass: bindings `ins` (element-wise, split) and `whole` (per channel),
/// then the element-wise output.
#[allow(clippy::too_many_arguments)]
fn channel_pass(
    e: &mut GpuEngine,
    (entry, wide): (&'static str, Option<&'static str>),
    d: &ChannelDims,
    ins: &[View],
    whole: &[Bound],
    out: View,
    mode: u32,
    inv_m: f32,
) -> Result<()> {
    let n = d.count();
    for r in e.unit_chunks(entry, n, &[1])? {
        let oc = out.slice(r.start, r.len());
        let mut binds: Vec<Bound> = Vec::new();
        for (i, v) in ins.iter().enumerate() {
            binds.push(e.bind_input(
                ["in0", "in1", "in2"][i % 3],
                v.slice(r.start, r.len()),
                &[oc],
                true,
            )?);
        }
        binds.extend(whole.iter().cloned());
        binds.push(e.bind(oc)?);
        let per_element: Vec<bool> = (0..binds.len())
            .map(|i| i < ins.len() || i == binds.len() - 1)
            .collect();
        let words = [
            d.inner.max(1) as u32,
            d.channels.max(1) as u32,
            r.start as u32,
            mode,
            inv_m.to_bits(),
        ];
        e.dispatch_pointwise(
            ("norm", entry),
            wide.map(|w| Wide::channels(w, mode, d.inner)),
            r.len(),
            r.start,
            &binds,
            &per_element,
            &words,
        )?;
    }
    Ok(())
}

/// Binds a per-channel view (copied to scratch `name` when it overlaps `outs`).
fn small(e: &mut GpuEngine, name: &'static str, v: View, outs: &[View]) -> Result<Bound> {
    e.bind_input(name, v, outs, false)
}

fn lrn_words(l: &Lrn) -> [u32; 7] {
    [
        l.channels as u32,
        l.height as u32,
        l.width as u32,
        l.size as u32,
        l.alpha.to_bits(),
        l.beta.to_bits(),
        l.k.to_bits(),
    ]
}

/// LRN passes split over images; `per_pixel` kernels run one invocation per (image, pixel).
fn lrn_run(
    e: &mut GpuEngine,
    entry: &'static str,
    l: &Lrn,
    ins: &[View],
    outs: &[View],
    per_pixel: bool,
) -> Result<()> {
    ensure!(
        l.size % 2 == 1 && l.size > 0,
        "LRN size must be odd, got {}",
        l.size
    );
    let img = l.channels * l.height * l.width;
    let pix = l.height * l.width;
    if img == 0 || l.num == 0 {
        return Ok(());
    }
    // Loop iterations of one invocation (lavapipe silently ends an invocation's loops after
    // 65535): across channels the window slides over all channels, within a channel it covers
    // up to size x size pixels (clipped to the image).
    let loops = match l.region {
        LrnRegion::AcrossChannels => l.size + 2 * l.channels,
        LrnRegion::WithinChannel => l.size.min(l.height) * (l.size.min(l.width) + 1),
    };
    ensure!(
        loops + 16 <= 32768,
        "GPU LRN: one invocation would loop {loops} times (local_size {}, {} channels), more than \
         the 32768 the kernels allow (software Vulkan ends loops after 65535 iterations)",
        l.size,
        l.channels
    );
    for r in e.unit_chunks(entry, l.num, &[img])? {
        let w = |v: View| v.slice(r.start * img, r.len() * img);
        let out_views: Vec<View> = outs.iter().map(|v| w(*v)).collect();
        let mut binds: Vec<Bound> = Vec::new();
        for (i, v) in ins.iter().enumerate() {
            binds.push(e.bind_input(
                ["in0", "in1", "in2", "in3"][i % 4],
                w(*v),
                &out_views,
                false,
            )?);
        }
        for o in &out_views {
            binds.push(e.bind(*o)?);
        }
        let threads = r.len() * if per_pixel { pix } else { img };
        let mut p = Params::new().u(threads);
        for b in &binds {
            p = p.shift(b);
        }
        let mut p = pad8(p);
        p.0.extend_from_slice(&lrn_words(l));
        let refs: Vec<&Bound> = binds.iter().collect();
        let g = e.groups_1d(threads);
        e.dispatch("norm", entry, &p, &refs, g)?;
    }
    Ok(())
}

pub fn launch(e: &mut GpuEngine, k: &NormKernel) -> Result<()> {
    match k {
        NormKernel::Moments { dims, x, mean, var } => {
            check_len(&[*x], dims.count())?;
            check_len(&[*mean], dims.channels)?;
            let m = (dims.outer * dims.inner).max(1) as f32;
            let outs: Vec<View> = std::iter::once(*mean).chain(*var).collect();
            if outs.iter().any(|o| o.id == x.id) {
                bail!("Moments: the statistics must not share a tensor with x");
            }
            let mb = e.bind(*mean)?;
            reduce(e, dims, *x, *x, &mb, 0, &mb)?;
            scale_view(e, *mean, 1.0 / m)?;
            if let Some(var) = var {
                check_len(&[*var], dims.channels)?;
                let vb = e.bind(*var)?;
                reduce(e, dims, *x, *x, &mb, 1, &vb)?;
                scale_view(e, *var, 1.0 / m)?;
            }
            Ok(())
        }
        NormKernel::StoredStats {
            sums,
            sq_sums,
            count,
            mean,
            var,
        } => {
            check_len(&[*sq_sums, *mean, *var], sums.len)?;
            check_len(&[*count], 1)?;
            let outs = [*mean, *var];
            let s = small(e, "in0", *sums, &outs)?;
            let q = small(e, "in1", *sq_sums, &outs)?;
            let c = small(e, "in2", *count, &outs)?;
            let (mb, vb) = (e.bind(*mean)?, e.bind(*var)?);
            per_channel(e, "stored_stats", sums.len, &[&s, &q, &c, &mb, &vb], &[])
        }
        NormKernel::StatsUpdate {
            maf,
            correction,
            mean,
            var,
            sums,
            sq_sums,
            count,
        } => {
            check_len(&[*var, *sums, *sq_sums], mean.len)?;
            check_len(&[*count], 1)?;
            let outs = [*sums, *sq_sums, *count];
            let mb = small(e, "in0", *mean, &outs)?;
            let vb = small(e, "in1", *var, &outs)?;
            let (sb, qb, cb) = (e.bind(*sums)?, e.bind(*sq_sums)?, e.bind(*count)?);
            // At least one invocation: invocation 0 also moves the count.
            let words = [maf.to_bits(), correction.to_bits(), mean.len as u32];
            per_channel(
                e,
                "stats_update",
                mean.len.max(1),
                &[&mb, &vb, &sb, &qb, &cb],
                &words,
            )
        }
        NormKernel::Normalize {
            dims,
            eps,
            eps_mode,
            x,
            mean,
            var,
            std,
            y,
        } => {
            check_len(&[*x, *y], dims.count())?;
            check_len(&[*mean], dims.channels)?;
            match (var, std) {
                (Some(var), Some(std)) => {
                    check_len(&[*var, *std], dims.channels)?;
                    std_of(e, *var, *std, *eps, *eps_mode)?;
                    let mb = small(e, "in1", *mean, &[*y])?;
                    let sb = small(e, "in2", *std, &[*y])?;
                    channel_pass(
                        e,
                        ("normalize", Some("normalize4")),
                        dims,
                        &[*x],
                        &[mb, sb],
                        *y,
                        1,
                        0.0,
                    )
                }
                (None, None) => {
                    let mb = small(e, "in1", *mean, &[*y])?;
                    channel_pass(
                        e,
                        ("normalize", Some("normalize4")),
                        dims,
                        &[*x],
                        &[mb.clone(), mb],
                        *y,
                        0,
                        0.0,
                    )
                }
                _ => bail!("Normalize needs both var and std, or neither"),
            }
        }
        NormKernel::NormalizeBackward {
            dims,
            grad,
            y,
            dy,
            std,
            dx,
        } => {
            check_len(&[*y, *dy, *dx], dims.count())?;
            let sb = if *grad != NormGrad::CenterOnly {
                let s = std.ok_or_else(|| anyhow!("NormalizeBackward {grad:?} needs std"))?;
                check_len(&[s], dims.channels)?;
                Some(s)
            } else {
                None
            };
            let c = dims.channels.max(1);
            let s_dy = e.scratch("norm_sdy", c)?;
            let s_dyy = e.scratch("norm_sdyy", c)?;
            if *grad != NormGrad::Frozen {
                reduce(e, dims, *dy, *dy, &s_dy, 0, &s_dy)?;
            }
            if *grad == NormGrad::Full {
                reduce(e, dims, *dy, *y, &s_dy, 2, &s_dyy)?;
            }
            let stdb = match sb {
                Some(s) => small(e, "in3", s, &[*dx])?,
                None => s_dy.clone(),
            };
            let mode = match grad {
                NormGrad::Full => 0,
                NormGrad::Frozen => 1,
                NormGrad::CenterOnly => 2,
            };
            let m = (dims.outer * dims.inner).max(1);
            let inv_m = (1.0 / m as f64) as f32;
            channel_pass(
                e,
                ("normalize_backward", Some("normalize_backward4")),
                dims,
                &[*y, *dy],
                &[stdb, s_dy, s_dyy],
                *dx,
                mode,
                inv_m,
            )
        }
        NormKernel::Lrn { lrn, x, scale, y } => {
            check_len(&[*x, *scale, *y], lrn.count())?;
            ensure!(
                scale.id != y.id,
                "LRN: scale and y must be different tensors"
            );
            let entry = match lrn.region {
                LrnRegion::AcrossChannels => "lrn_across",
                LrnRegion::WithinChannel => "lrn_within",
            };
            lrn_run(
                e,
                entry,
                lrn,
                &[*x],
                &[*scale, *y],
                lrn.region == LrnRegion::AcrossChannels,
            )
        }
        NormKernel::LrnBackward {
            lrn,
            x,
            y,
            scale,
            dy,
            dx,
        } => {
            check_len(&[*x, *y, *scale, *dy, *dx], lrn.count())?;
            let entry = match lrn.region {
                LrnRegion::AcrossChannels => "lrn_across_back",
                LrnRegion::WithinChannel => "lrn_within_back",
            };
            lrn_run(
                e,
                entry,
                lrn,
                &[*x, *y, *scale, *dy],
                &[*dx],
                lrn.region == LrnRegion::AcrossChannels,
            )
        }
    }
}
