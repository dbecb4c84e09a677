use anyhow::{Result, bail};
use rayon::prelude::*;

use super::Memory;
use crate::engine::kernels::transfer::{ReduceOp, TransferKernel};

const PAR_MIN: usize = 1 << 15;

/// One past the largest position a strided walk touches (0 when any dim is 0).
fn extent(dims: &[usize], strides: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    dims.iter()
        .zip(strides)
        .map(|(d, s)| (d - 1) * s)
        .sum::<usize>()
        + 1
}

/// Row index from a float index value (Caffe's static_cast<int>), checked against `0..n`.
fn row_of(v: f32, n: usize) -> Result<usize> {
    let r = v as i32;
    if r < 0 || r as usize >= n {
        bail!("index value {v} out of range: expected an integer in [0, {n})");
    }
    Ok(r as usize)
}

fn strided(src: &[f32], dst: &mut [f32], dims: &[usize], ss: &[usize], ds: &[usize], add: bool) {
    let nd = dims.len();
    if nd == 0 {
        if add {
            dst[0] += src[0];
        } else {
            dst[0] = src[0];
        }
        return;
    }
    if dims.contains(&0) {
        return;
    }
    let (inner, si, di) = (dims[nd - 1], ss[nd - 1], ds[nd - 1]);
    let outer: usize = dims[..nd - 1].iter().product();
    let mut idx = vec![0usize; nd - 1];
    let (mut so, mut dof) = (0usize, 0usize);
    for _ in 0..outer {
        if si == 1 && di == 1 {
            let (s, d) = (&src[so..so + inner], &mut dst[dof..dof + inner]);
            if add {
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
            } else {
                d.copy_from_slice(s);
            }
        } else {
            for k in 0..inner {
                if add {
                    dst[dof + k * di] += src[so + k * si];
                } else {
                    dst[dof + k * di] = src[so + k * si];
                }
            }
        }
        // Odometer over the outer dims.
        for a in (0..nd - 1).rev() {
            idx[a] += 1;
            so += ss[a];
            dof += ds[a];
            if idx[a] < dims[a] {
                break;
            }
            so -= ss[a] * dims[a];
            dof -= ds[a] * dims[a];
            idx[a] = 0;
        }
    }
}

pub fn run(kernel: &TransferKernel, mem: &mut Memory) -> Result<()> {
    match kernel {
        TransferKernel::Strided {
            src,
            dst,
            dims,
            src_strides,
            dst_strides,
            add,
        } => {
            if dims.len() != src_strides.len() || dims.len() != dst_strides.len() {
                bail!(
                    "strided copy: {} dims but {} / {} strides",
                    dims.len(),
                    src_strides.len(),
                    dst_strides.len()
                );
            }
            let (se, de) = (extent(dims, src_strides), extent(dims, dst_strides));
            if se > src.len || de > dst.len {
                bail!(
                    "strided copy reaches {se} / {de} elements of views of {} / {}",
                    src.len,
                    dst.len
                );
            }
            if se == 0 {
                return Ok(());
            }
            mem.with(&[dst.slice(0, de)], &[src.slice(0, se)], |o, i| {
                strided(i[0], o[0], dims, src_strides, dst_strides, *add)
            });
        }
        &TransferKernel::GatherRows {
            src,
            index,
            dst,
            rows,
            row_len,
            src_rows,
        } => {
            if index.len < rows || dst.len < rows * row_len || src.len < src_rows * row_len {
                bail!("gather rows: views too short for {rows} rows of {row_len} from {src_rows}");
            }
            mem.with(
                &[dst.slice(0, rows * row_len)],
                &[src.slice(0, src_rows * row_len), index],
                |o, i| -> Result<()> {
                    let idx: Vec<usize> = i[1][..rows]
                        .iter()
                        .map(|&v| row_of(v, src_rows))
                        .collect::<Result<_>>()?;
                    if row_len == 0 {
                        return Ok(());
                    }
                    let src = i[0];
                    let f = |r: usize, d: &mut [f32]| {
                        d.copy_from_slice(&src[idx[r] * row_len..(idx[r] + 1) * row_len])
                    };
                    if rows * row_len >= PAR_MIN {
                        o[0].par_chunks_mut(row_len)
                            .enumerate()
                            .for_each(|(r, d)| f(r, d));
                    } else {
                        o[0].chunks_mut(row_len)
                            .enumerate()
                            .for_each(|(r, d)| f(r, d));
                    }
                    Ok(())
                },
            )?;
        }
        &TransferKernel::ScatterAddRows {
            src,
            index,
            dst,
            rows,
            row_len,
            dst_rows,
        } => {
            if index.len < rows || src.len < rows * row_len || dst.len < dst_rows * row_len {
                bail!("scatter rows: views too short for {rows} rows of {row_len} into {dst_rows}");
            }
            mem.with(
                &[dst.slice(0, dst_rows * row_len)],
                &[src.slice(0, rows * row_len), index],
                |o, i| -> Result<()> {
                    let idx: Vec<usize> = i[1][..rows]
                        .iter()
                        .map(|&v| row_of(v, dst_rows))
                        .collect::<Result<_>>()?;
                    let d = &mut *o[0];
                    d.fill(0.0);
                    for (r, &j) in idx.iter().enumerate() {
                        let s = &i[0][r * row_len..(r + 1) * row_len];
                        d[j * row_len..(j + 1) * row_len]
                            .iter_mut()
                            .zip(s)
                            .for_each(|(d, s)| *d += s);
                    }
                    Ok(())
                },
            )?;
        }
        &TransferKernel::Reduce {
            x,
            y,
            outer,
            dim,
            inner,
            op,
            coeff,
        } => {
            if x.len < outer * dim * inner || y.len < outer * inner {
                bail!("reduce: views too short for [{outer}, {dim}, {inner}]");
            }
            let f = move |v: f32| -> f64 {
                match op {
                    ReduceOp::Sum => f64::from(v),
                    ReduceOp::Asum => f64::from(v.abs()),
                    ReduceOp::Sumsq => f64::from(v) * f64::from(v),
                }
            };
            mem.with(
                &[y.slice(0, outer * inner)],
                &[x.slice(0, outer * dim * inner)],
                |o, i| {
                    let xs = i[0];
                    if inner == 0 {
                        return;
                    }
                    let row = |a: usize, ys: &mut [f32]| {
                        let mut acc = vec![0f64; inner];
                        for d in 0..dim {
                            let base = (a * dim + d) * inner;
                            for (acc, &v) in acc.iter_mut().zip(&xs[base..base + inner]) {
                                *acc += f(v);
                            }
                        }
                        for (y, acc) in ys.iter_mut().zip(acc) {
                            *y = acc as f32 * coeff;
                        }
                    };
                    if outer * dim * inner >= PAR_MIN && outer > 1 {
                        o[0].par_chunks_mut(inner)
                            .enumerate()
                            .for_each(|(a, ys)| row(a, ys));
                    } else {
                        o[0].chunks_mut(inner)
                            .enumerate()
                            .for_each(|(a, ys)| row(a, ys));
                    }
                },
            );
        }
        &TransferKernel::ReduceGrad {
            x,
            dy,
            dx,
            outer,
            dim,
            op,
            coeff,
        } => {
            let n = outer * dim;
            if x.len < n || dx.len < n || dy.len < outer {
                bail!("reduce grad: views too short for [{outer}, {dim}]");
            }
            mem.with(
                &[dx.slice(0, n)],
                &[x.slice(0, n), dy.slice(0, outer)],
                |o, i| {
                    let (xs, dys) = (i[0], i[1]);
                    if dim == 0 {
                        return;
                    }
                    let row = |a: usize, d: &mut [f32]| {
                        let c = dys[a] * coeff;
                        let xr = &xs[a * dim..(a + 1) * dim];
                        match op {
                            ReduceOp::Sum => d.fill(c),
                            ReduceOp::Asum => d.iter_mut().zip(xr).for_each(|(d, &x)| {
                                *d = c * if x > 0.0 {
                                    1.0
                                } else if x < 0.0 {
                                    -1.0
                                } else {
                                    0.0
                                }
                            }),
                            ReduceOp::Sumsq => {
                                d.iter_mut().zip(xr).for_each(|(d, &x)| *d = 2.0 * c * x)
                            }
                        }
                    };
                    if n >= PAR_MIN && outer > 1 {
                        o[0].par_chunks_mut(dim)
                            .enumerate()
                            .for_each(|(a, d)| row(a, d));
                    } else {
                        o[0].chunks_mut(dim)
                            .enumerate()
                            .for_each(|(a, d)| row(a, d));
                    }
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::engine::{Engine, Kernel, View};
    use crate::rng::Rng;

    fn tensor(eng: &mut CpuEngine, values: &[f32]) -> View {
        let id = eng.alloc(values.len());
        let v = View::new(id, 0, values.len());
        eng.upload(v, values);
        v
    }

    /// Random shapes and permuted / broadcast strides against a direct index computation.
    #[test]
    fn strided_matches_naive() {
        let mut rng = Rng::new(11);
        for case in 0..40 {
            let nd = 1 + rng.below(4);
            let dims: Vec<usize> = (0..nd).map(|_| 1 + rng.below(4)).collect();
            // dst: a dense layout of dims in a random axis order, inside a bigger buffer
            let mut order: Vec<usize> = (0..nd).collect();
            rng.shuffle(&mut order);
            let mut dst_strides = vec![0; nd];
            let mut s = 1;
            for &a in order.iter().rev() {
                dst_strides[a] = s;
                s *= dims[a];
            }
            let src_strides: Vec<usize> = (0..nd)
                .map(|_| {
                    if rng.uniform() < 0.2 {
                        0
                    } else {
                        1 + rng.below(7)
                    }
                })
                .collect();
            let src_len = extent(&dims, &src_strides) + rng.below(3);
            let src: Vec<f32> = (0..src_len).map(|i| i as f32).collect();
            let (pad, add) = (rng.below(3), case % 2 == 1);
            let init: Vec<f32> = (0..s + pad).map(|i| -(i as f32)).collect();
            let mut want = init.clone();
            let total: usize = dims.iter().product();
            for flat in 0..total {
                let (mut rem, mut so, mut dof) = (flat, 0, pad);
                for a in (0..nd).rev() {
                    so += (rem % dims[a]) * src_strides[a];
                    dof += (rem % dims[a]) * dst_strides[a];
                    rem /= dims[a];
                }
                want[dof] = if add { want[dof] + src[so] } else { src[so] };
            }
            let mut eng = CpuEngine::new();
            let sv = tensor(&mut eng, &src);
            let dv = tensor(&mut eng, &init);
            eng.launch(&Kernel::Transfer(TransferKernel::Strided {
                src: sv,
                dst: dv.slice(pad, s),
                dims: dims.clone(),
                src_strides,
                dst_strides,
                add,
            }))
            .unwrap();
            assert_eq!(eng.download(dv), want, "case {case}: dims {dims:?}");
        }
    }

    #[test]
    fn reduce_matches_naive() {
        let mut rng = Rng::new(12);
        for _ in 0..20 {
            let (outer, dim, inner) = (1 + rng.below(3), 1 + rng.below(5), 1 + rng.below(3));
            let x: Vec<f32> = (0..outer * dim * inner)
                .map(|_| rng.uniform_range(-1.0, 1.0))
                .collect();
            for (op, f) in [
                (ReduceOp::Sum, (|v| v) as fn(f32) -> f32),
                (ReduceOp::Asum, |v: f32| v.abs()),
                (ReduceOp::Sumsq, |v: f32| v * v),
            ] {
                let mut eng = CpuEngine::new();
                let xv = tensor(&mut eng, &x);
                let yv = tensor(&mut eng, &vec![0.0; outer * inner]);
                let k = TransferKernel::Reduce {
                    x: xv,
                    y: yv,
                    outer,
                    dim,
                    inner,
                    op,
                    coeff: 0.5,
                };
                eng.launch(&Kernel::Transfer(k)).unwrap();
                let got = eng.download(yv);
                for o in 0..outer {
                    for i in 0..inner {
                        let want: f32 = 0.5
                            * (0..dim)
                                .map(|d| f(x[(o * dim + d) * inner + i]))
                                .sum::<f32>();
                        assert!((got[o * inner + i] - want).abs() < 1e-5);
                    }
                }
            }
        }
    }
}
