//! MVN (mean-variance normalisation): per item (across_channels) or per item and channel,
//! y = x - mean, and with normalize_variance (default) y = (x - mean) / (std + eps), eps (1e-9)
//! added to the standard deviation as Caffe does.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::Kernel;
use crate::engine::kernels::elementwise::ChannelDims;
use crate::engine::kernels::norm::{EpsMode, NormGrad, NormKernel};
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.mvn_param.unwrap_or_default();
    Ok(Box::new(Mvn {
        normalize_variance: p.normalize_variance(),
        across_channels: p.across_channels(),
        eps: p.eps(),
        dims: ChannelDims::new(0, 0, 0),
        mean: Scratch::default(),
        var: Scratch::default(),
        std: Scratch::default(),
    }))
}

struct Mvn {
    normalize_variance: bool,
    across_channels: bool,
    eps: f32,
    /// (1, rows, row length): one statistic per row.
    dims: ChannelDims,
    mean: Scratch,
    var: Scratch,
    std: Scratch,
}

impl Layer for Mvn {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let s = &bottoms[0];
        if s.is_empty() || s.len() > 4 {
            bail!(
                "MVN needs a bottom of 1 to 4 axes (Caffe's num/channels), got {}",
                shape_str(s)
            );
        }
        let count: usize = s.iter().product();
        let channels = s.get(1).copied().unwrap_or(1);
        let rows = if self.across_channels {
            s[0]
        } else {
            s[0] * channels
        };
        let dim = count.checked_div(rows).unwrap_or(0);
        self.dims = ChannelDims::new(1, rows, dim);
        Ok(Shapes {
            tops: vec![s.clone()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let dims = self.dims;
        let x = cx.bottoms[0].data();
        let mean = self.mean.get(cx.eng, dims.channels);
        let (var, std) = if self.normalize_variance {
            (
                Some(self.var.get(cx.eng, dims.channels)),
                Some(self.std.get(cx.eng, dims.channels)),
            )
        } else {
            (None, None)
        };
        cx.eng
            .launch(&Kernel::Norm(NormKernel::Moments { dims, x, mean, var }))?;
        let kernel = NormKernel::Normalize {
            dims,
            eps: self.eps,
            eps_mode: EpsMode::SqrtVarThenEps,
            x,
            mean,
            var,
            std,
            y: cx.tops[0].data(),
        };
        cx.eng.launch(&Kernel::Norm(kernel))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let dims = self.dims;
        let (grad, std) = if self.normalize_variance {
            (NormGrad::Full, Some(self.std.get(cx.eng, dims.channels)))
        } else {
            (NormGrad::CenterOnly, None)
        };
        // Caffe's MVN backward reads the top data (y).
        let kernel = NormKernel::NormalizeBackward {
            dims,
            grad,
            y: cx.tops[0].data(),
            dy: cx.tops[0].diff(),
            std,
            dx: cx.bottoms[0].diff(),
        };
        cx.eng.launch(&Kernel::Norm(kernel))
    }

    fn macs(&self) -> u64 {
        2 * self.dims.count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_values() {
        // 2 rows of 4 (N=1, C=2, 2x2).
        let x = vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, 1.0, 1.0];
        let r = run(
            &case(r#"type: "MVN""#, vec![(vec![1, 2, 2, 2], x.clone())]),
            None,
        );
        let s0 = 1.25f32.sqrt() + 1e-9;
        assert_close(
            &r.tops[0].1,
            &[
                -1.5 / s0,
                -0.5 / s0,
                0.5 / s0,
                1.5 / s0,
                -1.0,
                -1.0,
                1.0,
                1.0,
            ],
            1e-6,
        );
        let r = run(
            &case(
                r#"type: "MVN" mvn_param { normalize_variance: false across_channels: true }"#,
                vec![(vec![1, 2, 2, 2], x)],
            ),
            None,
        );
        // mean over all 8 = 1.25
        assert_close(
            &r.tops[0].1,
            &[-0.25, 0.75, 1.75, 2.75, -2.25, -2.25, -0.25, -0.25],
            1e-6,
        );
    }

    #[test]
    fn gradients() {
        let cases = [
            r#"type: "MVN""#,
            r#"type: "MVN" mvn_param { across_channels: true }"#,
            r#"type: "MVN" mvn_param { normalize_variance: false }"#,
            r#"type: "MVN" mvn_param { normalize_variance: false across_channels: true }"#,
        ];
        for (seed, src) in cases.iter().enumerate() {
            grad(
                &case(
                    src,
                    vec![(
                        vec![2, 3, 2, 2],
                        values(160 + seed as u64, 24, -2.0, 2.0, &[], 0.0),
                    )],
                ),
                &[0],
            );
        }
    }
}
