//! Clip: y = max(min, min(x, max)); the gradient passes where min <= x <= max (inclusive).
use anyhow::{Result, bail};

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let Some(p) = param.clip_param.as_ref() else {
        bail!("Clip needs clip_param {{ min: .. max: .. }}");
    };
    let (min, max) = (p.min, p.max);
    Ok(Box::new(NeuronLayer::new(UnaryOp::Clip { min, max })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let c = case(
            r#"type: "Clip" clip_param { min: -0.5 max: 0.8 }"#,
            vec![(vec![5], vec![-1.0, -0.5, 0.1, 0.8, 2.0])],
        );
        let r = run(&c, Some(&[vec![1.0, 2.0, 3.0, 4.0, 5.0]]));
        assert_eq!(r.tops[0].1, vec![-0.5, -0.5, 0.1, 0.8, 0.8]);
        assert_eq!(r.bottom_diffs[0], vec![0.0, 2.0, 3.0, 4.0, 0.0]);
    }

    #[test]
    fn missing_param_is_an_error() {
        assert!(crate::layers::create(&param(r#"type: "Clip""#)).is_err());
    }

    #[test]
    fn gradients() {
        let c = case(
            r#"type: "Clip" clip_param { min: -1 max: 1.5 }"#,
            vec![(vec![2, 3, 4], values(9, 24, -3.0, 3.0, &[-1.0, 1.5], 0.05))],
        );
        grad(&c, &[0]);
    }
}
