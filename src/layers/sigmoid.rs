//! Sigmoid: y = 1 / (1 + e^-x), computed as Caffe does (0.5 * tanh(0.5 x) + 0.5).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(_param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(NeuronLayer::new(UnaryOp::Sigmoid)))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let c = case(r#"type: "Sigmoid""#, vec![(vec![3], vec![0.0, 2.0, -1.0])]);
        let r = run(&c, Some(&[vec![1.0, 1.0, 2.0]]));
        let s = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert_close(&r.tops[0].1, &[0.5, s(2.0), s(-1.0)], 1e-6);
        assert_close(
            &r.bottom_diffs[0],
            &[
                0.25,
                s(2.0) * (1.0 - s(2.0)),
                2.0 * s(-1.0) * (1.0 - s(-1.0)),
            ],
            1e-6,
        );
    }

    #[test]
    fn gradients() {
        grad(
            &case(
                r#"type: "Sigmoid""#,
                vec![(vec![2, 3, 4], values(3, 24, -4.0, 4.0, &[], 0.0))],
            ),
            &[0],
        );
    }
}
