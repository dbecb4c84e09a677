//! Power: y = (shift + scale * x)^power (defaults power 1, scale 1, shift 0).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.power_param.unwrap_or_default();
    Ok(Box::new(NeuronLayer::new(UnaryOp::Power {
        power: p.power(),
        scale: p.scale(),
        shift: p.shift(),
    })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;

    fn reference(x: f32, (power, scale, shift): (f32, f32, f32)) -> (f32, f32) {
        let b = shift + scale * x;
        (b.powf(power), power * scale * b.powf(power - 1.0))
    }

    #[test]
    fn forward_backward_values() {
        let x = vec![0.5, 1.0, 2.0, -0.3];
        for p in [
            (2.0, 0.5, 1.0),
            (2.0, -1.5, 0.25),
            (3.0, 2.0, 0.0),
            (0.5, 1.0, 3.0),
            (1.0, 2.0, -1.0),
        ] {
            let src = format!(
                r#"type: "Power" power_param {{ power: {} scale: {} shift: {} }}"#,
                p.0, p.1, p.2
            );
            let dy = vec![1.0, -2.0, 0.5, 1.5];
            let r = run(
                &case(&src, vec![(vec![4], x.clone())]),
                Some(std::slice::from_ref(&dy)),
            );
            let (want_y, want_d): (Vec<f32>, Vec<f32>) = x
                .iter()
                .zip(&dy)
                .map(|(&x, &d)| (reference(x, p).0, d * reference(x, p).1))
                .unzip();
            assert_close(&r.tops[0].1, &want_y, 1e-5);
            assert_close(&r.bottom_diffs[0], &want_d, 1e-5);
        }
        // power * scale == 0: a constant, zero gradient.
        let r = run(
            &case(
                r#"type: "Power" power_param { power: 2 scale: 0 shift: 3 }"#,
                vec![(vec![2], vec![1.0, 5.0])],
            ),
            Some(&[vec![1.0, 1.0]]),
        );
        assert_eq!(r.tops[0].1, vec![9.0, 9.0]);
        assert_eq!(r.bottom_diffs[0], vec![0.0, 0.0]);
        let r = run(
            &case(
                r#"type: "Power" power_param { power: 0 }"#,
                vec![(vec![2], vec![1.0, 5.0])],
            ),
            None,
        );
        assert_eq!(r.tops[0].1, vec![1.0, 1.0]);
    }

    #[test]
    fn gradients() {
        let cases = [
            r#"type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }"#,
            r#"type: "Power" power_param { power: 3 scale: 1.5 }"#,
            r#"type: "Power" power_param { power: 0.5 scale: 1 shift: 4 }"#,
            r#"type: "Power" power_param { power: -1.5 scale: 0.5 shift: 3 }"#,
        ];
        for (seed, src) in cases.iter().enumerate() {
            grad(
                &case(
                    src,
                    vec![(
                        vec![2, 3, 2],
                        values(20 + seed as u64, 12, 0.1, 2.0, &[], 0.0),
                    )],
                ),
                &[0],
            );
        }
    }
}
