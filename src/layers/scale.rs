//! Scale: top = bottom[0] * s (+ b) broadcast, where s is bottom[1] or a learned parameter whose
//! shape is bottom[0]'s axes [axis, axis + num_axes) (default axis 1, num_axes 1, filler constant
//! 1), and b an optional learned bias of the same shape (`bias_term`, bias_filler default
//! constant 0). Usable in place (the bottom is kept for the scale gradient, as Caffe does).
use anyhow::Result;

use super::bias::{constant_zero, operand_dims, param_shape};
use super::common::{Scratch, check_count};
use super::{BackwardStep, Ctx, Layer, ParamDef, Shapes, StageDims};
use crate::engine::kernels::Kernel;
use crate::engine::View;
use crate::engine::kernels::elementwise::{
    ChannelDims, ChannelStage, ElementwiseKernel, StageOp, UnaryOp,
};
use crate::proto::{FillerParameter, LayerParameter, Phase};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.scale_param.clone().unwrap_or_default();
    let filler = p.filler.clone().unwrap_or(FillerParameter {
        r#type: Some("constant".into()),
        value: Some(1.0),
        ..Default::default()
    });
    Ok(Box::new(Scale {
        axis: p.axis(),
        num_axes: p.num_axes(),
        filler,
        bias_term: p.bias_term(),
        bias_filler: p.bias_filler.clone().unwrap_or_else(constant_zero),
        dims: ChannelDims::new(0, 0, 0),
        two_bottoms: false,
        saved: Scratch::default(),
        in_place: false,
    }))
}

struct Scale {
    axis: i32,
    num_axes: i32,
    filler: FillerParameter,
    bias_term: bool,
    bias_filler: FillerParameter,
    dims: ChannelDims,
    two_bottoms: bool,
    /// The bottom, kept when run in place (Caffe's temp_).
    saved: Scratch,
    in_place: bool,
}

impl Scale {
    fn bias_index(&self) -> Option<usize> {
        self.bias_term.then_some(usize::from(!self.two_bottoms))
    }
}

impl Layer for Scale {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 2)?;
        self.two_bottoms = bottoms.len() == 2;
        let mut params = vec![];
        let scale_shape = if self.two_bottoms {
            bottoms[1].clone()
        } else {
            let shape = param_shape(&bottoms[0], self.axis, self.num_axes)?;
            params.push(ParamDef {
                shape: shape.clone(),
                filler: self.filler.clone(),
            });
            shape
        };
        self.dims = operand_dims(&bottoms[0], self.axis, &scale_shape)?;
        if self.bias_term {
            // Caffe's inner Bias layer: axis = scale axis, num_axes = the scale's axis count.
            let bias_axes = if self.two_bottoms {
                bottoms[1].len() as i32
            } else {
                self.num_axes
            };
            let shape = param_shape(&bottoms[0], self.axis, bias_axes)?;
            params.push(ParamDef {
                shape,
                filler: self.bias_filler.clone(),
            });
        }
        Ok(Shapes {
            tops: vec![bottoms[0].clone()],
            params,
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let (mut x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        self.in_place = x.id == y.id;
        if self.in_place {
            // The bottom goes to the saved copy, which the product then reads: y is written
            // whole, so the bottom's old storage need not keep its values.
            let copy = self.saved.get(cx.eng, x.len);
            cx.eng.move_values(x, copy);
            x = copy;
        }
        let scale = if self.two_bottoms {
            cx.bottoms[1].data()
        } else {
            cx.params[0].data()
        };
        let bias = self.bias_index().map(|i| cx.params[i].data());
        cx.eng
            .launch(&Kernel::Elementwise(ElementwiseKernel::ChannelAffine {
                dims: self.dims,
                x,
                scale: Some(scale),
                bias,
                y,
            }))
    }

    fn stage_dims(&self, _phase: Phase) -> Option<StageDims> {
        (!self.two_bottoms).then_some(StageDims::Channels(self.dims))
    }

    fn forward_stage(&mut self, cx: &mut Ctx, for_backward: bool) -> Result<ChannelStage> {
        let (x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        self.in_place = x.id == y.id;
        let save = (self.in_place && for_backward).then(|| self.saved.get(cx.eng, x.len));
        Ok(ChannelStage {
            op: StageOp::Affine {
                scale: Some(cx.params[0].data()),
                bias: self.bias_index().map(|i| cx.params[i].data()),
            },
            save,
        })
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let kernel = self.backward_kernel(cx, propagate_down, None, None);
        cx.eng.launch(&Kernel::Elementwise(kernel))
    }

    fn backward_joined(
        &mut self,
        cx: &mut Ctx,
        propagate_down: &[bool],
        after: Option<BackwardStep>,
        before: Option<BackwardStep>,
    ) -> Result<bool> {
        let (x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        let in_place = x == y && cx.bottoms[0].diff() == cx.tops[0].diff();
        let wants_dx = propagate_down.first().copied().unwrap_or(false);
        if self.two_bottoms || !in_place || !wants_dx {
            return Ok(false);
        }
        let neuron_grad = match after {
            Some(BackwardStep::Neuron(op, x, y)) => Some((op, x, y)),
            None => None,
            Some(_) => return Ok(false),
        };
        let norm_grad = match before {
            Some(BackwardStep::FrozenNorm(dims, std)) if dims == self.dims => Some(std),
            None => None,
            Some(_) => return Ok(false),
        };
        let kernel = self.backward_kernel(cx, propagate_down, neuron_grad, norm_grad);
        cx.eng.launch(&Kernel::Elementwise(kernel))?;
        Ok(true)
    }

    fn macs(&self) -> u64 {
        self.dims.count() as u64
    }
}

impl Scale {
    /// The backward as one [`ElementwiseKernel::ChannelAffineBackward`], with the neighbours'
    /// steps it takes (see [`Layer::backward_joined`]).
    fn backward_kernel(
        &mut self,
        cx: &mut Ctx,
        propagate_down: &[bool],
        neuron_grad: Option<(UnaryOp, View, View)>,
        norm_grad: Option<View>,
    ) -> ElementwiseKernel {
        let dy = cx.tops[0].diff();
        let dims = self.dims;
        let bias_grad = self
            .bias_index()
            .filter(|&i| cx.param_grad(i))
            .map(|i| (cx.params[i].diff(), 1.0));
        let scale_diff = if self.two_bottoms {
            propagate_down
                .get(1)
                .copied()
                .unwrap_or(false)
                .then(|| cx.bottoms[1].diff())
        } else {
            cx.param_grad(0).then(|| cx.params[0].diff())
        };
        let scale_grad = scale_diff.map(|y| {
            let x = if self.in_place {
                self.saved.get(cx.eng, dims.count())
            } else {
                cx.bottoms[0].data()
            };
            // Caffe accumulates into a learned scale's diff, except in two cases where its
            // Backward_cpu writes the reduction straight into the diff: an element-wise scale
            // (outer = inner = 1) and outer == 1 with inner > 1 and more than one scale.
            let overwrite = dims.outer * dims.inner == 1
                || (dims.outer == 1 && dims.inner > 1 && dims.channels > 1);
            let beta = if self.two_bottoms || overwrite {
                0.0
            } else {
                1.0
            };
            (x, y, beta)
        });
        let data_grad = propagate_down.first().copied().unwrap_or(false).then(|| {
            let scale = if self.two_bottoms {
                cx.bottoms[1].data()
            } else {
                cx.params[0].data()
            };
            (scale, cx.bottoms[0].diff())
        });
        ElementwiseKernel::ChannelAffineBackward {
            dims,
            dy,
            neuron_grad,
            bias_grad,
            scale_grad,
            data_grad,
            norm_grad,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;
    use crate::engine::Engine;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::{Blob, Ctx};
    use crate::proto::Phase;
    use crate::rng::Rng;

    #[test]
    fn forward_backward_values() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut c = case(
            r#"type: "Scale" scale_param { bias_term: true }"#,
            vec![(vec![2, 3, 2], x.clone())],
        );
        c.params = Some(vec![vec![2.0, -1.0, 0.5], vec![1.0, 0.0, -1.0]]);
        let dy = vec![1.0; 12];
        let r = run(&c, Some(&[dy]));
        let want: Vec<f32> = (0..12)
            .map(|i| i as f32 * [2.0, -1.0, 0.5][(i / 2) % 3] + [1.0, 0.0, -1.0][(i / 2) % 3])
            .collect();
        assert_close(&r.tops[0].1, &want, 1e-6);
        let want_dx: Vec<f32> = (0..12).map(|i| [2.0, -1.0, 0.5][(i / 2) % 3]).collect();
        assert_close(&r.bottom_diffs[0], &want_dx, 1e-6);
        assert_close(&r.param_diffs[0], &[14.0, 22.0, 30.0], 1e-6);
        assert_close(&r.param_diffs[1], &[4.0, 4.0, 4.0], 1e-6);
        // Default fillers: scale 1, no bias blob.
        let r = run(
            &case(r#"type: "Scale""#, vec![(vec![2, 3, 2], x.clone())]),
            None,
        );
        assert_eq!(r.params.len(), 1);
        assert_eq!(r.params[0].1, vec![1.0; 3]);
        assert_eq!(r.tops[0].1, x);
    }

    #[test]
    fn shapes() {
        let mut l = crate::layers::create(&param(
            r#"type: "Scale" scale_param { axis: 0 num_axes: -1 bias_term: true }"#,
        ))
        .unwrap();
        let s = l.reshape(&[vec![2, 3, 4]]).unwrap();
        assert_eq!(
            s.params.iter().map(|p| p.shape.clone()).collect::<Vec<_>>(),
            vec![vec![2, 3, 4], vec![2, 3, 4]]
        );
        let mut l =
            crate::layers::create(&param(r#"type: "Scale" scale_param { bias_term: true }"#))
                .unwrap();
        let s = l.reshape(&[vec![2, 3, 4], vec![3, 4]]).unwrap();
        assert_eq!(s.params.len(), 1);
        assert_eq!(s.params[0].shape, vec![3, 4]);
        assert!(l.reshape(&[vec![2, 3, 4], vec![4]]).is_err());
    }

    #[test]
    fn gradients() {
        let x = values(90, 24, -2.0, 2.0, &[], 0.0);
        for (seed, src, n) in [
            (91, r#"type: "Scale" scale_param { bias_term: true }"#, 3),
            (
                92,
                r#"type: "Scale" scale_param { axis: 0 num_axes: -1 }"#,
                24,
            ),
            (
                93,
                r#"type: "Scale" scale_param { axis: 1 num_axes: 0 }"#,
                1,
            ),
            (94, r#"type: "Scale" scale_param { axis: 2 }"#, 4),
        ] {
            let mut c = case(src, vec![(vec![2, 3, 4], x.clone())]);
            let mut ps = vec![values(seed, n, 0.5, 1.5, &[], 0.0)];
            if src.contains("bias_term") {
                ps.push(values(seed + 50, n, -1.0, 1.0, &[], 0.0));
            }
            c.params = Some(ps);
            grad(&c, &[0]);
        }
        let c = case(
            r#"type: "Scale" scale_param { bias_term: true }"#,
            vec![(vec![2, 3, 4], x), (vec![3], vec![0.5, -1.0, 2.0])],
        );
        grad(&c, &[0, 1]);
    }

    #[test]
    fn in_place_matches_out_of_place() {
        let x = values(95, 24, -2.0, 2.0, &[], 0.0);
        let dy = values(96, 24, -1.0, 1.0, &[], 0.0);
        let mut c = case(
            r#"type: "Scale" scale_param { bias_term: true }"#,
            vec![(vec![2, 3, 4], x.clone())],
        );
        let ps = vec![vec![0.5, -1.0, 2.0], vec![0.1, 0.2, 0.3]];
        c.params = Some(ps.clone());
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
            .zip(&ps)
            .map(|(d, v)| {
                let b = Blob {
                    shape: d.shape.clone(),
                    data: eng.alloc(v.len()),
                    diff: eng.alloc(v.len()),
                };
                eng.upload(b.data(), v);
                b
            })
            .collect();
        let blobs = [blob.clone()];
        let mut rng = Rng::new(1);
        let mut cx = Ctx {
            eng: &mut eng,
            bottoms: &blobs,
            tops: &blobs,
            params: &params,
            phase: Phase::Test,
            rng: &mut rng,
            param_grads: &[],
        };
        layer.forward(&mut cx).unwrap();
        cx.eng.upload(blob.diff(), &dy);
        layer.backward(&mut cx, &[true]).unwrap();
        assert_close(&cx.eng.download(blob.data()), &want.tops[0].1, 1e-6);
        assert_close(&cx.eng.download(blob.diff()), &want.bottom_diffs[0], 1e-6);
        assert_close(
            &cx.eng.download(params[0].diff()),
            &want.param_diffs[0],
            1e-6,
        );
        assert_close(
            &cx.eng.download(params[1].diff()),
            &want.param_diffs[1],
            1e-6,
        );
    }
}
