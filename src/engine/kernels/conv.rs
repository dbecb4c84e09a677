//! Convolution helpers: N-D im2col / col2im over a batch of images, per-channel bias addition and
//! reduction, and the row gather / scatter of Embed.
use crate::engine::View;

#[derive(Clone, Debug)]
pub enum ConvKernel {
    /// For b in 0..batch: col_b = im2col(im_b) (zero outside the padded image), laid out
    /// [channels * prod(kernel), prod(out)] with rows (c, k_0, .., k_{d-1}) row-major.
    Im2col(Im2col),
    /// For b in 0..batch: im_b = col2im(col_b): each image element is overwritten with the sum of the
    /// column entries that im2col would have read from it (0 when none).
    Col2im(Im2col),
    /// A 3x3 convolution by Winograd's minimal filtering (engines with [`Engine::has_winograd`]).
    ///
    /// [`Engine::has_winograd`]: crate::engine::Engine::has_winograd
    Winograd(Winograd),
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
