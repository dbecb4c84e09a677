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
                    let parts = threads.min(g.batch);
                    let shares: Vec<Vec<f32>> = (0..parts)
                        .into_par_iter()
                        .map(|p| {
                            let mut acc = vec![0f32; g.m * g.n];
                            let entry = Gemm {
                                beta: 1.0,
                                ..g.clone()
                            };
                            for batch in p * g.batch / parts..(p + 1) * g.batch / parts {
                                sgemm(
                                    &entry,
                                    &i[0][batch * g.stride_a..],
                                    &i[1][batch * g.stride_b..],
                                    &mut acc,
                                    false,
                                );
                            }
                            acc
                        })
                        .collect();
                    for share in &shares {
                        for (c, s) in o[0][..g.m * g.n].iter_mut().zip(share) {
                            *c += s;
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
    let parallelism = if parallel && work >= 1 << 18 && rayon::current_num_threads() > 1 {
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
            c.as_mut_ptr(),
            1,
            n as isize,
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
