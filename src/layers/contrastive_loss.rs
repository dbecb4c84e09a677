//! ContrastiveLoss: d^2 = |a_n - b_n|^2; loss = sum_n [sim_n ? d^2 : max(margin - d, 0)^2] / (2N)
//! (`legacy_version`: max(margin - d^2, 0) for dissimilar pairs). The non-legacy gradient of a
//! dissimilar pair divides by (d + 1e-4) as Caffe does. Gradients flow to a and b, not to sim.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::softmax_with_loss::check_first_dim;
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::SoftmaxKernel;
use crate::proto::LayerParameter;

pub struct ContrastiveLoss {
    margin: f32,
    legacy: bool,
    num: usize,
    channels: usize,
    diff: Scratch,
    dist_sq: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let p = param.contrastive_loss_param.unwrap_or_default();
    Ok(Box::new(ContrastiveLoss {
        margin: p.margin(),
        legacy: p.legacy_version(),
        num: 0,
        channels: 0,
        diff: Scratch::default(),
        dist_sq: Scratch::default(),
    }))
}

impl Layer for ContrastiveLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 3, 3)?;
        check_first_dim(bottoms)?;
        let (a, b, s) = (&bottoms[0], &bottoms[1], &bottoms[2]);
        // Caffe's legacy view: (num, channels, 1, 1).
        let legacy = |x: &[usize]| -> Option<(usize, usize)> {
            if x.is_empty() || x.len() > 4 || x.iter().skip(2).any(|&d| d != 1) {
                return None;
            }
            Some((x[0], x.get(1).copied().unwrap_or(1)))
        };
        let (Some(la), Some(lb)) = (legacy(a), legacy(b)) else {
            bail!(
                "expects bottoms of shape (N, C) or (N, C, 1, 1), got {} and {}",
                shape_str(a),
                shape_str(b)
            );
        };
        if la != lb {
            bail!(
                "the two feature bottoms must have the same shape, got {} and {}",
                shape_str(a),
                shape_str(b)
            );
        }
        if s.iter().product::<usize>() != a[0] {
            bail!(
                "expects one similarity label per pair: {} pairs, got {}",
                a[0],
                shape_str(s)
            );
        }
        (self.num, self.channels) = la;
        Ok(Shapes {
            tops: vec![vec![]],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let diff = self.diff.get(cx.eng, self.num * self.channels);
        let dist_sq = self.dist_sq.get(cx.eng, self.num);
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Contrastive {
            a: cx.bottoms[0].data(),
            b: cx.bottoms[1].data(),
            sim: cx.bottoms[2].data(),
            diff,
            dist_sq,
            loss: cx.tops[0].data(),
            outer: self.num,
            channels: self.channels,
            margin: self.margin,
            legacy: self.legacy,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let diff = self.diff.get(cx.eng, self.num * self.channels);
        let dist_sq = self.dist_sq.get(cx.eng, self.num);
        for (i, sign) in [(0, 1.0), (1, -1.0)] {
            if propagate_down.get(i).copied().unwrap_or(false) {
                cx.eng
                    .launch(&Kernel::Softmax(SoftmaxKernel::ContrastiveGrad {
                        diff,
                        dist_sq,
                        sim: cx.bottoms[2].data(),
                        top_diff: cx.tops[0].diff(),
                        dx: cx.bottoms[i].diff(),
                        outer: self.num,
                        channels: self.channels,
                        margin: self.margin,
                        legacy: self.legacy,
                        sign,
                    }))?;
            }
        }
        Ok(())
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom < 2
    }

    fn is_loss(&self) -> bool {
        true
    }

    fn macs(&self) -> u64 {
        (self.num * self.channels) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{ContrastiveLossParameter, Phase};
    use crate::rng::Rng;

    fn case(n: usize, c: usize, legacy: bool, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let mut v = |k: usize| {
            (0..k)
                .map(|_| rng.uniform_range(-0.5, 0.5))
                .collect::<Vec<f32>>()
        };
        let (a, b) = (v(n * c), v(n * c));
        LayerCase {
            param: LayerParameter {
                r#type: Some("ContrastiveLoss".into()),
                top: vec!["loss".into()],
                contrastive_loss_param: Some(ContrastiveLossParameter {
                    margin: Some(1.0),
                    legacy_version: Some(legacy),
                }),
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (vec![n, c], a),
                (vec![n, c], b),
                (vec![n], (0..n).map(|i| (i % 2) as f32).collect()),
            ],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(2, 2, false, 1);
        c.bottoms[0].1 = vec![0.0, 0.0, 0.0, 0.0];
        c.bottoms[1].1 = vec![0.3, 0.4, 0.3, 0.4];
        c.bottoms[2].1 = vec![0.0, 1.0];
        // dissimilar: (1 - 0.5)^2 = 0.25; similar: 0.25
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        assert!((run.tops[0].1[0] - 0.5 / 4.0).abs() < 1e-6);
        c.param.contrastive_loss_param = Some(ContrastiveLossParameter {
            margin: Some(1.0),
            legacy_version: Some(true),
        });
        // dissimilar legacy: 1 - 0.25 = 0.75
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        assert!((run.tops[0].1[0] - 1.0 / 4.0).abs() < 1e-6);
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        // The 1e-4 epsilon makes the non-legacy gradient differ slightly from the true one.
        check_gradient(&mut eng, &case(6, 3, false, 2), &[0, 1], 1e-2, 2e-2).unwrap();
        check_gradient(&mut eng, &case(6, 3, true, 3), &[0, 1], 1e-2, 1e-2).unwrap();
    }
}
