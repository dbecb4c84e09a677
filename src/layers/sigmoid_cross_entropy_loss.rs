//! SigmoidCrossEntropyLoss: loss = -sum [t log(sigmoid(x)) + (1 - t) log(1 - sigmoid(x))] / n,
//! computed in Caffe's overflow-safe form. `loss_param.ignore_label` skips targets equal to it;
//! the normalisation defaults to BATCH_SIZE (unlike SoftmaxWithLoss), as real Caffe does.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, count, shape_str};
use super::softmax_with_loss::{LossSettings, check_first_dim, loss_settings};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::{Normalization, SoftmaxKernel};
use crate::proto::LayerParameter;

pub struct SigmoidCrossEntropyLoss {
    settings: LossSettings,
    outer: usize,
    inner: usize,
    norm: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    Ok(Box::new(SigmoidCrossEntropyLoss {
        settings: loss_settings(param, Normalization::BatchSize),
        outer: 0,
        inner: 0,
        norm: Scratch::default(),
    }))
}

impl Layer for SigmoidCrossEntropyLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        check_first_dim(bottoms)?;
        let (x, t) = (&bottoms[0], &bottoms[1]);
        if x.iter().product::<usize>() != t.iter().product::<usize>() {
            bail!(
                "inputs must have the same count: got {} and {}",
                shape_str(x),
                shape_str(t)
            );
        }
        self.outer = x.first().copied().unwrap_or(1);
        self.inner = count(x, 1, x.len());
        Ok(Shapes {
            tops: vec![vec![]],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let norm = self.norm.get(cx.eng, 1);
        cx.eng
            .launch(&Kernel::Softmax(SoftmaxKernel::SigmoidCrossEntropy {
                x: cx.bottoms[0].data(),
                target: cx.bottoms[1].data(),
                loss: cx.tops[0].data(),
                norm,
                outer: self.outer,
                inner: self.inner,
                ignore_label: self.settings.ignore_label,
                mode: self.settings.mode,
            }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let norm = self.norm.get(cx.eng, 1);
        cx.eng
            .launch(&Kernel::Softmax(SoftmaxKernel::SigmoidCrossEntropyGrad {
                x: cx.bottoms[0].data(),
                target: cx.bottoms[1].data(),
                top_diff: cx.tops[0].diff(),
                norm,
                dx: cx.bottoms[0].diff(),
                ignore_label: self.settings.ignore_label,
            }))
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom == 0
    }

    fn is_loss(&self) -> bool {
        true
    }

    fn macs(&self) -> u64 {
        (self.outer * self.inner * 3) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::loss_parameter::NormalizationMode;
    use crate::proto::{LossParameter, Phase};
    use crate::rng::Rng;

    fn case(shape: &[usize], loss: Option<LossParameter>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        LayerCase {
            param: LayerParameter {
                r#type: Some("SigmoidCrossEntropyLoss".into()),
                top: vec!["loss".into()],
                loss_param: loss,
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (
                    shape.to_vec(),
                    (0..n).map(|_| rng.uniform_range(-3.0, 3.0)).collect(),
                ),
                (
                    shape.to_vec(),
                    (0..n)
                        .map(|_| if rng.uniform() < 0.5 { 0.0 } else { 1.0 })
                        .collect(),
                ),
            ],
            params: None,
        }
    }

    fn reference(x: &[f32], t: &[f32]) -> f64 {
        x.iter()
            .zip(t)
            .map(|(&x, &t)| {
                let p = 1.0 / (1.0 + (-f64::from(x)).exp());
                -(f64::from(t) * p.ln() + (1.0 - f64::from(t)) * (1.0 - p).ln())
            })
            .sum()
    }

    #[test]
    fn forward_matches_reference() {
        let c = case(&[3, 4], None, 1);
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        let want = reference(&c.bottoms[0].1, &c.bottoms[1].1) / 3.0;
        assert!((f64::from(run.tops[0].1[0]) - want).abs() < 1e-5);
        // Large logits do not overflow.
        let mut c = case(&[1, 2], None, 1);
        c.bottoms[0].1 = vec![100.0, -100.0];
        c.bottoms[1].1 = vec![1.0, 0.0];
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        assert!(run.tops[0].1[0].abs() < 1e-6);
    }

    #[test]
    fn ignore_and_valid() {
        let lp = LossParameter {
            ignore_label: Some(-1),
            normalization: Some(NormalizationMode::Valid as i32),
            normalize: None,
        };
        let mut c = case(&[2, 3], Some(lp), 2);
        c.bottoms[1].1[1] = -1.0;
        c.bottoms[1].1[4] = -1.0;
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&[vec![1.0]]), None).unwrap();
        let keep: Vec<usize> = vec![0, 2, 3, 5];
        let x: Vec<f32> = keep.iter().map(|&i| c.bottoms[0].1[i]).collect();
        let t: Vec<f32> = keep.iter().map(|&i| c.bottoms[1].1[i]).collect();
        assert!((f64::from(run.tops[0].1[0]) - reference(&x, &t) / 4.0).abs() < 1e-5);
        assert_eq!(run.bottom_diffs[0][1], 0.0);
        assert_eq!(run.bottom_diffs[0][4], 0.0);
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        check_gradient(&mut eng, &case(&[3, 4], None, 3), &[0], 1e-2, 1e-2).unwrap();
        let lp = LossParameter {
            ignore_label: None,
            normalization: Some(NormalizationMode::Full as i32),
            normalize: None,
        };
        check_gradient(&mut eng, &case(&[2, 2, 3], Some(lp), 4), &[0], 1e-2, 1e-2).unwrap();
    }
}
