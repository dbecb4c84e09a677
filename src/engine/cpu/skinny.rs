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
/// `b[l * ldb..][..n]`) and C is m x n with row stride `ldc` (InnerProduct's data gradient). Each
/// core streams a contiguous range of B's rows once, in memory order, into its own m x n partial
/// sum; the partials are added at the end.
#[allow(clippy::too_many_arguments)]
pub fn gemm_a_b(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    beta: f32,
    (c, ldc): (&mut [f32], usize),
) {
    let parts = rayon::current_num_threads()
        .min(k.div_ceil(ROW_GROUP))
        .max(1);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let rows = p * k / parts..(p + 1) * k / parts;
            let mut acc = vec![0f32; m * n];
            simd::accumulate_a_b(m, n, rows, (a, lda), (b, ldb), &mut acc);
            acc
        })
        .collect();
    for i in 0..m {
        let row = &mut c[i * ldc..][..n];
        for (j, v) in row.iter_mut().enumerate() {
            let s: f32 = partials.iter().map(|acc| acc[i * n + j]).sum();
            *v = if beta == 0.0 {
                alpha * s
            } else {
                alpha * s + beta * *v
            };
        }
    }
}

/// C = alpha * A^T * B + beta * C where A is k x m (row l at `a[l * lda..][..m]`), B is k x n (row l
/// at `b[l * ldb..][..n]`), k is small and C (m x n, row stride `ldc`) big: a rank-k update, as in
/// InnerProduct's weight gradient over a small batch. Bound by streaming C: every element of C is
/// read and written once, the few rows of B stay in cache. With beta 0, C is not read.
#[allow(clippy::too_many_arguments)]
pub fn gemm_at_b(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    beta: f32,
    (c, ldc): (&mut [f32], usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    c[..(m - 1) * ldc + n]
        .par_chunks_mut(ldc * C_ROW_GROUP)
        .enumerate()
        .for_each(|(g, rows)| {
            let j0 = g * C_ROW_GROUP;
            let count = C_ROW_GROUP.min(m - j0);
            simd::update_at_b(
                (count, n, k),
                alpha,
                (&a[j0..], lda),
                (b, ldb),
                beta,
                (rows, ldc),
            );
        });
}

/// Rows of B summed together into a block of the partial C: the block stays in registers over
/// them and their column block in L1 over the rows of A. More rows mean more memory streams at once,
/// which the hardware prefetcher follows less well (16 rows ran 20% slower than 4 or 8 here).
const ROW_GROUP: usize = 8;

/// Rows of C updated together, sharing the column block of B in L1.
const C_ROW_GROUP: usize = 8;

/// Columns per register block: 64 floats are 4 AVX-512 or 8 AVX2 accumulators, enough independent
/// chains to hide the FMA latency.
const BLOCK: usize = 64;

/// Kernels written once with plain arrays and compiled for AVX-512, AVX2 + FMA or the baseline,
/// chosen at run time.
mod simd {
    use std::ops::Range;

    #[inline(always)]
    fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
        if FMA { a.mul_add(b, c) } else { c + a * b }
    }

    /// acc[i * n + j] += sum over l in `rows` of A[i, l] * B[l, j].
    pub fn accumulate_a_b(
        m: usize,
        n: usize,
        rows: Range<usize>,
        a: (&[f32], usize),
        b: (&[f32], usize),
        acc: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { x86::accumulate_a_b_avx512(m, n, rows, a, b, acc) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { x86::accumulate_a_b_avx2(m, n, rows, a, b, acc) };
            }
        }
        accumulate_a_b_body::<false>(m, n, rows, a, b, acc)
    }

    /// C rows (count of them) = alpha * A^T * B + beta * C, A's columns starting at `a`.
    pub fn update_at_b(
        dims: (usize, usize, usize),
        alpha: f32,
        a: (&[f32], usize),
        b: (&[f32], usize),
        beta: f32,
        c: (&mut [f32], usize),
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                if beta == 0.0 && c.1.is_multiple_of(16) {
                    // SAFETY: as below.
                    return unsafe { x86::write_at_b_streaming(dims, alpha, a, b, c) };
                }
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { x86::update_at_b_avx512(dims, alpha, a, b, beta, c) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { x86::update_at_b_avx2(dims, alpha, a, b, beta, c) };
            }
        }
        update_at_b_body::<false>(dims, alpha, a, b, beta, c)
    }

    #[inline(always)]
    pub(super) fn accumulate_a_b_body<const FMA: bool>(
        m: usize,
        n: usize,
        rows: Range<usize>,
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        acc: &mut [f32],
    ) {
        let mut l0 = rows.start;
        while l0 < rows.end {
            // A group of B's rows: each of its column blocks is loaded from memory for the first
            // row of A and from L1 for the others.
            let l1 = (l0 + super::ROW_GROUP).min(rows.end);
            let mut j = 0;
            while j + super::BLOCK <= n {
                for i in 0..m {
                    let out: &mut [f32; super::BLOCK] =
                        (&mut acc[i * n + j..][..super::BLOCK]).try_into().unwrap();
                    let mut sum = *out;
                    for l in l0..l1 {
                        let s = a[i * lda + l];
                        let row: &[f32; super::BLOCK] =
                            b[l * ldb + j..][..super::BLOCK].try_into().unwrap();
                        for t in 0..super::BLOCK {
                            sum[t] = madd::<FMA>(s, row[t], sum[t]);
                        }
                    }
                    *out = sum;
                }
                j += super::BLOCK;
            }
            if j < n {
                for i in 0..m {
                    let out = &mut acc[i * n + j..i * n + n];
                    for l in l0..l1 {
                        let s = a[i * lda + l];
                        for (o, &v) in out.iter_mut().zip(&b[l * ldb + j..l * ldb + n]) {
                            *o = madd::<FMA>(s, v, *o);
                        }
                    }
                }
            }
            l0 = l1;
        }
    }

    #[inline(always)]
    pub(super) fn update_at_b_body<const FMA: bool>(
        (count, n, k): (usize, usize, usize),
        alpha: f32,
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        beta: f32,
        (c, ldc): (&mut [f32], usize),
    ) {
        // With beta 0 the old values are not read (not even loaded: a cleared diff may hold
        // anything, and skipping the load halves the memory traffic).
        let finish = |sum: &[f32], out: &mut [f32]| {
            if beta == 0.0 {
                for (o, &s) in out.iter_mut().zip(sum) {
                    *o = alpha * s;
                }
            } else {
                for (o, &s) in out.iter_mut().zip(sum) {
                    *o = alpha * s + beta * *o;
                }
            }
        };
        // The block's k rows of B, packed (see write_at_b_streaming).
        let mut packed = vec![0f32; k * super::BLOCK];
        let mut j = 0;
        while j < n {
            let width = super::BLOCK.min(n - j);
            if width == super::BLOCK {
                for (l, dst) in packed.chunks_exact_mut(super::BLOCK).enumerate() {
                    dst.copy_from_slice(&b[l * ldb + j..][..super::BLOCK]);
                }
            }
            for r in 0..count {
                let out = &mut c[r * ldc + j..][..width];
                if width == super::BLOCK {
                    let mut sum = [0f32; super::BLOCK];
                    for l in 0..k {
                        let s = a[l * lda + r];
                        let row: &[f32; super::BLOCK] = packed[l * super::BLOCK..][..super::BLOCK]
                            .try_into()
                            .unwrap();
                        for t in 0..super::BLOCK {
                            sum[t] = madd::<FMA>(s, row[t], sum[t]);
                        }
                    }
                    finish(&sum, out);
                } else {
                    let mut sum = [0f32; super::BLOCK];
                    for l in 0..k {
                        let s = a[l * lda + r];
                        for (t, &v) in b[l * ldb + j..][..width].iter().enumerate() {
                            sum[t] = madd::<FMA>(s, v, sum[t]);
                        }
                    }
                    finish(&sum[..width], out);
                }
            }
            j += width;
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::ops::Range;

        #[target_feature(enable = "avx512f,fma")]
        pub(super) fn accumulate_a_b_avx512(
            m: usize,
            n: usize,
            rows: Range<usize>,
            a: (&[f32], usize),
            b: (&[f32], usize),
            acc: &mut [f32],
        ) {
            super::accumulate_a_b_body::<true>(m, n, rows, a, b, acc)
        }

        #[target_feature(enable = "avx2,fma")]
        pub(super) fn accumulate_a_b_avx2(
            m: usize,
            n: usize,
            rows: Range<usize>,
            a: (&[f32], usize),
            b: (&[f32], usize),
            acc: &mut [f32],
        ) {
            super::accumulate_a_b_body::<true>(m, n, rows, a, b, acc)
        }

        #[target_feature(enable = "avx512f,fma")]
        pub(super) fn update_at_b_avx512(
            dims: (usize, usize, usize),
            alpha: f32,
            a: (&[f32], usize),
            b: (&[f32], usize),
            beta: f32,
            c: (&mut [f32], usize),
        ) {
            super::update_at_b_body::<true>(dims, alpha, a, b, beta, c)
        }

        /// [`super::update_at_b_body`] with beta 0 and rows of C that share their alignment
        /// (`ldc` a multiple of 16): the 64-byte aligned column blocks are written with
        /// streaming stores, which do not first read C's lines into the cache (a third of the
        /// memory traffic of a big weight gradient), the few columns around them as usual.
        #[target_feature(enable = "avx512f,fma")]
        pub(super) fn write_at_b_streaming(
            (count, n, k): (usize, usize, usize),
            alpha: f32,
            (a, lda): (&[f32], usize),
            (b, ldb): (&[f32], usize),
            (c, ldc): (&mut [f32], usize),
        ) {
            use std::arch::x86_64::*;
            const BLOCK: usize = super::super::BLOCK;
            let head = ((64 - c.as_ptr() as usize % 64) % 64 / 4).min(n);
            let blocks = (n - head) / BLOCK;
            let tail = head + blocks * BLOCK;
            super::update_at_b_body::<true>(
                (count, head, k),
                alpha,
                (a, lda),
                (b, ldb),
                0.0,
                (c, ldc),
            );
            if tail < n {
                super::update_at_b_body::<true>(
                    (count, n - tail, k),
                    alpha,
                    (a, lda),
                    (&b[tail..], ldb),
                    0.0,
                    (&mut c[tail..], ldc),
                );
            }
            let scale = _mm512_set1_ps(alpha);
            // The block's k rows of B, packed: rows of B a multiple of 4 KiB apart (CaffeNet's
            // fc6, 9216 floats) fall into the same L1 sets, and more of them than its ways evict
            // each other for every row of C (fc6's backward 26 -> 23 ms with the packing).
            let mut packed = vec![0f32; k * BLOCK];
            for block in 0..blocks {
                let j = head + block * BLOCK;
                for (l, dst) in packed.chunks_exact_mut(BLOCK).enumerate() {
                    dst.copy_from_slice(&b[l * ldb + j..][..BLOCK]);
                }
                for r in 0..count {
                    let mut sum = [_mm512_setzero_ps(); BLOCK / 16];
                    for l in 0..k {
                        let s = _mm512_set1_ps(a[l * lda + r]);
                        let row = &packed[l * BLOCK..][..BLOCK];
                        for (q, acc) in sum.iter_mut().enumerate() {
                            // SAFETY: row holds BLOCK floats.
                            let v = unsafe { _mm512_loadu_ps(row.as_ptr().add(16 * q)) };
                            *acc = _mm512_fmadd_ps(s, v, *acc);
                        }
                    }
                    let out = &mut c[r * ldc + j..][..BLOCK];
                    for (q, acc) in sum.iter().enumerate() {
                        // SAFETY: out holds BLOCK floats and starts 64-byte aligned (every row
                        // has the first row's alignment and j is past the head).
                        unsafe {
                            _mm512_stream_ps(
                                out.as_mut_ptr().add(16 * q),
                                _mm512_mul_ps(scale, *acc),
                            )
                        };
                    }
                }
            }
            // Streaming stores are weakly ordered: make them visible before the task ends.
            _mm_sfence();
        }

        #[target_feature(enable = "avx2,fma")]
        pub(super) fn update_at_b_avx2(
            dims: (usize, usize, usize),
            alpha: f32,
            a: (&[f32], usize),
            b: (&[f32], usize),
            beta: f32,
            c: (&mut [f32], usize),
        ) {
            super::update_at_b_body::<true>(dims, alpha, a, b, beta, c)
        }
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
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { x86::dot_block_avx512(m, cols, k, a, b, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            unsafe { x86::dot_block(m, cols, k, a, b, out) };
            return;
        }
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

    /// A `dot_block` for one vector width: tiles of up to `$mr` rows of A by `NR` columns, each
    /// B row streamed from memory serving `$mr` rows of A at once, and the tile function it runs.
    macro_rules! dot_kernels {
        (
            $(#[$doc:meta])*
            $block:ident, $tile:ident, $feature:literal, $mr:literal [$($rows:literal),*],
            $vec:ty, $lanes:literal, $zero:ident, $load:ident, $fmadd:ident, $hsum:expr
        ) => {
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            pub(super) fn $block(
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
                        let mr = ($mr).min(m - i);
                        let mut sums = [[0f32; NR]; $mr];
                        match (mr, nr) {
                            $(($rows, NR) => $tile::<$rows, NR>(k, a, lda, i, b, ldb, j, &mut sums),)*
                            $(($rows, _) => $tile::<$rows, 1>(k, a, lda, i, b, ldb, j, &mut sums),)*
                            _ => unreachable!("at most {} rows per tile", $mr),
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
            #[target_feature(enable = $feature)]
            fn $tile<const MR: usize, const NC: usize>(
                k: usize,
                a: &[f32],
                lda: usize,
                i: usize,
                b: &[f32],
                ldb: usize,
                j: usize,
                sums: &mut [[f32; NR]; $mr],
            ) {
                let a_rows: [&[f32]; MR] = std::array::from_fn(|r| &a[(i + r) * lda..][..k]);
                let b_rows: [&[f32]; NC] = std::array::from_fn(|c| &b[(j + c) * ldb..][..k]);
                let mut acc = [[$zero(); NC]; MR];
                let full = k / $lanes * $lanes;
                let mut l = 0;
                while l < full {
                    // SAFETY: l + lanes <= k and every row slice has k elements.
                    unsafe {
                        let bv: [$vec; NC] =
                            std::array::from_fn(|c| $load(b_rows[c].as_ptr().add(l)));
                        for r in 0..MR {
                            let av = $load(a_rows[r].as_ptr().add(l));
                            for c in 0..NC {
                                acc[r][c] = $fmadd(av, bv[c], acc[r][c]);
                            }
                        }
                    }
                    l += $lanes;
                }
                let hsum: fn($vec) -> f32 = $hsum;
                for r in 0..MR {
                    for c in 0..NC {
                        let mut s = hsum(acc[r][c]);
                        for t in full..k {
                            s += a_rows[r][t] * b_rows[c][t];
                        }
                        sums[r][c] = s;
                    }
                }
            }
        };
    }

    dot_kernels!(
        /// 3 x 4 accumulators plus 3 + 4 loads fit the 16 ymm registers.
        dot_block, tile, "avx2,fma", 3 [1, 2, 3],
        __m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps,
        |v| {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            lanes.iter().sum()
        }
    );

    dot_kernels!(
        /// 5 x 4 accumulators plus 4 + 1 loads of the 32 zmm registers.
        dot_block_avx512, tile512, "avx512f,fma", 5 [1, 2, 3, 4, 5],
        __m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps,
        _mm512_reduce_add_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Both vector widths of the dot-product tiles (only one of which `gemm_a_bt` picks on a
    /// given CPU) against the definition, on tile counts and lengths with remainders.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dot_blocks_of_every_width_equal_the_definition() {
        let mut rng = Rng::new(9);
        for &(m, cols, k) in &[(1, 1, 1), (7, 9, 37), (10, 4, 16), (3, 13, 100)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..cols * k)
                .map(|_| rng.uniform_range(-1.0, 1.0))
                .collect();
            let want: Vec<f64> = (0..m * cols)
                .map(|t| {
                    let (i, j) = (t / cols, t % cols);
                    (0..k)
                        .map(|l| a[i * k + l] as f64 * b[j * k + l] as f64)
                        .sum()
                })
                .collect();
            let mut runs: Vec<(&str, Vec<f32>)> = Vec::new();
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut out = vec![f32::NAN; m * cols];
                // SAFETY: the CPU has the features.
                unsafe { x86::dot_block(m, cols, k, (&a, k), (&b, k), &mut out) };
                runs.push(("avx2", out));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut out = vec![f32::NAN; m * cols];
                // SAFETY: the CPU has the features.
                unsafe { x86::dot_block_avx512(m, cols, k, (&a, k), (&b, k), &mut out) };
                runs.push(("avx512", out));
            }
            for (name, out) in runs {
                for (t, (&got, &w)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (got as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{name} {m}x{cols}x{k} at {t}: {got} vs {w}"
                    );
                }
            }
        }
    }

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
            (37, 200, 10),
            (5, 131, 40),
            (9, 272, 5),
        ] {
            let (a, b) = (uniform(m * k), uniform(n * k));
            let c0 = uniform(m * n);
            // A rank-k update: A^T is m x k, stored k x m.
            let a_t: Vec<f32> = (0..k * m).map(|t| a[(t % m) * k + t / m]).collect();
            let b_rows: Vec<f32> = (0..k * n).map(|t| b[(t % n) * k + t / n]).collect();
            for (alpha, beta) in [(1.0, 0.0), (2.0, 0.0), (0.5, 1.0), (2.0, -0.5)] {
                let mut c = c0.clone();
                gemm_at_b((m, n, k), alpha, (&a_t, m), (&b_rows, n), beta, (&mut c, n));
                let want = naive(m, n, k, &a, &b, true);
                for (t, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    let w = alpha as f64 * w + beta as f64 * c0[t] as f64;
                    assert!(
                        (got as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "at_b {m}x{n}x{k} alpha={alpha} beta={beta} at {t}: {got} vs {w}"
                    );
                }
            }
            for b_t in [true, false] {
                for (alpha, beta) in [(1.0, 0.0), (2.0, 0.0), (0.5, 1.0), (2.0, -0.5)] {
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
