//! PReLU: y = max(x, 0) + a_c * min(x, 0) with a learned slope per channel (axis 1), or one slope
//! for all channels with `channel_shared` (a 0-axis blob, as in Caffe). Slopes default to 0.25.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::{Ctx, Layer, ParamDef, Shapes};
use crate::engine::kernels::Kernel;
use crate::engine::kernels::elementwise::{ChannelDims, ElementwiseKernel, SumWeight};
use crate::proto::{FillerParameter, LayerParameter};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.prelu_param.clone().unwrap_or_default();
    let filler = p.filler.clone().unwrap_or(FillerParameter {
        r#type: Some("constant".into()),
        value: Some(0.25),
        ..Default::default()
    });
    Ok(Box::new(PRelu {
        shared: p.channel_shared(),
        filler,
        dims: ChannelDims::new(0, 0, 0),
        saved: Scratch::default(),
        in_place: false,
    }))
}

struct PRelu {
    shared: bool,
    filler: FillerParameter,
    dims: ChannelDims,
    /// Copy of the bottom for backward when run in place (Caffe's bottom_memory_).
    saved: Scratch,
    in_place: bool,
}

impl Layer for PRelu {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let shape = &bottoms[0];
        if shape.len() < 2 {
            bail!(
                "PReLU needs a bottom of at least 2 axes (N, C, ...), got {}",
                shape_str(shape)
            );
        }
        let count: usize = shape.iter().product();
        let channels = shape[1];
        self.dims = if self.shared {
            ChannelDims::new(1, 1, count)
        } else {
            ChannelDims::new(shape[0], channels, count / (shape[0] * channels).max(1))
        };
        let slope_shape = if self.shared { vec![] } else { vec![channels] };
        Ok(Shapes {
            tops: vec![shape.clone()],
            params: vec![ParamDef {
                shape: slope_shape,
                filler: self.filler.clone(),
            }],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let (x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        self.in_place = x.id == y.id;
        if self.in_place {
            let copy = self.saved.get(cx.eng, x.len);
            cx.eng.copy(x, copy);
        }
        let slope = cx.params[0].data();
        cx.eng
            .launch(&Kernel::Elementwise(ElementwiseKernel::PRelu {
                dims: self.dims,
                x,
                slope,
                y,
            }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let x = if self.in_place {
            self.saved.get(cx.eng, self.dims.count())
        } else {
            cx.bottoms[0].data()
        };
        let dy = cx.tops[0].diff();
        // Slope gradient first: in place, dy and dx share a tensor.
        let dslope = ElementwiseKernel::ChannelSum {
            dims: self.dims,
            a: dy,
            weight: SumWeight::ByNegPart(x),
            beta: 1.0,
            y: cx.params[0].diff(),
        };
        if cx.param_grad(0) {
            cx.eng.launch(&Kernel::Elementwise(dslope))?;
        }
        if propagate_down.first().copied().unwrap_or(false) {
            let slope = cx.params[0].data();
            let dx = cx.bottoms[0].diff();
            cx.eng
                .launch(&Kernel::Elementwise(ElementwiseKernel::PReluBackward {
                    dims: self.dims,
                    x,
                    slope,
                    dy,
                    dx,
                }))?;
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
        // N=1, C=2, 2 positions; slopes 0.25 (the default filler) everywhere.
        let x = vec![-1.0, 2.0, -4.0, 0.5];
        let c = case(r#"type: "PReLU""#, vec![(vec![1, 2, 2], x)]);
        let r = run(&c, Some(&[vec![1.0, 1.0, 2.0, 3.0]]));
        assert_eq!(r.params[0].0, vec![2]);
        assert_eq!(r.params[0].1, vec![0.25, 0.25]);
        assert_close(&r.tops[0].1, &[-0.25, 2.0, -1.0, 0.5], 1e-6);
        assert_close(&r.bottom_diffs[0], &[0.25, 1.0, 0.5, 3.0], 1e-6);
        // dslope_c = sum dy * min(x, 0)
        assert_close(&r.param_diffs[0], &[-1.0, -8.0], 1e-6);
        let mut shared = case(
            r#"type: "PReLU" prelu_param { channel_shared: true }"#,
            vec![(vec![1, 2, 2], vec![-1.0, 2.0, -4.0, 0.5])],
        );
        shared.params = Some(vec![vec![0.5]]);
        let r = run(&shared, Some(&[vec![1.0, 1.0, 2.0, 3.0]]));
        assert_eq!(r.params[0].0, Vec::<usize>::new());
        assert_close(&r.tops[0].1, &[-0.5, 2.0, -2.0, 0.5], 1e-6);
        assert_close(&r.param_diffs[0], &[-9.0], 1e-6);
    }

    #[test]
    fn gradients() {
        for (seed, src) in [
            (50, r#"type: "PReLU""#),
            (51, r#"type: "PReLU" prelu_param { channel_shared: true }"#),
        ] {
            let mut c = case(
                src,
                vec![(vec![2, 3, 2, 2], values(seed, 24, -3.0, 3.0, &[0.0], 0.05))],
            );
            c.params = Some(vec![values(
                seed + 100,
                if src.contains("shared") { 1 } else { 3 },
                -0.5,
                0.9,
                &[],
                0.0,
            )]);
            grad(&c, &[0]);
        }
    }
}
