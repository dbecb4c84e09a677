//! Data movement and reductions: strided block copies (Concat, Slice, Crop, Tile), row gathers and
//! scatters by an index tensor (BatchReindex, Filter) and sums along an axis (Reduction, Tile's
//! backward).
use crate::engine::View;

/// The per-element function summed by [`TransferKernel::Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// x
    Sum,
    /// |x|
    Asum,
    /// x^2
    Sumsq,
}

#[derive(Clone, Debug)]
pub enum TransferKernel {
    /// For every multi-index `idx` in `dims`: `dst[sum idx_k * dst_strides_k] =
    /// src[sum idx_k * src_strides_k]`, positions relative to the views' starts (a src stride of 0
    /// broadcasts). The destination positions must be distinct; `add` accumulates instead.
    Strided {
        src: View,
        dst: View,
        dims: Vec<usize>,
        src_strides: Vec<usize>,
        dst_strides: Vec<usize>,
        add: bool,
    },
    /// dst row r (of `row_len`) = src row `index[r]` for r in 0..rows (index values are floats,
    /// truncated like Caffe's static_cast<int>; src has `src_rows` rows; an index outside
    /// 0..src_rows is an error on the CPU and yields a zero row elsewhere).
    GatherRows {
        src: View,
        index: View,
        dst: View,
        rows: usize,
        row_len: usize,
        src_rows: usize,
    },
    /// dst row j (of `row_len`, j in 0..dst_rows) = sum of src rows r (r in 0..rows) with
    /// index[r] == j; rows never indexed become 0 (dst is overwritten).
    ScatterAddRows {
        src: View,
        index: View,
        dst: View,
        rows: usize,
        row_len: usize,
        dst_rows: usize,
    },
    /// y[o*inner + i] = coeff * sum_d f(x[(o*dim + d)*inner + i]), f per `op`.
    Reduce {
        x: View,
        y: View,
        outer: usize,
        dim: usize,
        inner: usize,
        op: ReduceOp,
        coeff: f32,
    },
    /// Backward of `Reduce` with inner = 1: dx[o*dim + d] = g * coeff * dy[o], g = 1 (Sum), sign(x)
    /// (Asum) or 2x (Sumsq).
    ReduceGrad {
        x: View,
        dy: View,
        dx: View,
        outer: usize,
        dim: usize,
        op: ReduceOp,
        coeff: f32,
    },
}
