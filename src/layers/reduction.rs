//! Reduction: reduces all axes from `reduction_param.axis` (default 0) on with SUM, ASUM (sum of
//! |x|), SUMSQ or MEAN, times `coeff`; top shape = bottom.shape[..axis] (0 axes for axis 0).
use anyhow::Result;

use super::common::{canonical_axis, check_count, count};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::transfer::{ReduceOp, TransferKernel};
use crate::proto::LayerParameter;
use crate::proto::reduction_parameter::ReductionOp;

pub struct Reduction {
    op: ReduceOp,
    mean: bool,
    axis: i32,
    coeff: f32,
    num: usize,
    dim: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let p = param.reduction_param.unwrap_or_default();
    let (op, mean) = match p.operation() {
        ReductionOp::Sum => (ReduceOp::Sum, false),
        ReductionOp::Asum => (ReduceOp::Asum, false),
        ReductionOp::Sumsq => (ReduceOp::Sumsq, false),
        ReductionOp::Mean => (ReduceOp::Sum, true),
    };
    Ok(Box::new(Reduction {
        op,
        mean,
        axis: p.axis(),
        coeff: p.coeff(),
        num: 0,
        dim: 0,
    }))
}

impl Reduction {
    fn coeff(&self) -> f32 {
        if self.mean {
            self.coeff / self.dim as f32
        } else {
            self.coeff
        }
    }
}

impl Layer for Reduction {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let b = &bottoms[0];
        let a = canonical_axis(self.axis, b.len())?;
        self.num = count(b, 0, a);
        self.dim = count(b, a, b.len());
        Ok(Shapes {
            tops: vec![b[..a].to_vec()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.eng.launch(&Kernel::Transfer(TransferKernel::Reduce {
            x: cx.bottoms[0].data(),
            y: cx.tops[0].data(),
            outer: self.num,
            dim: self.dim,
            inner: 1,
            op: self.op,
            coeff: self.coeff(),
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        cx.eng.launch(&Kernel::Transfer(TransferKernel::ReduceGrad {
            x: cx.bottoms[0].data(),
            dy: cx.tops[0].diff(),
            dx: cx.bottoms[0].diff(),
            outer: self.num,
            dim: self.dim,
            op: self.op,
            coeff: self.coeff(),
        }))
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
    use crate::proto::{Phase, ReductionParameter};
    use crate::rng::Rng;

    fn case(
        shape: &[usize],
        op: ReductionOp,
        axis: Option<i32>,
        coeff: Option<f32>,
        seed: u64,
    ) -> LayerCase {
        let mut rng = Rng::new(seed);
        LayerCase {
            param: LayerParameter {
                r#type: Some("Reduction".into()),
                top: vec!["r".into()],
                reduction_param: Some(ReductionParameter {
                    operation: Some(op as i32),
                    axis,
                    coeff,
                }),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(
                shape.to_vec(),
                (0..shape.iter().product::<usize>())
                    .map(|_| {
                        let v = rng.uniform_range(0.1, 1.0);
                        if rng.uniform() < 0.5 { -v } else { v }
                    })
                    .collect(),
            )],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let x = vec![1.0, -2.0, 3.0, -4.0];
        for (op, axis, coeff, shape, want) in [
            (ReductionOp::Sum, None, None, vec![], vec![-2.0]),
            (ReductionOp::Asum, Some(1), None, vec![2], vec![3.0, 7.0]),
            (
                ReductionOp::Sumsq,
                Some(-1),
                Some(0.5),
                vec![2],
                vec![2.5, 12.5],
            ),
            (
                ReductionOp::Mean,
                Some(1),
                Some(2.0),
                vec![2],
                vec![-1.0, -1.0],
            ),
        ] {
            let mut c = case(&[2, 2], op, axis, coeff, 1);
            c.bottoms[0].1 = x.clone();
            let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
            assert_eq!(run.tops[0], (shape, want), "{op:?}");
        }
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        for (i, op) in [
            ReductionOp::Sum,
            ReductionOp::Asum,
            ReductionOp::Sumsq,
            ReductionOp::Mean,
        ]
        .into_iter()
        .enumerate()
        {
            check_gradient(
                &mut eng,
                &case(&[2, 3, 2], op, Some(1), Some(0.7), i as u64),
                &[0],
                1e-2,
                1e-2,
            )
            .unwrap();
            check_gradient(
                &mut eng,
                &case(&[3, 2], op, None, None, 10 + i as u64),
                &[0],
                1e-2,
                1e-2,
            )
            .unwrap();
        }
    }
}
