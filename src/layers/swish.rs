//! Swish: y = x * sigmoid(beta * x) (beta default 1).
use anyhow::Result;

use super::Layer;
use super::relu::NeuronLayer;
use crate::engine::kernels::elementwise::UnaryOp;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let beta = param.swish_param.as_ref().map_or(1.0, |p| p.beta());
    Ok(Box::new(NeuronLayer::new(UnaryOp::Swish { beta })))
}

#[cfg(test)]
mod tests {
    use super::super::relu::test_support::*;
    use crate::engine::Engine;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::{Blob, Ctx};
    use crate::proto::Phase;
    use crate::rng::Rng;

    #[test]
    fn forward_backward_values() {
        let c = case(
            r#"type: "Swish" swish_param { beta: 1.5 }"#,
            vec![(vec![3], vec![0.0, 1.0, -2.0])],
        );
        let r = run(&c, Some(&[vec![1.0, 1.0, 1.0]]));
        let s = |x: f32| 1.0 / (1.0 + (-1.5 * x).exp());
        assert_close(&r.tops[0].1, &[0.0, s(1.0), -2.0 * s(-2.0)], 1e-6);
        let d = |x: f32| s(x) + 1.5 * x * s(x) * (1.0 - s(x));
        assert_close(&r.bottom_diffs[0], &[0.5, d(1.0), d(-2.0)], 1e-5);
    }

    #[test]
    fn gradients() {
        for (seed, src) in [
            (10, r#"type: "Swish""#),
            (11, r#"type: "Swish" swish_param { beta: 0.7 }"#),
        ] {
            grad(
                &case(
                    src,
                    vec![(vec![2, 3, 4], values(seed, 24, -3.0, 3.0, &[], 0.0))],
                ),
                &[0],
            );
        }
    }

    #[test]
    fn in_place_backward_matches() {
        let x = values(12, 12, -3.0, 3.0, &[], 0.0);
        let dy = values(13, 12, -1.0, 1.0, &[], 0.0);
        let c = case(
            r#"type: "Swish" swish_param { beta: 1.5 }"#,
            vec![(vec![12], x.clone())],
        );
        let want = run(&c, Some(std::slice::from_ref(&dy)));
        let mut eng = CpuEngine::new();
        let mut layer = crate::layers::create(&c.param).unwrap();
        layer.reshape(&[vec![12]]).unwrap();
        let blob = Blob {
            shape: vec![12],
            data: eng.alloc(12),
            diff: eng.alloc(12),
        };
        eng.upload(blob.data(), &x);
        let blobs = [blob.clone()];
        let mut rng = Rng::new(1);
        let mut cx = Ctx {
            eng: &mut eng,
            bottoms: &blobs,
            tops: &blobs,
            params: &[],
            phase: Phase::Test,
            rng: &mut rng,
            param_grads: &[],
        };
        layer.forward(&mut cx).unwrap();
        cx.eng.upload(blob.diff(), &dy);
        layer.backward(&mut cx, &[true]).unwrap();
        assert_close(&cx.eng.download(blob.data()), &want.tops[0].1, 1e-6);
        assert_close(&cx.eng.download(blob.diff()), &want.bottom_diffs[0], 1e-6);
    }
}
