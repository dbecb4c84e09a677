//! Convolution (Caffe's ConvolutionLayer): N-D spatial, groups, dilation, per-axis kernel / stride /
//! pad, bias. Weights [num_output, channels / group, k...], bias [num_output]. Computed as one
//! matrix product per image and group of the weights and the image's im2col columns
//! ([`ConvKernel::ConvForward`] and its two backward kernels; engines may form the columns on the
//! fly, see `engine::kernels::conv::run_composed` for the plain decomposition).
//!
//! The geometry ([`ConvGeom`]) is shared with Deconvolution.
use anyhow::{Result, bail, ensure};

use super::common::{Scratch, canonical_axis, check_count, shape_str};
use super::{Ctx, Layer, ParamDef, Shapes};
use crate::engine::kernels::conv::{ConvGemm, ConvKernel, Epilogue};
use crate::engine::kernels::elementwise::ChannelDims;
use crate::engine::{Engine, Kernel, View};
use crate::proto::{ConvolutionParameter, FillerParameter, LayerParameter, Phase};

/// Column buffers are cut into chunks of whole images of at most this many elements (at least one
/// image per chunk).
const COL_BUDGET: usize = 1 << 22;


pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Convolution {
        spec: ConvSpec::parse(param, false)?,
        state: None,
        col: Scratch::default(),
    }))
}

/// Kernel, stride, pad and dilation per spatial axis, as Caffe resolves them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Window {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub pad: Vec<usize>,
    pub dilation: Vec<usize>,
}

/// One spatial parameter given as a repeated field or as its _h/_w pair.
fn per_axis(
    name: &str,
    repeated: &[u32],
    hw: (Option<u32>, Option<u32>),
    num_spatial: usize,
    default: usize,
) -> Result<Vec<usize>> {
    if hw.0.is_some() || hw.1.is_some() {
        ensure!(
            num_spatial == 2,
            "{name}_h & {name}_w can only be used for 2D convolution, the input has {num_spatial} spatial axes"
        );
        ensure!(
            repeated.is_empty(),
            "either {name} or {name}_h/w should be specified, not both"
        );
        let (Some(h), Some(w)) = hw else {
            bail!("{name}_h and {name}_w must be given together");
        };
        return Ok(vec![h as usize, w as usize]);
    }
    match repeated.len() {
        0 => Ok(vec![default; num_spatial]),
        1 => Ok(vec![repeated[0] as usize; num_spatial]),
        n if n == num_spatial => Ok(repeated.iter().map(|&v| v as usize).collect()),
        n => bail!(
            "{name} must be specified once, or once per spatial dimension ({name} specified {n} times; {num_spatial} spatial dims)"
        ),
    }
}

/// Resolves the window parameters of `p` for `num_spatial` spatial axes (BaseConvolutionLayer::LayerSetUp).
pub(crate) fn window(p: &ConvolutionParameter, num_spatial: usize) -> Result<Window> {
    let kernel = if p.kernel_h.is_some() || p.kernel_w.is_some() {
        per_axis(
            "kernel",
            &p.kernel_size,
            (p.kernel_h, p.kernel_w),
            num_spatial,
            0,
        )?
    } else {
        ensure!(
            !p.kernel_size.is_empty() || num_spatial == 0,
            "kernel_size (or kernel_h and kernel_w) is required"
        );
        per_axis("kernel_size", &p.kernel_size, (None, None), num_spatial, 0)?
    };
    ensure!(
        kernel.iter().all(|&k| k > 0),
        "filter dimensions must be nonzero, got kernel {kernel:?}"
    );
    let stride = per_axis(
        "stride",
        &p.stride,
        (p.stride_h, p.stride_w),
        num_spatial,
        1,
    )?;
    ensure!(
        stride.iter().all(|&s| s > 0),
        "stride dimensions must be nonzero, got stride {stride:?}"
    );
    let pad = per_axis("pad", &p.pad, (p.pad_h, p.pad_w), num_spatial, 0)?;
    let dilation = per_axis("dilation", &p.dilation, (None, None), num_spatial, 1)?;
    ensure!(
        dilation.iter().all(|&d| d > 0),
        "dilation must be positive, got {dilation:?}"
    );
    Ok(Window {
        kernel,
        stride,
        pad,
        dilation,
    })
}

/// Convolution output size along each axis: (in + 2p - (d(k-1)+1)) / s + 1.
pub(crate) fn conv_out_shape(input: &[usize], w: &Window) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(input.len());
    for (a, &i) in input.iter().enumerate() {
        let extent = w.dilation[a] * (w.kernel[a] - 1) + 1;
        ensure!(
            i + 2 * w.pad[a] >= extent,
            "kernel extent {extent} exceeds the padded input size {} (input {i}, pad {}) on spatial axis {a}",
            i + 2 * w.pad[a],
            w.pad[a]
        );
        out.push((i + 2 * w.pad[a] - extent) / w.stride[a] + 1);
    }
    Ok(out)
}

/// The parsed ConvolutionParameter of a Convolution or Deconvolution layer.
#[derive(Clone, Debug)]
pub(crate) struct ConvSpec {
    pub param: ConvolutionParameter,
    pub num_output: usize,
    pub group: usize,
    pub bias_term: bool,
    pub weight_filler: FillerParameter,
    pub bias_filler: FillerParameter,
    /// Deconvolution: the roles of bottom and top are swapped.
    pub reverse: bool,
}

impl ConvSpec {
    pub fn parse(param: &LayerParameter, reverse: bool) -> Result<ConvSpec> {
        let p = param.convolution_param.clone().unwrap_or_default();
        let num_output = p.num_output() as usize;
        ensure!(
            num_output > 0,
            "convolution_param.num_output must be given and positive"
        );
        let group = p.group() as usize;
        ensure!(group > 0, "convolution_param.group must be positive");
        ensure!(
            num_output.is_multiple_of(group),
            "number of outputs ({num_output}) should be a multiple of group ({group})"
        );
        Ok(ConvSpec {
            num_output,
            group,
            bias_term: p.bias_term(),
            weight_filler: p.weight_filler.clone().unwrap_or_default(),
            bias_filler: p.bias_filler.clone().unwrap_or_default(),
            reverse,
            param: p,
        })
    }

    /// The shape rule shared by Convolution and Deconvolution: returns the geometry and the shapes.
    pub fn reshape(
        &self,
        bottoms: &[Vec<usize>],
        prev: Option<&ConvGeom>,
    ) -> Result<(ConvGeom, Shapes)> {
        check_count("bottom", bottoms.len(), 1, usize::MAX)?;
        let shape = &bottoms[0];
        for (i, b) in bottoms.iter().enumerate().skip(1) {
            ensure!(
                b == shape,
                "all bottoms must have the same shape: bottom 0 is {}, bottom {i} is {}",
                shape_str(shape),
                shape_str(b)
            );
        }
        let axis = canonical_axis(self.param.axis(), shape.len())?;
        let num_spatial = shape.len() - axis - 1;
        let w = window(&self.param, num_spatial)?;
        let channels = shape[axis];
        ensure!(
            channels.is_multiple_of(self.group),
            "number of input channels ({channels}) should be a multiple of group ({})",
            self.group
        );
        if let Some(prev) = prev {
            let prev_channels = if self.reverse {
                prev.out_channels
            } else {
                prev.in_channels
            };
            ensure!(
                prev.axis == axis && prev.in_shape.len() == num_spatial,
                "the bottom's number of axes may not change (was {}, now {})",
                prev.axis + 1 + prev.in_shape.len(),
                shape.len()
            );
            ensure!(
                prev_channels == channels,
                "input channels may not change (was {prev_channels}, now {channels})"
            );
        }
        let spatial = shape[axis + 1..].to_vec();
        let num: usize = shape[..axis].iter().product();
        let (geom, top_spatial) = if self.reverse {
            let mut out = Vec::with_capacity(num_spatial);
            for (a, &i) in spatial.iter().enumerate() {
                ensure!(
                    i > 0,
                    "deconvolution input size must be positive on spatial axis {a}"
                );
                let extent = w.dilation[a] * (w.kernel[a] - 1) + 1;
                let full = w.stride[a] * (i - 1) + extent;
                ensure!(
                    full > 2 * w.pad[a],
                    "deconvolution output would be empty on spatial axis {a} (pad {} too large)",
                    w.pad[a]
                );
                out.push(full - 2 * w.pad[a]);
            }
            let g = ConvGeom {
                num,
                axis,
                group: self.group,
                in_channels: self.num_output,
                out_channels: channels,
                in_shape: out.clone(),
                out_shape: spatial,
                w,
            };
            (g, out)
        } else {
            let out = conv_out_shape(&spatial, &w)?;
            let g = ConvGeom {
                num,
                axis,
                group: self.group,
                in_channels: channels,
                out_channels: self.num_output,
                in_shape: spatial,
                out_shape: out.clone(),
                w,
            };
            (g, out)
        };
        let mut top = shape[..axis].to_vec();
        top.push(self.num_output);
        top.extend(top_spatial);
        let mut weight_shape = vec![geom.out_channels, geom.in_channels / self.group];
        weight_shape.extend(&geom.w.kernel);
        let mut params = vec![ParamDef {
            shape: weight_shape,
            filler: self.weight_filler.clone(),
        }];
        if self.bias_term {
            params.push(ParamDef {
                shape: vec![self.num_output],
                filler: self.bias_filler.clone(),
            });
        }
        Ok((
            geom,
            Shapes {
                tops: vec![top; bottoms.len()],
                params,
            },
        ))
    }
}

/// The im2col side ("in": channels x in_shape) and the matrix-product side ("out": out_channels x
/// out_shape) of a convolution. For Convolution in = bottom, out = top; Deconvolution swaps them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConvGeom {
    /// Images: the product of the axes before the channel axis.
    pub num: usize,
    pub axis: usize,
    pub group: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    pub w: Window,
}

impl ConvGeom {
    pub fn out_spatial(&self) -> usize {
        self.out_shape.iter().product()
    }
    /// Rows of one group's column matrix: in_channels / group * prod(kernel).
    pub fn kernel_dim(&self) -> usize {
        self.in_channels / self.group * self.w.kernel.iter().product::<usize>()
    }
    /// Elements of one image's column buffer.
    pub fn col_len(&self) -> usize {
        self.kernel_dim() * self.group * self.out_spatial()
    }
    pub fn is_1x1(&self) -> bool {
        self.w.kernel.iter().all(|&k| k == 1)
            && self.w.stride.iter().all(|&s| s == 1)
            && self.w.pad.iter().all(|&p| p == 0)
    }
    /// Multiply-adds of one pass over all images.
    pub fn macs(&self) -> u64 {
        (self.num * self.out_channels * self.out_spatial() * self.kernel_dim()) as u64
    }

    /// Images per column chunk: as many as the budget allows, spread evenly over the chunks (the
    /// CPU engine runs the images of a chunk on separate cores).
    fn chunk(&self) -> usize {
        let most = (COL_BUDGET / self.col_len().max(1)).clamp(1, self.num.max(1));
        let chunks = self.num.max(1).div_ceil(most);
        self.num.max(1).div_ceil(chunks)
    }

    /// The whole-batch convolution description: im2col side `im`, matrix side `out`, column
    /// scratch from `col` (sized for [`Self::chunk`] images; 1x1 convolutions need none).
    fn conv_gemm(
        &self,
        eng: &mut dyn Engine,
        col: &mut Scratch,
        weight: View,
        bias: Option<View>,
        im: View,
        out: View,
    ) -> ConvGemm {
        let col_len = if self.is_1x1() {
            0
        } else {
            self.chunk() * self.col_len()
        };
        ConvGemm {
            im,
            out,
            weight,
            bias,
            col: col.get(eng, col_len),
            batch: self.num,
            group: self.group,
            channels: self.in_channels,
            out_channels: self.out_channels,
            im_shape: self.in_shape.clone(),
            col_shape: self.out_shape.clone(),
            kernel: self.w.kernel.clone(),
            pad: self.w.pad.clone(),
            stride: self.w.stride.clone(),
            dilation: self.w.dilation.clone(),
            epilogue: Vec::new(),
            junction: None,
        }
    }

    /// out = W * im2col(im) (+ bias) for every image (Convolution forward, Deconvolution backward
    /// to its bottom).
    #[allow(clippy::too_many_arguments)]
    pub fn im_to_out(
        &self,
        eng: &mut dyn Engine,
        col: &mut Scratch,
        weight: View,
        bias: Option<View>,
        im: View,
        out: View,
        epilogue: Epilogue,
    ) -> Result<()> {
        let k = ConvGemm {
            epilogue: epilogue.stages,
            junction: epilogue.junction,
            ..self.conv_gemm(eng, col, weight, bias, im, out)
        };
        eng.launch(&Kernel::Conv(ConvKernel::ConvForward(k)))
    }

    /// im = col2im(W^T * out) for every image (Convolution backward to its bottom, Deconvolution forward).
    pub fn out_to_im(
        &self,
        eng: &mut dyn Engine,
        col: &mut Scratch,
        weight: View,
        out: View,
        im: View,
    ) -> Result<()> {
        let k = self.conv_gemm(eng, col, weight, None, im, out);
        eng.launch(&Kernel::Conv(ConvKernel::ConvBackwardData(k)))
    }

    /// weight_diff += out_diff * im2col(im)^T summed over images.
    pub fn weight_grad(
        &self,
        eng: &mut dyn Engine,
        col: &mut Scratch,
        im: View,
        out_diff: View,
        weight_diff: View,
    ) -> Result<()> {
        let k = self.conv_gemm(eng, col, weight_diff, None, im, out_diff);
        eng.launch(&Kernel::Conv(ConvKernel::ConvWeightGrad(k)))
    }

    /// y[n, c, :] += bias[c] on the out side.
    pub fn add_bias(&self, eng: &mut dyn Engine, y: View, bias: View) -> Result<()> {
        eng.launch(&Kernel::Conv(ConvKernel::AddChannelBias {
            y,
            bias,
            outer: self.num,
            channels: self.out_channels,
            inner: self.out_spatial(),
        }))
    }

    /// bias_diff[c] += sum over n and positions of dy[n, c, :] on the out side.
    pub fn bias_grad(&self, eng: &mut dyn Engine, dy: View, bias_diff: View) -> Result<()> {
        eng.launch(&Kernel::Conv(ConvKernel::ChannelSum {
            x: dy,
            out: bias_diff,
            outer: self.num,
            channels: self.out_channels,
            inner: self.out_spatial(),
            alpha: 1.0,
            beta: 1.0,
        }))
    }
}

struct Convolution {
    spec: ConvSpec,
    state: Option<ConvGeom>,
    col: Scratch,
}

impl Convolution {
    fn geom(&self) -> Result<&ConvGeom> {
        self.state
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("forward called before reshape"))
    }
}

impl Layer for Convolution {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        let (geom, shapes) = self.spec.reshape(bottoms, self.state.as_ref())?;
        self.state = Some(geom);
        Ok(shapes)
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        self.forward_with_epilogue(cx, Epilogue::default())
    }

    fn epilogue_dims(&self, _phase: Phase) -> Option<ChannelDims> {
        let g = self.state.as_ref()?;
        Some(ChannelDims::new(
            g.num,
            g.out_channels,
            g.out_shape.iter().product(),
        ))
    }

    fn forward_with_epilogue(&mut self, cx: &mut Ctx, epilogue: Epilogue) -> Result<()> {
        let g = self.geom()?.clone();
        ensure!(
            epilogue == Epilogue::default() || cx.tops.len() == 1,
            "internal: a convolution with {} tops takes no epilogue",
            cx.tops.len()
        );
        for (b, t) in cx.bottoms.iter().zip(cx.tops) {
            let bias = self.spec.bias_term.then(|| cx.params[1].data());
            g.im_to_out(
                cx.eng,
                &mut self.col,
                cx.params[0].data(),
                bias,
                b.data(),
                t.data(),
                epilogue.clone(),
            )?;
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let g = self.geom()?.clone();
        for (i, (b, t)) in cx.bottoms.iter().zip(cx.tops).enumerate() {
            if self.spec.bias_term && cx.param_grad(1) {
                g.bias_grad(cx.eng, t.diff(), cx.params[1].diff())?;
            }
            if cx.param_grad(0) {
                g.weight_grad(
                    cx.eng,
                    &mut self.col,
                    b.data(),
                    t.diff(),
                    cx.params[0].diff(),
                )?;
            }
            if propagate_down.get(i).copied().unwrap_or(false) {
                g.out_to_im(
                    cx.eng,
                    &mut self.col,
                    cx.params[0].data(),
                    t.diff(),
                    b.diff(),
                )?;
            }
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        self.state.as_ref().map_or(0, |g| g.macs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, LayerRun, check_gradient, run_layer};
    use crate::proto::Phase;
    use crate::rng::Rng;

    pub(crate) fn conv_param(kind: &str, p: ConvolutionParameter) -> LayerParameter {
        LayerParameter {
            name: Some("conv".into()),
            r#type: Some(kind.into()),
            convolution_param: Some(p),
            ..Default::default()
        }
    }

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect()
    }

    /// Direct N-D convolution of one image set, the reference for the tests.
    fn reference(
        x: &[f32],
        shape: &[usize],
        weight: &[f32],
        bias: Option<&[f32]>,
        g: &ConvGeom,
    ) -> Vec<f32> {
        let (n, c) = (shape[0], shape[1]);
        let in_sp: Vec<usize> = shape[2..].to_vec();
        let out_sp = g.out_shape.clone();
        let o = g.out_channels;
        let (cg, og) = (c / g.group, o / g.group);
        let kprod: usize = g.w.kernel.iter().product();
        let in_plane: usize = in_sp.iter().product();
        let out_plane: usize = out_sp.iter().product();
        let d = in_sp.len();
        let mut y = vec![0f32; n * o * out_plane];
        for img in 0..n {
            for oc in 0..o {
                let grp = oc / og;
                for op in 0..out_plane {
                    let mut oidx = vec![0; d];
                    let mut r = op;
                    for a in (0..d).rev() {
                        oidx[a] = r % out_sp[a];
                        r /= out_sp[a];
                    }
                    let mut acc = bias.map_or(0.0, |b| b[oc]);
                    for ic in 0..cg {
                        for kp in 0..kprod {
                            let mut r = kp;
                            let mut pos = 0usize;
                            let mut inside = true;
                            let mut kidx = vec![0; d];
                            for a in (0..d).rev() {
                                kidx[a] = r % g.w.kernel[a];
                                r /= g.w.kernel[a];
                            }
                            for a in 0..d {
                                let i = (oidx[a] * g.w.stride[a] + kidx[a] * g.w.dilation[a])
                                    as isize
                                    - g.w.pad[a] as isize;
                                if i < 0 || i >= in_sp[a] as isize {
                                    inside = false;
                                }
                                pos = pos * in_sp[a] + i.max(0) as usize;
                            }
                            if inside {
                                let xv = x[(img * c + grp * cg + ic) * in_plane + pos];
                                acc += xv * weight[(oc * cg + ic) * kprod + kp];
                            }
                        }
                    }
                    y[(img * o + oc) * out_plane + op] = acc;
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_direct_convolution() {
        let mut rng = Rng::new(7);
        let cases: Vec<(Vec<usize>, ConvolutionParameter)> = vec![
            (
                vec![2, 3, 6, 5],
                ConvolutionParameter {
                    num_output: Some(4),
                    kernel_size: vec![3],
                    pad: vec![1],
                    ..Default::default()
                },
            ),
            (
                vec![1, 4, 7, 7],
                ConvolutionParameter {
                    num_output: Some(6),
                    kernel_size: vec![3],
                    stride: vec![2],
                    dilation: vec![2],
                    pad: vec![2],
                    group: Some(2),
                    ..Default::default()
                },
            ),
            (
                vec![2, 2, 5, 6],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_h: Some(3),
                    kernel_w: Some(2),
                    stride_h: Some(2),
                    stride_w: Some(1),
                    pad_h: Some(1),
                    pad_w: Some(0),
                    ..Default::default()
                },
            ),
            (
                vec![3, 4, 3, 3],
                ConvolutionParameter {
                    num_output: Some(5),
                    kernel_size: vec![1],
                    ..Default::default()
                },
            ),
            (
                vec![2, 2, 4, 3, 5],
                ConvolutionParameter {
                    num_output: Some(3),
                    kernel_size: vec![3, 2, 3],
                    pad: vec![1, 0, 1],
                    stride: vec![1, 1, 2],
                    ..Default::default()
                },
            ),
            (
                vec![2, 3, 9],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![4],
                    stride: vec![3],
                    pad: vec![2],
                    ..Default::default()
                },
            ),
        ];
        for (shape, p) in cases {
            let param = conv_param("Convolution", p);
            let spec = ConvSpec::parse(&param, false).unwrap();
            let (geom, shapes) = spec.reshape(std::slice::from_ref(&shape), None).unwrap();
            let x = random(shape.iter().product(), &mut rng);
            let w = random(shapes.params[0].shape.iter().product(), &mut rng);
            let b = random(spec.num_output, &mut rng);
            let case = LayerCase {
                param,
                phase: Phase::Test,
                bottoms: vec![(shape.clone(), x.clone())],
                params: Some(vec![w.clone(), b.clone()]),
            };
            let run = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
            let want = reference(&x, &shape, &w, Some(&b), &geom);
            assert_eq!(run.tops[0].0, shapes.tops[0]);
            for (a, e) in run.tops[0].1.iter().zip(&want) {
                assert!((a - e).abs() < 1e-4, "shape {shape:?}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn hand_checked_values() {
        // 1x1x3x3 input, 2x2 kernel of ones, bias 0.5: sums of 2x2 blocks.
        let p = ConvolutionParameter {
            num_output: Some(1),
            kernel_size: vec![2],
            ..Default::default()
        };
        let case = LayerCase {
            param: conv_param("Convolution", p),
            phase: Phase::Test,
            bottoms: vec![(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect())],
            params: Some(vec![vec![1.0; 4], vec![0.5]]),
        };
        let run = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
        assert_eq!(run.tops[0].0, vec![1, 1, 2, 2]);
        assert_eq!(run.tops[0].1, vec![12.5, 16.5, 24.5, 28.5]);
    }

    #[test]
    fn gradients() {
        let mut rng = Rng::new(11);
        let cases: Vec<(Vec<usize>, ConvolutionParameter)> = vec![
            (
                vec![2, 2, 4, 4],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![3],
                    pad: vec![1],
                    stride: vec![2],
                    ..Default::default()
                },
            ),
            (
                vec![1, 4, 5, 5],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![2],
                    group: Some(2),
                    dilation: vec![2],
                    ..Default::default()
                },
            ),
            (
                vec![2, 3, 2, 2],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![1],
                    ..Default::default()
                },
            ),
            (
                vec![1, 2, 3, 3, 3],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![2],
                    pad: vec![1],
                    stride: vec![2],
                    bias_term: Some(false),
                    ..Default::default()
                },
            ),
        ];
        for (shape, p) in cases {
            let param = conv_param("Convolution", p);
            let spec = ConvSpec::parse(&param, false).unwrap();
            let (_, shapes) = spec.reshape(std::slice::from_ref(&shape), None).unwrap();
            let mut params = vec![random(shapes.params[0].shape.iter().product(), &mut rng)];
            if spec.bias_term {
                params.push(random(spec.num_output, &mut rng));
            }
            let case = LayerCase {
                param,
                phase: Phase::Train,
                bottoms: vec![(shape.clone(), random(shape.iter().product(), &mut rng))],
                params: Some(params),
            };
            check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
        }
    }

    #[test]
    fn shapes_and_fillers() {
        let p = ConvolutionParameter {
            num_output: Some(8),
            kernel_size: vec![3],
            stride: vec![2],
            group: Some(2),
            ..Default::default()
        };
        let mut layer = create(&conv_param("Convolution", p)).unwrap();
        let s = layer.reshape(&[vec![2, 4, 9, 8]]).unwrap();
        assert_eq!(s.tops, vec![vec![2, 8, 4, 3]]);
        assert_eq!(s.params[0].shape, vec![8, 2, 3, 3]);
        assert_eq!(s.params[0].filler.r#type(), "constant");
        assert_eq!(s.params[0].filler.value(), 0.0);
        assert_eq!(s.params[1].shape, vec![8]);
        assert_eq!(layer.macs(), 2 * 8 * 12 * 18);
        // Channels may not change afterwards.
        assert!(layer.reshape(&[vec![2, 6, 9, 8]]).is_err());
        assert!(layer.reshape(&[vec![1, 4, 5, 5]]).is_ok());
    }

    /// A random convolution configuration with `spatial` spatial axes.
    fn random_config(rng: &mut Rng, spatial: usize) -> (Vec<usize>, ConvolutionParameter) {
        let group = 1 + rng.below(2);
        let channels = group * (1 + rng.below(3));
        let num_output = group * (1 + rng.below(3));
        let kernel: Vec<u32> = (0..spatial).map(|_| 1 + rng.below(3) as u32).collect();
        let stride: Vec<u32> = (0..spatial).map(|_| 1 + rng.below(3) as u32).collect();
        let pad: Vec<u32> = (0..spatial).map(|_| rng.below(3) as u32).collect();
        let dilation: Vec<u32> = (0..spatial).map(|_| 1 + rng.below(2) as u32).collect();
        let mut shape = vec![1 + rng.below(3), channels];
        for a in 0..spatial {
            let extent = dilation[a] as usize * (kernel[a] as usize - 1) + 1;
            shape.push(extent.saturating_sub(2 * pad[a] as usize).max(1) + rng.below(4));
        }
        let p = ConvolutionParameter {
            num_output: Some(num_output as u32),
            kernel_size: kernel,
            stride,
            pad,
            dilation,
            group: Some(group as u32),
            ..Default::default()
        };
        (shape, p)
    }

    #[test]
    fn randomised_against_reference() {
        let mut rng = Rng::new(2024);
        for i in 0..12 {
            let (shape, p) = random_config(&mut rng, 1 + i % 3);
            let param = conv_param("Convolution", p);
            let spec = ConvSpec::parse(&param, false).unwrap();
            let (geom, shapes) = spec.reshape(std::slice::from_ref(&shape), None).unwrap();
            let x = random(shape.iter().product(), &mut rng);
            let w = random(shapes.params[0].shape.iter().product(), &mut rng);
            let b = random(spec.num_output, &mut rng);
            let case = LayerCase {
                param,
                phase: Phase::Test,
                bottoms: vec![(shape.clone(), x.clone())],
                params: Some(vec![w.clone(), b.clone()]),
            };
            let run = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
            let want = reference(&x, &shape, &w, Some(&b), &geom);
            for (a, e) in run.tops[0].1.iter().zip(&want) {
                assert!((a - e).abs() < 1e-4, "case {i} {shape:?}: {a} vs {e}");
            }
        }
    }

    /// Runs the layer `param` (a convolution, or a deconvolution when `deconv`) forward and
    /// backward on a random input of `shape`, random weights and bias and a random top gradient,
    /// in the CPU engine with its fast convolution paths and with im2col + GEMM only; returns
    /// (fast, im2col).
    fn fast_and_im2col(
        param: LayerParameter,
        shape: &[usize],
        deconv: bool,
        rng: &mut Rng,
    ) -> (LayerRun, LayerRun) {
        let spec = ConvSpec::parse(&param, deconv).unwrap();
        let (_, shapes) = spec.reshape(&[shape.to_vec()], None).unwrap();
        let num_output = spec.num_output;
        let case = LayerCase {
            param,
            phase: Phase::Train,
            bottoms: vec![(shape.to_vec(), random(shape.iter().product(), rng))],
            params: Some(vec![
                random(shapes.params[0].shape.iter().product(), rng),
                random(num_output, rng),
            ]),
        };
        let dy = vec![random(shapes.tops[0].iter().product(), rng)];
        let fast = run_layer(&mut CpuEngine::new(), &case, Some(&dy), None).unwrap();
        let plain = run_layer(&mut CpuEngine::im2col_only(), &case, Some(&dy), None).unwrap();
        (fast, plain)
    }

    /// `a` equals `b` within `tolerance` relative to 1 + |b|, naming `what` of `case`.
    fn assert_close(case: &str, what: &str, a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len(), "{case}: {what} length");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= tolerance * (1.0 + y.abs()),
                "{case}: {what} {x} vs {y}"
            );
        }
    }

    /// 3x3 stride-1 convolutions (and deconvolutions) with enough channels go through the CPU
    /// engine's Winograd kernel, forward and backward (bottom and weight gradients); they agree
    /// with im2col + GEMM.
    #[test]
    fn winograd_matches_im2col() {
        use crate::engine::kernels::conv::WINOGRAD_MIN_CHANNELS;
        let mut rng = Rng::new(31);
        for i in 0..16 {
            let group = 1 + i % 2;
            let kind = if i % 4 == 3 { "Deconvolution" } else { "Convolution" };
            let channels = group * (WINOGRAD_MIN_CHANNELS + rng.below(5));
            let num_output = group * (WINOGRAD_MIN_CHANNELS + rng.below(5));
            let pad = rng.below(3) as u32;
            let (h, w) = (1 + rng.below(9), 1 + rng.below(9));
            if (h as u32 + 2 * pad) < 3 || (w as u32 + 2 * pad) < 3 {
                continue;
            }
            let shape = vec![1 + rng.below(3), channels, h, w];
            let p = ConvolutionParameter {
                num_output: Some(num_output as u32),
                kernel_size: vec![3],
                pad: vec![pad],
                group: Some(group as u32),
                ..Default::default()
            };
            let param = conv_param(kind, p);
            let (fast, plain) =
                fast_and_im2col(param, &shape, kind == "Deconvolution", &mut rng);
            let case = format!("case {i} {kind} {shape:?} pad {pad}");
            let pairs = [
                ("top", &fast.tops[0].1, &plain.tops[0].1),
                ("bottom diff", &fast.bottom_diffs[0], &plain.bottom_diffs[0]),
                ("weight diff", &fast.param_diffs[0], &plain.param_diffs[0]),
            ];
            for (what, a, b) in pairs {
                assert_close(&case, what, a, b, 1e-4);
            }
        }
    }

    /// Convolutions of images with few channels (RGB first layers: big kernels, strides up to
    /// 4, rows wider than the 32 positions of a block and narrower than one vector) run
    /// directly on the CPU, forward and weight gradient; they agree with im2col + GEMM, one
    /// image or several.
    #[test]
    fn direct_matches_im2col() {
        let mut rng = Rng::new(41);
        for i in 0..24 {
            let channels = 1 + rng.below(4);
            let num_output = 1 + rng.below(20);
            let (kh, kw) = (1 + rng.below(11), 2 + rng.below(10));
            let (sh, sw) = (1 + rng.below(4), 1 + rng.below(4));
            let (ph, pw) = (rng.below(4), rng.below(4));
            let h = (kh.saturating_sub(2 * ph)).max(1) + rng.below(20);
            let w = (kw.saturating_sub(2 * pw)).max(1) + rng.below(90);
            let shape = vec![1 + (i % 2) * 2, channels, h, w];
            let p = ConvolutionParameter {
                num_output: Some(num_output as u32),
                kernel_h: Some(kh as u32),
                kernel_w: Some(kw as u32),
                stride_h: Some(sh as u32),
                stride_w: Some(sw as u32),
                pad_h: Some(ph as u32),
                pad_w: Some(pw as u32),
                ..Default::default()
            };
            let param = conv_param("Convolution", p);
            let (fast, plain) = fast_and_im2col(param, &shape, false, &mut rng);
            let case = format!("case {i} {shape:?} kernel {kh}x{kw} stride {sh}x{sw} pad {ph}x{pw}");
            assert_close(&case, "top", &fast.tops[0].1, &plain.tops[0].1, 1e-5);
            // Sums over every position, in another order.
            let (a, b) = (&fast.param_diffs[0], &plain.param_diffs[0]);
            assert_close(&case, "weight diff", a, b, 1e-4);
        }
    }

    /// Deconvolution is the adjoint of Convolution with the same weights:
    /// <deconv(x), y> = <x, conv(y)>.
    #[test]
    fn deconvolution_is_the_adjoint() {
        let mut rng = Rng::new(77);
        let mut done = 0;
        for i in 0..100 {
            if done == 8 {
                break;
            }
            let (shape, mut p) = random_config(&mut rng, 1 + i % 3);
            p.bias_term = Some(false);
            let deconv = conv_param("Deconvolution", p.clone());
            let spec = ConvSpec::parse(&deconv, true).unwrap();
            // Pads too large for the input give an empty deconvolution output: draw again.
            let Ok((_, shapes)) = spec.reshape(std::slice::from_ref(&shape), None) else {
                continue;
            };
            done += 1;
            let top_shape = shapes.tops[0].clone();
            let w = random(shapes.params[0].shape.iter().product(), &mut rng);
            let x = random(shape.iter().product(), &mut rng);
            let y = random(top_shape.iter().product(), &mut rng);
            let mut eng = CpuEngine::new();
            let case = LayerCase {
                param: deconv,
                phase: Phase::Test,
                bottoms: vec![(shape.clone(), x.clone())],
                params: Some(vec![w.clone()]),
            };
            let dx = run_layer(&mut eng, &case, None, None)
                .unwrap()
                .tops
                .remove(0);
            p.num_output = Some(shape[1] as u32);
            let case = LayerCase {
                param: conv_param("Convolution", p),
                phase: Phase::Test,
                bottoms: vec![(top_shape, y.clone())],
                params: Some(vec![w]),
            };
            let cy = run_layer(&mut eng, &case, None, None)
                .unwrap()
                .tops
                .remove(0);
            assert_eq!(cy.0, shape, "case {i}");
            let lhs: f64 = dx.1.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&cy.1).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "case {i}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn several_bottoms_share_the_weights() {
        let mut rng = Rng::new(3);
        let p = ConvolutionParameter {
            num_output: Some(2),
            kernel_size: vec![2],
            ..Default::default()
        };
        let shape = vec![1, 2, 3, 3];
        let (x0, x1) = (random(18, &mut rng), random(18, &mut rng));
        let params = Some(vec![random(16, &mut rng), random(2, &mut rng)]);
        let dy = random(8, &mut rng);
        let mut eng = CpuEngine::new();
        let both = LayerCase {
            param: conv_param("Convolution", p.clone()),
            phase: Phase::Train,
            bottoms: vec![(shape.clone(), x0.clone()), (shape.clone(), x1.clone())],
            params: params.clone(),
        };
        let r = run_layer(&mut eng, &both, Some(&[dy.clone(), dy.clone()]), None).unwrap();
        let mut sum = vec![0f32; 16];
        for (i, x) in [x0, x1].into_iter().enumerate() {
            let one = LayerCase {
                param: conv_param("Convolution", p.clone()),
                phase: Phase::Train,
                bottoms: vec![(shape.clone(), x)],
                params: params.clone(),
            };
            let s = run_layer(&mut eng, &one, Some(std::slice::from_ref(&dy)), None).unwrap();
            assert_eq!(r.tops[i], s.tops[0]);
            assert_eq!(r.bottom_diffs[i], s.bottom_diffs[0]);
            sum.iter_mut()
                .zip(&s.param_diffs[0])
                .for_each(|(a, b)| *a += b);
        }
        for (a, b) in r.param_diffs[0].iter().zip(&sum) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn parameter_errors() {
        let bad = [
            ConvolutionParameter {
                kernel_size: vec![3],
                ..Default::default()
            },
            ConvolutionParameter {
                num_output: Some(3),
                kernel_size: vec![3],
                group: Some(2),
                ..Default::default()
            },
            ConvolutionParameter {
                num_output: Some(2),
                ..Default::default()
            },
            ConvolutionParameter {
                num_output: Some(2),
                kernel_size: vec![3],
                kernel_h: Some(3),
                kernel_w: Some(3),
                ..Default::default()
            },
            ConvolutionParameter {
                num_output: Some(2),
                kernel_size: vec![3, 3, 3],
                ..Default::default()
            },
            ConvolutionParameter {
                num_output: Some(2),
                kernel_size: vec![5],
                ..Default::default()
            },
            ConvolutionParameter {
                num_output: Some(2),
                kernel_size: vec![3],
                stride: vec![0],
                ..Default::default()
            },
        ];
        for p in bad {
            let r = create(&conv_param("Convolution", p.clone()))
                .and_then(|mut l| l.reshape(&[vec![1, 3, 4, 4]]));
            assert!(r.is_err(), "{p:?} should be rejected");
        }
    }
}
