//! EuclideanLoss: loss = sum((a - b)^2) / (2N), N = bottom 0's first dimension; both bottoms get a
//! gradient (+-(a - b) * loss_weight / N).
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, count, shape_str};
use super::softmax_with_loss::check_first_dim;
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::SoftmaxKernel;
use crate::proto::LayerParameter;

#[derive(Default)]
pub struct EuclideanLoss {
    num: usize,
    count: usize,
    diff: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    Ok(Box::new(EuclideanLoss::default()))
}

impl Layer for EuclideanLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        check_first_dim(bottoms)?;
        let (a, b) = (&bottoms[0], &bottoms[1]);
        if a.is_empty() || count(a, 1, a.len()) != count(b, 1, b.len()) {
            bail!(
                "inputs must have the same dimension: got {} and {}",
                shape_str(a),
                shape_str(b)
            );
        }
        self.num = a[0];
        self.count = a.iter().product();
        Ok(Shapes {
            tops: vec![vec![]],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let diff = self.diff.get(cx.eng, self.count);
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Euclidean {
            a: cx.bottoms[0].data(),
            b: cx.bottoms[1].data(),
            diff,
            loss: cx.tops[0].data(),
            outer: self.num,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let diff = self.diff.get(cx.eng, self.count);
        for (i, sign) in [(0, 1.0), (1, -1.0)] {
            if propagate_down.get(i).copied().unwrap_or(false) {
                cx.eng
                    .launch(&Kernel::Softmax(SoftmaxKernel::ScaleByWeight {
                        x: diff,
                        w: cx.tops[0].diff(),
                        sign,
                        divisor: cx.bottoms[i].shape[0] as f32,
                        y: cx.bottoms[i].diff(),
                    }))?;
            }
        }
        Ok(())
    }

    fn is_loss(&self) -> bool {
        true
    }

    fn macs(&self) -> u64 {
        self.count as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::Phase;
    use crate::rng::Rng;

    fn case(a: &[usize], b: &[usize], seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let mut vals = |s: &[usize]| {
            (0..s.iter().product::<usize>())
                .map(|_| rng.uniform_range(-1.0, 1.0))
                .collect()
        };
        LayerCase {
            param: LayerParameter {
                r#type: Some("EuclideanLoss".into()),
                top: vec!["loss".into()],
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![(a.to_vec(), vals(a)), (b.to_vec(), vals(b))],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(&[2, 2], &[2, 2], 1);
        c.bottoms[0].1 = vec![1.0, 2.0, 3.0, 4.0];
        c.bottoms[1].1 = vec![0.0, 2.0, 1.0, 4.0];
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&[vec![2.0]]), None).unwrap();
        assert_eq!(run.tops[0].1, vec![(1.0 + 4.0) / 4.0]);
        assert_eq!(run.bottom_diffs[0], vec![1.0, 0.0, 2.0, 0.0]);
        assert_eq!(run.bottom_diffs[1], vec![-1.0, 0.0, -2.0, 0.0]);
    }

    #[test]
    fn shapes_are_checked() {
        let c = case(&[2, 3], &[2, 4], 1);
        assert!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap_err()
                .to_string()
                .contains("same dimension")
        );
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        check_gradient(&mut eng, &case(&[3, 4], &[3, 4], 2), &[0, 1], 1e-2, 1e-2).unwrap();
        check_gradient(&mut eng, &case(&[2, 3, 2], &[2, 6], 3), &[0, 1], 1e-2, 1e-2).unwrap();
    }
}
