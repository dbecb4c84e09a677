//! Flatten: merges axes `axis..=end_axis` (defaults 1 and -1) into one. The top has the bottom's
//! values unchanged (a view; copied here), and in-place use is not allowed.
use anyhow::{Result, bail};

use super::common::{canonical_axis, check_count, count};
use super::{Ctx, Layer, Shapes, TopSharing};
use crate::engine::{Engine, View};
use crate::proto::LayerParameter;

pub struct Flatten {
    axis: i32,
    end_axis: i32,
}

/// `dst = src` for layers whose top is a view of another blob: nothing to do when the net let the
/// two share a tensor.
pub(crate) fn view_copy(eng: &mut dyn Engine, src: View, dst: View) {
    if src != dst {
        eng.copy(src, dst);
    }
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    if param.bottom.first().is_some_and(|b| *b == param.top[0]) {
        bail!(
            "Flatten does not allow in-place computation (top and bottom are both \"{}\")",
            param.top[0]
        );
    }
    let p = param.flatten_param.unwrap_or_default();
    Ok(Box::new(Flatten {
        axis: p.axis(),
        end_axis: p.end_axis(),
    }))
}

impl Layer for Flatten {
    fn top_sharing(&self) -> TopSharing {
        TopSharing::DataAndDiff
    }

    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let b = &bottoms[0];
        let start = canonical_axis(self.axis, b.len())?;
        let end = canonical_axis(self.end_axis, b.len())?;
        if end < start {
            bail!(
                "flatten end_axis {} comes before axis {}",
                self.end_axis,
                self.axis
            );
        }
        let mut top = b[..start].to_vec();
        top.push(count(b, start, end + 1));
        top.extend_from_slice(&b[end + 1..]);
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        view_copy(cx.eng, cx.bottoms[0].data(), cx.tops[0].data());
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if propagate_down.first().copied().unwrap_or(false) {
            view_copy(cx.eng, cx.tops[0].diff(), cx.bottoms[0].diff());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FlattenParameter;

    fn shape(axis: Option<i32>, end: Option<i32>, b: Vec<usize>) -> Result<Vec<usize>> {
        let p = LayerParameter {
            r#type: Some("Flatten".into()),
            bottom: vec!["x".into()],
            top: vec!["y".into()],
            flatten_param: Some(FlattenParameter {
                axis,
                end_axis: end,
            }),
            ..Default::default()
        };
        Ok(create(&p)?.reshape(&[b])?.tops.remove(0))
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(None, None, vec![2, 3, 4, 5]).unwrap(), vec![2, 60]);
        assert_eq!(
            shape(Some(1), Some(2), vec![2, 3, 4, 5]).unwrap(),
            vec![2, 12, 5]
        );
        assert_eq!(shape(Some(0), None, vec![2, 3]).unwrap(), vec![6]);
        assert_eq!(shape(Some(-1), None, vec![2, 3]).unwrap(), vec![2, 3]);
        assert!(shape(Some(2), Some(1), vec![2, 3, 4]).is_err());
        let p = LayerParameter {
            r#type: Some("Flatten".into()),
            bottom: vec!["x".into()],
            top: vec!["x".into()],
            ..Default::default()
        };
        assert!(create(&p).is_err());
    }

    #[test]
    fn copies_values_and_diffs() {
        use crate::engine::cpu::CpuEngine;
        use crate::layers::testing::{LayerCase, run_layer};
        let c = LayerCase {
            param: LayerParameter {
                r#type: Some("Flatten".into()),
                top: vec!["y".into()],
                ..Default::default()
            },
            phase: crate::proto::Phase::Test,
            bottoms: vec![(vec![2, 1, 2], vec![1.0, 2.0, 3.0, 4.0])],
            params: None,
        };
        let run = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(&[vec![5.0, 6.0, 7.0, 8.0]]),
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0], (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(run.bottom_diffs[0], vec![5.0, 6.0, 7.0, 8.0]);
    }
}
