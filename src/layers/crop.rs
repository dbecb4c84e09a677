//! Crop: cuts bottom 0 to the shape of bottom 1 on the axes from `crop_param.axis` (default 2) on,
//! starting at `offset` (none: 0; one: for every cropped axis; else one per cropped axis). Bottom 1
//! only supplies its shape and gets no gradient.
use anyhow::{Result, bail};

use super::common::{canonical_axis, check_count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::transfer::TransferKernel;
use crate::proto::LayerParameter;

pub struct Crop {
    axis: i32,
    offsets: Vec<usize>,
    bottom: Vec<usize>,
    top: Vec<usize>,
    /// Offset of each axis in the last reshape.
    at: Vec<usize>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let p = param.crop_param.clone().unwrap_or_default();
    Ok(Box::new(Crop {
        axis: p.axis(),
        offsets: p.offset.iter().map(|&o| o as usize).collect(),
        bottom: vec![],
        top: vec![],
        at: vec![],
    }))
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Crop {
    /// The copy between the cropped region of bottom 0 (`region`) and the dense top (`dense`).
    fn kernel(
        &self,
        region: crate::engine::View,
        dense: crate::engine::View,
        to_top: bool,
    ) -> Kernel {
        let bs = strides(&self.bottom);
        let start: usize = self.at.iter().zip(&bs).map(|(a, s)| a * s).sum();
        let region = region.slice(start, region.len - start);
        let ts = strides(&self.top);
        let (src, dst, src_strides, dst_strides) = if to_top {
            (region, dense, bs, ts)
        } else {
            (dense, region, ts, bs)
        };
        Kernel::Transfer(TransferKernel::Strided {
            src,
            dst,
            dims: self.top.clone(),
            src_strides,
            dst_strides,
            add: false,
        })
    }
}

impl Layer for Crop {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 2)?;
        let (b, r) = (&bottoms[0], &bottoms[1]);
        let n = b.len();
        let start = canonical_axis(self.axis, n)?;
        if self.offsets.len() > 1 && start + self.offsets.len() != n {
            bail!(
                "{} crop offsets given for axes {start}..{n}: give one offset, or one per cropped axis ({})",
                self.offsets.len(),
                n - start
            );
        }
        if r.len() != n {
            bail!(
                "the reference bottom {} must have as many axes as the cropped bottom {}",
                shape_str(r),
                shape_str(b)
            );
        }
        let mut top = b.clone();
        let mut at = vec![0; n];
        for i in start..n {
            let off = match self.offsets.len() {
                0 => 0,
                1 => self.offsets[0],
                _ => self.offsets[i - start],
            };
            if b[i] < off + r[i] {
                bail!(
                    "invalid crop in dimension {i}: offset {off} + size {} exceeds {} (bottom {}, reference {})",
                    r[i],
                    b[i],
                    shape_str(b),
                    shape_str(r)
                );
            }
            top[i] = r[i];
            at[i] = off;
        }
        self.bottom = b.clone();
        self.top = top.clone();
        self.at = at;
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        if self.top.contains(&0) {
            return Ok(());
        }
        cx.eng
            .launch(&self.kernel(cx.bottoms[0].data(), cx.tops[0].data(), true))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        cx.eng.fill(cx.bottoms[0].diff(), 0.0);
        if self.top.contains(&0) {
            return Ok(());
        }
        cx.eng
            .launch(&self.kernel(cx.bottoms[0].diff(), cx.tops[0].diff(), false))
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom == 0
    }

    fn shape_only_bottom(&self, bottom: usize) -> bool {
        bottom == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{CropParameter, Phase};
    use crate::rng::Rng;

    fn case(b: &[usize], r: &[usize], axis: Option<i32>, offset: Vec<u32>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let n: usize = b.iter().product();
        LayerCase {
            param: LayerParameter {
                r#type: Some("Crop".into()),
                top: vec!["crop".into()],
                crop_param: Some(CropParameter { axis, offset }),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![
                (
                    b.to_vec(),
                    (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect(),
                ),
                (r.to_vec(), vec![0.0; r.iter().product()]),
            ],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(&[1, 1, 3, 3], &[1, 1, 2, 2], None, vec![1], 1);
        c.bottoms[0].1 = (0..9).map(|v| v as f32).collect();
        let run = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(&[vec![1.0, 2.0, 3.0, 4.0]]),
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0], (vec![1, 1, 2, 2], vec![4.0, 5.0, 7.0, 8.0]));
        assert_eq!(
            run.bottom_diffs[0],
            vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0]
        );
        assert!(run.bottom_diffs[1].iter().all(|&v| v == 0.0));
        let c = case(&[1, 1, 3, 3], &[1, 1, 2, 2], None, vec![2], 1);
        assert!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap_err()
                .to_string()
                .contains("invalid crop")
        );
        let c = case(&[1, 1, 3, 3], &[1, 1, 2, 2], None, vec![1, 1, 1], 1);
        assert!(run_layer(&mut CpuEngine::new(), &c, None, None).is_err());
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        check_gradient(
            &mut eng,
            &case(&[2, 4, 3, 4], &[2, 2, 2, 2], Some(1), vec![1, 0, 2], 2),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
        check_gradient(
            &mut eng,
            &case(&[2, 3, 5], &[1, 2, 3], Some(0), vec![1], 3),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
    }
}
