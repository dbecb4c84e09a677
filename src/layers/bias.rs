//! Bias: top = bottom[0] + b broadcast, where b is bottom[1] or a learned parameter whose shape
//! is bottom[0]'s axes [axis, axis + num_axes) (num_axes -1: to the end; default axis 1,
//! num_axes 1, filler constant 0).
use anyhow::{Result, bail};

use super::common::{canonical_axis, check_count, count, shape_str};
use super::{Ctx, Layer, ParamDef, Shapes};
use crate::engine::kernels::Kernel;
use crate::engine::kernels::elementwise::{ChannelDims, ElementwiseKernel, SumWeight};
use crate::proto::{FillerParameter, LayerParameter};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.bias_param.clone().unwrap_or_default();
    let filler = p.filler.clone().unwrap_or_else(constant_zero);
    Ok(Box::new(Bias {
        axis: p.axis(),
        num_axes: p.num_axes(),
        filler,
        dims: ChannelDims::new(0, 0, 0),
        two_bottoms: false,
    }))
}

pub(super) fn constant_zero() -> FillerParameter {
    FillerParameter {
        r#type: Some("constant".into()),
        value: Some(0.0),
        ..Default::default()
    }
}

/// The shape of a learned Scale/Bias operand: bottom's axes [axis, axis + num_axes) (to the end
/// for num_axes -1).
pub(super) fn param_shape(bottom: &[usize], axis: i32, num_axes: i32) -> Result<Vec<usize>> {
    if num_axes < -1 {
        bail!(
            "num_axes must be non-negative, or -1 to extend to the end of bottom[0]; got {num_axes}"
        );
    }
    let start = canonical_axis(axis, bottom.len())?;
    let end = if num_axes == -1 {
        bottom.len()
    } else {
        start + num_axes as usize
    };
    if end > bottom.len() {
        bail!(
            "axis {axis} + num_axes {num_axes} extends past bottom[0]'s shape {}",
            shape_str(bottom)
        );
    }
    Ok(bottom[start..end].to_vec())
}

/// Caffe's broadcast geometry of an operand (scale or bias) over bottom[0] starting at `axis`
/// (axis 0 when the operand is a scalar): outer = count before it, inner = count after it.
pub(super) fn operand_dims(bottom: &[usize], axis: i32, operand: &[usize]) -> Result<ChannelDims> {
    let axis = if operand.is_empty() {
        0
    } else {
        canonical_axis(axis, bottom.len())?
    };
    if axis + operand.len() > bottom.len() {
        bail!(
            "operand shape {} extends past bottom[0]'s shape {} when applied from axis {axis}",
            shape_str(operand),
            shape_str(bottom)
        );
    }
    for (i, &d) in operand.iter().enumerate() {
        if bottom[axis + i] != d {
            bail!(
                "dimension mismatch: bottom[0] axis {} is {} but the operand's axis {i} is {d} (bottom[0] {}, operand {})",
                axis + i,
                bottom[axis + i],
                shape_str(bottom),
                shape_str(operand)
            );
        }
    }
    Ok(ChannelDims::new(
        count(bottom, 0, axis),
        operand.iter().product(),
        count(bottom, axis + operand.len(), bottom.len()),
    ))
}

struct Bias {
    axis: i32,
    num_axes: i32,
    filler: FillerParameter,
    dims: ChannelDims,
    two_bottoms: bool,
}

impl Layer for Bias {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 2)?;
        self.two_bottoms = bottoms.len() == 2;
        let mut params = vec![];
        let bias_shape = if self.two_bottoms {
            bottoms[1].clone()
        } else {
            let shape = param_shape(&bottoms[0], self.axis, self.num_axes)?;
            params.push(ParamDef {
                shape: shape.clone(),
                filler: self.filler.clone(),
            });
            shape
        };
        self.dims = operand_dims(&bottoms[0], self.axis, &bias_shape)?;
        Ok(Shapes {
            tops: vec![bottoms[0].clone()],
            params,
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let bias = if self.two_bottoms {
            cx.bottoms[1].data()
        } else {
            cx.params[0].data()
        };
        let kernel = ElementwiseKernel::ChannelAffine {
            dims: self.dims,
            x: cx.bottoms[0].data(),
            scale: None,
            bias: Some(bias),
            y: cx.tops[0].data(),
        };
        cx.eng.launch(&Kernel::Elementwise(kernel))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let dy = cx.tops[0].diff();
        if propagate_down.first().copied().unwrap_or(false) && cx.bottoms[0].diff() != dy {
            cx.eng.copy(dy, cx.bottoms[0].diff());
        }
        let target = if self.two_bottoms {
            propagate_down
                .get(1)
                .copied()
                .unwrap_or(false)
                .then(|| (cx.bottoms[1].diff(), 0.0))
        } else {
            cx.param_grad(0).then(|| (cx.params[0].diff(), 1.0))
        };
        if let Some((y, beta)) = target {
            let kernel = ElementwiseKernel::ChannelSum {
                dims: self.dims,
                a: dy,
                weight: SumWeight::One,
                beta,
                y,
            };
            cx.eng.launch(&Kernel::Elementwise(kernel))?;
        }
        Ok(())
    }

    fn macs(&self) -> u64 {
        self.dims.count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut c = case(r#"type: "Bias""#, vec![(vec![2, 3, 2], x.clone())]);
        c.params = Some(vec![vec![1.0, -1.0, 0.5]]);
        let dy: Vec<f32> = (0..12).map(|v| 0.5 * v as f32).collect();
        let r = run(&c, Some(std::slice::from_ref(&dy)));
        let want: Vec<f32> = (0..12)
            .map(|i| i as f32 + [1.0, -1.0, 0.5][(i / 2) % 3])
            .collect();
        assert_close(&r.tops[0].1, &want, 1e-6);
        assert_close(&r.bottom_diffs[0], &dy, 1e-6);
        // channel 0: 0.5 * (0 + 1 + 6 + 7)
        assert_close(&r.param_diffs[0], &[7.0, 11.0, 15.0], 1e-6);
        // Default filler: zeros.
        let r = run(
            &case(r#"type: "Bias""#, vec![(vec![2, 3, 2], x.clone())]),
            None,
        );
        assert_eq!(r.params[0].1, vec![0.0; 3]);
        assert_eq!(r.tops[0].1, x);
    }

    #[test]
    fn shapes() {
        let mut l = crate::layers::create(&param(
            r#"type: "Bias" bias_param { axis: 0 num_axes: -1 }"#,
        ))
        .unwrap();
        assert_eq!(
            l.reshape(&[vec![2, 3, 4]]).unwrap().params[0].shape,
            vec![2, 3, 4]
        );
        let mut l = crate::layers::create(&param(
            r#"type: "Bias" bias_param { axis: -2 num_axes: 2 }"#,
        ))
        .unwrap();
        assert_eq!(
            l.reshape(&[vec![2, 3, 4]]).unwrap().params[0].shape,
            vec![3, 4]
        );
        let mut l =
            crate::layers::create(&param(r#"type: "Bias" bias_param { num_axes: 0 }"#)).unwrap();
        assert_eq!(
            l.reshape(&[vec![2, 3, 4]]).unwrap().params[0].shape,
            Vec::<usize>::new()
        );
        let mut l =
            crate::layers::create(&param(r#"type: "Bias" bias_param { num_axes: 3 }"#)).unwrap();
        assert!(l.reshape(&[vec![2, 3, 4]]).is_err());
        let mut l = crate::layers::create(&param(r#"type: "Bias""#)).unwrap();
        assert!(l.reshape(&[vec![2, 3, 4], vec![4]]).is_err());
        assert_eq!(
            l.reshape(&[vec![2, 3, 4], vec![3, 4]])
                .unwrap()
                .params
                .len(),
            0
        );
    }

    #[test]
    fn gradients() {
        let x = values(80, 24, -2.0, 2.0, &[], 0.0);
        let mut c = case(
            r#"type: "Bias" bias_param { axis: 1 num_axes: 2 }"#,
            vec![(vec![2, 3, 4], x.clone())],
        );
        c.params = Some(vec![values(81, 12, -1.0, 1.0, &[], 0.0)]);
        grad(&c, &[0]);
        let c = case(
            r#"type: "Bias""#,
            vec![(vec![2, 3, 4], x), (vec![3], vec![0.1, -0.3, 0.7])],
        );
        grad(&c, &[0, 1]);
    }
}
