//! SPP (Caffe's SPPLayer): spatial pyramid pooling. Level l pools into 2^l x 2^l bins with
//! kernel = ceil(size / bins), pad = (kernel * bins - size + 1) / 2, stride = kernel (ordinary CEIL
//! pooling); the levels' outputs are flattened per image and concatenated: top [num, sum_l C*bins_l^2].
//! With pyramid_height 1 the top is the single level's [num, C, 1, 1] output, as in Caffe.
use anyhow::{Result, ensure};

use super::common::{Scratch, check_count, shape_str};
use super::pooling::{pool_backward, pool_forward, pool_geom};
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::pool::PoolGeom;
use crate::proto::pooling_parameter::PoolMethod;
use crate::proto::{LayerParameter, Phase};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.spp_param.unwrap_or_default();
    let height = p.pyramid_height() as usize;
    ensure!(
        height > 0,
        "spp_param.pyramid_height must be given and positive"
    );
    ensure!(
        height <= 16,
        "spp_param.pyramid_height {height} is too large"
    );
    let method = match p.pool() {
        crate::proto::spp_parameter::PoolMethod::Max => PoolMethod::Max,
        crate::proto::spp_parameter::PoolMethod::Ave => PoolMethod::Ave,
        crate::proto::spp_parameter::PoolMethod::Stochastic => PoolMethod::Stochastic,
    };
    Ok(Box::new(Spp {
        height,
        method,
        levels: vec![],
        mask: Scratch::default(),
        trained: false,
    }))
}

struct Spp {
    height: usize,
    method: PoolMethod,
    /// Per level: the pooling geometry (top_num_stride = the whole top row) and its offset in a top row.
    levels: Vec<(PoolGeom, usize)>,
    mask: Scratch,
    trained: bool,
}

impl Layer for Spp {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let shape = &bottoms[0];
        ensure!(
            shape.len() == 4,
            "input must have 4 axes (num, channels, height, width), got {}",
            shape_str(shape)
        );
        let (h, w) = (shape[2], shape[3]);
        ensure!(
            h > 0 && w > 0,
            "input height and width must be positive, got {}",
            shape_str(shape)
        );
        let mut levels = Vec::with_capacity(self.height);
        let mut offset = 0;
        for level in 0..self.height {
            let bins = 1usize << level;
            let (kh, kw) = (h.div_ceil(bins), w.div_ceil(bins));
            let (ph, pw) = ((kh * bins - h).div_ceil(2), (kw * bins - w).div_ceil(2));
            ensure!(
                ph < kh && pw < kw,
                "pyramid level {level} ({bins} x {bins} bins) of a {h} x {w} input needs pad {ph} x {pw} with kernel {kh} x {kw}; the pad must be smaller than the kernel (lower pyramid_height)"
            );
            if ph > 0 || pw > 0 {
                ensure!(
                    self.method != PoolMethod::Stochastic,
                    "pyramid level {level} needs padding, which STOCHASTIC pooling does not support"
                );
            }
            let g = pool_geom(shape, (kh, kw), (ph, pw), (kh, kw), false)?;
            let len = g.channels * g.pooled_h * g.pooled_w;
            levels.push((g, offset));
            offset += len;
        }
        for (g, _) in &mut levels {
            g.top_num_stride = offset;
        }
        let top = if self.height == 1 {
            let g = levels[0].0;
            vec![g.num, g.channels, g.pooled_h, g.pooled_w]
        } else {
            vec![shape[0], offset]
        };
        self.levels = levels;
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let train = cx.phase == Phase::Train;
        let (bottom, top) = (cx.bottoms[0].data(), cx.tops[0].data());
        let mask = self.mask.get(cx.eng, top.len);
        for &(g, off) in &self.levels {
            let len = g.top_len();
            pool_forward(
                cx.eng,
                self.method,
                train,
                cx.rng,
                g,
                bottom,
                top.slice(off, len),
                mask.slice(off, len),
            )?;
        }
        self.trained = train;
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let (b, t) = (&cx.bottoms[0], &cx.tops[0]);
        let mask = self.mask.get(cx.eng, t.count());
        for (i, &(g, off)) in self.levels.iter().enumerate() {
            let len = g.top_len();
            let (td, tv, m) = (
                t.diff().slice(off, len),
                t.data().slice(off, len),
                mask.slice(off, len),
            );
            pool_backward(
                cx.eng,
                self.method,
                self.trained,
                g,
                b.data(),
                tv,
                td,
                m,
                b.diff(),
                i > 0,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{LayerParameter, Phase, SppParameter, spp_parameter::PoolMethod};

    fn param(height: u32, pool: PoolMethod) -> LayerParameter {
        LayerParameter {
            name: Some("spp".into()),
            r#type: Some("SPP".into()),
            spp_param: Some(SppParameter {
                pyramid_height: Some(height),
                pool: Some(pool as i32),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn levels_concatenate() {
        // 1x2x4x4, levels 1x1 and 2x2 (kernel 2, no pad), MAX.
        let x: Vec<f32> = (0..32).map(|v| v as f32).collect();
        let case = LayerCase {
            param: param(2, PoolMethod::Max),
            phase: Phase::Test,
            bottoms: vec![(vec![1, 2, 4, 4], x)],
            params: None,
        };
        let r = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
        assert_eq!(r.tops[0].0, vec![1, 10]);
        assert_eq!(
            r.tops[0].1,
            vec![15., 31., 5., 7., 13., 15., 21., 23., 29., 31.]
        );
        let case = LayerCase {
            param: param(1, PoolMethod::Ave),
            phase: Phase::Test,
            bottoms: vec![(vec![2, 1, 2, 2], vec![1., 2., 3., 4., 5., 6., 7., 8.])],
            params: None,
        };
        let r = run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
        assert_eq!(r.tops[0].0, vec![2, 1, 1, 1]);
        assert_eq!(r.tops[0].1, vec![2.5, 6.5]);
    }

    #[test]
    fn gradients() {
        let mut values: Vec<f32> = (0..2 * 2 * 5 * 6).map(|i| i as f32 * 0.1).collect();
        crate::rng::Rng::new(2).shuffle(&mut values);
        for pool in [PoolMethod::Max, PoolMethod::Ave] {
            let case = LayerCase {
                param: param(3, pool),
                phase: Phase::Test,
                bottoms: vec![(vec![2, 2, 5, 6], values.clone())],
                params: None,
            };
            let err = check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2);
            // A 5-row input cannot be split into 4 bins with pad < kernel: Caffe fails there too.
            assert!(err.is_err());
            let case = LayerCase {
                param: param(2, pool),
                phase: Phase::Test,
                bottoms: vec![(vec![2, 2, 5, 6], values.clone())],
                params: None,
            };
            check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
        }
    }
}
