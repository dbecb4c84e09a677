//! Softmax: y = exp(x) / sum exp(x) along `softmax_param.axis` (default 1).
use anyhow::Result;

use super::common::{canonical_axis, check_count, count};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::SoftmaxKernel;
use crate::proto::LayerParameter;

pub struct Softmax {
    axis: i32,
    /// [outer, channels, inner] of the last reshape.
    dims: [usize; 3],
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let axis = param.softmax_param.as_ref().map_or(1, |p| p.axis());
    check_count("top", param.top.len(), 1, 1)?;
    Ok(Box::new(Softmax { axis, dims: [0; 3] }))
}

/// `[outer, channels, inner]` of `shape` around `axis` (Caffe's outer_num / shape(axis) / inner_num).
pub(crate) fn split_at_axis(shape: &[usize], axis: i32) -> Result<[usize; 3]> {
    let a = canonical_axis(axis, shape.len())?;
    Ok([
        count(shape, 0, a),
        shape[a],
        count(shape, a + 1, shape.len()),
    ])
}

impl Layer for Softmax {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        self.dims = split_at_axis(&bottoms[0], self.axis)?;
        Ok(Shapes {
            tops: vec![bottoms[0].clone()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let [outer, channels, inner] = self.dims;
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Forward {
            x: cx.bottoms[0].data(),
            y: cx.tops[0].data(),
            outer,
            channels,
            inner,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let [outer, channels, inner] = self.dims;
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Backward {
            y: cx.tops[0].data(),
            dy: cx.tops[0].diff(),
            dx: cx.bottoms[0].diff(),
            outer,
            channels,
            inner,
        }))
    }

    fn macs(&self) -> u64 {
        (self.dims.iter().product::<usize>() * 3) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{Phase, SoftmaxParameter};
    use crate::rng::Rng;

    fn case(shape: &[usize], axis: Option<i32>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let n: usize = shape.iter().product();
        LayerCase {
            param: LayerParameter {
                r#type: Some("Softmax".into()),
                top: vec!["prob".into()],
                softmax_param: axis.map(|a| SoftmaxParameter {
                    axis: Some(a),
                    ..Default::default()
                }),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(
                shape.to_vec(),
                (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect(),
            )],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(&[2, 3], None, 1);
        c.bottoms[0].1 = vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        let y = &run.tops[0].1;
        for v in &y[..3] {
            assert!((v - 1.0 / 3.0).abs() < 1e-6);
        }
        let s = 1.0 + 1f32.exp() + 2f32.exp();
        assert!((y[3] - 1.0 / s).abs() < 1e-6 && (y[5] - 2f32.exp() / s).abs() < 1e-6);
    }

    #[test]
    fn sums_to_one_along_axis() {
        let c = case(&[2, 3, 4, 5], Some(2), 3);
        let run = run_layer(&mut CpuEngine::new(), &c, None, None).unwrap();
        let y = &run.tops[0].1;
        for o in 0..6 {
            for i in 0..5 {
                let s: f32 = (0..4).map(|k| y[(o * 4 + k) * 5 + i]).sum();
                assert!((s - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        for (shape, axis, seed) in [
            (vec![3, 5], None, 7),
            (vec![2, 4, 3, 2], Some(1), 8),
            (vec![2, 3, 4], Some(-1), 9),
        ] {
            check_gradient(&mut eng, &case(&shape, axis, seed), &[0], 1e-2, 1e-2).unwrap();
        }
    }

    /// In place (top == bottom), as Caffe allows: same values and gradient.
    #[test]
    fn in_place() {
        use crate::engine::Engine;
        use crate::layers::Blob;
        let c = case(&[2, 3, 2], None, 5);
        let dy: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
        let mut eng = CpuEngine::new();
        let want = run_layer(&mut eng, &c, Some(std::slice::from_ref(&dy)), None).unwrap();
        let blob = Blob {
            shape: vec![2, 3, 2],
            data: eng.alloc(12),
            diff: eng.alloc(12),
        };
        eng.upload(blob.data(), &c.bottoms[0].1);
        let mut layer = create(&c.param).unwrap();
        layer.reshape(std::slice::from_ref(&blob.shape)).unwrap();
        let blobs = [blob.clone()];
        let mut rng = Rng::new(1);
        let mut cx = Ctx {
            eng: &mut eng,
            bottoms: &blobs,
            tops: &blobs,
            params: &[],
            phase: Phase::Test,
            rng: &mut rng,
            param_grads: &[],
        };
        layer.forward(&mut cx).unwrap();
        assert_eq!(cx.eng.download(blob.data()), want.tops[0].1);
        cx.eng.upload(blob.diff(), &dy);
        layer.backward(&mut cx, &[true]).unwrap();
        assert_eq!(cx.eng.download(blob.diff()), want.bottom_diffs[0]);
    }
}
