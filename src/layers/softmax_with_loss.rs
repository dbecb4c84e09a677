//! SoftmaxWithLoss: softmax along `softmax_param.axis` followed by the multinomial logistic loss
//! of the integer labels in bottom 1. `loss_param`: `ignore_label`, `normalization` (default VALID;
//! legacy `normalize: false` = BATCH_SIZE), divisor max(1, n). Top 0 is the 0-axis loss; an
//! optional top 1 receives the probabilities.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::softmax::split_at_axis;
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::{Normalization, SoftmaxKernel};
use crate::proto::LayerParameter;
use crate::proto::loss_parameter::NormalizationMode;

/// `loss_param` as Caffe's loss layers read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LossSettings {
    pub ignore_label: Option<i32>,
    pub mode: Normalization,
}

/// Reads `loss_param`: an explicit `normalization` wins, else the legacy `normalize` (true = VALID,
/// false = BATCH_SIZE), else `default`.
pub(crate) fn loss_settings(param: &LayerParameter, default: Normalization) -> LossSettings {
    let lp = param.loss_param.unwrap_or_default();
    let mode = if lp.normalization.is_some() {
        match lp.normalization() {
            NormalizationMode::Full => Normalization::Full,
            NormalizationMode::Valid => Normalization::Valid,
            NormalizationMode::BatchSize => Normalization::BatchSize,
            NormalizationMode::None => Normalization::None,
        }
    } else if let Some(n) = lp.normalize {
        if n {
            Normalization::Valid
        } else {
            Normalization::BatchSize
        }
    } else {
        default
    };
    LossSettings {
        ignore_label: lp.ignore_label,
        mode,
    }
}

/// Caffe's LossLayer::Reshape check: data and label share their first dimension.
pub(crate) fn check_first_dim(bottoms: &[Vec<usize>]) -> Result<()> {
    let d0 = bottoms[0].first().copied().unwrap_or(1);
    let d1 = bottoms[1].first().copied().unwrap_or(1);
    if d0 != d1 {
        bail!(
            "the data and label should have the same first dimension: got {} and {}",
            shape_str(&bottoms[0]),
            shape_str(&bottoms[1])
        );
    }
    Ok(())
}

pub struct SoftmaxWithLoss {
    axis: i32,
    settings: LossSettings,
    two_tops: bool,
    dims: [usize; 3],
    prob: Scratch,
    norm: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 2)?;
    Ok(Box::new(SoftmaxWithLoss {
        axis: param.softmax_param.as_ref().map_or(1, |p| p.axis()),
        settings: loss_settings(param, Normalization::Valid),
        two_tops: param.top.len() == 2,
        dims: [0; 3],
        prob: Scratch::default(),
        norm: Scratch::default(),
    }))
}

/// Checks that the label blob holds one label per (outer, inner) position.
pub(crate) fn check_labels(dims: [usize; 3], data: &[usize], label: &[usize]) -> Result<()> {
    let [outer, _, inner] = dims;
    let n: usize = label.iter().product();
    if n != outer * inner {
        bail!(
            "number of labels must match number of predictions: prediction shape {} needs {} labels, \
             label shape is {} (e.g. for softmax axis 1 and predictions (N, C, H, W) the labels are \
             N*H*W integers in 0..C)",
            shape_str(data),
            outer * inner,
            shape_str(label)
        );
    }
    Ok(())
}

impl Layer for SoftmaxWithLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        check_first_dim(bottoms)?;
        self.dims = split_at_axis(&bottoms[0], self.axis)?;
        check_labels(self.dims, &bottoms[0], &bottoms[1])?;
        let mut tops = vec![vec![]];
        if self.two_tops {
            tops.push(bottoms[0].clone());
        }
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let [outer, channels, inner] = self.dims;
        let n = outer * channels * inner;
        let prob = if self.two_tops {
            cx.tops[1].data()
        } else {
            self.prob.get(cx.eng, n)
        };
        let norm = self.norm.get(cx.eng, 1);
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Forward {
            x: cx.bottoms[0].data(),
            y: prob,
            outer,
            channels,
            inner,
        }))?;
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::CrossEntropy {
            prob,
            label: cx.bottoms[1].data(),
            infogain: None,
            loss: cx.tops[0].data(),
            norm,
            outer,
            channels,
            inner,
            ignore_label: self.settings.ignore_label,
            mode: self.settings.mode,
            log_min: f32::MIN_POSITIVE,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let [outer, channels, inner] = self.dims;
        let n = outer * channels * inner;
        let prob = if self.two_tops {
            cx.tops[1].data()
        } else {
            self.prob.get(cx.eng, n)
        };
        let norm = self.norm.get(cx.eng, 1);
        cx.eng
            .launch(&Kernel::Softmax(SoftmaxKernel::CrossEntropyGrad {
                prob,
                label: cx.bottoms[1].data(),
                infogain: None,
                top_diff: cx.tops[0].diff(),
                norm,
                dx: cx.bottoms[0].diff(),
                outer,
                channels,
                inner,
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
        (self.dims.iter().product::<usize>() * 4) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{LossParameter, Phase};
    use crate::rng::Rng;

    fn case(
        shape: &[usize],
        labels: Vec<f32>,
        loss: Option<LossParameter>,
        seed: u64,
    ) -> LayerCase {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        let mut lshape = shape.to_vec();
        lshape[1] = 1;
        LayerCase {
            param: LayerParameter {
                r#type: Some("SoftmaxWithLoss".into()),
                top: vec!["loss".into()],
                loss_param: loss,
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (
                    shape.to_vec(),
                    (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect(),
                ),
                (lshape, labels),
            ],
            params: None,
        }
    }

    fn lp(
        ignore: Option<i32>,
        mode: Option<NormalizationMode>,
        normalize: Option<bool>,
    ) -> Option<LossParameter> {
        Some(LossParameter {
            ignore_label: ignore,
            normalization: mode.map(|m| m as i32),
            normalize,
        })
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(&[2, 3], vec![0.0, 2.0], None, 1);
        c.bottoms[0].1 = vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&[vec![1.0]]), None).unwrap();
        let s = 1.0f32 + 1f32.exp() + 2f32.exp();
        let want = (3f32.ln() - (2f32.exp() / s).ln()) / 2.0;
        assert!(run.tops[0].0.is_empty());
        assert!(
            (run.tops[0].1[0] - want).abs() < 1e-6,
            "{} vs {want}",
            run.tops[0].1[0]
        );
        let g = &run.bottom_diffs[0];
        assert!((g[0] - (1.0 / 3.0 - 1.0) / 2.0).abs() < 1e-6);
        assert!((g[5] - (2f32.exp() / s - 1.0) / 2.0).abs() < 1e-6);
        assert!(run.bottom_diffs[1].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn normalizations() {
        // 2 x 3 x 2 spatial, labels with one ignored (label 1 at position 1).
        let labels = vec![0.0, 1.0, 2.0, 0.0];
        let base = case(
            &[2, 3, 2],
            labels.clone(),
            lp(None, Some(NormalizationMode::None), None),
            4,
        );
        let total = run_layer(&mut CpuEngine::new(), &base, None, None)
            .unwrap()
            .tops[0]
            .1[0];
        let ign = case(
            &[2, 3, 2],
            labels.clone(),
            lp(Some(1), Some(NormalizationMode::None), None),
            4,
        );
        let sum_valid = run_layer(&mut CpuEngine::new(), &ign, None, None)
            .unwrap()
            .tops[0]
            .1[0];
        assert!(sum_valid < total);
        for (mode, normalize, div) in [
            (Some(NormalizationMode::Full), None, 4.0),
            (Some(NormalizationMode::Valid), None, 3.0),
            (Some(NormalizationMode::BatchSize), None, 2.0),
            (None, Some(false), 2.0),
            (None, Some(true), 3.0),
            (None, None, 3.0),
        ] {
            let c = case(&[2, 3, 2], labels.clone(), lp(Some(1), mode, normalize), 4);
            let l = run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap()
                .tops[0]
                .1[0];
            assert!(
                (l - sum_valid / div).abs() < 1e-5,
                "{mode:?} {normalize:?}: {l} vs {}",
                sum_valid / div
            );
        }
        // Everything ignored: VALID divides by max(1, 0) and the loss is 0.
        let c = case(&[2, 3, 2], vec![1.0; 4], lp(Some(1), None, None), 4);
        assert_eq!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap()
                .tops[0]
                .1[0],
            0.0
        );
    }

    #[test]
    fn second_top_is_prob() {
        let mut c = case(&[2, 3], vec![0.0, 2.0], None, 5);
        c.param.top.push("prob".into());
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        assert_eq!(run.tops[1].0, vec![2, 3]);
        assert!((run.tops[1].1[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_labels_are_errors() {
        let c = case(&[2, 3], vec![0.0, 3.0], None, 6);
        let e = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let mut c = case(&[2, 3], vec![0.0, 1.0], None, 6);
        c.bottoms[1] = (vec![2, 2], vec![0.0; 4]);
        let e = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap_err();
        assert!(e.to_string().contains("number of labels"), "{e}");
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        check_gradient(
            &mut eng,
            &case(&[3, 4], vec![0.0, 3.0, 1.0], None, 7),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
        let labels = vec![0.0, 1.0, 2.0, 255.0, 1.0, 0.0];
        for mode in [
            NormalizationMode::Full,
            NormalizationMode::Valid,
            NormalizationMode::BatchSize,
        ] {
            let c = case(
                &[2, 3, 3],
                labels.clone(),
                lp(Some(255), Some(mode), None),
                8,
            );
            check_gradient(&mut eng, &c, &[0], 1e-2, 1e-2).unwrap();
        }
    }
}
