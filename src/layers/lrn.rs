//! LRN (local response normalisation) of a 4-D (N, C, H, W) bottom, y = x * scale^-beta:
//! - ACROSS_CHANNELS: scale = k + alpha / local_size * sum of x^2 over local_size channels
//!   centred on c (zero padded);
//! - WITHIN_CHANNEL: Caffe builds it from Split/Power/Pooling(AVE)/Power/Eltwise sub-layers, which
//!   gives scale = 1 + alpha / local_size^2 * sum of x^2 over a local_size x local_size window
//!   (zero padded; `k` is ignored).
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::Kernel;
use crate::engine::kernels::norm::{Lrn, LrnRegion, NormKernel};
use crate::proto::LayerParameter;
use crate::proto::lrn_parameter::NormRegion;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.lrn_param.unwrap_or_default();
    let size = p.local_size() as usize;
    if size.is_multiple_of(2) {
        bail!("LRN only supports odd values for local_size, got {size}");
    }
    let region = match p.norm_region() {
        NormRegion::AcrossChannels => LrnRegion::AcrossChannels,
        NormRegion::WithinChannel => LrnRegion::WithinChannel,
    };
    let k = if region == LrnRegion::WithinChannel {
        1.0
    } else {
        p.k()
    };
    let lrn = Lrn {
        region,
        num: 0,
        channels: 0,
        height: 0,
        width: 0,
        size,
        alpha: p.alpha(),
        beta: p.beta(),
        k,
    };
    Ok(Box::new(LrnLayer {
        lrn,
        scale: Scratch::default(),
    }))
}

struct LrnLayer {
    lrn: Lrn,
    /// k + alpha / n * window sum, kept from forward for backward.
    scale: Scratch,
}

impl Layer for LrnLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let s = &bottoms[0];
        if s.len() != 4 {
            bail!(
                "LRN input must have 4 axes (num, channels, height, width), got {}",
                shape_str(s)
            );
        }
        (
            self.lrn.num,
            self.lrn.channels,
            self.lrn.height,
            self.lrn.width,
        ) = (s[0], s[1], s[2], s[3]);
        Ok(Shapes {
            tops: vec![s.clone()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let scale = self.scale.get(cx.eng, self.lrn.count());
        let kernel = NormKernel::Lrn {
            lrn: self.lrn,
            x: cx.bottoms[0].data(),
            scale,
            y: cx.tops[0].data(),
        };
        cx.eng.launch(&Kernel::Norm(kernel))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let scale = self.scale.get(cx.eng, self.lrn.count());
        let kernel = NormKernel::LrnBackward {
            lrn: self.lrn,
            x: cx.bottoms[0].data(),
            y: cx.tops[0].data(),
            scale,
            dy: cx.tops[0].diff(),
            dx: cx.bottoms[0].diff(),
        };
        cx.eng.launch(&Kernel::Norm(kernel))
    }

    fn macs(&self) -> u64 {
        let window = match self.lrn.region {
            LrnRegion::AcrossChannels => self.lrn.size,
            LrnRegion::WithinChannel => self.lrn.size * self.lrn.size,
        };
        (self.lrn.count() * (window + 2)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    /// Direct reference: y = x * (k + alpha / n * window sum of x^2)^-beta.
    fn reference(
        x: &[f32],
        shape: [usize; 4],
        size: usize,
        alpha: f32,
        beta: f32,
        k: f32,
        within: bool,
    ) -> Vec<f32> {
        let [n, c, h, w] = shape;
        let pre = (size - 1) as isize / 2;
        let at = |i: usize, ch: isize, hh: isize, ww: isize| -> f64 {
            if ch < 0
                || ch >= c as isize
                || hh < 0
                || hh >= h as isize
                || ww < 0
                || ww >= w as isize
            {
                0.0
            } else {
                x[((i * c + ch as usize) * h + hh as usize) * w + ww as usize] as f64
            }
        };
        let mut y = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c as isize {
                for hh in 0..h as isize {
                    for ww in 0..w as isize {
                        let mut s = 0.0;
                        if within {
                            for a in -pre..=pre {
                                for b in -pre..=pre {
                                    s += at(i, ch, hh + a, ww + b).powi(2);
                                }
                            }
                        } else {
                            for a in -pre..=pre {
                                s += at(i, ch + a, hh, ww).powi(2);
                            }
                        }
                        let nwin = if within { size * size } else { size } as f64;
                        let scale = k as f64 + alpha as f64 / nwin * s;
                        let idx = ((i * c + ch as usize) * h + hh as usize) * w + ww as usize;
                        y[idx] = (at(i, ch, hh, ww) * scale.powf(-beta as f64)) as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_reference() {
        let shape = [2, 7, 3, 3];
        let x = values(140, 126, -2.0, 2.0, &[], 0.0);
        let r = run(
            &case(
                r#"type: "LRN" lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 }"#,
                vec![(shape.to_vec(), x.clone())],
            ),
            None,
        );
        assert_close(
            &r.tops[0].1,
            &reference(&x, shape, 5, 0.1, 0.75, 2.0, false),
            1e-5,
        );
        let src = r#"type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75 k: 7 }"#;
        let r = run(&case(src, vec![(shape.to_vec(), x.clone())]), None);
        // k is ignored for WITHIN_CHANNEL (Caffe uses 1).
        assert_close(
            &r.tops[0].1,
            &reference(&x, shape, 3, 0.5, 0.75, 1.0, true),
            1e-5,
        );
    }

    #[test]
    fn bad_params_are_errors() {
        assert!(
            crate::layers::create(&param(r#"type: "LRN" lrn_param { local_size: 4 }"#)).is_err()
        );
        let mut l = crate::layers::create(&param(r#"type: "LRN""#)).unwrap();
        assert!(l.reshape(&[vec![2, 3, 4]]).is_err());
    }

    #[test]
    fn gradients() {
        let cases = [
            r#"type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }"#,
            r#"type: "LRN" lrn_param { local_size: 5 alpha: 1 beta: 0.75 k: 2 }"#,
            r#"type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75 }"#,
            r#"type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL local_size: 5 alpha: 1.5 beta: 0.6 }"#,
        ];
        for (seed, src) in cases.iter().enumerate() {
            grad(
                &case(
                    src,
                    vec![(
                        vec![2, 4, 3, 3],
                        values(150 + seed as u64, 72, -1.5, 1.5, &[], 0.0),
                    )],
                ),
                &[0],
            );
        }
    }
}
