use rayon::prelude::*;

use super::{Memory, skinny};
use crate::engine::kernels::blas::{BlasKernel, Gemm};

pub fn run(kernel: &BlasKernel, mem: &mut Memory) -> anyhow::Result<()> {
    match kernel {
        BlasKernel::Gemm(g) => {
            let span = |stride: usize, one: usize| stride * (g.batch - 1) + one;
            let (a_len, b_len, c_len) = (
                span(g.stride_a, g.m * g.k),
                span(g.stride_b, g.k * g.n),
                span(g.stride_c, g.m * g.n),
            );
            let (a, b, c) = (
                g.a.slice(0, a_len),
                g.b.slice(0, b_len),
                g.c.slice(0, c_len),
            );
            let threads = rayon::current_num_threads();
            let disjoint = g.stride_c >= g.m * g.n && g.m * g.n > 0;
            mem.with(&[c], &[a, b], |o, i| {
                if g.batch > 1 && threads > 1 && g.stride_c == 0 && g.beta == 1.0 {
                    // Entries all accumulate into C (weight gradients summed over images): each
                    // thread sums its share of the entries, then C gets the shares.
                    // The shares hold C's transpose where that product is faster.
                    let transposed = transposed_sum_pays(g.m, g.n, g.k);
                    let entry = if transposed {
                        Gemm {
                            m: g.n,
                            n: g.m,
                            trans_a: !g.trans_b,
                            trans_b: !g.trans_a,
                            beta: 1.0,
                            ..g.clone()
                        }
                    } else {
                        Gemm {
                            beta: 1.0,
                            ..g.clone()
                        }
                    };
                    let parts = threads.min(g.batch);
                    let shares: Vec<Vec<f32>> = (0..parts)
                        .into_par_iter()
                        .map(|p| {
                            let mut acc = vec![0f32; g.m * g.n];
                            for batch in p * g.batch / parts..(p + 1) * g.batch / parts {
                                let (a, b) =
                                    (&i[0][batch * g.stride_a..], &i[1][batch * g.stride_b..]);
                                let (a, b) = if transposed { (b, a) } else { (a, b) };
                                sgemm(&entry, a, b, &mut acc, false);
                            }
                            acc
                        })
                        .collect();
                    let c = &mut o[0][..g.m * g.n];
                    for share in &shares {
                        if transposed {
                            add_transposed(c, g.m, g.n, share);
                        } else {
                            for (c, s) in c.iter_mut().zip(share) {
                                *c += s;
                            }
                        }
                    }
                } else if g.batch >= threads && threads > 1 && disjoint {
                    // Whole products per thread: small per-image products split badly.
                    o[0].par_chunks_mut(g.stride_c)
                        .enumerate()
                        .for_each(|(batch, c)| {
                            sgemm(
                                g,
                                &i[0][batch * g.stride_a..],
                                &i[1][batch * g.stride_b..],
                                c,
                                false,
                            )
                        });
                } else {
                    for batch in 0..g.batch {
                        sgemm(
                            g,
                            &i[0][batch * g.stride_a..],
                            &i[1][batch * g.stride_b..],
                            &mut o[0][batch * g.stride_c..],
                            true,
                        );
                    }
                }
            });
        }
        BlasKernel::Axpby { alpha, x, beta, y } => {
            let (alpha, beta) = (*alpha, *beta);
            mem.with(&[*y], &[*x], |o, i| {
                for (y, &x) in o[0].iter_mut().zip(i[0]) {
                    *y = alpha * x + beta * *y;
                }
            });
        }
        BlasKernel::Scale { alpha, y } => {
            for v in mem.write(*y) {
                *v *= alpha;
            }
        }
    }
    Ok(())
}

/// Whether a sum of products C (m x n) += A_i B_i over long sums (k, weight gradients over
/// image positions) is faster computed as its transpose: the gemm crate runs products with fewer
/// rows than columns 1.1-1.4x faster transposed when k is long (a 1x1 layer that narrows the
/// channels, 128 -> 32 at 56x56: 4.1 -> 3.4 ms backward), and no faster at 7x7 positions, where
/// adding the transposed sums back costs more than it saves.
pub(super) fn transposed_sum_pays(m: usize, n: usize, k: usize) -> bool {
    m < n && k >= 256
}

/// c (rows x cols, row-major) += t^T, for t of cols x rows: in square tiles, so that neither
/// side is walked a column at a time across the whole matrix (a page per element).
pub(super) fn add_transposed(c: &mut [f32], rows: usize, cols: usize, t: &[f32]) {
    const TILE: usize = 16;
    assert!(c.len() >= rows * cols && t.len() >= rows * cols);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for j in c0..(c0 + TILE).min(cols) {
                    c[r * cols + j] += t[j * rows + r];
                }
            }
        }
    }
}

/// Rows of C up to which [`tiled_a_bt`] computes C = A B^T.
const TILED_MAX_ROWS: usize = 128;

/// C = alpha A B^T + beta C for C with few rows (an InnerProduct's batch of 17 to 128 images:
/// LeNet's ip1, 64 x 500 x 800), as C^T = B A^T in register tiles ([`super::tiles`]): A^T is a
/// few vectors wide, so B's rows stream past it as broadcasts and neither operand is packed.
/// The gemm crate packs B for such shapes (ip1's forward: 0.38 ms on two cores, here 0.30).
/// A is m x k, B n x k, C m x n, all row-major and dense.
#[cfg(target_arch = "x86_64")]
fn tiled_a_bt(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    // Each core takes a block of C's columns: A^T (its rows padded to whole vectors, whose
    // padding reaches only C^T's columns past m), the block's C^T rows, then C's columns. Each
    // core transposes A for itself: a second pass on all cores costs more in synchronisation.
    let width = m.next_multiple_of(16);
    let per_task = n.div_ceil(rayon::current_num_threads()).max(1);
    let c = Strided::new(c.as_mut_ptr(), n as isize);
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|p| {
        let (j0, count) = (p * per_task, per_task.min(n - p * per_task));
        SCRATCH.with(|scratch| {
            let (at, ct) = &mut *scratch.borrow_mut();
            at.resize(k * width, 0.0);
            ct.resize(count * width, 0.0);
            // SAFETY: the CPU has AVX-512F (the caller checked); A's m rows of k, A^T's k rows
            // and C^T's `count` rows of `width`, rows j0..j0 + count of B (k elements each),
            // and columns j0..j0 + count of C's m rows, which only this task writes.
            unsafe {
                super::tiles::transpose(
                    (a.as_ptr(), k),
                    (at.as_mut_ptr(), width),
                    (m, k),
                    (1.0, 0.0),
                );
                super::tiles::product(
                    (b.as_ptr().add(j0 * k), k),
                    (at.as_ptr(), width),
                    (ct.as_mut_ptr(), width),
                    (count, width, k),
                );
                super::tiles::transpose(
                    (ct.as_ptr(), width),
                    (c.at(0, j0), n),
                    (count, m),
                    (alpha, beta),
                );
            }
        });
    });
}

thread_local! {
    /// A core's A^T and block of C^T in [`tiled_a_bt`], kept between calls.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Row-major C = alpha * op(A) * op(B) + beta * C for one batch entry, on all cores when
/// `parallel` and the product is big enough.
pub fn sgemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], parallel: bool) {
    let (m, n, k) = (g.m, g.n, g.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm operand too short"
    );
    if k == 0 {
        for v in &mut c[..m * n] {
            *v *= g.beta;
        }
        return;
    }
    // Strides of op(A) (m x k) and op(B) (k x n) as (row stride, column stride).
    let (a_rs, a_cs) = if g.trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if g.trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let work = m * n * k;
    if parallel && m <= skinny::MAX_ROWS && n * k >= 1 << 16 && !g.trans_a {
        let (a, b, c) = ((a, k), (b, if g.trans_b { k } else { n }), (c, n));
        if g.trans_b {
            skinny::gemm_a_bt((m, n, k), g.alpha, a, b, g.beta, c);
        } else {
            skinny::gemm_a_b((m, n, k), g.alpha, a, b, g.beta, c);
        }
        return;
    }
    if parallel && k <= skinny::MAX_ROWS && m * n >= 1 << 16 && g.trans_a && !g.trans_b {
        skinny::gemm_at_b((m, n, k), g.alpha, (a, m), (b, n), g.beta, (c, n));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if parallel
        && !g.trans_a
        && g.trans_b
        && (skinny::MAX_ROWS + 1..=TILED_MAX_ROWS).contains(&m)
        && work >= 1 << 20
        && super::has_avx512()
    {
        return tiled_a_bt((m, n, k), g.alpha, a, b, g.beta, c);
    }
    let threads = rayon::current_num_threads();
    if !(parallel && work >= 1 << 18 && threads > 1) {
        let c = Strided::new(c.as_mut_ptr(), n as isize);
        unsafe { crate_gemm((m, n, k), g, c, (a, a_rs, a_cs), (b, b_rs, b_cs), false) };
        return;
    }
    // The gemm crate packs a C width that is no multiple of the vector width on one thread
    // before it splits the product (LeNet's ip1, 64 x 500 x 800: no faster on two cores than on
    // one). Column blocks of vector-multiple widths, one per core, avoid that.
    let lanes = 16;
    if n % lanes == 0 || n < 2 * lanes {
        let c = Strided::new(c.as_mut_ptr(), n as isize);
        unsafe { crate_gemm((m, n, k), g, c, (a, a_rs, a_cs), (b, b_rs, b_cs), true) };
        return;
    }
    let block = n.div_ceil(threads).next_multiple_of(lanes);
    let c = Strided::new(c.as_mut_ptr(), n as isize);
    (0..n.div_ceil(block)).into_par_iter().for_each(|part| {
        let j0 = part * block;
        let width = block.min(n - j0);
        let b_block = &b[j0 * b_cs as usize..];
        // Safety: the blocks write disjoint columns of C, which `c` (row stride n) covers.
        unsafe {
            crate_gemm(
                (m, width, k),
                g,
                c.offset(j0),
                (a, a_rs, a_cs),
                (b_block, b_rs, b_cs),
                false,
            )
        };
    });
}

/// A row-major C (unit column stride) shared by the threads that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct Strided {
    ptr: *mut f32,
    row_stride: isize,
}

// Safety: only used for disjoint writes from the threads of one product.
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

impl Strided {
    fn new(ptr: *mut f32, row_stride: isize) -> Self {
        Strided { ptr, row_stride }
    }
    /// # Safety
    /// Row `row` of C holds column `column`.
    unsafe fn at(self, row: usize, column: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.ptr.offset(row as isize * self.row_stride).add(column) }
    }
    fn offset(self, columns: usize) -> Self {
        Strided {
            ptr: unsafe { self.ptr.add(columns) },
            ..self
        }
    }
}

/// C = alpha * A * B + beta * C through the gemm crate; A and B as (slice, row stride, column
/// stride).
///
/// # Safety
/// `c` must cover m rows of n columns at its row stride, and A and B their m x k and k x n
/// elements at the given strides.
unsafe fn crate_gemm(
    (m, n, k): (usize, usize, usize),
    g: &Gemm,
    c: Strided,
    (a, a_rs, a_cs): (&[f32], isize, isize),
    (b, b_rs, b_cs): (&[f32], isize, isize),
    parallel: bool,
) {
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // The gemm crate computes dst = alpha * dst + beta * lhs * rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.ptr,
            1,
            c.row_stride,
            g.beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            g.beta,
            g.alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{TensorId, View};
    use crate::rng::Rng;

    /// A batch of products that all accumulate into C (weight gradients summed over images),
    /// with fewer and with more rows than columns and short and long sums (the shares hold C's
    /// transpose for few rows and long sums), in all four transpositions, against the definition.
    #[test]
    fn accumulating_batches_equal_the_definition() {
        use crate::engine::Engine;
        let mut rng = Rng::new(5);
        for &(m, n, k) in &[(3, 17, 300), (17, 3, 300), (3, 17, 40), (32, 48, 9)] {
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                let batch = 5;
                let mut eng = crate::engine::cpu::CpuEngine::new();
                let random = |len: usize, rng: &mut Rng| -> Vec<f32> {
                    (0..len).map(|_| rng.uniform_range(-1.0, 1.0)).collect()
                };
                let (a, b, c0) = (
                    random(batch * m * k, &mut rng),
                    random(batch * k * n, &mut rng),
                    random(m * n, &mut rng),
                );
                let view = |eng: &mut crate::engine::cpu::CpuEngine, data: &[f32]| {
                    let v = View::new(eng.alloc(data.len()), 0, data.len());
                    eng.upload(v, data);
                    v
                };
                let (va, vb, vc) = (view(&mut eng, &a), view(&mut eng, &b), view(&mut eng, &c0));
                let g = Gemm {
                    batch,
                    stride_a: m * k,
                    stride_b: k * n,
                    stride_c: 0,
                    ..Gemm::single(trans_a, trans_b, m, n, k, 0.5, va, vb, 1.0, vc)
                };
                run(&BlasKernel::Gemm(g), &mut eng.mem).unwrap();
                let got = eng.download(vc);
                for i in 0..m {
                    for j in 0..n {
                        let mut want = c0[i * n + j] as f64;
                        for e in 0..batch {
                            let (a, b) = (&a[e * m * k..], &b[e * k * n..]);
                            let dot: f64 = (0..k)
                                .map(|p| {
                                    let x = if trans_a { a[p * m + i] } else { a[i * k + p] };
                                    let y = if trans_b { b[j * k + p] } else { b[p * n + j] };
                                    x as f64 * y as f64
                                })
                                .sum();
                            want += 0.5 * dot;
                        }
                        let got = got[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{m}x{n}x{k} trans {trans_a}/{trans_b}: C[{i}][{j}] = {got}, expected {want}"
                        );
                    }
                }
            }
        }
    }

    /// Every path of `sgemm` (serial, the gemm crate's threads, column blocks per core, the
    /// skinny kernels, the register tiles) against the definition, in all four transpositions.
    #[test]
    fn sgemm_equals_the_definition_on_every_path() {
        let mut rng = Rng::new(3);
        let view = View::new(TensorId(0), 0, 0);
        let shapes = [
            (3, 5, 7),
            (64, 500, 80),
            (40, 37, 300),
            (20, 2000, 40),
            (64, 48, 200),
            (9, 300, 300),
            (300, 9, 300),
            // C = A B^T in register tiles: a 1-lane last vector, 4 + 3 vectors with a rest of
            // rows, fewer columns than cores take.
            (17, 33, 2000),
            (100, 61, 300),
            (128, 9, 1000),
        ];
        for &(m, n, k) in &shapes {
            for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0)] {
                    let g = Gemm::single(trans_a, trans_b, m, n, k, alpha, view, view, beta, view);
                    let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
                    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
                    for parallel in [false, true] {
                        let mut c = c0.clone();
                        sgemm(&g, &a, &b, &mut c, parallel);
                        for i in 0..m {
                            for j in 0..n {
                                let dot: f64 =
                                    (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
                                let want = alpha as f64 * dot + beta as f64 * c0[i * n + j] as f64;
                                let got = c[i * n + j] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "{m}x{n}x{k} trans {trans_a}/{trans_b} beta {beta} parallel \
                                     {parallel}: C[{i}][{j}] = {got}, expected {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
