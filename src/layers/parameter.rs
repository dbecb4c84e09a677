//! Parameter: a learnable blob of `parameter_param.shape` exposed as the layer's only top. In Caffe
//! the top shares the blob's values and gradient (a view); here forward copies the values and
//! backward adds the top's diff to the parameter's diff.
use anyhow::Result;

use super::common::check_count;
use super::flatten::view_copy;
use super::{Ctx, Layer, ParamDef, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::blas::BlasKernel;
use crate::proto::{FillerParameter, LayerParameter, shape_dims};

pub struct Parameter {
    shape: Vec<usize>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let shape = param
        .parameter_param
        .as_ref()
        .and_then(|p| p.shape.as_ref())
        .map(shape_dims)
        .unwrap_or_default();
    Ok(Box::new(Parameter { shape }))
}

impl Layer for Parameter {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 0, 0)?;
        Ok(Shapes {
            tops: vec![self.shape.clone()],
            params: vec![ParamDef {
                shape: self.shape.clone(),
                filler: FillerParameter::default(),
            }],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        view_copy(cx.eng, cx.params[0].data(), cx.tops[0].data());
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, _propagate_down: &[bool]) -> Result<()> {
        if cx.param_grad(0) && cx.tops[0].diff() != cx.params[0].diff() {
            cx.eng.launch(&Kernel::Blas(BlasKernel::Axpby {
                alpha: 1.0,
                x: cx.tops[0].diff(),
                beta: 1.0,
                y: cx.params[0].diff(),
            }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, run_layer};
    use crate::proto::{BlobShape, ParameterParameter, Phase};

    #[test]
    fn top_is_the_blob() {
        let c = LayerCase {
            param: LayerParameter {
                r#type: Some("Parameter".into()),
                top: vec!["p".into()],
                parameter_param: Some(ParameterParameter {
                    shape: Some(BlobShape { dim: vec![2, 2] }),
                }),
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![],
            params: Some(vec![vec![1.0, 2.0, 3.0, 4.0]]),
        };
        let run = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(&[vec![0.5, 0.0, -1.0, 2.0]]),
            None,
        )
        .unwrap();
        assert_eq!(run.tops[0], (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(run.param_diffs[0], vec![0.5, 0.0, -1.0, 2.0]);
        // default filler: constant 0
        let c = LayerCase { params: None, ..c };
        assert_eq!(
            run_layer(&mut CpuEngine::new(), &c, None, None)
                .unwrap()
                .tops[0]
                .1,
            vec![0.0; 4]
        );
    }
}
