//! Eltwise: element-wise SUM (with optional per-bottom coefficients), PROD or MAX of 2 or more
//! equally shaped bottoms.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::{BackwardStep, Ctx, Layer, Shapes, StageDims};
use crate::engine::View;
use crate::engine::kernels::Kernel;
use crate::engine::kernels::elementwise::{ChannelStage, ElementwiseKernel, NaryOp, StageOp};
use crate::proto::{LayerParameter, Phase};
use crate::proto::eltwise_parameter::EltwiseOp;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.eltwise_param.clone().unwrap_or_default();
    let operation = p.operation();
    if operation != EltwiseOp::Sum && !p.coeff.is_empty() {
        bail!(
            "Eltwise takes coefficients only for SUM (operation is {})",
            operation.as_str_name()
        );
    }
    Ok(Box::new(Eltwise {
        operation,
        coeff: p.coeff.clone(),
        stable: p.stable_prod_grad(),
        op: None,
        count: 0,
        bottoms: 0,
        argmax: Scratch::default(),
    }))
}

struct Eltwise {
    operation: EltwiseOp,
    coeff: Vec<f32>,
    stable: bool,
    op: Option<NaryOp>,
    count: usize,
    bottoms: usize,
    argmax: Scratch,
}

impl Layer for Eltwise {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, usize::MAX)?;
        if !self.coeff.is_empty() && self.coeff.len() != bottoms.len() {
            bail!(
                "Eltwise takes one coefficient per bottom blob: {} coefficients for {} bottoms",
                self.coeff.len(),
                bottoms.len()
            );
        }
        for (i, b) in bottoms.iter().enumerate().skip(1) {
            if b != &bottoms[0] {
                bail!(
                    "bottom {i} has shape {} but bottom 0 has {}: Eltwise needs equal shapes",
                    shape_str(b),
                    shape_str(&bottoms[0])
                );
            }
        }
        self.op = Some(match self.operation {
            EltwiseOp::Sum => NaryOp::Sum {
                coeffs: if self.coeff.is_empty() {
                    vec![1.0; bottoms.len()]
                } else {
                    self.coeff.clone()
                },
            },
            EltwiseOp::Prod => NaryOp::Prod {
                stable: self.stable,
            },
            EltwiseOp::Max => NaryOp::Max,
        });
        self.count = bottoms[0].iter().product();
        self.bottoms = bottoms.len();
        Ok(Shapes {
            tops: vec![bottoms[0].clone()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let op = self
            .op
            .clone()
            .ok_or_else(|| anyhow::anyhow!("Eltwise forward before reshape"))?;
        let xs: Vec<View> = cx.bottoms.iter().map(|b| b.data()).collect();
        let argmax = if op == NaryOp::Max {
            Some(self.argmax.get(cx.eng, self.count))
        } else {
            None
        };
        cx.eng.launch(&Kernel::Elementwise(ElementwiseKernel::Nary {
            op,
            xs,
            y: cx.tops[0].data(),
            argmax,
        }))
    }

    fn stage_dims(&self, _phase: Phase) -> Option<StageDims> {
        matches!(self.op, Some(NaryOp::Sum { .. })).then_some(StageDims::Any)
    }

    fn forward_stage(&mut self, cx: &mut Ctx, _for_backward: bool) -> Result<ChannelStage> {
        let Some(NaryOp::Sum { coeffs }) = self.op.clone() else {
            bail!("internal: only Eltwise SUM is a point-wise step");
        };
        Ok(ChannelStage {
            op: StageOp::Sum {
                coeffs,
                others: cx.bottoms[1..].iter().map(|b| b.data()).collect(),
            },
            save: None,
        })
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let op = self
            .op
            .clone()
            .ok_or_else(|| anyhow::anyhow!("Eltwise backward before reshape"))?;
        if let NaryOp::Sum { coeffs } = &op {
            let outs = (coeffs.iter().zip(cx.bottoms).zip(propagate_down))
                .filter(|(_, down)| **down)
                .map(|((&c, b), _)| (c, b.diff()))
                .collect();
            let kernel = ElementwiseKernel::JunctionBackward {
                sums: vec![],
                neuron_grad: None,
                dy: cx.tops[0].diff(),
                outs,
            };
            return cx.eng.launch(&Kernel::Elementwise(kernel));
        }
        let xs: Vec<View> = cx.bottoms.iter().map(|b| b.data()).collect();
        let argmax = if op == NaryOp::Max {
            Some(self.argmax.get(cx.eng, self.count))
        } else {
            None
        };
        for (index, bottom) in cx.bottoms.iter().enumerate() {
            if !propagate_down.get(index).copied().unwrap_or(false) {
                continue;
            }
            let kernel = ElementwiseKernel::NaryBackward {
                op: op.clone(),
                index,
                xs: xs.clone(),
                y: cx.tops[0].data(),
                argmax,
                dy: cx.tops[0].diff(),
                dx: bottom.diff(),
            };
            cx.eng.launch(&Kernel::Elementwise(kernel))?;
        }
        Ok(())
    }

    fn backward_step(&mut self, _cx: &mut Ctx) -> Option<BackwardStep> {
        match &self.op {
            Some(NaryOp::Sum { coeffs }) => Some(BackwardStep::Distribute(coeffs.clone())),
            _ => None,
        }
    }

    fn macs(&self) -> u64 {
        self.count as u64 * self.bottoms.saturating_sub(1).max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn sum_prod_max_values() {
        let a = vec![1.0, -2.0, 3.0, 0.5];
        let b = vec![2.0, -2.0, -1.0, 4.0];
        let c = vec![0.0, 5.0, 3.0, 1.0];
        let dy = vec![1.0, 2.0, 3.0, 4.0];
        let bottoms = vec![
            (vec![4], a.clone()),
            (vec![4], b.clone()),
            (vec![4], c.clone()),
        ];
        let r = run(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -1 coeff: 2 }"#,
                bottoms.clone(),
            ),
            Some(std::slice::from_ref(&dy)),
        );
        assert_close(&r.tops[0].1, &[-1.5, 11.0, 8.5, -1.75], 1e-6);
        assert_close(&r.bottom_diffs[1], &[-1.0, -2.0, -3.0, -4.0], 1e-6);
        assert_close(&r.bottom_diffs[2], &[2.0, 4.0, 6.0, 8.0], 1e-6);
        let r = run(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: PROD }"#,
                bottoms.clone(),
            ),
            Some(std::slice::from_ref(&dy)),
        );
        assert_close(&r.tops[0].1, &[0.0, 20.0, -9.0, 2.0], 1e-6);
        // Stable gradient: product of the others (defined even where an input is 0).
        assert_close(&r.bottom_diffs[0], &[0.0, -20.0, -9.0, 16.0], 1e-6);
        assert_close(&r.bottom_diffs[2], &[2.0, 8.0, -9.0, 8.0], 1e-6);
        let r = run(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: MAX }"#,
                bottoms,
            ),
            Some(&[dy]),
        );
        assert_close(&r.tops[0].1, &[2.0, 5.0, 3.0, 4.0], 1e-6);
        // Ties: a vs b tie -> b; later bottoms must be strictly greater (a=3 vs c=3 at index 2 -> a).
        assert_eq!(r.bottom_diffs[0], vec![0.0, 0.0, 3.0, 0.0]);
        assert_eq!(r.bottom_diffs[1], vec![1.0, 0.0, 0.0, 4.0]);
        assert_eq!(r.bottom_diffs[2], vec![0.0, 2.0, 0.0, 0.0]);
        let r = run(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: MAX }"#,
                vec![(vec![1], vec![1.0]), (vec![1], vec![1.0])],
            ),
            Some(&[vec![1.0]]),
        );
        assert_eq!((r.bottom_diffs[0][0], r.bottom_diffs[1][0]), (0.0, 1.0));
    }

    #[test]
    fn bad_params_are_errors() {
        assert!(
            crate::layers::create(&param(
                r#"type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }"#
            ))
            .is_err()
        );
        let c = case(
            r#"type: "Eltwise" eltwise_param { coeff: 1 }"#,
            vec![(vec![2], vec![0.0; 2]), (vec![2], vec![0.0; 2])],
        );
        let mut l = crate::layers::create(&c.param).unwrap();
        assert!(l.reshape(&[vec![2], vec![2]]).is_err());
        assert!(l.reshape(&[vec![2], vec![3]]).is_err());
    }

    #[test]
    fn gradients() {
        let mk = |seed: u64, gap: f32| -> Vec<(Vec<usize>, Vec<f32>)> {
            (0..3)
                .map(|k| {
                    (
                        vec![2, 3, 2],
                        values(seed + k, 12, -2.0, 2.0, &[], 0.0)
                            .iter()
                            .map(|v| v + k as f32 * gap)
                            .collect(),
                    )
                })
                .collect()
        };
        grad(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -1.5 coeff: 2 }"#,
                mk(70, 0.0),
            ),
            &[0, 1, 2],
        );
        grad(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: PROD }"#,
                mk(73, 0.0),
            ),
            &[0, 1, 2],
        );
        grad(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }"#,
                mk(76, 0.0),
            ),
            &[0, 1, 2],
        );
        // MAX: keep the bottoms well apart so finite differences do not switch the winner.
        let bottoms: Vec<(Vec<usize>, Vec<f32>)> = (0..3)
            .map(|k| {
                (
                    vec![12],
                    (0..12)
                        .map(|i| ((i * 7 + k * 5) % 12) as f32 * 0.5)
                        .collect(),
                )
            })
            .collect();
        grad(
            &case(
                r#"type: "Eltwise" eltwise_param { operation: MAX }"#,
                bottoms,
            ),
            &[0, 1, 2],
        );
    }
}
