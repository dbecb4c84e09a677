//! BNLL (binomial normal log likelihood, softplus): y = ln(1 + e^x) in Caffe's stable form.
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(_param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(Box::new(NeuronLayer::new(UnaryOp::Bnll)))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let c = case(
            r#"type: "BNLL""#,
            vec![(vec![4], vec![0.0, 1.0, -2.0, 80.0])],
        );
        let r = run(&c, Some(&[vec![1.0, 1.0, 1.0, 2.0]]));
        let sp = |x: f64| (1.0 + x.exp()).ln() as f32;
        assert_close(&r.tops[0].1, &[sp(0.0), sp(1.0), sp(-2.0), 80.0], 1e-6);
        let sg = |x: f64| (1.0 / (1.0 + (-x).exp())) as f32;
        assert_close(&r.bottom_diffs[0], &[0.5, sg(1.0), sg(-2.0), 2.0], 1e-6);
    }

    #[test]
    fn gradients() {
        grad(
            &case(
                r#"type: "BNLL""#,
                vec![(vec![2, 3, 4], values(6, 24, -4.0, 4.0, &[], 0.0))],
            ),
            &[0],
        );
    }
}
