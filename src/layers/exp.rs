//! Exp: y = base^(shift + scale * x) (base -1, the default, means e).
use anyhow::{Result, bail};

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.exp_param.unwrap_or_default();
    let (base, scale, shift) = (p.base(), p.scale(), p.shift());
    if base != -1.0 && base <= 0.0 {
        bail!("exp_param.base must be strictly positive (or -1 for e), got {base}");
    }
    let log_base = if base == -1.0 { 1.0 } else { base.ln() };
    if !log_base.is_finite() {
        bail!("exp_param.base {base} gives a non-finite log(base) = {log_base}");
    }
    let inner_scale = log_base * scale;
    let outer_scale = if shift == 0.0 {
        1.0
    } else if base != -1.0 {
        base.powf(shift)
    } else {
        shift.exp()
    };
    Ok(Box::new(NeuronLayer::new(UnaryOp::Exp {
        inner_scale,
        outer_scale,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    #[test]
    fn forward_backward_values() {
        let x = vec![-1.0, 0.0, 1.5];
        let r = run(
            &case(
                r#"type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }"#,
                vec![(vec![3], x.clone())],
            ),
            Some(&[vec![1.0, 2.0, -1.0]]),
        );
        let y: Vec<f32> = x.iter().map(|&x| 2f32.powf(0.1 + 0.5 * x)).collect();
        assert_close(&r.tops[0].1, &y, 1e-6);
        let l = 2f32.ln() * 0.5;
        assert_close(
            &r.bottom_diffs[0],
            &[y[0] * l, 2.0 * y[1] * l, -y[2] * l],
            1e-6,
        );
        let e = run(
            &case(r#"type: "Exp""#, vec![(vec![2], vec![0.0, 1.0])]),
            None,
        );
        assert_close(&e.tops[0].1, &[1.0, 1f32.exp()], 1e-6);
    }

    #[test]
    fn bad_base_is_an_error() {
        assert!(crate::layers::create(&param(r#"type: "Exp" exp_param { base: -2 }"#)).is_err());
    }

    #[test]
    fn gradients() {
        for (seed, src) in [
            (30, r#"type: "Exp""#),
            (
                31,
                r#"type: "Exp" exp_param { base: 3 scale: -0.7 shift: 0.4 }"#,
            ),
        ] {
            grad(
                &case(
                    src,
                    vec![(vec![2, 3, 2], values(seed, 12, -1.5, 1.5, &[], 0.0))],
                ),
                &[0],
            );
        }
    }
}
