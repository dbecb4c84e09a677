//! MultinomialLogisticLoss: bottom 0 holds probabilities `[N, K...]`, bottom 1 one label per item;
//! loss = -sum_n log(max(p[n, label_n], 1e-20)) / N.
use anyhow::{Result, bail};

use super::common::{check_count, shape_str};
use super::softmax_with_loss::check_first_dim;
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::SoftmaxKernel;
use crate::proto::LayerParameter;

#[derive(Default)]
pub struct MultinomialLogisticLoss {
    num: usize,
    dim: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    Ok(Box::new(MultinomialLogisticLoss::default()))
}

impl Layer for MultinomialLogisticLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        check_first_dim(bottoms)?;
        let (p, l) = (&bottoms[0], &bottoms[1]);
        self.num = p.first().copied().unwrap_or(1);
        if self.num == 0 || l.iter().product::<usize>() != self.num {
            bail!(
                "expects one label per item: data {} but labels {}",
                shape_str(p),
                shape_str(l)
            );
        }
        self.dim = p.iter().product::<usize>() / self.num;
        Ok(Shapes {
            tops: vec![vec![]],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.eng
            .launch(&Kernel::Softmax(SoftmaxKernel::MultinomialLogistic {
                prob: cx.bottoms[0].data(),
                label: cx.bottoms[1].data(),
                loss: cx.tops[0].data(),
                outer: self.num,
                dim: self.dim,
            }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        cx.eng
            .launch(&Kernel::Softmax(SoftmaxKernel::MultinomialLogisticGrad {
                prob: cx.bottoms[0].data(),
                label: cx.bottoms[1].data(),
                top_diff: cx.tops[0].diff(),
                dx: cx.bottoms[0].diff(),
                outer: self.num,
                dim: self.dim,
            }))
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom == 0
    }

    fn is_loss(&self) -> bool {
        true
    }

    fn macs(&self) -> u64 {
        self.num as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::Phase;
    use crate::rng::Rng;

    fn case(n: usize, k: usize, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        LayerCase {
            param: LayerParameter {
                r#type: Some("MultinomialLogisticLoss".into()),
                top: vec!["loss".into()],
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (
                    vec![n, k],
                    (0..n * k).map(|_| rng.uniform_range(0.2, 1.0)).collect(),
                ),
                (vec![n], (0..n).map(|_| rng.below(k) as f32).collect()),
            ],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(2, 2, 1);
        c.bottoms[0].1 = vec![0.5, 0.5, 0.0, 1.0];
        c.bottoms[1].1 = vec![0.0, 0.0];
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&[vec![1.0]]), None).unwrap();
        let want = -(0.5f32.ln() + 1e-20f32.ln()) / 2.0;
        assert!((run.tops[0].1[0] - want).abs() < 1e-4);
        assert_eq!(run.bottom_diffs[0][0], -1.0);
        assert_eq!(run.bottom_diffs[0][1], 0.0);
    }

    #[test]
    fn gradients() {
        check_gradient(&mut CpuEngine::new(), &case(4, 3, 2), &[0], 1e-3, 1e-2).unwrap();
    }
}
