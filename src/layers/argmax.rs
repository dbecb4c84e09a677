//! ArgMax: the indices (and with `out_max_val` the values) of the `top_k` largest entries. Without
//! `axis`, per item over all of count(1): top shape (N, 1 or 2, top_k, 1...) with the indices first;
//! with `axis`, the axis becomes top_k and `out_max_val` outputs the values only. No backward.
use anyhow::{Result, bail};

use super::common::{canonical_axis, check_count, count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::softmax::{ArgMaxOut, SoftmaxKernel};
use crate::proto::LayerParameter;

pub struct ArgMax {
    out_max_val: bool,
    top_k: usize,
    axis: Option<i32>,
    dims: [usize; 3],
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let p = param.argmax_param.unwrap_or_default();
    if p.top_k() < 1 {
        bail!("argmax_param.top_k must be at least 1");
    }
    Ok(Box::new(ArgMax {
        out_max_val: p.out_max_val(),
        top_k: p.top_k() as usize,
        axis: p.axis,
        dims: [0; 3],
    }))
}

impl Layer for ArgMax {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let b = &bottoms[0];
        if b.is_empty() {
            bail!("expects a bottom with at least one axis");
        }
        let top = match self.axis {
            Some(axis) => {
                let a = canonical_axis(axis, b.len())?;
                if self.top_k > b[a] {
                    bail!(
                        "top_k ({}) must be at most the dimension of axis {a} of {}",
                        self.top_k,
                        shape_str(b)
                    );
                }
                self.dims = [count(b, 0, a), b[a], count(b, a + 1, b.len())];
                let mut t = b.clone();
                t[a] = self.top_k;
                t
            }
            None => {
                let classes = count(b, 1, b.len());
                if self.top_k > classes {
                    bail!(
                        "top_k ({}) must be at most the number of classes ({classes})",
                        self.top_k
                    );
                }
                self.dims = [b[0], classes, 1];
                let mut t = vec![1; b.len().max(3)];
                t[0] = b[0];
                t[2] = self.top_k;
                if self.out_max_val {
                    t[1] = 2;
                }
                t
            }
        };
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let [outer, channels, inner] = self.dims;
        let out = match (self.axis.is_some(), self.out_max_val) {
            (true, true) => ArgMaxOut::Values,
            (false, true) => ArgMaxOut::IndicesThenValues,
            _ => ArgMaxOut::Indices,
        };
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::ArgMax {
            x: cx.bottoms[0].data(),
            y: cx.tops[0].data(),
            outer,
            channels,
            inner,
            top_k: self.top_k,
            out,
        }))
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }

    fn macs(&self) -> u64 {
        self.dims.iter().product::<usize>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, run_layer};
    use crate::proto::{ArgMaxParameter, Phase};

    fn run(shape: Vec<usize>, x: Vec<f32>, p: ArgMaxParameter) -> (Vec<usize>, Vec<f32>) {
        let case = LayerCase {
            param: LayerParameter {
                r#type: Some("ArgMax".into()),
                top: vec!["am".into()],
                argmax_param: Some(p),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(shape, x)],
            params: None,
        };
        run_layer(&mut CpuEngine::new(), &case, None, None)
            .unwrap()
            .tops
            .remove(0)
    }

    #[test]
    fn without_axis() {
        let x = vec![0.1, 0.7, 0.2, 0.7, 5.0, 1.0, 3.0, 2.0];
        let (s, y) = run(vec![2, 4], x.clone(), ArgMaxParameter::default());
        assert_eq!(
            (s, y),
            (vec![2, 1, 1], vec![3.0, 0.0]),
            "ties: the larger index wins"
        );
        let p = ArgMaxParameter {
            out_max_val: Some(true),
            top_k: Some(2),
            axis: None,
        };
        let (s, y) = run(vec![2, 4], x, p);
        assert_eq!(s, vec![2, 2, 2]);
        assert_eq!(y, vec![3.0, 1.0, 0.7, 0.7, 0.0, 2.0, 5.0, 3.0]);
    }

    #[test]
    fn with_axis() {
        // [1, 3, 2]: along axis 1
        let x = vec![1.0, 6.0, 3.0, 5.0, 2.0, 4.0];
        let p = ArgMaxParameter {
            out_max_val: None,
            top_k: Some(2),
            axis: Some(1),
        };
        assert_eq!(
            run(vec![1, 3, 2], x.clone(), p),
            (vec![1, 2, 2], vec![1.0, 0.0, 2.0, 1.0])
        );
        let p = ArgMaxParameter {
            out_max_val: Some(true),
            top_k: Some(2),
            axis: Some(-2),
        };
        assert_eq!(
            run(vec![1, 3, 2], x, p),
            (vec![1, 2, 2], vec![3.0, 6.0, 2.0, 5.0])
        );
    }
}
