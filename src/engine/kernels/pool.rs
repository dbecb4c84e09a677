//! 2-D pooling over planes (num x channels) of [height, width] images, Caffe's window rules.
//!
//! Window of output (ph, pw): hstart = ph * stride_h - pad_h, clipped to [0, height) for MAX; AVE
//! divides by the window area clipped to [-pad, size + pad) (before clipping to the image);
//! STOCHASTIC windows ignore the padding: [ph * stride_h, min(ph * stride_h + kernel_h, height)).
//! Masks hold the plane-local index h * width + w of the chosen element as f32 (-1 for none).
use crate::engine::View;

#[derive(Clone, Debug)]
pub enum PoolKernel {
    /// top = max over the window clipped to the image (first maximum in row-major order wins);
    /// mask = its index.
    MaxForward {
        g: PoolGeom,
        bottom: View,
        top: View,
        mask: View,
    },
    /// top = sum over the clipped window / padded window area.
    AveForward {
        g: PoolGeom,
        bottom: View,
        top: View,
    },
    /// STOCHASTIC in TEST: top = (sum x^2) / (FLT_MIN + sum x) over the unpadded window.
    StochasticTest {
        g: PoolGeom,
        bottom: View,
        top: View,
    },
    /// STOCHASTIC in TRAIN: with u = uniform(seed, output index) in [0, 1), picks the first element of
    /// the unpadded window whose running sum reaches u * (window sum) (the last one if none does);
    /// top = that element, mask = its index.
    StochasticTrain {
        g: PoolGeom,
        bottom: View,
        top: View,
        mask: View,
        seed: u64,
    },
    /// bottom_diff[i] (+)= sum of top_diff over the outputs whose mask is i (MAX and STOCHASTIC TRAIN).
    /// Overwrites bottom_diff unless `accumulate`.
    MaskBackward {
        g: PoolGeom,
        top_diff: View,
        mask: View,
        bottom_diff: View,
        accumulate: bool,
    },
    /// bottom_diff (+)= sum over the windows containing the element of top_diff / padded window area.
    AveBackward {
        g: PoolGeom,
        top_diff: View,
        bottom_diff: View,
        accumulate: bool,
    },
    /// Gradient of the STOCHASTIC TEST output: bottom_diff[i] (+)= sum over windows containing i of
    /// top_diff * (2 x_i - top) / (FLT_MIN + window sum).
    StochasticTestBackward {
        g: PoolGeom,
        bottom: View,
        top: View,
        top_diff: View,
        bottom_diff: View,
        accumulate: bool,
    },
}

/// Pooling geometry. The bottom (and bottom_diff) is `num * channels` contiguous planes of
/// `height * width`; in top, top_diff and mask the plane (n, c) starts at
/// `n * top_num_stride + c * pooled_h * pooled_w` (so SPP can write its levels side by side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub num: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pooled_h: usize,
    pub pooled_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub top_num_stride: usize,
}

impl PoolGeom {
    pub fn bottom_len(&self) -> usize {
        self.num * self.channels * self.height * self.width
    }
    /// Length of a top view covering every plane: (num - 1) * top_num_stride + channels * pooled.
    pub fn top_len(&self) -> usize {
        if self.num == 0 {
            0
        } else {
            (self.num - 1) * self.top_num_stride + self.channels * self.pooled_h * self.pooled_w
        }
    }
}
