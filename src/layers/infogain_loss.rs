//! InfogainLoss: softmax along `infogain_loss_param.axis` (its input is logits, as in Caffe
//! master), then loss = -sum_n sum_k H[label_n, k] * log(max(p_nk, 1e-20)) / normaliser, with the
//! infogain matrix H (K x K) from bottom 2 or from the `source` binaryproto file. `loss_param`
//! ignore_label / normalization as SoftmaxWithLoss. No gradient to the label or H. An optional
//! top 1 receives the probabilities.
use anyhow::{Context, Result, bail};
use prost::Message;

use super::common::{Scratch, check_count, shape_str};
use super::softmax::split_at_axis;
use super::softmax_with_loss::{LossSettings, check_first_dim, check_labels, loss_settings};
use super::{Ctx, Layer, Shapes};
use crate::engine::kernels::softmax::{Normalization, SoftmaxKernel};
use crate::engine::{Kernel, TensorId, View};
use crate::proto::{BlobProto, LayerParameter};

pub struct InfogainLoss {
    axis: i32,
    settings: LossSettings,
    two_tops: bool,
    /// H read from `source` (used when there is no third bottom), and its device copy.
    file_h: Option<Vec<f32>>,
    file_h_tensor: Option<TensorId>,
    dims: [usize; 3],
    prob: Scratch,
    norm: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 2)?;
    let ip = param.infogain_loss_param.clone().unwrap_or_default();
    let file_h = match param.bottom.len() {
        n if n >= 3 => None,
        _ => {
            let Some(source) = ip.source.as_deref() else {
                bail!(
                    "infogain matrix source must be specified (infogain_loss_param.source) when there is no third bottom"
                );
            };
            let bytes = std::fs::read(source)
                .with_context(|| format!("cannot read infogain matrix {source}"))?;
            let blob = BlobProto::decode(&bytes[..])
                .with_context(|| format!("{source}: not a BlobProto"))?;
            Some(blob.values_f32())
        }
    };
    Ok(Box::new(InfogainLoss {
        axis: ip.axis(),
        settings: loss_settings(param, Normalization::Valid),
        two_tops: param.top.len() == 2,
        file_h,
        file_h_tensor: None,
        dims: [0; 3],
        prob: Scratch::default(),
        norm: Scratch::default(),
    }))
}

impl InfogainLoss {
    fn infogain(&mut self, cx: &mut Ctx) -> View {
        if cx.bottoms.len() >= 3 {
            return cx.bottoms[2].data();
        }
        let h = self.file_h.as_deref().unwrap_or(&[]);
        let id = match self.file_h_tensor {
            Some(id) => id,
            None => {
                let id = cx.eng.alloc(h.len());
                cx.eng.upload(View::new(id, 0, h.len()), h);
                self.file_h_tensor = Some(id);
                id
            }
        };
        View::new(id, 0, h.len())
    }
}

impl Layer for InfogainLoss {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, 3)?;
        check_first_dim(bottoms)?;
        self.dims = split_at_axis(&bottoms[0], self.axis)?;
        check_labels(self.dims, &bottoms[0], &bottoms[1])?;
        let k = self.dims[1];
        let h_count = match bottoms.get(2) {
            Some(s) => s.iter().product(),
            None => self.file_h.as_ref().map_or(0, |h| h.len()),
        };
        if h_count != k * k {
            let got = bottoms
                .get(2)
                .map_or(format!("{h_count} values"), |s| shape_str(s));
            bail!(
                "the infogain matrix must have {k} x {k} = {} elements for {k} labels, got {got}",
                k * k
            );
        }
        let mut tops = vec![vec![]];
        if self.two_tops {
            tops.push(bottoms[0].clone());
        }
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let [outer, channels, inner] = self.dims;
        let prob = if self.two_tops {
            cx.tops[1].data()
        } else {
            self.prob.get(cx.eng, outer * channels * inner)
        };
        let norm = self.norm.get(cx.eng, 1);
        let h = self.infogain(cx);
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::Forward {
            x: cx.bottoms[0].data(),
            y: prob,
            outer,
            channels,
            inner,
        }))?;
        cx.eng.launch(&Kernel::Softmax(SoftmaxKernel::CrossEntropy {
            prob,
            label: cx.bottoms[1].data(),
            infogain: Some(h),
            loss: cx.tops[0].data(),
            norm,
            outer,
            channels,
            inner,
            ignore_label: self.settings.ignore_label,
            mode: self.settings.mode,
            log_min: 1e-20,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let [outer, channels, inner] = self.dims;
        let prob = if self.two_tops {
            cx.tops[1].data()
        } else {
            self.prob.get(cx.eng, outer * channels * inner)
        };
        let norm = self.norm.get(cx.eng, 1);
        let h = self.infogain(cx);
        cx.eng
            .launch(&Kernel::Softmax(SoftmaxKernel::CrossEntropyGrad {
                prob,
                label: cx.bottoms[1].data(),
                infogain: Some(h),
                top_diff: cx.tops[0].diff(),
                norm,
                dx: cx.bottoms[0].diff(),
                outer,
                channels,
                inner,
                ignore_label: self.settings.ignore_label,
            }))
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom == 0
    }

    fn is_loss(&self) -> bool {
        true
    }

    fn macs(&self) -> u64 {
        (self.dims.iter().product::<usize>() * 4) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::Phase;
    use crate::rng::Rng;

    fn case(n: usize, k: usize, h: Option<Vec<f32>>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        let mut bottoms = vec![
            (
                vec![n, k],
                (0..n * k).map(|_| rng.uniform_range(-2.0, 2.0)).collect(),
            ),
            (vec![n], (0..n).map(|_| rng.below(k) as f32).collect()),
        ];
        let mut bottom_names = vec!["x".to_string(), "label".to_string()];
        if let Some(h) = h {
            bottoms.push((vec![k, k], h));
            bottom_names.push("h".into());
        }
        LayerCase {
            param: LayerParameter {
                r#type: Some("InfogainLoss".into()),
                top: vec!["loss".into()],
                bottom: bottom_names,
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms,
            params: None,
        }
    }

    #[test]
    fn identity_matches_softmax_loss() {
        let k = 4;
        let eye: Vec<f32> = (0..k * k)
            .map(|i| f32::from(u8::from(i % (k + 1) == 0)))
            .collect();
        let c = case(3, k, Some(eye), 1);
        let mut eng = CpuEngine::new();
        let a = run_layer(&mut eng, &c, Some(&[vec![1.0]]), None).unwrap();
        let mut s = c.clone();
        s.param.r#type = Some("SoftmaxWithLoss".into());
        s.bottoms.pop();
        let b = run_layer(&mut eng, &s, Some(&[vec![1.0]]), None).unwrap();
        assert!((a.tops[0].1[0] - b.tops[0].1[0]).abs() < 1e-6);
        for (x, y) in a.bottom_diffs[0].iter().zip(&b.bottom_diffs[0]) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn matrix_from_source_file() {
        let k = 3;
        let h: Vec<f32> = (0..k * k).map(|i| 0.1 * i as f32).collect();
        let path = std::env::temp_dir().join(format!(
            "caffe_rs_infogain_{}.binaryproto",
            std::process::id()
        ));
        std::fs::write(
            &path,
            BlobProto::from_shape_data(&[1, 1, k, k], h.clone()).encode_to_vec(),
        )
        .unwrap();
        let mut c = case(2, k, None, 2);
        c.param.infogain_loss_param = Some(crate::proto::InfogainLossParameter {
            source: Some(path.display().to_string()),
            axis: None,
        });
        let mut eng = CpuEngine::new();
        let a = run_layer(&mut eng, &c, Some(&[vec![1.0]]), None).unwrap();
        let b = run_layer(&mut eng, &case(2, k, Some(h), 2), Some(&[vec![1.0]]), None).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(a.tops[0].1, b.tops[0].1);
        assert_eq!(a.bottom_diffs[0], b.bottom_diffs[0]);
        let mut c = case(2, k, None, 2);
        c.param.bottom.truncate(2);
        assert!(
            run_layer(&mut eng, &c, None, None)
                .unwrap_err()
                .to_string()
                .contains("source")
        );
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        let mut rng = Rng::new(9);
        let h: Vec<f32> = (0..25).map(|_| rng.uniform_range(0.0, 1.0)).collect();
        check_gradient(&mut eng, &case(4, 5, Some(h), 3), &[0], 1e-2, 1e-2).unwrap();
    }
}
