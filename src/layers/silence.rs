//! Silence: consumes its bottoms so they are not reported as net outputs; no tops. Backward writes
//! zeros into the bottoms' diffs.
use anyhow::Result;

use super::common::check_count;
use super::{Ctx, Layer, Shapes};
use crate::proto::LayerParameter;

pub struct Silence;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 0, 0)?;
    Ok(Box::new(Silence))
}

impl Layer for Silence {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, usize::MAX)?;
        Ok(Shapes::default())
    }

    fn forward(&mut self, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        for (b, &pd) in cx.bottoms.iter().zip(propagate_down) {
            if pd {
                cx.eng.fill(b.diff(), 0.0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, run_layer};
    use crate::proto::Phase;

    #[test]
    fn zeroes_bottom_diffs() {
        let c = LayerCase {
            param: LayerParameter {
                r#type: Some("Silence".into()),
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![(vec![2], vec![1.0, 2.0]), (vec![1], vec![3.0])],
            params: None,
        };
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&[]), None).unwrap();
        assert!(run.tops.is_empty());
        assert_eq!(run.bottom_diffs, vec![vec![0.0, 0.0], vec![0.0]]);
    }
}
