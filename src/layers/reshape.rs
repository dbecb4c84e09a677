//! Reshape: replaces axes `axis .. axis+num_axes` (defaults 0 and -1 = all) by
//! `reshape_param.shape`, where 0 copies the bottom dim at the same index and one -1 is inferred.
//! The top has the bottom's values unchanged (a view; copied here); in-place use is not allowed.
use anyhow::{Result, bail};

use super::common::{check_count, count, shape_str};
use super::flatten::view_copy;
use super::{Ctx, Layer, Shapes, TopSharing};
use crate::proto::LayerParameter;

pub struct Reshape {
    dims: Vec<i64>,
    axis: i32,
    num_axes: i32,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    if param.bottom.first().is_some_and(|b| *b == param.top[0]) {
        bail!(
            "Reshape does not allow in-place computation (top and bottom are both \"{}\")",
            param.top[0]
        );
    }
    let p = param.reshape_param.clone().unwrap_or_default();
    let dims = p.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    if dims.iter().filter(|&&d| d == -1).count() > 1 {
        bail!("new shape {dims:?} contains multiple -1 dims; at most one may be inferred");
    }
    if let Some(d) = dims.iter().find(|&&d| d < -1) {
        bail!("new shape {dims:?} contains {d}; dims must be positive, 0 (copy) or -1 (infer)");
    }
    if p.num_axes() < -1 {
        bail!(
            "reshape_param.num_axes must be >= 0, or -1 for all remaining axes (got {})",
            p.num_axes()
        );
    }
    Ok(Box::new(Reshape {
        dims,
        axis: p.axis(),
        num_axes: p.num_axes(),
    }))
}

impl Layer for Reshape {
    fn top_sharing(&self) -> TopSharing {
        TopSharing::DataAndDiff
    }

    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let b = &bottoms[0];
        let n = b.len() as i64;
        let start = if self.axis >= 0 {
            i64::from(self.axis)
        } else {
            n + i64::from(self.axis) + 1
        };
        if start < 0 || start > n {
            bail!(
                "reshape_param.axis {} out of range for a {n}-axis bottom",
                self.axis
            );
        }
        let start = start as usize;
        let end = if self.num_axes == -1 {
            b.len()
        } else {
            start + self.num_axes as usize
        };
        if end > b.len() {
            bail!(
                "reshape_param.axis {} + num_axes {} exceeds the {n} axes of the bottom",
                self.axis,
                self.num_axes
            );
        }
        let mut top: Vec<usize> = b[..start].to_vec();
        let mut inferred = None;
        for (i, &d) in self.dims.iter().enumerate() {
            match d {
                0 => {
                    if start + i >= b.len() {
                        bail!(
                            "new shape contains a 0 at index {i}, but the bottom {} has no axis {} to copy",
                            shape_str(b),
                            start + i
                        );
                    }
                    top.push(b[start + i]);
                }
                -1 => {
                    inferred = Some(top.len());
                    top.push(1);
                }
                d => top.push(d as usize),
            }
        }
        top.extend_from_slice(&b[end..]);
        let total = count(b, 0, b.len());
        if let Some(at) = inferred {
            let explicit: usize = top.iter().product();
            if explicit == 0 || !total.is_multiple_of(explicit) {
                bail!(
                    "bottom count ({total}) must be divisible by the product of the specified dimensions ({explicit}) of {:?}",
                    self.dims
                );
            }
            top[at] = total / explicit;
        }
        if top.iter().product::<usize>() != total {
            bail!(
                "output count must match input count: {} cannot become {}",
                shape_str(b),
                shape_str(&top)
            );
        }
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
    use crate::proto::{BlobShape, ReshapeParameter};

    fn shape(
        dims: &[i64],
        axis: Option<i32>,
        num_axes: Option<i32>,
        b: Vec<usize>,
    ) -> Result<Vec<usize>> {
        let p = LayerParameter {
            r#type: Some("Reshape".into()),
            bottom: vec!["x".into()],
            top: vec!["y".into()],
            reshape_param: Some(ReshapeParameter {
                shape: Some(BlobShape { dim: dims.to_vec() }),
                axis,
                num_axes,
            }),
            ..Default::default()
        };
        Ok(create(&p)?.reshape(&[b])?.tops.remove(0))
    }

    #[test]
    fn caffe_examples() {
        assert_eq!(
            shape(&[0, -1, 2], None, None, vec![2, 3, 4, 4]).unwrap(),
            vec![2, 24, 2]
        );
        assert_eq!(
            shape(&[0, 3, -1, 2], None, None, vec![2, 3, 4, 5]).unwrap(),
            vec![2, 3, 10, 2]
        );
        // axis / num_axes (Caffe's documentation examples)
        assert_eq!(
            shape(&[2, 2], Some(1), Some(1), vec![2, 4, 3]).unwrap(),
            vec![2, 2, 2, 3]
        );
        assert_eq!(
            shape(&[1], Some(-1), Some(0), vec![2, 3]).unwrap(),
            vec![2, 3, 1]
        );
        assert_eq!(
            shape(&[1], Some(0), Some(0), vec![2, 3]).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            shape(&[-1], Some(1), None, vec![2, 3, 4]).unwrap(),
            vec![2, 12]
        );
        assert_eq!(shape(&[], Some(0), Some(1), vec![1, 5]).unwrap(), vec![5]);
    }

    #[test]
    fn errors() {
        assert!(shape(&[-1, -1], None, None, vec![4]).is_err());
        assert!(
            shape(&[3, -1], None, None, vec![4])
                .unwrap_err()
                .to_string()
                .contains("divisible")
        );
        assert!(
            shape(&[3], None, None, vec![4])
                .unwrap_err()
                .to_string()
                .contains("count")
        );
        assert!(
            shape(&[0, 0], None, None, vec![4])
                .unwrap_err()
                .to_string()
                .contains("no axis")
        );
        assert!(shape(&[4], Some(2), None, vec![4]).is_err());
    }
}
