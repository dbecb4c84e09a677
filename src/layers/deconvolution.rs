//! Deconvolution (Caffe's DeconvolutionLayer): the transpose of Convolution. Weights
//! [channels, num_output / group, k...], bias [num_output]; output size s(in-1) + d(k-1)+1 - 2p.
//! Forward is Convolution's backward-to-bottom and vice versa (see [`ConvGeom`]).
use anyhow::Result;

use super::common::Scratch;
use super::convolution::{ConvGeom, ConvSpec};
use super::{Ctx, Layer, Shapes};
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Deconvolution {
        spec: ConvSpec::parse(param, true)?,
        state: None,
        col: Scratch::default(),
    }))
}

struct Deconvolution {
    spec: ConvSpec,
    /// In this geometry "in" (the im2col side) is the top and "out" the bottom.
    state: Option<ConvGeom>,
    col: Scratch,
}

impl Deconvolution {
    fn geom(&self) -> Result<ConvGeom> {
        self.state
            .clone()
            .ok_or_else(|| anyhow::anyhow!("forward called before reshape"))
    }
}

impl Layer for Deconvolution {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        let (geom, shapes) = self.spec.reshape(bottoms, self.state.as_ref())?;
        self.state = Some(geom);
        Ok(shapes)
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let g = self.geom()?;
        for (b, t) in cx.bottoms.iter().zip(cx.tops) {
            g.out_to_im(
                cx.eng,
                &mut self.col,
                cx.params[0].data(),
                b.data(),
                t.data(),
            )?;
            if self.spec.bias_term {
                // The bias lives on the top, which is the im2col side here.
                bias_geom(&g).add_bias(cx.eng, t.data(), cx.params[1].data())?;
            }
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let g = self.geom()?;
        for (i, (b, t)) in cx.bottoms.iter().zip(cx.tops).enumerate() {
            if self.spec.bias_term && cx.param_grad(1) {
                bias_geom(&g).bias_grad(cx.eng, t.diff(), cx.params[1].diff())?;
            }
            if cx.param_grad(0) {
                // dW += bottom * im2col(top_diff)^T
                g.weight_grad(
                    cx.eng,
                    &mut self.col,
                    t.diff(),
                    b.data(),
                    cx.params[0].diff(),
                )?;
            }
            if propagate_down.get(i).copied().unwrap_or(false) {
                g.im_to_out(
                    cx.eng,
                    &mut self.col,
                    cx.params[0].data(),
                    None,
                    t.diff(),
                    b.diff(),
                    Default::default(),
                )?;
            }
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        self.state.as_ref().map_or(0, |g| g.macs())
    }
}

/// A geometry whose "out" side is the deconvolution's top, for the bias helpers.
fn bias_geom(g: &ConvGeom) -> ConvGeom {
    ConvGeom {
        out_channels: g.in_channels,
        out_shape: g.in_shape.clone(),
        ..g.clone()
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{ConvolutionParameter, LayerParameter, Phase};
    use crate::rng::Rng;

    fn param(p: ConvolutionParameter) -> LayerParameter {
        LayerParameter {
            name: Some("deconv".into()),
            r#type: Some("Deconvolution".into()),
            convolution_param: Some(p),
            ..Default::default()
        }
    }

    #[test]
    fn shapes() {
        let p = ConvolutionParameter {
            num_output: Some(6),
            kernel_size: vec![3],
            stride: vec![2],
            pad: vec![1],
            group: Some(2),
            ..Default::default()
        };
        let mut layer = super::create(&param(p)).unwrap();
        let s = layer.reshape(&[vec![2, 4, 3, 5]]).unwrap();
        assert_eq!(s.tops, vec![vec![2, 6, 5, 9]]);
        assert_eq!(s.params[0].shape, vec![4, 3, 3, 3]);
        assert_eq!(s.params[1].shape, vec![6]);
    }

    #[test]
    fn hand_checked_values() {
        // One input pixel per position, 2x2 kernel, stride 2: each input pixel paints a 2x2 block.
        let p = ConvolutionParameter {
            num_output: Some(1),
            kernel_size: vec![2],
            stride: vec![2],
            ..Default::default()
        };
        let case = LayerCase {
            param: param(p),
            phase: Phase::Test,
            bottoms: vec![(vec![1, 1, 1, 2], vec![1.0, 2.0])],
            params: Some(vec![vec![1.0, 2.0, 3.0, 4.0], vec![0.5]]),
        };
        let run = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
        assert_eq!(run.tops[0].0, vec![1, 1, 2, 4]);
        assert_eq!(run.tops[0].1, vec![1.5, 2.5, 2.5, 4.5, 3.5, 4.5, 6.5, 8.5]);
    }

    #[test]
    fn gradients() {
        let mut rng = Rng::new(5);
        let cases = [
            (
                vec![2, 2, 3, 3],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![3],
                    stride: vec![2],
                    pad: vec![1],
                    ..Default::default()
                },
            ),
            (
                vec![1, 4, 2, 3],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![2],
                    group: Some(2),
                    dilation: vec![2],
                    ..Default::default()
                },
            ),
            (
                vec![2, 3, 2, 2],
                ConvolutionParameter {
                    num_output: Some(2),
                    kernel_size: vec![1],
                    ..Default::default()
                },
            ),
        ];
        for (shape, p) in cases {
            let mut layer = super::create(&param(p.clone())).unwrap();
            let s = layer.reshape(std::slice::from_ref(&shape)).unwrap();
            let params = s
                .params
                .iter()
                .map(|d| {
                    (0..d.shape.iter().product())
                        .map(|_| rng.uniform_range(-1.0, 1.0))
                        .collect()
                })
                .collect();
            let case = LayerCase {
                param: param(p),
                phase: Phase::Train,
                bottoms: vec![(
                    shape.clone(),
                    (0..shape.iter().product())
                        .map(|_| rng.uniform_range(-1.0, 1.0))
                        .collect(),
                )],
                params: Some(params),
            };
            check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
        }
    }
}
