//! AbsVal: y = |x|, dx = dy * sign(x).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(_param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(NeuronLayer::new(UnaryOp::AbsVal)))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let c = case(
            r#"type: "AbsVal""#,
            vec![(vec![4], vec![-1.5, 0.0, 2.0, -0.25])],
        );
        let r = run(&c, Some(&[vec![1.0, 2.0, 3.0, 4.0]]));
        assert_eq!(r.tops[0].1, vec![1.5, 0.0, 2.0, 0.25]);
        assert_eq!(r.bottom_diffs[0], vec![-1.0, 0.0, 3.0, -4.0]);
    }

    #[test]
    fn gradients() {
        grad(
            &case(
                r#"type: "AbsVal""#,
                vec![(vec![2, 3, 4], values(5, 24, -3.0, 3.0, &[0.0], 0.05))],
            ),
            &[0],
        );
    }
}
