//! InnerProduct (Caffe's InnerProductLayer): top[M, N] = bottom[M, K] * W^T + bias with
//! M = count(0, axis), K = count(axis); W is [N, K], or [K, N] with `transpose`.
use anyhow::{Result, ensure};

use super::common::{canonical_axis, check_count, count, shape_str};
use super::{Ctx, Layer, ParamDef, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::blas::{BlasKernel, Gemm};
use crate::engine::kernels::conv::ConvKernel;
use crate::proto::{FillerParameter, LayerParameter};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.inner_product_param.clone().unwrap_or_default();
    let n = p.num_output() as usize;
    ensure!(
        n > 0,
        "inner_product_param.num_output must be given and positive"
    );
    Ok(Box::new(InnerProduct {
        n,
        axis: p.axis(),
        transpose: p.transpose(),
        bias_term: p.bias_term(),
        weight_filler: p.weight_filler.clone().unwrap_or_default(),
        bias_filler: p.bias_filler.clone().unwrap_or_default(),
        k: None,
        m: 0,
    }))
}

struct InnerProduct {
    n: usize,
    axis: i32,
    transpose: bool,
    bias_term: bool,
    weight_filler: FillerParameter,
    bias_filler: FillerParameter,
    /// K, fixed by the first reshape.
    k: Option<usize>,
    m: usize,
}

impl Layer for InnerProduct {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let shape = &bottoms[0];
        let axis = canonical_axis(self.axis, shape.len())?;
        let k = count(shape, axis, shape.len());
        if let Some(prev) = self.k {
            ensure!(
                prev == k,
                "input size incompatible with inner product parameters: bottom {} has {k} inputs from axis {axis}, the weights expect {prev}",
                shape_str(shape)
            );
        }
        self.k = Some(k);
        self.m = count(shape, 0, axis);
        let mut top = shape[..axis].to_vec();
        top.push(self.n);
        let weight = if self.transpose {
            vec![k, self.n]
        } else {
            vec![self.n, k]
        };
        let mut params = vec![ParamDef {
            shape: weight,
            filler: self.weight_filler.clone(),
        }];
        if self.bias_term {
            params.push(ParamDef {
                shape: vec![self.n],
                filler: self.bias_filler.clone(),
            });
        }
        Ok(Shapes {
            tops: vec![top],
            params,
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k.unwrap_or(0));
        let (x, w, y) = (cx.bottoms[0].data(), cx.params[0].data(), cx.tops[0].data());
        cx.eng.launch(&Kernel::Blas(BlasKernel::Gemm(Gemm::single(
            false,
            !self.transpose,
            m,
            n,
            k,
            1.0,
            x,
            w,
            0.0,
            y,
        ))))?;
        if self.bias_term {
            let bias = cx.params[1].data();
            cx.eng.launch(&Kernel::Conv(ConvKernel::AddChannelBias {
                y,
                bias,
                outer: m,
                channels: n,
                inner: 1,
            }))?;
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let (m, n, k) = (self.m, self.n, self.k.unwrap_or(0));
        let (x, dy) = (cx.bottoms[0].data(), cx.tops[0].diff());
        let dw = cx.params[0].diff();
        let beta = cx.param_diff_beta(0);
        let g = if self.transpose {
            // dW[K, N] += x^T dy
            Gemm::single(true, false, k, n, m, 1.0, x, dy, beta, dw)
        } else {
            // dW[N, K] += dy^T x
            Gemm::single(true, false, n, k, m, 1.0, dy, x, beta, dw)
        };
        if cx.param_grad(0) {
            cx.eng.launch(&Kernel::Blas(BlasKernel::Gemm(g)))?;
        }
        if self.bias_term && cx.param_grad(1) {
            let out = cx.params[1].diff();
            cx.eng.launch(&Kernel::Conv(ConvKernel::ChannelSum {
                x: dy,
                out,
                outer: m,
                channels: n,
                inner: 1,
                alpha: 1.0,
                beta: cx.param_diff_beta(1),
            }))?;
        }
        if propagate_down.first().copied().unwrap_or(false) {
            // dx[M, K] = dy[M, N] * W[N, K]  (or W^T for the [K, N] layout)
            let (w, dx) = (cx.params[0].data(), cx.bottoms[0].diff());
            cx.eng.launch(&Kernel::Blas(BlasKernel::Gemm(Gemm::single(
                false,
                self.transpose,
                m,
                k,
                n,
                1.0,
                dy,
                w,
                0.0,
                dx,
            ))))?;
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        (self.m * self.n * self.k.unwrap_or(0)) as u64
    }

    fn overwrites_cleared_param_diffs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{InnerProductParameter, LayerParameter, Phase};
    use crate::rng::Rng;

    fn param(p: InnerProductParameter) -> LayerParameter {
        LayerParameter {
            name: Some("ip".into()),
            r#type: Some("InnerProduct".into()),
            inner_product_param: Some(p),
            ..Default::default()
        }
    }

    #[test]
    fn hand_checked_values() {
        // x [2, 3], W [2, 3], bias [2].
        let x = vec![1., 2., 3., 4., 5., 6.];
        let w = vec![1., 0., -1., 0.5, 0.5, 0.5];
        let p = InnerProductParameter {
            num_output: Some(2),
            ..Default::default()
        };
        let case = LayerCase {
            param: param(p),
            phase: Phase::Test,
            bottoms: vec![(vec![2, 3], x.clone())],
            params: Some(vec![w, vec![10., 20.]]),
        };
        let r = run_layer(
            &mut CpuEngine::new(),
            &case,
            Some(&[vec![1., 0., 0., 1.]]),
            None,
        )
        .unwrap();
        assert_eq!(r.tops[0].1, vec![8., 23., 8., 27.5]);
        assert_eq!(r.bottom_diffs[0], vec![1., 0., -1., 0.5, 0.5, 0.5]);
        assert_eq!(r.param_diffs[0], vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(r.param_diffs[1], vec![1., 1.]);
        // The transposed layout W^T [3, 2] gives the same numbers.
        let p = InnerProductParameter {
            num_output: Some(2),
            transpose: Some(true),
            ..Default::default()
        };
        let wt = vec![1., 0.5, 0., 0.5, -1., 0.5];
        let case = LayerCase {
            param: param(p),
            phase: Phase::Test,
            bottoms: vec![(vec![2, 3], x)],
            params: Some(vec![wt, vec![10., 20.]]),
        };
        let r = run_layer(
            &mut CpuEngine::new(),
            &case,
            Some(&[vec![1., 0., 0., 1.]]),
            None,
        )
        .unwrap();
        assert_eq!(r.tops[0].1, vec![8., 23., 8., 27.5]);
        assert_eq!(r.param_diffs[0], vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn shapes_and_gradients() {
        let mut rng = Rng::new(1);
        for (shape, p) in [
            (
                vec![2, 3, 2],
                InnerProductParameter {
                    num_output: Some(3),
                    ..Default::default()
                },
            ),
            (
                vec![2, 3, 2, 2],
                InnerProductParameter {
                    num_output: Some(2),
                    axis: Some(2),
                    bias_term: Some(false),
                    ..Default::default()
                },
            ),
            (
                vec![3, 4],
                InnerProductParameter {
                    num_output: Some(2),
                    transpose: Some(true),
                    ..Default::default()
                },
            ),
            (
                vec![2, 2, 3],
                InnerProductParameter {
                    num_output: Some(2),
                    axis: Some(-1),
                    ..Default::default()
                },
            ),
        ] {
            let mut layer = super::create(&param(p.clone())).unwrap();
            let s = layer.reshape(std::slice::from_ref(&shape)).unwrap();
            let axis = if p.axis() < 0 {
                shape.len() - 1
            } else {
                p.axis() as usize
            };
            let mut want = shape[..axis].to_vec();
            want.push(p.num_output() as usize);
            assert_eq!(s.tops[0], want);
            assert_eq!(s.params[0].filler.r#type(), "constant");
            let params = s
                .params
                .iter()
                .map(|d| {
                    (0..d.shape.iter().product())
                        .map(|_| rng.uniform_range(-1.0, 1.0))
                        .collect()
                })
                .collect();
            let x = (0..shape.iter().product())
                .map(|_| rng.uniform_range(-1.0, 1.0))
                .collect();
            let case = LayerCase {
                param: param(p),
                phase: Phase::Train,
                bottoms: vec![(shape, x)],
                params: Some(params),
            };
            check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
        }
    }

    #[test]
    fn input_size_may_not_change() {
        let mut layer = super::create(&param(InnerProductParameter {
            num_output: Some(2),
            ..Default::default()
        }))
        .unwrap();
        layer.reshape(&[vec![4, 6]]).unwrap();
        assert!(layer.reshape(&[vec![8, 6]]).is_ok());
        assert!(layer.reshape(&[vec![4, 5]]).is_err());
        assert!(super::create(&param(InnerProductParameter::default())).is_err());
    }
}
