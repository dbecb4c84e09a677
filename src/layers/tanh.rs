//! TanH: y = tanh(x).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(_param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(NeuronLayer::new(UnaryOp::TanH)))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let c = case(r#"type: "TanH""#, vec![(vec![3], vec![0.0, 0.5, -2.0])]);
        let r = run(&c, Some(&[vec![1.0, 1.0, 3.0]]));
        assert_close(&r.tops[0].1, &[0.0, 0.5f32.tanh(), (-2.0f32).tanh()], 1e-6);
        let d = |x: f32| 1.0 - x.tanh() * x.tanh();
        assert_close(&r.bottom_diffs[0], &[1.0, d(0.5), 3.0 * d(-2.0)], 1e-6);
    }

    #[test]
    fn gradients() {
        grad(
            &case(
                r#"type: "TanH""#,
                vec![(vec![2, 3, 4], values(4, 24, -3.0, 3.0, &[], 0.0))],
            ),
            &[0],
        );
    }
}
