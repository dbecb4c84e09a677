//! Convolution helpers: N-D im2col / col2im over a batch of images, whole convolutions as matrix
//! products (forward, data gradient, weight gradient), per-channel bias addition and reduction,
//! and the row gather / scatter of Embed.
use anyhow::{Result, ensure};

use crate::engine::kernels::blas::{BlasKernel, Gemm};
use crate::engine::kernels::elementwise::{ChannelDims, ChannelStage, ElementwiseKernel, StageOp};
use crate::engine::{Engine, Kernel, View};

#[derive(Clone, Debug)]
pub enum ConvKernel {
    /// For b in 0..batch: col_b = im2col(im_b) (zero outside the padded image), laid out
    /// [channels * prod(kernel), prod(out)] with rows (c, k_0, .., k_{d-1}) row-major.
    Im2col(Im2col),
    /// For b in 0..batch: im_b = col2im(col_b): each image element is overwritten with the sum of the
    /// column entries that im2col would have read from it (0 when none).
    Col2im(Im2col),
    /// For every image b and group g: out_bg = W_g * im2col(im_b)_g (+ bias), overwriting out
    /// (Caffe's forward_gpu_gemm + forward_gpu_bias over the batch), then the epilogue's steps.
    /// See [`ConvGemm`].
    ConvForward(ConvGemm),
    /// For every image b: im_b = col2im(W^T * out_b) per group, overwriting im (Caffe's
    /// backward_gpu_gemm over the batch). `bias` is ignored.
    ConvBackwardData(ConvGemm),
    /// weight += sum over images b of out_b * im2col(im_b)^T per group, where `weight` holds the
    /// weight gradient and `out` the output gradient (Caffe's weight_gpu_gemm over the batch).
    /// `bias` is ignored.
    ConvWeightGrad(ConvGemm),
    /// y[o, c, i] += bias[c] for y viewed as [outer, channels, inner].
    AddChannelBias {
        y: View,
        bias: View,
        outer: usize,
        channels: usize,
        inner: usize,
    },
    /// out[c] = beta * out[c] + alpha * sum_{o, i} x[o, c, i] for x viewed as [outer, channels, inner].
    ChannelSum {
        x: View,
        out: View,
        outer: usize,
        channels: usize,
        inner: usize,
        alpha: f32,
        beta: f32,
    },
    /// Embed forward: top[m, :] = weight[clamp(trunc(index[m]), 0, rows - 1), :] for m in 0..indices.len,
    /// weight is [rows, width], top [indices.len, width].
    GatherRows {
        indices: View,
        weight: View,
        top: View,
        rows: usize,
        width: usize,
    },
    /// Embed backward: weight_diff[clamp(trunc(index[m]), 0, rows - 1), :] += top_diff[m, :] for every m.
    ScatterAddRows {
        indices: View,
        top_diff: View,
        weight_diff: View,
        rows: usize,
        width: usize,
    },
}

/// Winograd pays for its transforms only with enough channels per group on both sides.
pub const WINOGRAD_MIN_CHANNELS: usize = 8;

/// A 3x3 convolution in the form Winograd's minimal filtering computes (an engine may run
/// [`ConvKernel::ConvForward`] / [`ConvKernel::ConvBackwardData`] this way, see
/// [`ConvGemm::winograd`]).
///
/// For b in 0..batch: output_b = the 2-D, 3x3, stride 1, undilated convolution of input_b (zero
/// padding `pad`), per group: output[o] = sum over the group's input channels i of input[i]
/// correlated with K(o, i). K(o, i) = weight[o][i] (weight [out_channels, in_channels / groups, 3,
/// 3]); when `adjoint`, K(o, i) = rot180(weight[i][o]) (weight [in_channels, out_channels /
/// groups, 3, 3]): the gradient of a convolution with respect to its input. Images are packed
/// (input [batch, in_channels, in_shape], output [batch, out_channels, out_shape]); out_shape =
/// in_shape + 2 pad - 2. Overwrites the output.
#[derive(Clone, Debug, PartialEq)]
pub struct Winograd {
    pub input: View,
    pub weight: View,
    pub output: View,
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub in_shape: [usize; 2],
    pub out_shape: [usize; 2],
    pub pad: [usize; 2],
    pub adjoint: bool,
}

impl ConvKernel {
    /// Whether this is a whole convolution ([`ConvGemm`]), which [`run_composed`] can run.
    pub fn is_composite(&self) -> bool {
        matches!(
            self,
            ConvKernel::ConvForward(_)
                | ConvKernel::ConvBackwardData(_)
                | ConvKernel::ConvWeightGrad(_)
        )
    }
}

/// Geometry of an N-D im2col over `batch` images. Image b of `im` starts at `b * im_stride`, its
/// column buffer at `b * col_stride` (both relative to the views). All spatial vectors have one entry
/// per spatial axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Im2col {
    pub im: View,
    pub col: View,
    pub batch: usize,
    pub im_stride: usize,
    pub col_stride: usize,
    pub channels: usize,
    /// Spatial shape of one image channel.
    pub im_shape: Vec<usize>,
    /// Spatial shape of the column buffer (the convolution output positions).
    pub col_shape: Vec<usize>,
    pub kernel: Vec<usize>,
    pub pad: Vec<usize>,
    pub stride: Vec<usize>,
    pub dilation: Vec<usize>,
}

impl Im2col {
    /// Elements of one image.
    pub fn im_len(&self) -> usize {
        self.channels * self.im_shape.iter().product::<usize>()
    }
    /// Rows of one column buffer: channels * prod(kernel).
    pub fn col_rows(&self) -> usize {
        self.channels * self.kernel.iter().product::<usize>()
    }
    /// Elements of one column buffer.
    pub fn col_len(&self) -> usize {
        self.col_rows() * self.col_shape.iter().product::<usize>()
    }
}

/// A convolution over a batch of images as matrix products. The im2col side `im` holds `batch`
/// images of `channels x im_shape` back to back; the matrix side `out` holds `batch` blocks of
/// `out_channels x prod(col_shape)`; `weight` is `[out_channels, channels / group, kernel...]`.
/// For image b and group g the product is out_bg [og x S] = W_g [og x kd] * col_bg [kd x S] with
/// og = out_channels / group, kd = channels / group * prod(kernel), S = prod(col_shape) and
/// col_bg the rows of im2col(im_b) that belong to group g's channels.
///
/// `col` is scratch room for the column buffers of at least one image (engines that compute the
/// columns on the fly may leave it untouched); [`run_composed`] processes as many images at a
/// time as it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGemm {
    pub im: View,
    pub out: View,
    pub weight: View,
    /// Forward only: out[b, c, :] += bias[c].
    pub bias: Option<View>,
    /// Forward only: point-wise steps over out (as [`ElementwiseKernel::ChannelStages`] in place,
    /// dims (batch, out_channels, positions)) after the bias: the in-place BatchNorm, Scale and
    /// ReLU layers after a convolution. An engine may apply them as it stores out.
    pub epilogue: Vec<ChannelStage>,
    /// Forward only: an Eltwise SUM that reads out after the epilogue, fused into the forward.
    pub junction: Option<EpilogueJunction>,
    pub col: View,
    pub batch: usize,
    pub group: usize,
    pub channels: usize,
    pub out_channels: usize,
    pub im_shape: Vec<usize>,
    /// Spatial shape of the matrix side (the convolution output positions).
    pub col_shape: Vec<usize>,
    pub kernel: Vec<usize>,
    pub pad: Vec<usize>,
    pub stride: Vec<usize>,
    pub dilation: Vec<usize>,
}

/// What a convolution's forward does after its product: [`ConvGemm::epilogue`] and
/// [`ConvGemm::junction`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Epilogue {
    pub stages: Vec<ChannelStage>,
    pub junction: Option<EpilogueJunction>,
}

/// An Eltwise SUM with a convolution's output (after its epilogue's steps) among its bottoms,
/// and the point-wise steps in place on its top after it, fused into the convolution's forward
/// (ResNet's branch2c and its shortcut): an engine may add the other bottoms to each part of the
/// output while it is in cache, instead of reading the output back in a pass of its own. The
/// values are the unfused layers', bit for bit: top = 0 + coeffs[0] * bottoms[0], then
/// top += coeffs[j] * bottoms[j] in order.
#[derive(Clone, Debug, PartialEq)]
pub struct EpilogueJunction {
    /// One per bottom.
    pub coeffs: Vec<f32>,
    /// The SUM's bottoms in order; the one at `position` is the convolution's output.
    pub bottoms: Vec<View>,
    pub position: usize,
    /// The SUM's top, apart from every bottom.
    pub top: View,
    /// Steps in place on the top after the sum (the ReLU after a ResNet junction).
    pub stages: Vec<ChannelStage>,
}

impl EpilogueJunction {
    /// The bottoms other than the convolution's output, in order.
    pub fn others(&self) -> impl Iterator<Item = View> + '_ {
        (self.bottoms.iter().enumerate())
            .filter(|&(j, _)| j != self.position)
            .map(|(_, &b)| b)
    }

    /// The junction as a pass of its own over `dims` (the convolution's output layout), run after
    /// the convolution: the Eltwise SUM's fused run.
    pub fn kernel(&self, dims: ChannelDims) -> Kernel {
        let sum = ChannelStage {
            op: StageOp::Sum {
                coeffs: self.coeffs.clone(),
                others: self.bottoms[1..].to_vec(),
            },
            save: None,
        };
        Kernel::Elementwise(ElementwiseKernel::ChannelStages {
            dims,
            x: self.bottoms[0],
            y: self.top,
            stages: std::iter::once(sum).chain(self.stages.clone()).collect(),
        })
    }
}

impl ConvGemm {
    /// The kernels that finish a forward once the product (with the bias) is in out: the
    /// epilogue's steps in place unless `stages_done` (an engine ran them as it stored out), then
    /// the junction.
    pub fn finishing_kernels(&self, stages_done: bool) -> Vec<Kernel> {
        let stages = (!stages_done).then(|| self.epilogue_kernel()).flatten();
        let junction = self.junction.as_ref().map(|j| j.kernel(self.out_dims()));
        stages.into_iter().chain(junction).collect()
    }
    /// This convolution's forward (or, when `adjoint`, its data gradient) as a [`Winograd`]
    /// convolution, when it is 2-D, 3x3, stride 1, undilated, with at least
    /// [`WINOGRAD_MIN_CHANNELS`] channels per group on both sides (the gradient also needs
    /// padding of at most 2). The views are cut to the lengths
    /// [`ConvGemm::check`] checks, which must have passed.
    pub fn winograd(&self, adjoint: bool) -> Option<Winograd> {
        let eligible = self.im_shape.len() == 2
            && self.col_shape.len() == 2
            && self.kernel == [3, 3]
            && self.stride == [1, 1]
            && self.dilation == [1, 1]
            && self.group > 0
            && self.channels / self.group >= WINOGRAD_MIN_CHANNELS
            && self.out_channels / self.group >= WINOGRAD_MIN_CHANNELS
            && self.pad.len() == 2
            && (!adjoint || self.pad.iter().all(|&p| p <= 2))
            // The geometry of a 3x3 stride-1 convolution, which the tiling relies on.
            && (0..2).all(|d| self.col_shape[d] + 2 == self.im_shape[d] + 2 * self.pad[d]);
        if !eligible {
            return None;
        }
        let image = [self.im_shape[0], self.im_shape[1]];
        let output = [self.col_shape[0], self.col_shape[1]];
        let pad = [self.pad[0], self.pad[1]];
        let (im, out) = (
            self.im.slice(0, self.batch * self.im_len()),
            self.out.slice(0, self.batch * self.out_len()),
        );
        let weight = self.weight.slice(0, self.out_channels * self.kernel_dim());
        Some(if adjoint {
            Winograd {
                input: out,
                weight,
                output: im,
                batch: self.batch,
                in_channels: self.out_channels,
                out_channels: self.channels,
                groups: self.group,
                in_shape: output,
                out_shape: image,
                pad: [2 - pad[0], 2 - pad[1]],
                adjoint: true,
            }
        } else {
            Winograd {
                input: im,
                weight,
                output: out,
                batch: self.batch,
                in_channels: self.channels,
                out_channels: self.out_channels,
                groups: self.group,
                in_shape: image,
                out_shape: output,
                pad,
                adjoint: false,
            }
        })
    }

    /// The layout of out as the epilogue sees it.
    pub fn out_dims(&self) -> ChannelDims {
        ChannelDims::new(self.batch, self.out_channels, self.out_spatial())
    }

    /// The epilogue as a kernel of its own (in place on out); None without one.
    pub fn epilogue_kernel(&self) -> Option<Kernel> {
        if self.epilogue.is_empty() {
            return None;
        }
        let out = self.out.slice(0, self.batch * self.out_len());
        Some(Kernel::Elementwise(ElementwiseKernel::ChannelStages {
            dims: self.out_dims(),
            x: out,
            y: out,
            stages: self.epilogue.clone(),
        }))
    }

    /// Elements of one image on the im2col side.
    pub fn im_len(&self) -> usize {
        self.channels * self.im_shape.iter().product::<usize>()
    }
    /// Output positions S.
    pub fn out_spatial(&self) -> usize {
        self.col_shape.iter().product()
    }
    /// Elements of one image on the matrix side.
    pub fn out_len(&self) -> usize {
        self.out_channels * self.out_spatial()
    }
    /// Rows of one group's column matrix: channels / group * prod(kernel).
    pub fn kernel_dim(&self) -> usize {
        self.channels / self.group.max(1) * self.kernel.iter().product::<usize>()
    }
    /// Elements of one image's column buffer (all groups).
    pub fn col_len(&self) -> usize {
        self.kernel_dim() * self.group * self.out_spatial()
    }
    /// A 1x1 kernel with stride 1 and no pad: the column buffer is the image itself.
    pub fn is_1x1(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.stride.iter().all(|&s| s == 1)
            && self.pad.iter().all(|&p| p == 0)
    }
    /// Images whose column buffers `col` holds at once (at least 1); a 1x1 convolution needs no
    /// columns (it multiplies the images themselves), so all of them.
    pub fn chunk(&self) -> usize {
        if self.is_1x1() {
            return self.batch.max(1);
        }
        (self.col.len / self.col_len().max(1)).clamp(1, self.batch.max(1))
    }

    /// Checks the views against the geometry.
    pub fn check(&self) -> Result<()> {
        let d = self.im_shape.len();
        ensure!(
            [
                &self.col_shape,
                &self.kernel,
                &self.pad,
                &self.stride,
                &self.dilation
            ]
            .iter()
            .all(|v| v.len() == d),
            "convolution: every spatial vector needs {d} entries"
        );
        ensure!(
            self.group > 0
                && self.channels.is_multiple_of(self.group)
                && self.out_channels.is_multiple_of(self.group),
            "convolution: {} input and {} output channels do not split into {} groups",
            self.channels,
            self.out_channels,
            self.group
        );
        ensure!(
            self.im.len >= self.batch * self.im_len(),
            "convolution: image view has {} elements, needs {}",
            self.im.len,
            self.batch * self.im_len()
        );
        ensure!(
            self.out.len >= self.batch * self.out_len(),
            "convolution: output view has {} elements, needs {}",
            self.out.len,
            self.batch * self.out_len()
        );
        let wlen = self.out_channels * self.kernel_dim();
        ensure!(
            self.weight.len >= wlen,
            "convolution: weight view has {} elements, needs {wlen}",
            self.weight.len
        );
        if let Some(b) = self.bias {
            ensure!(
                b.len >= self.out_channels,
                "convolution: bias view has {} elements, needs {}",
                b.len,
                self.out_channels
            );
        }
        ensure!(
            self.is_1x1() || self.col.len >= self.col_len(),
            "convolution: column scratch has {} elements, needs at least {}",
            self.col.len,
            self.col_len()
        );
        Ok(())
    }

    /// The im2col description for images [first, first + batch) into `col`.
    pub fn im2col(&self, first: usize, batch: usize) -> Im2col {
        let in_len = self.im_len();
        Im2col {
            im: self.im.slice(first * in_len, batch * in_len),
            col: self.col.slice(0, batch * self.col_len()),
            batch,
            im_stride: in_len,
            col_stride: self.col_len(),
            channels: self.channels,
            im_shape: self.im_shape.clone(),
            col_shape: self.col_shape.clone(),
            kernel: self.kernel.clone(),
            pad: self.pad.clone(),
            stride: self.stride.clone(),
            dilation: self.dilation.clone(),
        }
    }
}

/// A gemm operand: matrix (image i, group g) starts at `view.offset + i * image + g * group`.
#[derive(Clone, Copy)]
struct Operand {
    view: View,
    image: usize,
    group: usize,
}

/// For `images` images and `groups` groups: C = op(A) op(B) + beta C, batched over whichever of
/// images / groups is larger.
#[allow(clippy::too_many_arguments)]
fn gemms(
    eng: &mut dyn Engine,
    groups: usize,
    (trans_a, trans_b): (bool, bool),
    (m, n, k): (usize, usize, usize),
    beta: f32,
    a: Operand,
    b: Operand,
    c: Operand,
    images: usize,
) -> Result<()> {
    let (outer, batch) = if groups <= images {
        (groups, images)
    } else {
        (images, groups)
    };
    let stride = |o: &Operand| if groups <= images { o.image } else { o.group };
    let step = |o: &Operand| if groups <= images { o.group } else { o.image };
    for j in 0..outer {
        let view = |o: &Operand, one: usize| {
            let len = stride(o) * (batch - 1) + one;
            View::new(o.view.id, o.view.offset + j * step(o), len)
        };
        let g = Gemm {
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha: 1.0,
            beta,
            a: view(&a, m * k),
            b: view(&b, k * n),
            c: view(&c, m * n),
            batch,
            stride_a: stride(&a),
            stride_b: stride(&b),
            stride_c: stride(&c),
        };
        eng.launch(&Kernel::Blas(BlasKernel::Gemm(g)))?;
    }
    Ok(())
}

/// Runs [`ConvKernel::ConvForward`], [`ConvKernel::ConvBackwardData`] or
/// [`ConvKernel::ConvWeightGrad`] as im2col / col2im, matrix products and a bias addition (the
/// other kernels of this family and [`BlasKernel::Gemm`]), over chunks of as many images as
/// `col` holds; a 1x1 convolution multiplies the images themselves. Any engine can use it.
pub fn run_composed(eng: &mut dyn Engine, kernel: &ConvKernel) -> Result<()> {
    let (k, mode) = match kernel {
        ConvKernel::ConvForward(k) => (k, 0),
        ConvKernel::ConvBackwardData(k) => (k, 1),
        ConvKernel::ConvWeightGrad(k) => (k, 2),
        _ => anyhow::bail!("internal: run_composed takes whole convolutions only"),
    };
    k.check()?;
    let (kd, s, og) = (k.kernel_dim(), k.out_spatial(), k.out_channels / k.group);
    let (in_len, out_len, col_len) = (k.im_len(), k.out_len(), k.col_len());
    let w = Operand {
        view: k.weight,
        image: 0,
        group: og * kd,
    };
    let chunk = k.chunk();
    let mut first = 0;
    while first < k.batch {
        let batch = chunk.min(k.batch - first);
        let ims = Operand {
            view: k.im.slice(first * in_len, batch * in_len),
            image: in_len,
            group: kd * s,
        };
        // A 1x1 convolution multiplies the images themselves: its scratch may be empty.
        let cols = Operand {
            view: if k.is_1x1() {
                k.col
            } else {
                k.col.slice(0, batch * col_len)
            },
            image: col_len,
            group: kd * s,
        };
        let outs = Operand {
            view: k.out.slice(first * out_len, batch * out_len),
            image: out_len,
            group: og * s,
        };
        match mode {
            0 => {
                let b = if k.is_1x1() {
                    ims
                } else {
                    eng.launch(&Kernel::Conv(ConvKernel::Im2col(k.im2col(first, batch))))?;
                    cols
                };
                gemms(
                    eng,
                    k.group,
                    (false, false),
                    (og, s, kd),
                    0.0,
                    w,
                    b,
                    outs,
                    batch,
                )?;
            }
            1 => {
                if k.is_1x1() {
                    gemms(
                        eng,
                        k.group,
                        (true, false),
                        (kd, s, og),
                        0.0,
                        w,
                        outs,
                        ims,
                        batch,
                    )?;
                } else {
                    gemms(
                        eng,
                        k.group,
                        (true, false),
                        (kd, s, og),
                        0.0,
                        w,
                        outs,
                        cols,
                        batch,
                    )?;
                    eng.launch(&Kernel::Conv(ConvKernel::Col2im(k.im2col(first, batch))))?;
                }
            }
            _ => {
                let b = if k.is_1x1() {
                    ims
                } else {
                    eng.launch(&Kernel::Conv(ConvKernel::Im2col(k.im2col(first, batch))))?;
                    cols
                };
                // Every image adds into the same weight diff (image stride 0).
                let c = Operand { image: 0, ..w };
                gemms(
                    eng,
                    k.group,
                    (false, true),
                    (og, kd, s),
                    1.0,
                    outs,
                    b,
                    c,
                    batch,
                )?;
            }
        }
        first += batch;
    }
    if mode == 0
        && let Some(bias) = k.bias
    {
        eng.launch(&Kernel::Conv(ConvKernel::AddChannelBias {
            y: k.out.slice(0, k.batch * out_len),
            bias: bias.slice(0, k.out_channels),
            outer: k.batch,
            channels: k.out_channels,
            inner: s,
        }))?;
    }
    if mode == 0 {
        for kernel in k.finishing_kernels(false) {
            eng.launch(&kernel)?;
        }
    }
    Ok(())
}
