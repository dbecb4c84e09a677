//! Log: y = log_base(shift + scale * x) (base -1, the default, means e).
use anyhow::{Result, bail};

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.log_param.unwrap_or_default();
    let (base, scale, shift) = (p.base(), p.scale(), p.shift());
    if base != -1.0 && base <= 0.0 {
        bail!("log_param.base must be strictly positive (or -1 for e), got {base}");
    }
    let log_base = if base == -1.0 { 1.0 } else { base.ln() };
    let base_scale = 1.0 / log_base;
    if !log_base.is_finite() || !base_scale.is_finite() {
        bail!("log_param.base {base} gives a non-finite 1/log(base) (log(base) = {log_base})");
    }
    Ok(Box::new(NeuronLayer::new(UnaryOp::Log {
        scale,
        shift,
        base_scale,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let x = vec![0.2, 1.0, 1.9];
        let r = run(
            &case(
                r#"type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }"#,
                vec![(vec![3], x.clone())],
            ),
            Some(&[vec![1.0, 2.0, -1.0]]),
        );
        let y: Vec<f32> = x.iter().map(|&x| (0.5 + 2.0 * x).log10()).collect();
        assert_close(&r.tops[0].1, &y, 1e-6);
        let d: Vec<f32> = x
            .iter()
            .zip([1.0, 2.0, -1.0])
            .map(|(&x, g)| g * 2.0 / ((0.5 + 2.0 * x) * 10f32.ln()))
            .collect();
        assert_close(&r.bottom_diffs[0], &d, 1e-6);
        let e = run(
            &case(r#"type: "Log""#, vec![(vec![2], vec![1.0, 2.0])]),
            None,
        );
        assert_close(&e.tops[0].1, &[0.0, 2f32.ln()], 1e-6);
    }

    #[test]
    fn base_one_is_an_error() {
        assert!(crate::layers::create(&param(r#"type: "Log" log_param { base: 1 }"#)).is_err());
    }

    #[test]
    fn gradients() {
        for (seed, src) in [
            (40, r#"type: "Log""#),
            (
                41,
                r#"type: "Log" log_param { base: 2 scale: 0.5 shift: 1 }"#,
            ),
        ] {
            grad(
                &case(
                    src,
                    vec![(vec![2, 3, 2], values(seed, 12, 0.5, 2.0, &[], 0.0))],
                ),
                &[0],
            );
        }
    }
}
