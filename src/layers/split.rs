//! Split: copies its bottom to every top (the net inserts it where a blob feeds several layers);
//! backward sums the top diffs. The tops are views of the bottom's values.
use anyhow::Result;

use super::common::check_count;
use super::flatten::view_copy;
use super::{BackwardStep, Ctx, Layer, Shapes, TopSharing};
use crate::engine::Kernel;
use crate::engine::kernels::elementwise::ElementwiseKernel;
use crate::proto::LayerParameter;

pub struct Split {
    num_tops: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, usize::MAX)?;
    Ok(Box::new(Split {
        num_tops: param.top.len(),
    }))
}

impl Layer for Split {
    fn top_sharing(&self) -> TopSharing {
        TopSharing::Data
    }

    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        Ok(Shapes {
            tops: vec![bottoms[0].clone(); self.num_tops],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        for t in cx.tops {
            view_copy(cx.eng, cx.bottoms[0].data(), t.data());
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        cx.eng
            .launch(&Kernel::Elementwise(ElementwiseKernel::JunctionBackward {
                sums: cx.tops.iter().map(|t| t.diff()).collect(),
                neuron_grad: None,
                dy: cx.bottoms[0].diff(),
                outs: vec![],
            }))
    }

    fn backward_step(&mut self, _cx: &mut Ctx) -> Option<BackwardStep> {
        Some(BackwardStep::SumOfTops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::Phase;

    fn case(tops: usize) -> LayerCase {
        LayerCase {
            param: LayerParameter {
                r#type: Some("Split".into()),
                top: (0..tops).map(|i| format!("t{i}")).collect(),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(vec![2, 2], vec![1.0, -2.0, 3.0, 0.5])],
            params: None,
        }
    }

    #[test]
    fn forward_backward() {
        let diffs = vec![
            vec![1.0, 2.0, 3.0, 4.0],
            vec![10.0, 20.0, 30.0, 40.0],
            vec![0.5; 4],
        ];
        let run = run_layer(&mut CpuEngine::new(), &case(3), Some(&diffs), None).unwrap();
        assert!(run.tops.iter().all(|t| t.1 == vec![1.0, -2.0, 3.0, 0.5]));
        assert_eq!(run.bottom_diffs[0], vec![11.5, 22.5, 33.5, 44.5]);
        let run = run_layer(&mut CpuEngine::new(), &case(1), Some(&diffs[..1]), None).unwrap();
        assert_eq!(run.bottom_diffs[0], diffs[0]);
    }

    #[test]
    fn gradients() {
        check_gradient(&mut CpuEngine::new(), &case(2), &[0], 1e-2, 1e-2).unwrap();
    }
}
