//! ELU: y = x > 0 ? x : alpha * (e^x - 1) (alpha default 1).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let alpha = param.elu_param.as_ref().map_or(1.0, |p| p.alpha());
    Ok(Box::new(NeuronLayer::new(UnaryOp::Elu { alpha })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let c = case(
            r#"type: "ELU" elu_param { alpha: 0.5 }"#,
            vec![(vec![3], vec![-1.0, 0.0, 2.0])],
        );
        let r = run(&c, Some(&[vec![2.0, 1.0, 3.0]]));
        let y0 = 0.5 * ((-1.0f32).exp() - 1.0);
        assert_close(&r.tops[0].1, &[y0, 0.0, 2.0], 1e-6);
        // x <= 0: dy * (alpha + y)
        assert_close(&r.bottom_diffs[0], &[2.0 * (0.5 + y0), 0.5, 3.0], 1e-6);
        let default = case(r#"type: "ELU""#, vec![(vec![1], vec![-1.0])]);
        assert_close(
            &run(&default, None).tops[0].1,
            &[(-1.0f32).exp() - 1.0],
            1e-6,
        );
    }

    #[test]
    fn gradients() {
        for (seed, src) in [
            (7, r#"type: "ELU""#),
            (8, r#"type: "ELU" elu_param { alpha: 0.3 }"#),
        ] {
            grad(
                &case(
                    src,
                    vec![(vec![2, 3, 4], values(seed, 24, -3.0, 3.0, &[0.0], 0.05))],
                ),
                &[0],
            );
        }
    }
}
