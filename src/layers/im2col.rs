//! Im2col (Caffe's Im2colLayer): the convolution column buffer as a blob. Top = bottom shape with
//! the channel axis (convolution_param.axis) replaced by channels * prod(kernel) and the spatial axes
//! by the convolution output size; backward sums the columns back (col2im).
use anyhow::Result;

use super::common::{canonical_axis, check_count};
use super::convolution::{Window, conv_out_shape, window};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::conv::{ConvKernel, Im2col as Im2colKernel};
use crate::proto::{ConvolutionParameter, LayerParameter};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(Im2col {
        param: param.convolution_param.clone().unwrap_or_default(),
        geom: None,
    }))
}

struct Geom {
    num: usize,
    channels: usize,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    w: Window,
}

struct Im2col {
    param: ConvolutionParameter,
    geom: Option<Geom>,
}

impl Im2col {
    fn kernel(&self, cx: &Ctx, backward: bool) -> Result<Im2colKernel> {
        let g = self
            .geom
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("forward called before reshape"))?;
        let (b, t) = (&cx.bottoms[0], &cx.tops[0]);
        let (im, col) = if backward {
            (b.diff(), t.diff())
        } else {
            (b.data(), t.data())
        };
        let im_dim = g.channels * g.in_shape.iter().product::<usize>();
        let col_dim = g.channels
            * g.w.kernel.iter().product::<usize>()
            * g.out_shape.iter().product::<usize>();
        Ok(Im2colKernel {
            im,
            col,
            batch: g.num,
            im_stride: im_dim,
            col_stride: col_dim,
            channels: g.channels,
            im_shape: g.in_shape.clone(),
            col_shape: g.out_shape.clone(),
            kernel: g.w.kernel.clone(),
            pad: g.w.pad.clone(),
            stride: g.w.stride.clone(),
            dilation: g.w.dilation.clone(),
        })
    }
}

impl Layer for Im2col {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let shape = &bottoms[0];
        let axis = canonical_axis(self.param.axis(), shape.len())?;
        let w = window(&self.param, shape.len() - axis - 1)?;
        let in_shape = shape[axis + 1..].to_vec();
        let out_shape = conv_out_shape(&in_shape, &w)?;
        let channels = shape[axis];
        let mut top = shape[..axis].to_vec();
        top.push(channels * w.kernel.iter().product::<usize>());
        top.extend(&out_shape);
        self.geom = Some(Geom {
            num: shape[..axis].iter().product(),
            channels,
            in_shape,
            out_shape,
            w,
        });
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let k = self.kernel(cx, false)?;
        cx.eng.launch(&Kernel::Conv(ConvKernel::Im2col(k)))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let k = self.kernel(cx, true)?;
        cx.eng.launch(&Kernel::Conv(ConvKernel::Col2im(k)))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{ConvolutionParameter, LayerParameter, Phase};

    fn param(p: ConvolutionParameter) -> LayerParameter {
        LayerParameter {
            name: Some("im2col".into()),
            r#type: Some("Im2col".into()),
            convolution_param: Some(p),
            ..Default::default()
        }
    }

    #[test]
    fn columns() {
        // 1x1x3x3, kernel 2, pad 0: 4 rows of 4 positions.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let p = ConvolutionParameter {
            kernel_size: vec![2],
            ..Default::default()
        };
        let case = LayerCase {
            param: param(p),
            phase: Phase::Test,
            bottoms: vec![(vec![1, 1, 3, 3], x)],
            params: None,
        };
        let r = run_layer(&mut CpuEngine::new(), &case, Some(&[vec![1.0; 16]]), None).unwrap();
        assert_eq!(r.tops[0].0, vec![1, 4, 2, 2]);
        assert_eq!(
            r.tops[0].1,
            vec![
                1., 2., 4., 5., 2., 3., 5., 6., 4., 5., 7., 8., 5., 6., 8., 9.
            ]
        );
        // col2im counts how many windows read each pixel.
        assert_eq!(r.bottom_diffs[0], vec![1., 2., 1., 2., 4., 2., 1., 2., 1.]);
    }

    #[test]
    fn padded_strided_dilated() {
        // 1-D: 1x1x5, kernel 2, dilation 2, pad 1, stride 2 -> out (5 + 2 - 3) / 2 + 1 = 3.
        let p = ConvolutionParameter {
            kernel_size: vec![2],
            dilation: vec![2],
            pad: vec![1],
            stride: vec![2],
            ..Default::default()
        };
        let case = LayerCase {
            param: param(p.clone()),
            phase: Phase::Test,
            bottoms: vec![(vec![1, 1, 5], vec![1., 2., 3., 4., 5.])],
            params: None,
        };
        let r = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
        assert_eq!(r.tops[0].0, vec![1, 2, 3]);
        // Positions read: k=0 -> -1, 1, 3; k=1 -> 1, 3, 5 (5 is outside).
        assert_eq!(r.tops[0].1, vec![0., 2., 4., 2., 4., 0.]);
        let case = LayerCase {
            param: param(p),
            phase: Phase::Train,
            bottoms: vec![(vec![2, 2, 5, 4], (0..80).map(|v| v as f32 * 0.01).collect())],
            params: None,
        };
        check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
    }
}
