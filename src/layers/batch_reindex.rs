//! BatchReindex: top[i] = bottom[permut[i]] along the first axis, permut being the 1-D bottom 1;
//! the top's first dimension is len(permut). Repeated indices add up in the gradient, unused items
//! get 0; no gradient flows to the indices.
use anyhow::{Result, bail};

use super::common::{check_count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::transfer::TransferKernel;
use crate::proto::LayerParameter;

#[derive(Default)]
pub struct BatchReindex {
    rows: usize,
    src_rows: usize,
    row_len: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    Ok(Box::new(BatchReindex::default()))
}

impl Layer for BatchReindex {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        let (b, p) = (&bottoms[0], &bottoms[1]);
        if p.len() != 1 {
            bail!("the index bottom must be 1-D, got {}", shape_str(p));
        }
        if b.is_empty() {
            bail!("the data bottom needs at least one axis");
        }
        let mut top = b.clone();
        top[0] = p[0];
        self.rows = p[0];
        self.src_rows = b[0];
        self.row_len = b[1..].iter().product();
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        cx.eng.launch(&Kernel::Transfer(TransferKernel::GatherRows {
            src: cx.bottoms[0].data(),
            index: cx.bottoms[1].data(),
            dst: cx.tops[0].data(),
            rows: self.rows,
            row_len: self.row_len,
            src_rows: self.src_rows,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        cx.eng
            .launch(&Kernel::Transfer(TransferKernel::ScatterAddRows {
                src: cx.tops[0].diff(),
                index: cx.bottoms[1].data(),
                dst: cx.bottoms[0].diff(),
                rows: self.rows,
                row_len: self.row_len,
                dst_rows: self.src_rows,
            }))
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::Phase;

    fn case(permut: Vec<f32>) -> LayerCase {
        LayerCase {
            param: LayerParameter {
                r#type: Some("BatchReindex".into()),
                top: vec!["r".into()],
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                (vec![permut.len()], permut),
            ],
            params: None,
        }
    }

    #[test]
    fn forward_backward() {
        let c = case(vec![2.0, 0.0, 2.0, 2.0]);
        let run = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(&[vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]]),
            None,
        )
        .unwrap();
        assert_eq!(
            run.tops[0],
            (vec![4, 2], vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0, 5.0, 6.0])
        );
        assert_eq!(run.bottom_diffs[0], vec![2.0, 2.0, 0.0, 0.0, 8.0, 8.0]);
        let e = run_layer(&mut CpuEngine::new(), &case(vec![3.0]), None, None).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = run_layer(&mut CpuEngine::new(), &case(vec![-1.0]), None, None).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn gradients() {
        check_gradient(
            &mut CpuEngine::new(),
            &case(vec![1.0, 1.0, 0.0]),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
    }
}
