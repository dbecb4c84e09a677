//! Slice: cuts its bottom along `slice_param.axis` (default 1; legacy `slice_dim`) at the
//! `slice_point`s, or into equal parts when none are given. With a single top it is a view.
use anyhow::{Result, bail};

use super::common::{check_count, count, shape_str};
use super::concat::{axis_copy, pick_axis};
use super::flatten::view_copy;
use super::{Ctx, Layer, Shapes};
use crate::proto::LayerParameter;

pub struct Slice {
    axis: i32,
    legacy_dim: Option<u32>,
    points: Vec<usize>,
    num_tops: usize,
    sizes: Vec<usize>,
    outer: usize,
    inner: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, usize::MAX)?;
    let p = param.slice_param.clone().unwrap_or_default();
    if p.axis.is_some() && p.slice_dim.is_some() {
        bail!("either slice_param.axis or slice_param.slice_dim should be specified, not both");
    }
    Ok(Box::new(Slice {
        axis: p.axis(),
        legacy_dim: p.slice_dim,
        points: p.slice_point.iter().map(|&v| v as usize).collect(),
        num_tops: param.top.len(),
        sizes: vec![],
        outer: 0,
        inner: 0,
    }))
}

impl Layer for Slice {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let b = &bottoms[0];
        let axis = pick_axis(self.axis, self.legacy_dim, b.len())?;
        let dim = b[axis];
        let n = self.num_tops;
        self.sizes = if self.points.is_empty() {
            if !dim.is_multiple_of(n) {
                bail!(
                    "the number of tops ({n}) should evenly divide the slice axis ({dim}) of {}",
                    shape_str(b)
                );
            }
            vec![dim / n; n]
        } else {
            if self.points.len() != n - 1 {
                bail!(
                    "{} slice points given for {n} tops; expected {}",
                    self.points.len(),
                    n - 1
                );
            }
            if n > dim {
                bail!("{n} tops cannot slice an axis of size {dim}");
            }
            let mut prev = 0;
            let mut sizes = Vec::with_capacity(n);
            for &p in &self.points {
                if p <= prev || p > dim {
                    bail!(
                        "slice points {:?} must increase strictly within 1..={dim}",
                        self.points
                    );
                }
                sizes.push(p - prev);
                prev = p;
            }
            sizes.push(dim - prev);
            sizes
        };
        self.outer = count(b, 0, axis);
        self.inner = count(b, axis + 1, b.len());
        let tops = self
            .sizes
            .iter()
            .map(|&s| {
                let mut t = b.clone();
                t[axis] = s;
                t
            })
            .collect();
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        if cx.tops.len() == 1 {
            view_copy(cx.eng, cx.bottoms[0].data(), cx.tops[0].data());
            return Ok(());
        }
        let total: usize = self.sizes.iter().sum();
        let mut at = 0;
        for (t, &n) in cx.tops.iter().zip(&self.sizes) {
            axis_copy(
                cx.eng,
                cx.bottoms[0].data(),
                t.data(),
                self.outer,
                self.inner,
                n,
                (total, at),
                (n, 0),
            )?;
            at += n;
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        if cx.tops.len() == 1 {
            view_copy(cx.eng, cx.tops[0].diff(), cx.bottoms[0].diff());
            return Ok(());
        }
        let total: usize = self.sizes.iter().sum();
        let mut at = 0;
        for (t, &n) in cx.tops.iter().zip(&self.sizes) {
            axis_copy(
                cx.eng,
                t.diff(),
                cx.bottoms[0].diff(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{Phase, SliceParameter};
    use crate::rng::Rng;

    fn case(shape: &[usize], tops: usize, p: Option<SliceParameter>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        LayerCase {
            param: LayerParameter {
                r#type: Some("Slice".into()),
                top: (0..tops).map(|i| format!("s{i}")).collect(),
                slice_param: p,
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(
                shape.to_vec(),
                (0..shape.iter().product::<usize>())
                    .map(|_| rng.uniform_range(-1.0, 1.0))
                    .collect(),
            )],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(
            &[2, 3],
            2,
            Some(SliceParameter {
                axis: None,
                slice_point: vec![1],
                slice_dim: None,
            }),
            1,
        );
        c.bottoms[0].1 = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let run = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(&[vec![-1.0, -4.0], vec![-2.0, -3.0, -5.0, -6.0]]),
            None,
        )
        .unwrap();
        assert_eq!(
            run.tops,
            vec![
                (vec![2, 1], vec![1.0, 4.0]),
                (vec![2, 2], vec![2.0, 3.0, 5.0, 6.0])
            ]
        );
        assert_eq!(
            run.bottom_diffs[0],
            vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
        );
        // equal parts along the legacy slice_dim 0
        let c = case(
            &[4, 3],
            2,
            Some(SliceParameter {
                axis: None,
                slice_point: vec![],
                slice_dim: Some(0),
            }),
            1,
        );
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        assert_eq!(run.tops[1].0, vec![2, 3]);
        assert_eq!(run.tops[1].1, c.bottoms[0].1[6..]);
        let c = case(&[2, 3], 2, None, 1);
        assert!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap_err()
                .to_string()
                .contains("evenly")
        );
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        let p = SliceParameter {
            axis: Some(2),
            slice_point: vec![1, 3],
            slice_dim: None,
        };
        check_gradient(
            &mut eng,
            &case(&[2, 2, 4, 2], 3, Some(p), 2),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
    }

    /// Slicing at random points of a random axis and concatenating back gives the input.
    #[test]
    fn slice_then_concat_round_trips() {
        let mut rng = Rng::new(21);
        let mut eng = CpuEngine::new();
        for seed in 0..10 {
            let nd = 1 + rng.below(4);
            let shape: Vec<usize> = (0..nd).map(|_| 1 + rng.below(5)).collect();
            let axis = rng.below(nd);
            let tops = 1 + rng.below(shape[axis]);
            let mut points: Vec<u32> = (1..shape[axis] as u32).collect();
            rng.shuffle(&mut points);
            points.truncate(tops - 1);
            points.sort();
            let p = SliceParameter {
                axis: Some(axis as i32),
                slice_point: points,
                slice_dim: None,
            };
            let c = case(&shape, tops, Some(p), seed);
            let sliced = run_layer(&mut eng, &c, None, None).unwrap();
            let cat = LayerCase {
                param: LayerParameter {
                    r#type: Some("Concat".into()),
                    top: vec!["cat".into()],
                    concat_param: Some(crate::proto::ConcatParameter {
                        axis: Some(axis as i32),
                        concat_dim: None,
                    }),
                    ..Default::default()
                },
                phase: Phase::Test,
                bottoms: sliced.tops.clone(),
                params: None,
            };
            let back = run_layer(&mut eng, &cat, None, None).unwrap();
            assert_eq!(back.tops[0], c.bottoms[0], "shape {shape:?} axis {axis}");
        }
    }
}
