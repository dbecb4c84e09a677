//! HingeLoss (one-vs-all): t = +1 at the label, -1 elsewhere; loss = sum max(0, 1 - t*x) / N (L1)
//! or sum max(0, 1 - t*x)^2 / N (L2). Caffe keeps max(0, 1 - t*x) in bottom 0's diff between
//! forward and backward; here it lives in a scratch tensor, so clearing diffs does not matter.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::softmax_with_loss::check_first_dim;
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::SoftmaxKernel;
use crate::proto::LayerParameter;
use crate::proto::hinge_loss_parameter::Norm;

pub struct HingeLoss {
    l2: bool,
    num: usize,
    dim: usize,
    margin: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let l2 = param
        .hinge_loss_param
        .as_ref()
        .is_some_and(|p| p.norm() == Norm::L2);
    Ok(Box::new(HingeLoss {
        l2,
        num: 0,
        dim: 0,
        margin: Scratch::default(),
    }))
}

impl Layer for HingeLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        check_first_dim(bottoms)?;
        let (x, l) = (&bottoms[0], &bottoms[1]);
        self.num = x.first().copied().unwrap_or(1);
        if self.num == 0 || l.iter().product::<usize>() != self.num {
            bail!(
                "expects one label per item: data {} but labels {}",
                shape_str(x),
                shape_str(l)
            );
        }
        self.dim = x.iter().product::<usize>() / self.num;
        Ok(Shapes {
            tops: vec![vec![]],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let margin = self.margin.get(cx.eng, self.num * self.dim);
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Hinge {
            x: cx.bottoms[0].data(),
            label: cx.bottoms[1].data(),
            margin,
            loss: cx.tops[0].data(),
            outer: self.num,
            dim: self.dim,
            l2: self.l2,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let margin = self.margin.get(cx.eng, self.num * self.dim);
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::HingeGrad {
            margin,
            label: cx.bottoms[1].data(),
            top_diff: cx.tops[0].diff(),
            dx: cx.bottoms[0].diff(),
            outer: self.num,
            dim: self.dim,
            l2: self.l2,
        }))
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom == 0
    }

    fn is_loss(&self) -> bool {
        true
    }

    fn macs(&self) -> u64 {
        (self.num * self.dim) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{HingeLossParameter, Phase};
    use crate::rng::Rng;

    fn case(num: usize, dim: usize, l2: bool, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let norm = if l2 { Norm::L2 } else { Norm::L1 };
        LayerCase {
            param: LayerParameter {
                r#type: Some("HingeLoss".into()),
                top: vec!["loss".into()],
                hinge_loss_param: Some(HingeLossParameter {
                    norm: Some(norm as i32),
                }),
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (
                    vec![num, dim],
                    (0..num * dim)
                        .map(|_| rng.uniform_range(-2.0, 2.0))
                        .collect(),
                ),
                (vec![num], (0..num).map(|_| rng.below(dim) as f32).collect()),
            ],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(2, 2, false, 1);
        c.bottoms[0].1 = vec![0.5, -2.0, 0.25, 3.0];
        c.bottoms[1].1 = vec![0.0, 1.0];
        // margins: [0.5, 0], [1.25, 0]
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&[vec![1.0]]), None).unwrap();
        assert!((run.tops[0].1[0] - 1.75 / 2.0).abs() < 1e-6);
        assert_eq!(run.bottom_diffs[0], vec![-0.5, 0.0, 0.5, 0.0]);
        let mut c2 = c.clone();
        c2.param.hinge_loss_param = Some(HingeLossParameter {
            norm: Some(Norm::L2 as i32),
        });
        let run = run_layer(&mut CpuEngine::new(), &c2, Some(&[vec![1.0]]), None).unwrap();
        assert!((run.tops[0].1[0] - (0.25 + 1.5625) / 2.0).abs() < 1e-6);
        assert_eq!(run.bottom_diffs[0], vec![-0.5, 0.0, 1.25, 0.0]);
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        for (l2, seed) in [(false, 2), (true, 3)] {
            let mut c = case(4, 5, l2, seed);
            // keep inputs away from the kink at t*x = 1
            for v in c.bottoms[0].1.iter_mut() {
                if (v.abs() - 1.0).abs() < 0.05 {
                    *v *= 0.8;
                }
            }
            check_gradient(&mut eng, &c, &[0], 1e-2, 1e-2).unwrap();
        }
    }
}
