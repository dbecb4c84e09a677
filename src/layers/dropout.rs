//! Dropout: in TRAIN, y = x * mask / (1 - ratio) with a fresh Bernoulli(1 - ratio) mask each
//! forward (generated on the device from a seed drawn from the net's rng and the element index);
//! in TEST, the identity.
use anyhow::{Result, bail};

use super::common::check_count;
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::Kernel;
use crate::engine::kernels::elementwise::ElementwiseKernel;
use crate::engine::{Engine, View};
use crate::proto::{LayerParameter, Phase};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let ratio = param
        .dropout_param
        .as_ref()
        .map_or(0.5, |p| p.dropout_ratio());
    if !(0.0..1.0).contains(&ratio) {
        bail!("dropout_ratio must be in [0, 1), got {ratio}");
    }
    Ok(Box::new(Dropout {
        ratio,
        count: 0,
        seed: None,
    }))
}

struct Dropout {
    ratio: f32,
    count: usize,
    /// The mask seed of the last TRAIN forward (None after a TEST forward).
    seed: Option<u32>,
}

impl Dropout {
    fn apply(&self, eng: &mut dyn Engine, x: View, y: View) -> Result<()> {
        match self.seed {
            Some(seed) => {
                let scale = 1.0 / (1.0 - self.ratio);
                eng.launch(&Kernel::Elementwise(ElementwiseKernel::Dropout {
                    seed,
                    ratio: self.ratio,
                    scale,
                    x,
                    y,
                }))
            }
            None => {
                if x != y {
                    eng.copy(x, y);
                }
                Ok(())
            }
        }
    }
}

impl Layer for Dropout {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        self.count = bottoms[0].iter().product();
        Ok(Shapes {
            tops: vec![bottoms[0].clone()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        self.seed = if cx.phase == Phase::Train {
            Some(cx.rng.next_u64() as u32)
        } else {
            None
        };
        self.apply(cx.eng, cx.bottoms[0].data(), cx.tops[0].data())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if propagate_down.first().copied().unwrap_or(false) {
            self.apply(cx.eng, cx.tops[0].diff(), cx.bottoms[0].diff())?;
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        self.count as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;
    use crate::proto::Phase;

    #[test]
    fn test_phase_is_identity() {
        let x = values(60, 24, -2.0, 2.0, &[], 0.0);
        let c = case(
            r#"type: "Dropout" dropout_param { dropout_ratio: 0.3 }"#,
            vec![(vec![2, 12], x.clone())],
        );
        let r = run(&c, Some(std::slice::from_ref(&x)));
        assert_eq!(r.tops[0].1, x);
        assert_eq!(r.bottom_diffs[0], x);
    }

    #[test]
    fn train_phase_masks_and_scales() {
        let n = 20_000;
        let x = vec![1.0; n];
        let mut c = case(
            r#"type: "Dropout" dropout_param { dropout_ratio: 0.3 }"#,
            vec![(vec![n], x)],
        );
        c.phase = Phase::Train;
        let dy: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let r = run(&c, Some(std::slice::from_ref(&dy)));
        let scale = 1.0 / 0.7f32;
        let kept = r.tops[0].1.iter().filter(|&&v| v != 0.0).count();
        assert!(
            (kept as f64 / n as f64 - 0.7).abs() < 0.02,
            "kept {kept} of {n}"
        );
        for ((&y, &d), &dx) in r.tops[0].1.iter().zip(&dy).zip(&r.bottom_diffs[0]) {
            assert!(y == 0.0 || (y - scale).abs() < 1e-6);
            // Backward uses the same mask.
            let want = if y == 0.0 { 0.0 } else { d * scale };
            assert!((dx - want).abs() <= 1e-3 * want.abs().max(1.0));
        }
    }

    #[test]
    fn bad_ratio_is_an_error() {
        assert!(
            crate::layers::create(&param(
                r#"type: "Dropout" dropout_param { dropout_ratio: 1 }"#
            ))
            .is_err()
        );
    }
}
