//! Accuracy: the fraction of (non-ignored) positions whose label is among the `top_k` highest
//! scores along `accuracy_param.axis` (ties count against). An optional top 1 holds the accuracy
//! of each class (0 for a class without samples). No backward.
use anyhow::{Result, bail};

use super::common::{check_count, shape_str};
use super::softmax::split_at_axis;
use super::softmax_with_loss::check_labels;
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::SoftmaxKernel;
use crate::proto::LayerParameter;

pub struct Accuracy {
    top_k: usize,
    axis: i32,
    ignore_label: Option<i32>,
    per_class: bool,
    dims: [usize; 3],
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 2)?;
    let p = param.accuracy_param.unwrap_or_default();
    Ok(Box::new(Accuracy {
        top_k: p.top_k() as usize,
        axis: p.axis(),
        ignore_label: p.ignore_label,
        per_class: param.top.len() == 2,
        dims: [0; 3],
    }))
}

impl Layer for Accuracy {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        let (count, labels) = (
            bottoms[0].iter().product::<usize>(),
            bottoms[1].iter().product::<usize>(),
        );
        if self.top_k == 0 || labels == 0 || self.top_k > count / labels {
            bail!(
                "top_k ({}) must be between 1 and the number of classes ({} for predictions {} and labels {})",
                self.top_k,
                count / labels.max(1),
                shape_str(&bottoms[0]),
                shape_str(&bottoms[1])
            );
        }
        self.dims = split_at_axis(&bottoms[0], self.axis)?;
        check_labels(self.dims, &bottoms[0], &bottoms[1])?;
        let mut tops = vec![vec![]];
        if self.per_class {
            tops.push(vec![self.dims[1]]);
        }
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let [outer, channels, inner] = self.dims;
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Accuracy {
            x: cx.bottoms[0].data(),
            label: cx.bottoms[1].data(),
            acc: cx.tops[0].data(),
            per_class: cx.tops.get(1).map(|t| t.data()),
            outer,
            channels,
            inner,
            top_k: self.top_k,
            ignore_label: self.ignore_label,
        }))
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }

    fn macs(&self) -> u64 {
        self.dims.iter().product::<usize>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, run_layer};
    use crate::proto::{AccuracyParameter, Phase};

    fn case(
        x: Vec<f32>,
        shape: Vec<usize>,
        labels: Vec<f32>,
        p: AccuracyParameter,
        tops: usize,
    ) -> LayerCase {
        let lshape = vec![labels.len()];
        LayerCase {
            param: LayerParameter {
                r#type: Some("Accuracy".into()),
                top: ["acc", "per_class"][..tops]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                accuracy_param: Some(p),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(shape, x), (lshape, labels)],
            params: None,
        }
    }

    #[test]
    fn top1_topk_ties_and_per_class() {
        let x = vec![
            0.1, 0.5, 0.4, // best 1
            0.3, 0.3, 0.4, // tie between 0 and 1
            0.9, 0.05, 0.05, // best 0
            0.2, 0.3, 0.5, // best 2
        ];
        let labels = vec![1.0, 0.0, 0.0, 1.0];
        let p = AccuracyParameter::default();
        let run = run_layer(
            &mut CpuEngine::new(),
            &case(x.clone(), vec![4, 3], labels.clone(), p, 2),
            None,
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0].1, vec![0.5]);
        assert_eq!(run.tops[1].0, vec![3]);
        assert_eq!(run.tops[1].1, vec![0.5, 0.5, 0.0]);
        // top 2: sample 1 has 3 classes >= its 0.3 (tie counts against) -> wrong; sample 3 right.
        let p = AccuracyParameter {
            top_k: Some(2),
            ..Default::default()
        };
        let run = run_layer(
            &mut CpuEngine::new(),
            &case(x.clone(), vec![4, 3], labels.clone(), p, 1),
            None,
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0].1, vec![0.75]);
        // ignore label 0: only samples 0 and 3 count.
        let p = AccuracyParameter {
            ignore_label: Some(0),
            ..Default::default()
        };
        let run = run_layer(
            &mut CpuEngine::new(),
            &case(x, vec![4, 3], labels, p, 2),
            None,
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0].1, vec![0.5]);
        assert_eq!(run.tops[1].1, vec![0.0, 0.5, 0.0]);
    }

    #[test]
    fn spatial_axis_and_errors() {
        // [1, 2, 2]: two positions, classes along axis 1
        let x = vec![0.1, 0.9, 0.8, 0.2];
        let run = run_layer(
            &mut CpuEngine::new(),
            &case(
                x.clone(),
                vec![1, 2, 2],
                vec![1.0, 1.0],
                AccuracyParameter::default(),
                1,
            ),
            None,
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0].1, vec![0.5]);
        let p = AccuracyParameter {
            top_k: Some(3),
            ..Default::default()
        };
        assert!(
            run_layer(
                &mut CpuEngine::new(),
                &case(x, vec![1, 2, 2], vec![1.0, 1.0], p, 1),
                None,
                None
            )
            .is_err()
        );
    }
}
