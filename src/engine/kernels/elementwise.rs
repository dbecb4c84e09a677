//! Element-wise kernels: the unary neuron functions (forward and backward, one data-driven pair),
//! the n-ary Eltwise operations, channel-broadcast ops over an (outer, channels, inner) layout with
//! their per-channel reductions, PReLU and dropout.
use super::Kernel;
use super::blas::BlasKernel;
use super::norm::{EpsMode, NormKernel};
use crate::engine::View;

/// A tensor viewed as `[outer, channels, inner]` (row-major): element (o, c, i) sits at
/// `(o * channels + c) * inner + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelDims {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
}

impl ChannelDims {
    pub fn new(outer: usize, channels: usize, inner: usize) -> Self {
        ChannelDims {
            outer,
            channels,
            inner,
        }
    }
    pub fn count(&self) -> usize {
        self.outer * self.channels * self.inner
    }
}

/// A unary function with Caffe's exact formulas. `Unary` computes `y = f(x)`; `UnaryBackward`
/// computes `dx = dy * f'(x)` from the bottom data `x` and/or the top data `y`, reading the same
/// values Caffe's Backward_cpu reads (so an in-place layer, where x and y are one tensor, behaves
/// as in Caffe).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// y = max(x, 0) + negative_slope * min(x, 0); dx = dy * ((x > 0) + negative_slope * (x <= 0)).
    Relu { negative_slope: f32 },
    /// y = 0.5 * tanh(0.5 * x) + 0.5; dx = dy * y * (1 - y).
    Sigmoid,
    /// y = tanh(x); dx = dy * (1 - y^2).
    TanH,
    /// y = |x|; dx = dy * sign(x) (sign(0) = 0).
    AbsVal,
    /// y = x > 0 ? x + ln(1 + e^-x) : ln(1 + e^x); dx = dy * e / (e + 1), e = exp(min(x, 50)).
    Bnll,
    /// y = max(x, 0) + alpha * (exp(min(x, 0)) - 1); dx = dy * ((x > 0) + (alpha + y) * (x <= 0)).
    Elu { alpha: f32 },
    /// y = (shift + scale * x)^power (a constant shift^power, or 1 for power 0, when
    /// power * scale == 0); dx = dy * power * scale * (shift + scale * x)^(power - 1), computed
    /// with Caffe's special cases (power 2, shift 0, power 1, power * scale 0).
    Power { power: f32, scale: f32, shift: f32 },
    /// y = outer_scale * exp(inner_scale * x); dx = dy * y * inner_scale.
    Exp { inner_scale: f32, outer_scale: f32 },
    /// y = base_scale * ln(scale * x + shift); dx = dy * scale * base_scale / (scale * x + shift).
    Log {
        scale: f32,
        shift: f32,
        base_scale: f32,
    },
    /// y = x > threshold ? 1 : 0 (strict); no gradient: dx = 0.
    Threshold { threshold: f32 },
    /// y = max(min, min(x, max)); dx = dy * (min <= x && x <= max).
    Clip { min: f32, max: f32 },
    /// y = x * s, s = sigmoid(beta * x); dx = dy * (beta * y + s * (1 - beta * y)).
    Swish { beta: f32 },
}

impl UnaryOp {
    /// y = scale * x (a copy when scale is 1).
    pub fn scale(scale: f32) -> Self {
        UnaryOp::Power {
            power: 1.0,
            scale,
            shift: 0.0,
        }
    }
    /// y = scale * x + shift.
    pub fn affine(scale: f32, shift: f32) -> Self {
        UnaryOp::Power {
            power: 1.0,
            scale,
            shift,
        }
    }
}

/// The n-ary element-wise operation of Caffe's Eltwise layer.
#[derive(Clone, Debug, PartialEq)]
pub enum NaryOp {
    /// y = sum_j coeffs[j] * x_j (summed in input order starting from 0).
    Sum { coeffs: Vec<f32> },
    /// y = prod_j x_j. Backward: stable -> dx_i = dy * prod_{j != i} x_j, else dx_i = dy * y / x_i.
    Prod { stable: bool },
    /// y = max_j x_j with Caffe's tie rule (between x_0 and x_1 a tie picks x_1, later inputs must
    /// be strictly greater); argmax receives the winning input index (as f32).
    /// Backward: dx_i = argmax == i ? dy : 0.
    Max,
}

/// The per-element weight of a [`ElementwiseKernel::ChannelSum`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SumWeight {
    /// Plain sum of `a`.
    One,
    /// Sum of a * b.
    By(View),
    /// Sum of a * min(b, 0) (= a * b * (b <= 0), PReLU's slope gradient).
    ByNegPart(View),
}

#[derive(Clone, Debug)]
pub enum ElementwiseKernel {
    /// y = op(x) element-wise (x and y of equal length; they may be the same view).
    Unary { op: UnaryOp, x: View, y: View },
    /// dx = dy * op'(x), from x (bottom data) and y (top data) as described on [`UnaryOp`].
    UnaryBackward {
        op: UnaryOp,
        x: View,
        y: View,
        dy: View,
        dx: View,
    },
    /// y = op(xs) element-wise over equally long inputs; `argmax` (same length) is written for
    /// [`NaryOp::Max`] and ignored otherwise.
    Nary {
        op: NaryOp,
        xs: Vec<View>,
        y: View,
        argmax: Option<View>,
    },
    /// dx = dy * dy_out/dxs[index] (see [`NaryOp`]); y is the forward output, argmax the forward's.
    NaryBackward {
        op: NaryOp,
        index: usize,
        xs: Vec<View>,
        y: View,
        argmax: Option<View>,
        dy: View,
        dx: View,
    },
    /// y[o, c, i] = x[o, c, i] * scale[c] + bias[c] (a missing scale is 1, a missing bias 0).
    ChannelAffine {
        dims: ChannelDims,
        x: View,
        scale: Option<View>,
        bias: Option<View>,
        y: View,
    },
    /// y[c] = beta * y[c] + sum_{o, i} a[o, c, i] * w[o, c, i] (w from `weight`); beta 0 overwrites.
    ChannelSum {
        dims: ChannelDims,
        a: View,
        weight: SumWeight,
        beta: f32,
        y: View,
    },
    /// The backward of y = x * scale[c] + bias[c] (Scale) in one pass over dy: each part is
    /// optional and is exactly the kernel [`Self::channel_affine_backward_parts`] lists for it, so
    /// engines may run those instead. `dx` may be `dy` itself (an in-place layer).
    ///
    /// The backwards of the in-place layers around an in-place Scale may join the pass (the net
    /// fuses the run BatchNorm, Scale, ReLU after a convolution): then dx is dy, and the pass
    /// takes each element through the neuron's backward, the Scale's and the BatchNorm's.
    ChannelAffineBackward {
        dims: ChannelDims,
        dy: View,
        /// Before everything: dy = the backward of the neuron after the Scale (op, x, y as for
        /// [`ElementwiseKernel::UnaryBackward`]), in place.
        neuron_grad: Option<(UnaryOp, View, View)>,
        /// bias_diff[c] = beta * bias_diff[c] + sum dy: (bias_diff, beta).
        bias_grad: Option<(View, f32)>,
        /// scale_diff[c] = beta * scale_diff[c] + sum dy * x: (x, scale_diff, beta).
        scale_grad: Option<(View, View, f32)>,
        /// dx = dy * scale[c]: (scale, dx), after the sums have read dy.
        data_grad: Option<(View, View)>,
        /// After dx: dx = dx / std[c], the backward of the BatchNorm with fixed statistics before
        /// the Scale ([`NormGrad::Frozen`](super::norm::NormGrad::Frozen)), in place: std.
        norm_grad: Option<View>,
    },
    /// The backward around a sum junction in one pass: the net joins the run Eltwise SUM,
    /// in-place neuron, Split (at every ResNet shortcut), and Split and Eltwise SUM use it alone;
    /// each part may be missing. First dy = sums[0] + sums[1] + ... in order (the Split's top
    /// diffs; with no sums dy is read as it is), then dy = the neuron's backward (op, x, y as for
    /// [`ElementwiseKernel::UnaryBackward`]) in place, and dy is written; then each out
    /// (coeff, dx) gets dx = coeff * dy (the Eltwise's bottoms). The values equal
    /// [`Self::junction_backward_parts`]' bit for bit.
    JunctionBackward {
        sums: Vec<View>,
        neuron_grad: Option<(UnaryOp, View, View)>,
        dy: View,
        outs: Vec<(f32, View)>,
    },
    /// A run of point-wise steps over one tensor in one memory pass: the forwards of in-place
    /// layers (BatchNorm with fixed statistics, Scale, ReLU, ...) fused by the net. Each step
    /// computes exactly what its own kernel would (see [`Self::channel_stages_parts`]), so the
    /// values equal the separate kernels' bit for bit. The first step reads x, the others the
    /// previous step's values; the last writes y (x itself when in place).
    ChannelStages {
        dims: ChannelDims,
        x: View,
        y: View,
        stages: Vec<ChannelStage>,
    },
    /// PReLU: y[o, c, i] = max(x, 0) + slope[c] * min(x, 0).
    PRelu {
        dims: ChannelDims,
        x: View,
        slope: View,
        y: View,
    },
    /// PReLU backward to its bottom: dx = dy * ((x > 0) + slope[c] * (x <= 0)).
    PReluBackward {
        dims: ChannelDims,
        x: View,
        slope: View,
        dy: View,
        dx: View,
    },
    /// Dropout with an on-device mask: y[i] = keep(seed, i) ? x[i] * scale : 0 where
    /// keep(seed, i) = uniform(hash(seed, i)) >= ratio (see [`dropout_keep`]). The same seed gives
    /// the same mask, so backward is the same kernel with x = top diff, y = bottom diff.
    Dropout {
        seed: u32,
        ratio: f32,
        scale: f32,
        x: View,
        y: View,
    },
}

/// One step of an [`ElementwiseKernel::ChannelStages`] pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStage {
    pub op: StageOp,
    /// Receives the step's input (an in-place layer's copy of its bottom for backward).
    pub save: Option<View>,
}

/// What a [`ChannelStage`] computes from its input v, per channel c of the pass's dims.
#[derive(Clone, Debug, PartialEq)]
pub enum StageOp {
    /// [`NormKernel::Normalize`] with both statistics: std[c] = std_of(var[c]) is written, then
    /// v = (v - mean[c]) / std[c].
    Normalize {
        eps: f32,
        eps_mode: EpsMode,
        mean: View,
        var: View,
        std: View,
    },
    /// [`ElementwiseKernel::ChannelAffine`]: v = v * scale[c] + bias[c].
    Affine {
        scale: Option<View>,
        bias: Option<View>,
    },
    /// [`ElementwiseKernel::Unary`]: v = op(v).
    Unary(UnaryOp),
    /// [`NaryOp::Sum`] of v and `others` (equally long, read at v's index) with one
    /// coefficient per input, v's first: v = 0 + coeffs[0] * v, then v += coeffs[j] * others[j - 1].
    Sum { coeffs: Vec<f32>, others: Vec<View> },
}

/// One step of the kernel sequence a [`ElementwiseKernel::ChannelStages`] stands for.
#[derive(Clone, Debug)]
pub enum StagePart {
    Copy {
        src: View,
        dst: View,
    },
    /// [`crate::engine::Engine::move_values`]: `src` is overwritten next.
    Move {
        src: View,
        dst: View,
    },
    Launch(Box<Kernel>),
}

impl StagePart {
    fn launch(kernel: Kernel) -> Self {
        StagePart::Launch(Box::new(kernel))
    }
}

/// PCG-RXS-M-XS 32-bit hash (GPU-friendly: 32-bit integer ops only).
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The dropout hash of element `index` for a seed: `pcg_hash(index + pcg_hash(seed))`. Every
/// engine must use exactly this.
pub fn dropout_hash(seed: u32, index: u32) -> u32 {
    pcg_hash(index.wrapping_add(pcg_hash(seed)))
}

/// The integer form of the keep test: keep iff `dropout_hash(seed, i) >> 8 >= threshold` with
/// threshold = ceil(ratio * 2^24), i.e. a uniform u = (hash >> 8) / 2^24 in [0, 1) has u >= ratio.
pub fn dropout_threshold(ratio: f32) -> u32 {
    (ratio.clamp(0.0, 1.0) as f64 * 16_777_216.0).ceil() as u32
}

/// Whether dropout keeps element `index` (probability 1 - ratio).
pub fn dropout_keep(seed: u32, index: u32, ratio: f32) -> bool {
    dropout_hash(seed, index) >> 8 >= dropout_threshold(ratio)
}

impl ElementwiseKernel {
    /// The separate copies and kernels a [`ElementwiseKernel::ChannelStages`] stands for, in
    /// order; None for other kernels.
    pub fn channel_stages_parts(&self) -> Option<Vec<StagePart>> {
        let ElementwiseKernel::ChannelStages { dims, x, y, stages } = self else {
            return None;
        };
        let (dims, y) = (*dims, *y);
        let mut parts = Vec::new();
        let mut input = *x;
        for stage in stages {
            if let Some(save) = stage.save {
                if input == y {
                    // The step overwrites y whole: y's values may move to the save, and the step
                    // reads them there (as an in-place Scale does on its own).
                    parts.push(StagePart::Move {
                        src: input,
                        dst: save,
                    });
                    input = save;
                } else {
                    parts.push(StagePart::Copy {
                        src: input,
                        dst: save,
                    });
                }
            }
            let kernel = match stage.op.clone() {
                StageOp::Normalize {
                    eps,
                    eps_mode,
                    mean,
                    var,
                    std,
                } => Kernel::Norm(NormKernel::Normalize {
                    dims,
                    eps,
                    eps_mode,
                    x: input,
                    mean,
                    var: Some(var),
                    std: Some(std),
                    y,
                }),
                StageOp::Affine { scale, bias } => {
                    Kernel::Elementwise(ElementwiseKernel::ChannelAffine {
                        dims,
                        x: input,
                        scale,
                        bias,
                        y,
                    })
                }
                StageOp::Unary(op) => {
                    Kernel::Elementwise(ElementwiseKernel::Unary { op, x: input, y })
                }
                StageOp::Sum { coeffs, others } => Kernel::Elementwise(ElementwiseKernel::Nary {
                    op: NaryOp::Sum { coeffs },
                    xs: [input].into_iter().chain(others).collect(),
                    y,
                    argmax: None,
                }),
            };
            parts.push(StagePart::Launch(Box::new(kernel)));
            input = y;
        }
        if stages.is_empty() && *x != y {
            parts.push(StagePart::Copy { src: *x, dst: y });
        }
        Some(parts)
    }

    /// The kernels a [`ElementwiseKernel::JunctionBackward`] stands for, in order: Split's copy
    /// and additions, the neuron's backward, one Eltwise SUM backward per out; None for other
    /// kernels.
    pub fn junction_backward_parts(&self) -> Option<Vec<StagePart>> {
        let ElementwiseKernel::JunctionBackward {
            sums,
            neuron_grad,
            dy,
            outs,
        } = self
        else {
            return None;
        };
        let dy = *dy;
        let mut parts = Vec::new();
        if let Some((first, rest)) = sums.split_first() {
            parts.push(StagePart::Copy {
                src: *first,
                dst: dy,
            });
            for &x in rest {
                parts.push(StagePart::launch(Kernel::Blas(BlasKernel::Axpby {
                    alpha: 1.0,
                    x,
                    beta: 1.0,
                    y: dy,
                })));
            }
        }
        if let Some((op, x, y)) = *neuron_grad {
            parts.push(StagePart::launch(Kernel::Elementwise(
                ElementwiseKernel::UnaryBackward {
                    op,
                    x,
                    y,
                    dy,
                    dx: dy,
                },
            )));
        }
        for &(coeff, dx) in outs {
            // The backward of a one-input sum y = coeff * x.
            parts.push(StagePart::launch(Kernel::Elementwise(
                ElementwiseKernel::NaryBackward {
                    op: NaryOp::Sum {
                        coeffs: vec![coeff],
                    },
                    index: 0,
                    xs: vec![dy],
                    y: dy,
                    argmax: None,
                    dy,
                    dx,
                },
            )));
        }
        Some(parts)
    }

    /// A [`ElementwiseKernel::ChannelAffineBackward`] with its neighbours' steps as separate
    /// kernels: the neuron's backward, the kernel without those steps, the BatchNorm's backward
    /// (what an engine without a joined pass runs); None for other kernels.
    pub fn channel_affine_backward_joined_parts(&self) -> Option<Vec<Kernel>> {
        let &ElementwiseKernel::ChannelAffineBackward {
            dims,
            dy,
            neuron_grad,
            bias_grad,
            scale_grad,
            data_grad,
            norm_grad,
        } = self
        else {
            return None;
        };
        let mut parts = Vec::new();
        if let Some((op, x, y)) = neuron_grad {
            parts.push(Kernel::Elementwise(ElementwiseKernel::UnaryBackward {
                op,
                x,
                y,
                dy,
                dx: dy,
            }));
        }
        parts.push(Kernel::Elementwise(
            ElementwiseKernel::ChannelAffineBackward {
                dims,
                dy,
                neuron_grad: None,
                bias_grad,
                scale_grad,
                data_grad,
                norm_grad: None,
            },
        ));
        if let (Some(std), Some((_, dx))) = (norm_grad, data_grad) {
            parts.push(Kernel::Norm(NormKernel::NormalizeBackward {
                dims,
                grad: super::norm::NormGrad::Frozen,
                y: dx,
                dy: dx,
                std: Some(std),
                dx,
            }));
        }
        Some(parts)
    }

    /// The separate kernels a [`ElementwiseKernel::ChannelAffineBackward`] without neighbours'
    /// steps stands for, in the order that gives its result (the sums read dy before dx may
    /// overwrite it); None for other kernels (and with such steps, see
    /// [`Self::channel_affine_backward_joined_parts`]).
    pub fn channel_affine_backward_parts(&self) -> Option<Vec<ElementwiseKernel>> {
        let &ElementwiseKernel::ChannelAffineBackward {
            dims,
            dy,
            neuron_grad: None,
            bias_grad,
            scale_grad,
            data_grad,
            norm_grad: None,
        } = self
        else {
            return None;
        };
        let mut parts = Vec::new();
        if let Some((y, beta)) = bias_grad {
            parts.push(ElementwiseKernel::ChannelSum {
                dims,
                a: dy,
                weight: SumWeight::One,
                beta,
                y,
            });
        }
        if let Some((x, y, beta)) = scale_grad {
            parts.push(ElementwiseKernel::ChannelSum {
                dims,
                a: dy,
                weight: SumWeight::By(x),
                beta,
                y,
            });
        }
        if let Some((scale, dx)) = data_grad {
            parts.push(ElementwiseKernel::ChannelAffine {
                dims,
                x: dy,
                scale: Some(scale),
                bias: None,
                y: dx,
            });
        }
        Some(parts)
    }
}
