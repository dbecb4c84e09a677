//! Products with only a few rows in C (InnerProduct on small batches: 10 x 4096 x 9216 for CaffeNet's
//! fc6). They are bound by streaming the big operand from memory; the gemm crate packs it and
//! splits such shapes poorly (~20 GFLOP/s here), these kernels read it once, split across the
//! cores, and keep the few rows of the small operand in cache.
use rayon::prelude::*;

/// Rows of C up to which the skinny kernels are used.
pub const MAX_ROWS: usize = 16;

/// Columns of C per parallel task.
const COLS_PER_TASK: usize = 64;

/// C = alpha * A * B^T + beta * C where A is m x k (row i at `a[i * lda..][..k]`), B is n x k (row j
/// at `b[j * ldb..][..k]`) and C is m x n with row stride `ldc`: m * n dot products of length k.
#[allow(clippy::too_many_arguments)]
pub fn gemm_a_bt(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    beta: f32,
    (c, ldc): (&mut [f32], usize),
) {
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(COLS_PER_TASK))
        .into_par_iter()
        .map(|block| {
            let j0 = block * COLS_PER_TASK;
            let cols = COLS_PER_TASK.min(n - j0);
            // dots[i * cols + jj] = dot(A_i, B_{j0 + jj})
            let mut dots = vec![0f32; m * cols];
            dot_block(m, cols, k, (a, lda), (&b[j0 * ldb..], ldb), &mut dots);
            dots
        })
        .collect();
    for (block, dots) in blocks.iter().enumerate() {
        let j0 = block * COLS_PER_TASK;
        let cols = dots.len() / m.max(1);
        for i in 0..m {
            let row = &mut c[i * ldc + j0..][..cols];
            for (v, d) in row.iter_mut().zip(&dots[i * cols..][..cols]) {
                *v = if beta == 0.0 {
                    alpha * d
                } else {
                    alpha * d + beta * *v
                };
            }
        }
    }
}

/// C = alpha * A * B + beta * C where A is m x k (row i at `a[i * lda..][..k]`), B is k x n (row l at
/// `b[l * ldb..][..n]`) and C is m x n with row stride `ldc`: B is read row by row, once.
#[allow(clippy::too_many_arguments)]
pub fn gemm_a_b(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    beta: f32,
    (c, ldc): (&mut [f32], usize),
) {
    // Wider column blocks than `gemm_a_bt`: each task walks all k rows of B over its columns.
    let width = (COLS_PER_TASK * 4).min(n.max(1));
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(width))
        .into_par_iter()
        .map(|block| {
            let j0 = block * width;
            let cols = width.min(n - j0);
            let mut acc = vec![0f32; m * cols];
            for l in 0..k {
                let b_row = &b[l * ldb + j0..][..cols];
                for i in 0..m {
                    axpy(a[i * lda + l], b_row, &mut acc[i * cols..][..cols]);
                }
            }
            acc
        })
        .collect();
    for (block, acc) in blocks.iter().enumerate() {
        let j0 = block * width;
        let cols = acc.len() / m.max(1);
        for i in 0..m {
            let row = &mut c[i * ldc + j0..][..cols];
            for (v, s) in row.iter_mut().zip(&acc[i * cols..][..cols]) {
                *v = if beta == 0.0 {
                    alpha * s
                } else {
                    alpha * s + beta * *v
                };
            }
        }
    }
}

/// y += alpha * x (8 lanes so it vectorises).
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let mut xs = x.chunks_exact(8);
    let mut ys = y.chunks_exact_mut(8);
    for (xc, yc) in (&mut xs).zip(&mut ys) {
        for l in 0..8 {
            yc[l] += alpha * xc[l];
        }
    }
    for (xv, yv) in xs.remainder().iter().zip(ys.into_remainder()) {
        *yv += alpha * xv;
    }
}

/// out[i * cols + j] = dot(A_i, B_j) for i < m, j < cols.
fn dot_block(
    m: usize,
    cols: usize,
    k: usize,
    a: (&[f32], usize),
    b: (&[f32], usize),
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { x86::dot_block(m, cols, k, a, b, out) };
        return;
    }
    for i in 0..m {
        for j in 0..cols {
            out[i * cols + j] = super::elementwise::dot(&a.0[i * a.1..][..k], &b.0[j * b.1..][..k]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Columns (B rows) per register tile.
    const NR: usize = 4;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_block(
        m: usize,
        cols: usize,
        k: usize,
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        out: &mut [f32],
    ) {
        let mut j = 0;
        while j < cols {
            // Four columns at a time, the last few one by one.
            let nr = if cols - j >= NR { NR } else { 1 };
            let mut i = 0;
            while i < m {
                // 3 x 4 accumulators plus 3 + 4 loads fit the 16 ymm registers.
                let mr = 3.min(m - i);
                let mut sums = [[0f32; NR]; 3];
                match (mr, nr) {
                    (3, NR) => tile::<3, NR>(k, a, lda, i, b, ldb, j, &mut sums),
                    (2, NR) => tile::<2, NR>(k, a, lda, i, b, ldb, j, &mut sums),
                    (_, NR) => tile::<1, NR>(k, a, lda, i, b, ldb, j, &mut sums),
                    (3, _) => tile::<3, 1>(k, a, lda, i, b, ldb, j, &mut sums),
                    (2, _) => tile::<2, 1>(k, a, lda, i, b, ldb, j, &mut sums),
                    _ => tile::<1, 1>(k, a, lda, i, b, ldb, j, &mut sums),
                }
                for (r, row) in sums.iter().enumerate().take(mr) {
                    out[(i + r) * cols + j..][..nr].copy_from_slice(&row[..nr]);
                }
                i += mr;
            }
            j += nr;
        }
    }

    /// sums[r][c] = dot(A_{i + r}, B_{j + c}) for r < MR, c < NC.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    fn tile<const MR: usize, const NC: usize>(
        k: usize,
        a: &[f32],
        lda: usize,
        i: usize,
        b: &[f32],
        ldb: usize,
        j: usize,
        sums: &mut [[f32; NR]; 3],
    ) {
        let a_rows: [&[f32]; MR] = std::array::from_fn(|r| &a[(i + r) * lda..][..k]);
        let b_rows: [&[f32]; NC] = std::array::from_fn(|c| &b[(j + c) * ldb..][..k]);
        let mut acc = [[_mm256_setzero_ps(); NC]; MR];
        let full = k / 8 * 8;
        let mut l = 0;
        while l < full {
            // SAFETY: l + 8 <= k and every row slice has k elements.
            unsafe {
                let bv: [__m256; NC] =
                    std::array::from_fn(|c| _mm256_loadu_ps(b_rows[c].as_ptr().add(l)));
                for r in 0..MR {
                    let av = _mm256_loadu_ps(a_rows[r].as_ptr().add(l));
                    for c in 0..NC {
                        acc[r][c] = _mm256_fmadd_ps(av, bv[c], acc[r][c]);
                    }
                }
            }
            l += 8;
        }
        for r in 0..MR {
            for c in 0..NC {
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][c]) };
                let mut s: f32 = lanes.iter().sum();
                for t in full..k {
                    s += a_rows[r][t] * b_rows[c][t];
                }
                sums[r][c] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], b_t: bool) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let bv = if b_t { b[j * k + l] } else { b[l * n + j] };
                    c[i * n + j] += a[i * k + l] as f64 * bv as f64;
                }
            }
        }
        c
    }

    #[test]
    fn skinny_products_equal_the_definition() {
        let mut rng = Rng::new(7);
        let mut uniform =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.uniform_range(-1.0, 1.0)).collect() };
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (10, 130, 67),
            (16, 64, 8),
            (7, 257, 33),
            (2, 4, 9),
        ] {
            let (a, b) = (uniform(m * k), uniform(n * k));
            let c0 = uniform(m * n);
            for b_t in [true, false] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (2.0, -0.5)] {
                    let mut c = c0.clone();
                    let ldb = if b_t { k } else { n };
                    if b_t {
                        gemm_a_bt((m, n, k), alpha, (&a, k), (&b, ldb), beta, (&mut c, n));
                    } else {
                        gemm_a_b((m, n, k), alpha, (&a, k), (&b, ldb), beta, (&mut c, n));
                    }
                    let want = naive(m, n, k, &a, &b, b_t);
                    for (t, (&got, &w)) in c.iter().zip(&want).enumerate() {
                        let w = alpha as f64 * w + beta as f64 * c0[t] as f64;
                        assert!(
                            (got as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                            "{m}x{n}x{k} b_t={b_t} alpha={alpha} beta={beta} at {t}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
