//! Matrix products and BLAS-1 style vector operations.
use crate::engine::View;

#[derive(Clone, Debug)]
pub enum BlasKernel {
    /// For b in 0..batch: C_b = alpha * op(A_b) * op(B_b) + beta * C_b, row-major, where
    /// op(A_b) is m x k, op(B_b) is k x n, C_b is m x n and X_b starts at X.offset + b * stride_x.
    Gemm(Gemm),
    /// y = alpha * x + beta * y
    Axpby {
        alpha: f32,
        x: View,
        beta: f32,
        y: View,
    },
    /// y = alpha * y
    Scale { alpha: f32, y: View },
}

#[derive(Clone, Debug)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: View,
    pub b: View,
    pub c: View,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl Gemm {
    /// A single (batch 1) product.
    #[allow(clippy::too_many_arguments)]
    pub fn single(
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: View,
        b: View,
        beta: f32,
        c: View,
    ) -> Self {
        Gemm {
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha,
            beta,
            a,
            b,
            c,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        }
    }
}
