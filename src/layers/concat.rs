//! Concat: joins its bottoms along `concat_param.axis` (default 1; legacy `concat_dim`). With a
//! single bottom the top is the bottom (a view).
use anyhow::{Result, bail};

use super::common::{canonical_axis, check_count, count, shape_str};
use super::flatten::view_copy;
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::transfer::TransferKernel;
use crate::engine::{Engine, Kernel, View};
use crate::proto::LayerParameter;

pub struct Concat {
    axis: i32,
    legacy_dim: Option<u32>,
    /// Axis sizes of the bottoms, and the outer / inner counts around the axis.
    sizes: Vec<usize>,
    outer: usize,
    inner: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let p = param.concat_param.unwrap_or_default();
    if p.axis.is_some() && p.concat_dim.is_some() {
        bail!("either concat_param.axis or concat_param.concat_dim should be specified, not both");
    }
    Ok(Box::new(Concat {
        axis: p.axis(),
        legacy_dim: p.concat_dim,
        sizes: vec![],
        outer: 0,
        inner: 0,
    }))
}

/// The axis a Concat / Slice works on: the legacy non-negative `*_dim` when given, else `axis`.
pub(crate) fn pick_axis(axis: i32, legacy: Option<u32>, num_axes: usize) -> Result<usize> {
    match legacy {
        Some(d) if (d as usize) < num_axes => Ok(d as usize),
        Some(d) => bail!("legacy dimension {d} out of range for a {num_axes}-axis blob"),
        None => canonical_axis(axis, num_axes),
    }
}

/// Copies `len` entries of the axis from position `src_at` of `src` (axis size `src_axis`) to
/// position `dst_at` of `dst` (axis size `dst_axis`), for all `outer` items; `inner` elements per
/// axis entry.
#[allow(clippy::too_many_arguments)]
pub(crate) fn axis_copy(
    eng: &mut dyn Engine,
    src: View,
    dst: View,
    outer: usize,
    inner: usize,
    len: usize,
    (src_axis, src_at): (usize, usize),
    (dst_axis, dst_at): (usize, usize),
) -> Result<()> {
    if outer == 0 || len == 0 || inner == 0 {
        return Ok(());
    }
    let (s0, d0) = (src_at * inner, dst_at * inner);
    eng.launch(&Kernel::Transfer(TransferKernel::Strided {
        src: src.slice(s0, src.len - s0),
        dst: dst.slice(d0, dst.len - d0),
        dims: vec![outer, len * inner],
        src_strides: vec![src_axis * inner, 1],
        dst_strides: vec![dst_axis * inner, 1],
        add: false,
    }))
}

impl Layer for Concat {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, usize::MAX)?;
        let first = &bottoms[0];
        let axis = pick_axis(self.axis, self.legacy_dim, first.len())?;
        let mut top = first.clone();
        for b in &bottoms[1..] {
            let same = b.len() == first.len()
                && b.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (x, y))| i == axis || x == y);
            if !same {
                bail!(
                    "all inputs must have the same shape except at the concat axis {axis}: {} vs {}",
                    shape_str(first),
                    shape_str(b)
                );
            }
            top[axis] += b[axis];
        }
        self.sizes = bottoms.iter().map(|b| b[axis]).collect();
        self.outer = count(first, 0, axis);
        self.inner = count(first, axis + 1, first.len());
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        if cx.bottoms.len() == 1 {
            view_copy(cx.eng, cx.bottoms[0].data(), cx.tops[0].data());
            return Ok(());
        }
        let total: usize = self.sizes.iter().sum();
        let mut at = 0;
        for (b, &n) in cx.bottoms.iter().zip(&self.sizes) {
            axis_copy(
                cx.eng,
                b.data(),
                cx.tops[0].data(),
                self.outer,
                self.inner,
                n,
                (n, 0),
                (total, at),
            )?;
            at += n;
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if cx.bottoms.len() == 1 {
            if propagate_down.first().copied().unwrap_or(false) {
                view_copy(cx.eng, cx.tops[0].diff(), cx.bottoms[0].diff());
            }
            return Ok(());
        }
        let total: usize = self.sizes.iter().sum();
        let mut at = 0;
        for (i, (b, &n)) in cx.bottoms.iter().zip(&self.sizes).enumerate() {
            if propagate_down.get(i).copied().unwrap_or(false) {
                axis_copy(
                    cx.eng,
                    cx.tops[0].diff(),
                    b.diff(),
                    self.outer,
                    self.inner,
                    n,
                    (total, at),
                    (n, 0),
                )?;
            }
            at += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{ConcatParameter, Phase};
    use crate::rng::Rng;

    fn case(shapes: &[Vec<usize>], p: Option<ConcatParameter>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        LayerCase {
            param: LayerParameter {
                r#type: Some("Concat".into()),
                top: vec!["cat".into()],
                concat_param: p,
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: shapes
                .iter()
                .map(|s| {
                    (
                        s.clone(),
                        (0..s.iter().product::<usize>())
                            .map(|_| rng.uniform_range(-1.0, 1.0))
                            .collect(),
                    )
                })
                .collect(),
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(&[vec![2, 1], vec![2, 2]], None, 1);
        c.bottoms[0].1 = vec![1.0, 2.0];
        c.bottoms[1].1 = vec![3.0, 4.0, 5.0, 6.0];
        let run = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(&[vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]),
            None,
        )
        .unwrap();
        assert_eq!(
            run.tops[0],
            (vec![2, 3], vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0])
        );
        assert_eq!(
            run.bottom_diffs,
            vec![vec![1.0, 4.0], vec![2.0, 3.0, 5.0, 6.0]]
        );
        let c = case(
            &[vec![2, 1], vec![2, 2]],
            Some(ConcatParameter {
                axis: None,
                concat_dim: Some(0),
            }),
            1,
        );
        assert!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap_err()
                .to_string()
                .contains("same shape")
        );
        let c = case(
            &[vec![1, 2], vec![2, 2]],
            Some(ConcatParameter {
                axis: None,
                concat_dim: Some(0),
            }),
            1,
        );
        assert_eq!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap()
                .tops[0]
                .0,
            vec![3, 2]
        );
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        let shapes = [vec![2, 3, 2, 2], vec![2, 3, 1, 2], vec![2, 3, 3, 2]];
        let c = case(
            &shapes,
            Some(ConcatParameter {
                axis: Some(-2),
                concat_dim: None,
            }),
            2,
        );
        check_gradient(&mut eng, &c, &[0, 1, 2], 1e-2, 1e-2).unwrap();
        check_gradient(&mut eng, &case(&[vec![2, 3]], None, 3), &[0], 1e-2, 1e-2).unwrap();
    }
}
