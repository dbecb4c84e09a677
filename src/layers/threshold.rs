//! Threshold: y = x > threshold ? 1 : 0 (strict). No backward, as in Caffe (which aborts when
//! one is forced; caffe-rs does not propagate into it).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let threshold = param
        .threshold_param
        .as_ref()
        .map_or(0.0, |p| p.threshold());
    Ok(Box::new(NeuronLayer::new(UnaryOp::Threshold { threshold })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn strict_threshold() {
        let c = case(
            r#"type: "Threshold" threshold_param { threshold: 0.3 }"#,
            vec![(vec![4], vec![0.3, 0.31, -1.0, 2.0])],
        );
        assert_eq!(run(&c, None).tops[0].1, vec![0.0, 1.0, 0.0, 1.0]);
        let zero = case(
            r#"type: "Threshold""#,
            vec![(vec![3], vec![0.0, 1e-6, -1e-6])],
        );
        assert_eq!(run(&zero, None).tops[0].1, vec![0.0, 1.0, 0.0]);
        assert!(
            !crate::layers::create(&zero.param)
                .unwrap()
                .can_propagate_down(0)
        );
    }
}
