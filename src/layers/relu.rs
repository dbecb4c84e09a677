//! ReLU (with Caffe's leaky `negative_slope`), plus [`NeuronLayer`]: the one layer implementation
//! shared by every unary neuron (ReLU, Sigmoid, TanH, AbsVal, BNLL, ELU, Power, Exp, Log,
//! Threshold, Clip, Swish), which differ only in their [`UnaryOp`].
use anyhow::Result;

use super::common::{Scratch, check_count};
use super::{BackwardStep, Ctx, Layer, Shapes, StageDims};
use crate::engine::kernels::Kernel;
use crate::engine::kernels::elementwise::{ChannelStage, ElementwiseKernel, StageOp, UnaryOp};
use crate::proto::{LayerParameter, Phase};

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let slope = param
        .relu_param
        .as_ref()
        .map_or(0.0, |p| p.negative_slope());
    Ok(Box::new(NeuronLayer::new(UnaryOp::Relu {
        negative_slope: slope,
    })))
}

/// A one-bottom, one-top element-wise layer `top = op(bottom)`, usable in place.
pub struct NeuronLayer {
    op: UnaryOp,
    count: usize,
    /// Copy of the input kept for backward when run in place (only ops whose Caffe backward keeps
    /// state besides the top: Swish keeps its sigmoid).
    saved_input: Scratch,
    saved: bool,
}

impl NeuronLayer {
    pub fn new(op: UnaryOp) -> Self {
        NeuronLayer {
            op,
            count: 0,
            saved_input: Scratch::default(),
            saved: false,
        }
    }

    fn has_backward(&self) -> bool {
        !matches!(self.op, UnaryOp::Threshold { .. })
    }

    /// Caffe's Swish keeps sigmoid(beta * x) from forward, so its in-place backward is exact;
    /// we keep x instead.
    fn keeps_input(&self) -> bool {
        matches!(self.op, UnaryOp::Swish { .. })
    }
}

impl Layer for NeuronLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        self.count = bottoms[0].iter().product();
        Ok(Shapes {
            tops: vec![bottoms[0].clone()],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        check_count("top", cx.tops.len(), 1, 1)?;
        let (x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        self.saved = self.keeps_input() && x.id == y.id;
        if self.saved {
            let copy = self.saved_input.get(cx.eng, x.len);
            cx.eng.copy(x, copy);
        }
        cx.eng
            .launch(&Kernel::Elementwise(ElementwiseKernel::Unary {
                op: self.op,
                x,
                y,
            }))
    }

    fn stage_dims(&self, _phase: Phase) -> Option<StageDims> {
        Some(StageDims::Any)
    }

    fn forward_stage(&mut self, cx: &mut Ctx, for_backward: bool) -> Result<ChannelStage> {
        check_count("top", cx.tops.len(), 1, 1)?;
        let (x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        self.saved = self.keeps_input() && x.id == y.id && for_backward;
        let save = self.saved.then(|| self.saved_input.get(cx.eng, x.len));
        Ok(ChannelStage {
            op: StageOp::Unary(self.op),
            save,
        })
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !self.has_backward() || !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let mut x = cx.bottoms[0].data();
        if self.saved {
            x = self.saved_input.get(cx.eng, x.len);
        }
        let kernel = ElementwiseKernel::UnaryBackward {
            op: self.op,
            x,
            y: cx.tops[0].data(),
            dy: cx.tops[0].diff(),
            dx: cx.bottoms[0].diff(),
        };
        cx.eng.launch(&Kernel::Elementwise(kernel))
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        self.has_backward()
    }

    fn backward_step(&mut self, cx: &mut Ctx) -> Option<BackwardStep> {
        let (x, y) = (cx.bottoms[0].data(), cx.tops[0].data());
        if !self.has_backward() || x.id != y.id || cx.bottoms[0].diff() != cx.tops[0].diff() {
            return None;
        }
        // What this layer's own backward reads.
        let x = if self.saved {
            self.saved_input.get(cx.eng, x.len)
        } else {
            x
        };
        Some(BackwardStep::Neuron(self.op, x, y))
    }

    fn macs(&self) -> u64 {
        self.count as u64
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the unit tests of the neuron / normalisation layer files.
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, LayerRun, check_gradient, run_layer};
    use crate::proto::{LayerParameter, Phase};
    use crate::rng::Rng;

    /// A LayerParameter from prototxt text, e.g. `type: "ReLU" relu_param { negative_slope: 0.1 }`.
    pub fn param(src: &str) -> LayerParameter {
        crate::format::transcode::parse_text::<LayerParameter>(src, "test", "caffe.LayerParameter")
            .expect("test layer parameter parses")
    }

    pub fn case(src: &str, bottoms: Vec<(Vec<usize>, Vec<f32>)>) -> LayerCase {
        LayerCase {
            param: param(src),
            phase: Phase::Test,
            bottoms,
            params: None,
        }
    }

    /// Uniform values in [lo, hi), skipping the band |x - k| < gap around each kink k.
    pub fn values(seed: u64, n: usize, lo: f32, hi: f32, kinks: &[f32], gap: f32) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                loop {
                    let v = rng.uniform_range(lo, hi);
                    if kinks.iter().all(|k| (v - k).abs() >= gap) {
                        break v;
                    }
                }
            })
            .collect()
    }

    pub fn run(case: &LayerCase, top_diffs: Option<&[Vec<f32>]>) -> LayerRun {
        run_layer(&mut CpuEngine::new(), case, top_diffs, None).expect("layer runs")
    }

    pub fn grad(case: &LayerCase, bottoms: &[usize]) {
        check_gradient(&mut CpuEngine::new(), case, bottoms, 1e-2, 1e-2).expect("gradient check");
    }

    pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "element {i}: got {g}, want {w}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn forward_backward_values() {
        let x = vec![-2.0, -0.5, 0.0, 0.5, 3.0];
        let c = case(
            r#"type: "ReLU" relu_param { negative_slope: 0.1 }"#,
            vec![(vec![5], x)],
        );
        let r = run(&c, Some(&[vec![1.0, 2.0, 3.0, 4.0, 5.0]]));
        assert_close(&r.tops[0].1, &[-0.2, -0.05, 0.0, 0.5, 3.0], 1e-6);
        // x <= 0 gets the slope (Caffe: (x > 0) + slope * (x <= 0)).
        assert_close(&r.bottom_diffs[0], &[0.1, 0.2, 0.3, 4.0, 5.0], 1e-6);
        let plain = case(r#"type: "ReLU""#, vec![(vec![3], vec![-1.0, 0.0, 2.0])]);
        assert_eq!(run(&plain, None).tops[0].1, vec![0.0, 0.0, 2.0]);
    }

    #[test]
    fn gradients() {
        for (seed, src) in [
            (1, r#"type: "ReLU""#),
            (2, r#"type: "ReLU" relu_param { negative_slope: 0.3 }"#),
        ] {
            let x = values(seed, 2 * 3 * 4, -3.0, 3.0, &[0.0], 0.05);
            grad(&case(src, vec![(vec![2, 3, 4], x)]), &[0]);
        }
    }
}
