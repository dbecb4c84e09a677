//! Pooling (Caffe's PoolingLayer): MAX (with an optional second top holding the argmax mask),
//! AVE and STOCHASTIC over 2-D windows of a 4-D blob; global pooling; round_mode CEIL (default) or
//! FLOOR with Caffe's last-window clip when padded.
use anyhow::{Result, bail, ensure};

use super::common::{Scratch, check_count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::pool::{PoolGeom, PoolKernel};
use crate::engine::{Engine, Kernel, View};
use crate::proto::pooling_parameter::{PoolMethod, RoundMode};
use crate::proto::{LayerParameter, Phase};
use crate::rng::Rng;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.pooling_param.unwrap_or_default();
    let method = p.pool();
    let global = p.global_pooling();
    let has_kernel = p.kernel_size.is_some() || p.kernel_h.is_some() || p.kernel_w.is_some();
    let kernel = if global {
        ensure!(
            !has_kernel,
            "with global_pooling: true the filter size cannot be specified"
        );
        None
    } else {
        ensure!(
            p.kernel_size.is_none() || (p.kernel_h.is_none() && p.kernel_w.is_none()),
            "the filter size is kernel_size OR kernel_h and kernel_w, not both"
        );
        let k = match (p.kernel_size, p.kernel_h, p.kernel_w) {
            (Some(k), _, _) => (k as usize, k as usize),
            (None, Some(h), Some(w)) => (h as usize, w as usize),
            (None, None, None) => bail!(
                "pooling_param needs kernel_size (or kernel_h and kernel_w, or global_pooling)"
            ),
            _ => bail!("for non-square filters both kernel_h and kernel_w are required"),
        };
        ensure!(
            k.0 > 0 && k.1 > 0,
            "filter dimensions cannot be zero (kernel {} x {})",
            k.0,
            k.1
        );
        Some(k)
    };
    let pair = |name: &str,
                one: Option<u32>,
                h: Option<u32>,
                w: Option<u32>,
                default: u32|
     -> Result<(usize, usize)> {
        match (one, h, w) {
            (None, None, None) => Ok((default as usize, default as usize)),
            (Some(v), None, None) => Ok((v as usize, v as usize)),
            (None, Some(h), Some(w)) => Ok((h as usize, w as usize)),
            _ => bail!("{name} is {name} OR {name}_h and {name}_w are required"),
        }
    };
    let pad = pair("pad", p.pad, p.pad_h, p.pad_w, 0)?;
    let stride = pair("stride", p.stride, p.stride_h, p.stride_w, 1)?;
    ensure!(
        stride.0 > 0 && stride.1 > 0,
        "stride dimensions cannot be zero"
    );
    if global {
        ensure!(
            pad == (0, 0) && stride == (1, 1),
            "with global_pooling: true only pad = 0 and stride = 1 are allowed"
        );
    }
    if pad != (0, 0) {
        ensure!(
            method != PoolMethod::Stochastic,
            "padding is implemented only for average and max pooling"
        );
        if let Some(k) = kernel {
            ensure!(
                pad.0 < k.0 && pad.1 < k.1,
                "pad ({} x {}) must be smaller than the kernel ({} x {})",
                pad.0,
                pad.1,
                k.0,
                k.1
            );
        }
    }
    let tops = param.top.len().max(1);
    if method == PoolMethod::Max {
        check_count("top", tops, 1, 2)?;
    } else {
        ensure!(
            tops == 1,
            "{} pooling has exactly 1 top (only MAX pooling can output its mask), got {tops}",
            method.as_str_name()
        );
    }
    let spec = PoolSpec {
        method,
        kernel,
        pad,
        stride,
        floor: p.round_mode() == RoundMode::Floor,
    };
    Ok(Box::new(Pooling {
        spec,
        mask_top: tops == 2,
        geom: None,
        mask: Scratch::default(),
        trained: false,
    }))
}

#[derive(Clone, Debug)]
struct PoolSpec {
    method: PoolMethod,
    /// None for global pooling.
    kernel: Option<(usize, usize)>,
    pad: (usize, usize),
    stride: (usize, usize),
    floor: bool,
}

/// Pooled size along one axis: ceil (or floor) ((size + 2 pad - kernel) / stride) + 1, before the clip.
fn pooled_size(size: usize, kernel: usize, pad: usize, stride: usize, floor: bool) -> i64 {
    let v = ((size + 2 * pad) as i64 - kernel as i64) as f32 / stride as f32;
    (if floor { v.floor() } else { v.ceil() }) as i64 + 1
}

/// Caffe's pooling geometry for a [num, channels, height, width] bottom, with the last-window clip
/// when padded. `top_num_stride` is set to the dense channels * pooled area.
pub(crate) fn pool_geom(
    shape: &[usize],
    kernel: (usize, usize),
    pad: (usize, usize),
    stride: (usize, usize),
    floor: bool,
) -> Result<PoolGeom> {
    ensure!(
        shape.len() == 4,
        "input must have 4 axes (num, channels, height, width), got {}",
        shape_str(shape)
    );
    let (height, width) = (shape[2], shape[3]);
    let mut ph = pooled_size(height, kernel.0, pad.0, stride.0, floor);
    let mut pw = pooled_size(width, kernel.1, pad.1, stride.1, floor);
    if pad.0 > 0 || pad.1 > 0 {
        // The last pooling window must start inside the image (or its top/left padding).
        if (ph - 1) * stride.0 as i64 >= (height + pad.0) as i64 {
            ph -= 1;
        }
        if (pw - 1) * stride.1 as i64 >= (width + pad.1) as i64 {
            pw -= 1;
        }
    }
    ensure!(
        ph > 0 && pw > 0,
        "pooling a {height} x {width} input with kernel {} x {}, pad {} x {}, stride {} x {} gives no output",
        kernel.0,
        kernel.1,
        pad.0,
        pad.1,
        stride.0,
        stride.1
    );
    let (ph, pw) = (ph as usize, pw as usize);
    Ok(PoolGeom {
        num: shape[0],
        channels: shape[1],
        height,
        width,
        pooled_h: ph,
        pooled_w: pw,
        kernel_h: kernel.0,
        kernel_w: kernel.1,
        stride_h: stride.0,
        stride_w: stride.1,
        pad_h: pad.0,
        pad_w: pad.1,
        top_num_stride: shape[1] * ph * pw,
    })
}

/// Launches the forward of `method`; `mask` (top-shaped) is written by MAX and STOCHASTIC in TRAIN.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool_forward(
    eng: &mut dyn Engine,
    method: PoolMethod,
    train: bool,
    rng: &mut Rng,
    g: PoolGeom,
    bottom: View,
    top: View,
    mask: View,
) -> Result<()> {
    let k = match method {
        PoolMethod::Max => PoolKernel::MaxForward {
            g,
            bottom,
            top,
            mask,
        },
        PoolMethod::Ave => PoolKernel::AveForward { g, bottom, top },
        PoolMethod::Stochastic if train => PoolKernel::StochasticTrain {
            g,
            bottom,
            top,
            mask,
            seed: rng.next_u64(),
        },
        PoolMethod::Stochastic => PoolKernel::StochasticTest { g, bottom, top },
    };
    eng.launch(&Kernel::Pool(k))
}

/// Launches the backward of `method` (as run by the last forward, `train`): writes (or with
/// `accumulate` adds to) `bottom_diff`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool_backward(
    eng: &mut dyn Engine,
    method: PoolMethod,
    train: bool,
    g: PoolGeom,
    bottom: View,
    top: View,
    top_diff: View,
    mask: View,
    bottom_diff: View,
    accumulate: bool,
) -> Result<()> {
    let k = match method {
        PoolMethod::Max => PoolKernel::MaskBackward {
            g,
            top_diff,
            mask,
            bottom_diff,
            accumulate,
        },
        PoolMethod::Stochastic if train => PoolKernel::MaskBackward {
            g,
            top_diff,
            mask,
            bottom_diff,
            accumulate,
        },
        PoolMethod::Ave => PoolKernel::AveBackward {
            g,
            top_diff,
            bottom_diff,
            accumulate,
        },
        PoolMethod::Stochastic => PoolKernel::StochasticTestBackward {
            g,
            bottom,
            top,
            top_diff,
            bottom_diff,
            accumulate,
        },
    };
    eng.launch(&Kernel::Pool(k))
}

struct Pooling {
    spec: PoolSpec,
    /// MAX pooling with a second top: the mask is written there instead of the scratch.
    mask_top: bool,
    geom: Option<PoolGeom>,
    mask: Scratch,
    /// Whether the last forward ran in TRAIN (STOCHASTIC's backward depends on it).
    trained: bool,
}

impl Pooling {
    fn mask_view(&mut self, cx: &mut Ctx, len: usize) -> View {
        if self.mask_top {
            cx.tops[1].data()
        } else {
            self.mask.get(cx.eng, len)
        }
    }
}

impl Layer for Pooling {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let shape = &bottoms[0];
        ensure!(
            shape.len() == 4,
            "input must have 4 axes (num, channels, height, width), got {}",
            shape_str(shape)
        );
        let kernel = self.spec.kernel.unwrap_or((shape[2], shape[3]));
        let g = pool_geom(
            shape,
            kernel,
            self.spec.pad,
            self.spec.stride,
            self.spec.floor,
        )?;
        let top = vec![g.num, g.channels, g.pooled_h, g.pooled_w];
        self.geom = Some(g);
        let tops = if self.mask_top {
            vec![top.clone(), top]
        } else {
            vec![top]
        };
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let g = self
            .geom
            .ok_or_else(|| anyhow::anyhow!("forward called before reshape"))?;
        let train = cx.phase == Phase::Train;
        let mask = self.mask_view(cx, g.top_len());
        let (bottom, top) = (cx.bottoms[0].data(), cx.tops[0].data());
        pool_forward(
            cx.eng,
            self.spec.method,
            train,
            cx.rng,
            g,
            bottom,
            top,
            mask,
        )?;
        self.trained = train;
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let g = self
            .geom
            .ok_or_else(|| anyhow::anyhow!("backward called before reshape"))?;
        let mask = self.mask_view(cx, g.top_len());
        let (b, t) = (&cx.bottoms[0], &cx.tops[0]);
        pool_backward(
            cx.eng,
            self.spec.method,
            self.trained,
            g,
            b.data(),
            t.data(),
            t.diff(),
            mask,
            b.diff(),
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::PoolingParameter;

    fn param(p: PoolingParameter, tops: usize) -> LayerParameter {
        LayerParameter {
            name: Some("pool".into()),
            r#type: Some("Pooling".into()),
            top: (0..tops).map(|i| format!("t{i}")).collect(),
            pooling_param: Some(p),
            ..Default::default()
        }
    }

    fn kernel(method: PoolMethod, k: u32, s: u32, pad: u32) -> PoolingParameter {
        PoolingParameter {
            pool: Some(method as i32),
            kernel_size: Some(k),
            stride: Some(s),
            pad: Some(pad),
            ..Default::default()
        }
    }

    fn run(
        p: PoolingParameter,
        tops: usize,
        phase: Phase,
        shape: Vec<usize>,
        x: Vec<f32>,
        dy: Option<Vec<f32>>,
    ) -> crate::layers::testing::LayerRun {
        let case = LayerCase {
            param: param(p, tops),
            phase,
            bottoms: vec![(shape, x)],
            params: None,
        };
        let diffs = dy.map(|d| {
            let n = d.len();
            vec![d, vec![0.0; n]]
        });
        run_layer(&mut CpuEngine::new(), &case, diffs.as_deref(), None).unwrap()
    }

    #[test]
    fn output_sizes() {
        let g = |h, k, p, s, floor| {
            pool_geom(&[1, 1, h, h], (k, k), (p, p), (s, s), floor)
                .unwrap()
                .pooled_h
        };
        assert_eq!(g(7, 3, 0, 2, false), 3);
        assert_eq!(g(6, 3, 0, 2, false), 3); // ceil
        assert_eq!(g(6, 3, 0, 2, true), 2); // floor
        assert_eq!(g(7, 3, 1, 2, false), 4);
        assert_eq!(g(6, 3, 1, 2, false), 4); // the last window starts at 6 < 6 + 1: kept
        assert_eq!(g(5, 2, 1, 3, false), 2); // clip: (3-1)*3 = 6 >= 5 + 1
        assert!(pool_geom(&[1, 1, 4, 4], (3, 3), (0, 0), (1, 1), false).is_ok());
        assert!(pool_geom(&[1, 1, 2, 2], (3, 3), (0, 0), (1, 1), false).is_err());
    }

    #[test]
    fn max_with_mask_top() {
        // 1x1x4x4, kernel 2 stride 2.
        let x: Vec<f32> = vec![
            1., 5., 2., 0., 3., 4., 8., 8., 0., 0., -1., -2., 9., 0., -3., -1.,
        ];
        let r = run(
            kernel(PoolMethod::Max, 2, 2, 0),
            2,
            Phase::Test,
            vec![1, 1, 4, 4],
            x,
            Some(vec![1., 2., 3., 4.]),
        );
        assert_eq!(r.tops[0].1, vec![5., 8., 9., -1.]);
        assert_eq!(r.tops[1].1, vec![1., 6., 12., 10.]);
        let mut want = vec![0.0; 16];
        want[1] = 1.;
        want[6] = 2.;
        want[12] = 3.;
        want[10] = 4.;
        assert_eq!(r.bottom_diffs[0], want);
    }

    #[test]
    fn ave_divides_by_padded_window() {
        // 1x1x3x3 of ones, kernel 3, stride 2, pad 1: windows clipped to 2x2 but divided by 9 except
        // where the padded window extends beyond size + pad.
        let r = run(
            kernel(PoolMethod::Ave, 3, 2, 1),
            1,
            Phase::Test,
            vec![1, 1, 3, 3],
            vec![1.0; 9],
            None,
        );
        assert_eq!(r.tops[0].0, vec![1, 1, 2, 2]);
        for v in &r.tops[0].1 {
            assert!((v - 4.0 / 9.0).abs() < 1e-6, "{v}");
        }
    }

    #[test]
    fn global_and_stochastic_test() {
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let p = PoolingParameter {
            pool: Some(PoolMethod::Ave as i32),
            global_pooling: Some(true),
            ..Default::default()
        };
        let r = run(p, 1, Phase::Test, vec![1, 2, 2, 2], x.clone(), None);
        assert_eq!(r.tops[0].1, vec![2.5, 6.5]);
        let p = PoolingParameter {
            pool: Some(PoolMethod::Stochastic as i32),
            global_pooling: Some(true),
            ..Default::default()
        };
        let r = run(p, 1, Phase::Test, vec![1, 2, 2, 2], x, None);
        assert!((r.tops[0].1[0] - 30.0 / 10.0).abs() < 1e-5);
        assert!((r.tops[0].1[1] - 174.0 / 26.0).abs() < 1e-5);
    }

    #[test]
    fn stochastic_train_picks_window_members() {
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..2 * 3 * 6 * 6)
            .map(|_| rng.uniform_range(0.1, 1.0))
            .collect();
        let p = kernel(PoolMethod::Stochastic, 3, 3, 0);
        let dy = vec![1.0; 2 * 3 * 2 * 2];
        let r = run(p, 1, Phase::Train, vec![2, 3, 6, 6], x.clone(), Some(dy));
        // Every output is one of its window's values, and each window passes its gradient to
        // exactly one element (the windows do not overlap).
        for (o, v) in r.tops[0].1.iter().enumerate() {
            let (plane, ph, pw) = (o / 4, (o % 4) / 2, o % 2);
            let found =
                (0..3).any(|h| (0..3).any(|w| x[plane * 36 + (ph * 3 + h) * 6 + pw * 3 + w] == *v));
            assert!(found, "output {o} = {v} is not in its window");
        }
        let sum: f32 = r.bottom_diffs[0].iter().sum();
        assert_eq!(sum, 24.0);
        assert!(r.bottom_diffs[0].iter().all(|&d| d == 0.0 || d == 1.0));
    }

    #[test]
    fn gradients() {
        let mut rng = Rng::new(9);
        // Distinct values far apart so that MAX has no near-ties.
        let mut values: Vec<f32> = (0..2 * 2 * 5 * 5).map(|i| i as f32 * 0.1).collect();
        rng.shuffle(&mut values);
        for (p, phase) in [
            (kernel(PoolMethod::Max, 3, 2, 1), Phase::Test),
            (kernel(PoolMethod::Max, 2, 3, 1), Phase::Test),
            (kernel(PoolMethod::Ave, 3, 2, 1), Phase::Test),
            (kernel(PoolMethod::Ave, 2, 3, 1), Phase::Test),
            (
                PoolingParameter {
                    pool: Some(PoolMethod::Ave as i32),
                    round_mode: Some(RoundMode::Floor as i32),
                    kernel_h: Some(3),
                    kernel_w: Some(2),
                    stride_h: Some(2),
                    stride_w: Some(1),
                    ..Default::default()
                },
                Phase::Test,
            ),
            (kernel(PoolMethod::Stochastic, 2, 2, 0), Phase::Test),
        ] {
            let case = LayerCase {
                param: param(p, 1),
                phase,
                bottoms: vec![(vec![2, 2, 5, 5], values.clone())],
                params: None,
            };
            check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
        }
    }

    #[test]
    fn randomised_gradients() {
        let mut rng = Rng::new(31);
        for i in 0..6 {
            let method = [PoolMethod::Max, PoolMethod::Ave][i % 2];
            let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
            let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
            let (ph, pw) = (rng.below(kh), rng.below(kw));
            let shape = vec![
                1 + rng.below(2),
                1 + rng.below(2),
                kh + rng.below(4),
                kw + rng.below(4),
            ];
            let p = PoolingParameter {
                pool: Some(method as i32),
                kernel_h: Some(kh as u32),
                kernel_w: Some(kw as u32),
                stride_h: Some(sh as u32),
                stride_w: Some(sw as u32),
                pad_h: Some(ph as u32),
                pad_w: Some(pw as u32),
                round_mode: Some(rng.below(2) as i32),
                ..Default::default()
            };
            let n: usize = shape.iter().product();
            let mut values: Vec<f32> = (0..n).map(|v| v as f32 * 0.1).collect();
            rng.shuffle(&mut values);
            let case = LayerCase {
                param: param(p, 1),
                phase: Phase::Test,
                bottoms: vec![(shape, values)],
                params: None,
            };
            check_gradient(&mut CpuEngine::new(), &case, &[0], 1e-2, 1e-2).unwrap();
        }
    }

    #[test]
    fn parameter_errors() {
        let bad = [
            PoolingParameter {
                global_pooling: Some(true),
                kernel_size: Some(2),
                ..Default::default()
            },
            PoolingParameter {
                kernel_size: Some(2),
                kernel_h: Some(2),
                kernel_w: Some(2),
                ..Default::default()
            },
            PoolingParameter {
                kernel_h: Some(2),
                ..Default::default()
            },
            PoolingParameter {
                ..Default::default()
            },
            PoolingParameter {
                kernel_size: Some(2),
                pad: Some(2),
                ..Default::default()
            },
            PoolingParameter {
                kernel_size: Some(3),
                pad: Some(1),
                pool: Some(PoolMethod::Stochastic as i32),
                ..Default::default()
            },
            PoolingParameter {
                kernel_size: Some(2),
                stride: Some(0),
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(create(&param(p, 1)).is_err(), "{p:?} should be rejected");
        }
        assert!(create(&param(kernel(PoolMethod::Ave, 2, 2, 0), 2)).is_err());
        let mut l = create(&param(kernel(PoolMethod::Max, 2, 2, 0), 1)).unwrap();
        assert!(l.reshape(&[vec![1, 2, 3]]).is_err());
    }
}
