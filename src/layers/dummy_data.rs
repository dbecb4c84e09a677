//! DummyData: tops filled by fillers (`data_filler`: none = constant 0, one for all tops, or one
//! per top) with shapes from `shape` (once or once per top) or the legacy num/channels/height/width.
//! As in Caffe, constant fillers fill their top once; other fillers refill it every forward.
use anyhow::{Result, bail};

use super::common::check_count;
use super::{Ctx, Layer, Shapes};
use crate::proto::{FillerParameter, LayerParameter, shape_dims};

pub struct DummyData {
    shapes: Vec<Vec<usize>>,
    /// One filler per top.
    fillers: Vec<FillerParameter>,
    filled_once: bool,
}

/// `values[i]` if there is one per item, `values[0]` if there is one for all.
fn pick<T: Clone>(what: &str, values: &[T], n: usize) -> Result<Vec<T>> {
    match values.len() {
        1 => Ok(vec![values[0].clone(); n]),
        k if k == n => Ok(values.to_vec()),
        k => bail!("must specify '{what}' once, or once per top blob ({n}); specified {k}"),
    }
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let n = param.top.len();
    check_count("top", n, 1, usize::MAX)?;
    let p = param.dummy_data_param.clone().unwrap_or_default();
    let fillers = match p.data_filler.len() {
        0 => vec![
            FillerParameter {
                r#type: Some("constant".into()),
                value: Some(0.0),
                ..Default::default()
            };
            n
        ],
        k if k == 1 || k == n => pick("data_filler", &p.data_filler, n)?,
        k => bail!(
            "number of data fillers must be 0, 1 or equal to the number of tops ({n}); you specified {k}"
        ),
    };
    let legacy =
        !(p.num.is_empty() && p.channels.is_empty() && p.height.is_empty() && p.width.is_empty());
    let shapes = if legacy {
        if !p.shape.is_empty() {
            bail!("both shape and legacy num/channels/height/width were specified");
        }
        let (num, ch) = (pick("num", &p.num, n)?, pick("channels", &p.channels, n)?);
        let (h, w) = (pick("height", &p.height, n)?, pick("width", &p.width, n)?);
        (0..n)
            .map(|i| {
                vec![
                    num[i] as usize,
                    ch[i] as usize,
                    h[i] as usize,
                    w[i] as usize,
                ]
            })
            .collect()
    } else {
        pick("shape", &p.shape, n)?.iter().map(shape_dims).collect()
    };
    Ok(Box::new(DummyData {
        shapes,
        fillers,
        filled_once: false,
    }))
}

impl Layer for DummyData {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 0, 0)?;
        Ok(Shapes {
            tops: self.shapes.clone(),
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        for ((t, f), shape) in cx.tops.iter().zip(&self.fillers).zip(&self.shapes) {
            if f.r#type() == "constant" {
                if !self.filled_once {
                    cx.eng.fill(t.data(), f.value());
                }
            } else {
                let values = crate::net::filler::fill(f, shape, cx.rng)?;
                cx.eng.upload(t.data(), &values);
            }
        }
        self.filled_once = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, run_layer};
    use crate::proto::{BlobShape, DummyDataParameter, Phase};

    fn case(p: DummyDataParameter, tops: usize) -> LayerCase {
        LayerCase {
            param: LayerParameter {
                r#type: Some("DummyData".into()),
                top: (0..tops).map(|i| format!("d{i}")).collect(),
                dummy_data_param: Some(p),
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![],
            params: None,
        }
    }

    fn constant(v: f32) -> FillerParameter {
        FillerParameter {
            r#type: Some("constant".into()),
            value: Some(v),
            ..Default::default()
        }
    }

    #[test]
    fn shapes_and_fillers() {
        let p = DummyDataParameter {
            shape: vec![BlobShape { dim: vec![2, 3] }],
            data_filler: vec![
                constant(1.5),
                FillerParameter {
                    r#type: Some("uniform".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let run = run_layer(&mut CpuEngine::new(), &case(p, 2), None, None).unwrap();
        assert_eq!(run.tops[0], (vec![2, 3], vec![1.5; 6]));
        assert!(
            run.tops[1].1.iter().all(|&v| (0.0..1.0).contains(&v))
                && run.tops[1].1.iter().any(|&v| v != 0.0)
        );
        // legacy dims and the default constant 0
        let p = DummyDataParameter {
            num: vec![2],
            channels: vec![1, 3],
            height: vec![1],
            width: vec![2],
            ..Default::default()
        };
        let run = run_layer(&mut CpuEngine::new(), &case(p, 2), None, None).unwrap();
        assert_eq!(run.tops[1], (vec![2, 3, 1, 2], vec![0.0; 12]));
    }

    #[test]
    fn errors() {
        let p = DummyDataParameter {
            shape: vec![BlobShape { dim: vec![1] }],
            num: vec![1],
            ..Default::default()
        };
        assert!(run_layer(&mut CpuEngine::new(), &case(p, 1), None, None).is_err());
        let p = DummyDataParameter {
            shape: vec![BlobShape { dim: vec![1] }; 2],
            ..Default::default()
        };
        assert!(run_layer(&mut CpuEngine::new(), &case(p, 3), None, None).is_err());
        let p = DummyDataParameter {
            shape: vec![BlobShape { dim: vec![1] }],
            data_filler: vec![constant(1.0); 2],
            ..Default::default()
        };
        assert!(run_layer(&mut CpuEngine::new(), &case(p, 3), None, None).is_err());
    }
}
