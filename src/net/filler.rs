//! Caffe's fillers: constant, gaussian (with sparse), uniform, xavier, msra, positive_unitball,
//! bilinear. They run on the host; the values are uploaded once.
use anyhow::{Result, bail};

use crate::proto::{FillerParameter, filler_parameter::VarianceNorm};
use crate::rng::Rng;

/// Caffe's fan-in / fan-out of a parameter blob: count / shape[0] and count / shape[1].
fn fans(shape: &[usize]) -> (f32, f32) {
    let count: usize = shape.iter().product();
    let fan_in = if shape.is_empty() || shape[0] == 0 {
        count
    } else {
        count / shape[0]
    };
    let fan_out = if shape.len() < 2 || shape[1] == 0 {
        count
    } else {
        count / shape[1]
    };
    (fan_in as f32, fan_out as f32)
}

fn variance_n(p: &FillerParameter, shape: &[usize]) -> f32 {
    let (fan_in, fan_out) = fans(shape);
    match p.variance_norm() {
        VarianceNorm::FanIn => fan_in,
        VarianceNorm::FanOut => fan_out,
        VarianceNorm::Average => (fan_in + fan_out) / 2.0,
    }
}

pub fn fill(p: &FillerParameter, shape: &[usize], rng: &mut Rng) -> Result<Vec<f32>> {
    let count: usize = shape.iter().product();
    let mut v = vec![0f32; count];
    match p.r#type() {
        "constant" => v.fill(p.value()),
        "uniform" => v
            .iter_mut()
            .for_each(|x| *x = rng.uniform_range(p.min(), p.max())),
        "gaussian" => {
            for x in v.iter_mut() {
                *x = p.mean() + p.std() * rng.gaussian() as f32;
            }
            if p.sparse() >= 0 {
                if shape.len() < 2 {
                    bail!("sparse gaussian filler needs a blob of at least 2 axes");
                }
                let num_outputs = shape[0] as f32;
                let non_zero_probability = p.sparse() as f32 / num_outputs;
                for x in v.iter_mut() {
                    if rng.uniform() as f32 >= non_zero_probability {
                        *x = 0.0;
                    }
                }
            }
        }
        "xavier" => {
            let scale = (3.0 / variance_n(p, shape)).sqrt();
            v.iter_mut()
                .for_each(|x| *x = rng.uniform_range(-scale, scale));
        }
        "msra" => {
            let std = (2.0 / variance_n(p, shape)).sqrt();
            v.iter_mut().for_each(|x| *x = std * rng.gaussian() as f32);
        }
        "positive_unitball" => {
            let dim = if shape.is_empty() || shape[0] == 0 {
                0
            } else {
                count / shape[0]
            };
            v.iter_mut().for_each(|x| *x = rng.uniform() as f32);
            if dim > 0 {
                for row in v.chunks_mut(dim) {
                    let sum: f32 = row.iter().sum();
                    row.iter_mut().for_each(|x| *x /= sum);
                }
            }
        }
        "bilinear" => {
            if shape.len() != 4 || shape[2] != shape[3] {
                bail!("bilinear filler needs a 4-D blob with square kernels, got {shape:?}");
            }
            let k = shape[3];
            let f = (k as f32 / 2.0).ceil();
            let c = (2.0 * f - 1.0 - (f % 2.0)) / (2.0 * f);
            for (i, x) in v.iter_mut().enumerate() {
                let xx = (i % k) as f32;
                let yy = ((i / k) % shape[2]) as f32;
                *x = (1.0 - (xx / f - c).abs()) * (1.0 - (yy / f - c).abs());
            }
        }
        other => bail!(
            "unknown filler type \"{other}\" (expected constant, gaussian, uniform, xavier, msra, positive_unitball or bilinear)"
        ),
    }
    Ok(v)
}
