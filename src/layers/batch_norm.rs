//! BatchNorm: y = (x - mean_c) / sqrt(var_c + eps) per channel (axis 1), no affine part.
//!
//! Blobs (Caffe's): [mean sums (C), variance sums (C), scale factor (1)], filled with 0; their
//! learning rate is forced to 0 (the net's business; this layer never writes their diffs).
//! `use_global_stats` defaults to (phase == TEST):
//! - global stats: mean = b0 / b2, var = b1 / b2 (a factor 0 when b2 == 0); backward dx = dy / std.
//! - batch stats: mean and biased variance over (N, H, W); the stored statistics are updated as
//!   b2 = b2 * maf + 1, b0 = mean + maf * b0, b1 = m / (m - 1) * var + maf * b1 (m = count / C);
//!   backward dx = (dy - mean(dy) - mean(dy * y) * y) / std.
use anyhow::{Result, bail, ensure};

use super::common::{Scratch, check_count, shape_str};
use super::{BackwardStep, Ctx, Layer, ParamDef, Shapes, StageDims};
use crate::engine::kernels::Kernel;
use crate::engine::View;
use crate::engine::kernels::elementwise::{ChannelDims, ChannelStage, StageOp};
use crate::engine::kernels::norm::{EpsMode, NormGrad, NormKernel};
use crate::proto::{FillerParameter, LayerParameter, Phase};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.batch_norm_param.unwrap_or_default();
    let eps = p.eps();
    if eps.is_nan() || eps < 0.0 {
        bail!("batch_norm_param.eps must be >= 0, got {eps}");
    }
    Ok(Box::new(BatchNorm {
        use_global_stats: p.use_global_stats,
        maf: p.moving_average_fraction(),
        eps,
        dims: ChannelDims::new(0, 0, 0),
        global: false,
        mean: Scratch::default(),
        var: Scratch::default(),
        std: Scratch::default(),
        x_norm: Scratch::default(),
    }))
}

struct BatchNorm {
    use_global_stats: Option<bool>,
    maf: f32,
    eps: f32,
    dims: ChannelDims,
    /// Whether the last forward used the stored statistics.
    global: bool,
    mean: Scratch,
    var: Scratch,
    std: Scratch,
    /// The normalised output, kept for backward (later in-place layers may overwrite the top).
    x_norm: Scratch,
}

impl BatchNorm {
    /// Launches the per-channel statistics for this forward: the stored ones, or the batch's
    /// (updating the stored ones); returns (mean, var, std) where std is for the normalisation
    /// to write.
    fn statistics(&mut self, cx: &mut Ctx) -> Result<(View, View, View)> {
        let dims = self.dims;
        let c = dims.channels;
        self.global = self.use_global_stats.unwrap_or(cx.phase == Phase::Test);
        let mean = self.mean.get(cx.eng, c);
        let var = self.var.get(cx.eng, c);
        let std = self.std.get(cx.eng, c);
        let (sums, sq_sums, count) = (
            cx.params[0].data(),
            cx.params[1].data(),
            cx.params[2].data(),
        );
        let x = cx.bottoms[0].data();
        if self.global {
            cx.eng.launch(&Kernel::Norm(NormKernel::StoredStats {
                sums,
                sq_sums,
                count,
                mean,
                var,
            }))?;
        } else {
            cx.eng.launch(&Kernel::Norm(NormKernel::Moments {
                dims,
                x,
                mean,
                var: Some(var),
            }))?;
            let m = dims.count() / c.max(1);
            let correction = if m > 1 {
                m as f32 / (m - 1) as f32
            } else {
                1.0
            };
            let update = NormKernel::StatsUpdate {
                maf: self.maf,
                correction,
                mean,
                var,
                sums,
                sq_sums,
                count,
            };
            cx.eng.launch(&Kernel::Norm(update))?;
        }
        Ok((mean, var, std))
    }
}

impl Layer for BatchNorm {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let shape = &bottoms[0];
        if shape.is_empty() {
            bail!(
                "BatchNorm needs a bottom with at least 1 axis, got {}",
                shape_str(shape)
            );
        }
        let channels = if shape.len() == 1 { 1 } else { shape[1] };
        let count: usize = shape.iter().product();
        let inner = if count == 0 {
            0
        } else {
            count / (shape[0] * channels)
        };
        self.dims = ChannelDims::new(shape[0], channels, inner);
        let zero = FillerParameter {
            r#type: Some("constant".into()),
            value: Some(0.0),
            ..Default::default()
        };
        let params = vec![
            ParamDef {
                shape: vec![channels],
                filler: zero.clone(),
            },
            ParamDef {
                shape: vec![channels],
                filler: zero.clone(),
            },
            ParamDef {
                shape: vec![1],
                filler: zero,
            },
        ];
        Ok(Shapes {
            tops: vec![shape.clone()],
            params,
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let dims = self.dims;
        let (mean, var, std) = self.statistics(cx)?;
        let x = cx.bottoms[0].data();
        let y = cx.tops[0].data();
        let normalize = NormKernel::Normalize {
            dims,
            eps: self.eps,
            eps_mode: EpsMode::SqrtVarPlusEps,
            x,
            mean,
            var: Some(var),
            std: Some(std),
            y,
        };
        cx.eng.launch(&Kernel::Norm(normalize))?;
        if !self.global {
            let x_norm = self.x_norm.get(cx.eng, dims.count());
            cx.eng.copy(y, x_norm);
        }
        Ok(())
    }

    fn stage_dims(&self, phase: Phase) -> Option<StageDims> {
        // Batch statistics need the whole input before the first element can be normalised.
        self.use_global_stats
            .unwrap_or(phase == Phase::Test)
            .then_some(StageDims::Channels(self.dims))
    }

    fn forward_stage(&mut self, cx: &mut Ctx, _for_backward: bool) -> Result<ChannelStage> {
        let (mean, var, std) = self.statistics(cx)?;
        ensure!(self.global, "internal: BatchNorm with batch statistics is no stage");
        Ok(ChannelStage {
            op: StageOp::Normalize {
                eps: self.eps,
                eps_mode: EpsMode::SqrtVarPlusEps,
                mean,
                var,
                std,
            },
            save: None,
        })
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let dims = self.dims;
        let std = Some(self.std.get(cx.eng, dims.channels));
        let (grad, y) = if self.global {
            // y is not read for frozen statistics.
            (NormGrad::Frozen, cx.tops[0].data())
        } else {
            (NormGrad::Full, self.x_norm.get(cx.eng, dims.count()))
        };
        let kernel = NormKernel::NormalizeBackward {
            dims,
            grad,
            y,
            dy: cx.tops[0].diff(),
            std,
            dx: cx.bottoms[0].diff(),
        };
        cx.eng.launch(&Kernel::Norm(kernel))
    }

    fn backward_step(&mut self, cx: &mut Ctx) -> Option<BackwardStep> {
        let in_place = cx.bottoms[0].data() == cx.tops[0].data()
            && cx.bottoms[0].diff() == cx.tops[0].diff();
        (self.global && in_place).then(|| {
            let std = self.std.get(cx.eng, self.dims.channels);
            BackwardStep::FrozenNorm(self.dims, std)
        })
    }

    fn macs(&self) -> u64 {
        2 * self.dims.count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;
    use crate::engine::Engine;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::run_layer;
    use crate::layers::{Blob, Ctx};
    use crate::proto::Phase;
    use crate::rng::Rng;

    /// Per-channel (mean, biased var) of an (N, C, S) tensor.
    fn stats(x: &[f32], n: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
        (0..c)
            .map(|ch| {
                let v: Vec<f64> = (0..n)
                    .flat_map(|i| (0..s).map(move |k| (i, k)))
                    .map(|(i, k)| x[(i * c + ch) * s + k] as f64)
                    .collect();
                let m = v.iter().sum::<f64>() / v.len() as f64;
                (
                    m,
                    v.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / v.len() as f64,
                )
            })
            .collect()
    }

    #[test]
    fn train_forward_and_running_stats() {
        let (n, c, s) = (3, 2, 4);
        let x = values(100, n * c * s, -2.0, 3.0, &[], 0.0);
        let mut case = case(
            r#"type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 }"#,
            vec![(vec![n, c, 2, 2], x.clone())],
        );
        case.phase = Phase::Train;
        case.params = Some(vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0]]);
        let r = run(&case, None);
        let st = stats(&x, n, c, s);
        let want: Vec<f32> = (0..x.len())
            .map(|i| {
                let (m, v) = st[(i / s) % c];
                ((x[i] as f64 - m) / (v + 1e-5).sqrt()) as f32
            })
            .collect();
        assert_close(&r.tops[0].1, &want, 1e-5);
        let mm = (n * s) as f64;
        assert_close(
            &r.params[0].1,
            &[(st[0].0 + 0.9) as f32, (st[1].0 + 1.8) as f32],
            1e-5,
        );
        assert_close(
            &r.params[1].1,
            &[
                (st[0].1 * mm / (mm - 1.0) + 2.7) as f32,
                (st[1].1 * mm / (mm - 1.0) + 3.6) as f32,
            ],
            1e-5,
        );
        assert_close(&r.params[2].1, &[5.5], 1e-6);
    }

    #[test]
    fn test_forward_uses_stored_stats() {
        let x = vec![1.0, 2.0, 3.0, 4.0];
        let mut c = case(r#"type: "BatchNorm""#, vec![(vec![1, 2, 2], x.clone())]);
        c.params = Some(vec![vec![2.0, 4.0], vec![8.0, 2.0], vec![2.0]]);
        let r = run(&c, Some(&[vec![1.0; 4]]));
        // mean (1, 2), var (4, 1)
        let want = [
            (1.0 - 1.0) / (4.0f32 + 1e-5).sqrt(),
            1.0 / (4.0f32 + 1e-5).sqrt(),
            1.0 / (1.0f32 + 1e-5).sqrt(),
            2.0 / (1.0f32 + 1e-5).sqrt(),
        ];
        assert_close(&r.tops[0].1, &want, 1e-6);
        assert_close(&r.bottom_diffs[0], &[0.5, 0.5, 1.0, 1.0], 1e-4);
        // Parameters untouched; no param diffs.
        assert_eq!(r.params[2].1, vec![2.0]);
        assert_eq!(r.param_diffs, vec![vec![0.0; 2], vec![0.0; 2], vec![0.0]]);
        // Scale factor 0 -> statistics 0.
        c.params = Some(vec![vec![2.0, 4.0], vec![8.0, 2.0], vec![0.0]]);
        let r = run(&c, None);
        assert_close(
            &r.tops[0].1,
            &x.iter().map(|v| v / (1e-5f32).sqrt()).collect::<Vec<_>>(),
            1e-5,
        );
    }

    #[test]
    fn gradients() {
        // TRAIN (batch statistics): the output does not depend on the stored blobs.
        for (seed, shape) in [
            (110u64, vec![3usize, 2, 2, 2]),
            (111, vec![4, 3]),
            (112, vec![2, 2, 3]),
        ] {
            let count: usize = shape.iter().product();
            let mut c = case(
                r#"type: "BatchNorm""#,
                vec![(shape, values(seed, count, -2.0, 2.0, &[], 0.0))],
            );
            c.phase = Phase::Train;
            let ch = c.bottoms[0].0[1];
            c.params = Some(vec![vec![0.0; ch], vec![0.0; ch], vec![0.0]]);
            grad(&c, &[0]);
        }
    }

    #[test]
    fn global_stats_gradient() {
        // check_gradient would also perturb the stored statistics (whose diff Caffe never
        // computes), so compare dx = dy / std against finite differences here.
        let x = values(120, 12, -2.0, 2.0, &[], 0.0);
        let mut c = case(
            r#"type: "BatchNorm" batch_norm_param { use_global_stats: true }"#,
            vec![(vec![2, 3, 2], x.clone())],
        );
        c.params = Some(vec![vec![0.3, -0.6, 0.9], vec![1.2, 0.6, 2.4], vec![1.5]]);
        let dy = values(121, 12, -1.0, 1.0, &[], 0.0);
        let r = run_layer(
            &mut CpuEngine::new(),
            &c,
            Some(std::slice::from_ref(&dy)),
            None,
        )
        .unwrap();
        for i in 0..12 {
            let f = |d: f32| {
                let mut c2 = c.clone();
                c2.bottoms[0].1[i] += d;
                let t = run(&c2, None).tops[0].1.clone();
                t.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum::<f64>()
            };
            let numeric = ((f(1e-2) - f(-1e-2)) / 2e-2) as f32;
            assert!(
                (numeric - r.bottom_diffs[0][i]).abs() < 1e-2,
                "{i}: {numeric} vs {}",
                r.bottom_diffs[0][i]
            );
        }
    }

    #[test]
    fn in_place_train_matches() {
        let x = values(130, 24, -2.0, 2.0, &[], 0.0);
        let dy = values(131, 24, -1.0, 1.0, &[], 0.0);
        let mut c = case(r#"type: "BatchNorm""#, vec![(vec![2, 3, 4], x.clone())]);
        c.phase = Phase::Train;
        c.params = Some(vec![vec![0.0; 3], vec![0.0; 3], vec![0.0]]);
        let want = run(&c, Some(std::slice::from_ref(&dy)));
        let mut eng = CpuEngine::new();
        let mut layer = crate::layers::create(&c.param).unwrap();
        let shapes = layer.reshape(&[vec![2, 3, 4]]).unwrap();
        let blob = Blob {
            shape: vec![2, 3, 4],
            data: eng.alloc(24),
            diff: eng.alloc(24),
        };
        eng.upload(blob.data(), &x);
        let params: Vec<Blob> = shapes
            .params
            .iter()
            .map(|d| {
                let n = d.shape.iter().product();
                Blob {
                    shape: d.shape.clone(),
                    data: eng.alloc(n),
                    diff: eng.alloc(n),
                }
            })
            .collect();
        let blobs = [blob.clone()];
        let mut rng = Rng::new(1);
        let mut cx = Ctx {
            eng: &mut eng,
            bottoms: &blobs,
            tops: &blobs,
            params: &params,
            phase: Phase::Train,
            rng: &mut rng,
            param_grads: &[],
        };
        layer.forward(&mut cx).unwrap();
        // A later in-place layer clobbering the top must not change the gradient.
        cx.eng.fill(blob.data(), 7.0);
        cx.eng.upload(blob.diff(), &dy);
        layer.backward(&mut cx, &[true]).unwrap();
        assert_close(&cx.eng.download(blob.diff()), &want.bottom_diffs[0], 1e-5);
    }
}
