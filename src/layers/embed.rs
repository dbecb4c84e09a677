//! Embed (Caffe's EmbedLayer): a lookup table. The bottom holds indices (any shape, values read as
//! integers by truncation); top = bottom shape + [num_output], top[m] = W[index[m]] + bias.
//! W is [input_dim, num_output], bias [num_output]. No gradient flows into the indices. An index
//! outside [0, input_dim) is clamped into it (Caffe aborts there instead).
use anyhow::{Result, ensure};

use super::common::check_count;
use super::{Ctx, Layer, ParamDef, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::conv::ConvKernel;
use crate::proto::{FillerParameter, LayerParameter};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.embed_param.clone().unwrap_or_default();
    let n = p.num_output() as usize;
    let k = p.input_dim() as usize;
    ensure!(n > 0, "embed_param.num_output must be given and positive");
    ensure!(k > 0, "embed_param.input_dim must be given and positive");
    Ok(Box::new(Embed {
        n,
        k,
        bias_term: p.bias_term(),
        weight_filler: p.weight_filler.clone().unwrap_or_default(),
        bias_filler: p.bias_filler.clone().unwrap_or_default(),
        m: 0,
    }))
}

struct Embed {
    n: usize,
    k: usize,
    bias_term: bool,
    weight_filler: FillerParameter,
    bias_filler: FillerParameter,
    m: usize,
}

impl Layer for Embed {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        self.m = bottoms[0].iter().product();
        let mut top = bottoms[0].clone();
        top.push(self.n);
        let mut params = vec![ParamDef {
            shape: vec![self.k, self.n],
            filler: self.weight_filler.clone(),
        }];
        if self.bias_term {
            params.push(ParamDef {
                shape: vec![self.n],
                filler: self.bias_filler.clone(),
            });
        }
        Ok(Shapes {
            tops: vec![top],
            params,
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let (indices, top) = (cx.bottoms[0].data(), cx.tops[0].data());
        let weight = cx.params[0].data();
        cx.eng.launch(&Kernel::Conv(ConvKernel::GatherRows {
            indices,
            weight,
            top,
            rows: self.k,
            width: self.n,
        }))?;
        if self.bias_term {
            let bias = cx.params[1].data();
            cx.eng.launch(&Kernel::Conv(ConvKernel::AddChannelBias {
                y: top,
                bias,
                outer: self.m,
                channels: self.n,
                inner: 1,
            }))?;
        }
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, _propagate_down: &[bool]) -> Result<()> {
        let (indices, top_diff) = (cx.bottoms[0].data(), cx.tops[0].diff());
        let weight_diff = cx.params[0].diff();
        if cx.param_grad(0) {
            cx.eng.launch(&Kernel::Conv(ConvKernel::ScatterAddRows {
                indices,
                top_diff,
                weight_diff,
                rows: self.k,
                width: self.n,
            }))?;
        }
        if self.bias_term && cx.param_grad(1) {
            let out = cx.params[1].diff();
            cx.eng.launch(&Kernel::Conv(ConvKernel::ChannelSum {
                x: top_diff,
                out,
                outer: self.m,
                channels: self.n,
                inner: 1,
                alpha: 1.0,
                beta: 1.0,
            }))?;
        }
        Ok(())
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{EmbedParameter, LayerParameter, Phase};

    fn param(bias: bool) -> LayerParameter {
        LayerParameter {
            name: Some("embed".into()),
            r#type: Some("Embed".into()),
            embed_param: Some(EmbedParameter {
                num_output: Some(2),
                input_dim: Some(3),
                bias_term: Some(bias),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_and_gradient() {
        let w = vec![1., 2., 3., 4., 5., 6.];
        let case = LayerCase {
            param: param(true),
            phase: Phase::Test,
            // 2.9 truncates to 2; -1 and 7 are clamped to 0 and 2.
            bottoms: vec![(vec![2, 2], vec![1., 2.9, -1., 7.])],
            params: Some(vec![w, vec![0.5, -0.5]]),
        };
        let dy = vec![1., 2., 3., 4., 5., 6., 7., 8.];
        let r = run_layer(&mut CpuEngine::new(), &case, Some(&[dy]), None).unwrap();
        assert_eq!(r.tops[0].0, vec![2, 2, 2]);
        assert_eq!(r.tops[0].1, vec![3.5, 3.5, 5.5, 5.5, 1.5, 1.5, 5.5, 5.5]);
        assert_eq!(r.param_diffs[0], vec![5., 6., 1., 2., 10., 12.]);
        assert_eq!(r.param_diffs[1], vec![16., 20.]);
        assert_eq!(r.bottom_diffs[0], vec![0.0; 4]);
    }

    #[test]
    fn gradient_check_params() {
        let case = LayerCase {
            param: param(true),
            phase: Phase::Train,
            bottoms: vec![(vec![5], vec![0., 2., 2., 1., 0.])],
            params: Some(vec![vec![0.1, -0.2, 0.3, 0.4, -0.5, 0.6], vec![0.2, 0.1]]),
        };
        check_gradient(&mut CpuEngine::new(), &case, &[], 1e-2, 1e-3).unwrap();
        let mut p = param(false);
        p.embed_param.as_mut().unwrap().input_dim = Some(0);
        assert!(super::create(&p).is_err());
    }
}
