use rayon::prelude::*;

use super::Memory;
use crate::engine::kernels::solver::{Regularization, SolverKernel, UpdateRule};

const CHUNK: usize = 1 << 14;

/// One chunk of a parameter: data, diff and up to two history slices.
type UpdateJob<'a> = (
    &'a mut [f32],
    &'a mut [f32],
    Option<&'a mut [f32]>,
    Option<&'a mut [f32]>,
);

pub fn run(kernel: &SolverKernel, mem: &mut Memory) -> anyhow::Result<()> {
    match kernel {
        SolverKernel::Update {
            data,
            diff,
            history,
            scale,
            regularization,
            rule,
            rate,
        } => {
            let (scale, regularization, rule, rate) = (*scale, *regularization, *rule, *rate);
            anyhow::ensure!(
                history.len() == history_blobs(&rule),
                "{rule:?} needs {} history blobs",
                history_blobs(&rule)
            );
            let mut outs = vec![*data, *diff];
            outs.extend(history.iter().copied());
            mem.with(&outs, &[], |o, _| {
                let (first, rest) = o.split_at_mut(2);
                let (w, g) = first.split_at_mut(1);
                let (w, g) = (&mut *w[0], &mut *g[0]);
                let (h0, h1): (&mut [f32], &mut [f32]) = match rest {
                    [] => (&mut [], &mut []),
                    [a] => (&mut **a, &mut []),
                    [a, b, ..] => (&mut **a, &mut **b),
                };
                let h0_chunks: Vec<&mut [f32]> = if h0.is_empty() {
                    Vec::new()
                } else {
                    h0.chunks_mut(CHUNK).collect()
                };
                let h1_chunks: Vec<&mut [f32]> = if h1.is_empty() {
                    Vec::new()
                } else {
                    h1.chunks_mut(CHUNK).collect()
                };
                let mut h0_iter = h0_chunks.into_iter();
                let mut h1_iter = h1_chunks.into_iter();
                let jobs: Vec<UpdateJob> = w
                    .chunks_mut(CHUNK)
                    .zip(g.chunks_mut(CHUNK))
                    .map(|(w, g)| (w, g, h0_iter.next(), h1_iter.next()))
                    .collect();
                jobs.into_par_iter().for_each(|(w, g, mut h0, mut h1)| {
                    for i in 0..w.len() {
                        let mut grad = g[i] * scale;
                        grad += match regularization {
                            Regularization::None => 0.0,
                            Regularization::L2 { decay } => decay * w[i],
                            Regularization::L1 { decay } => decay * sign(w[i]),
                        };
                        let update = apply_rule(
                            rule,
                            rate,
                            grad,
                            h0.as_deref_mut().map(|h| &mut h[i]),
                            h1.as_deref_mut().map(|h| &mut h[i]),
                        );
                        g[i] = update;
                        w[i] -= update;
                    }
                });
            });
        }
        SolverKernel::SumSquares { x, out, accumulate } => {
            let accumulate = *accumulate;
            mem.with(&[*out], &[*x], |o, i| {
                let s: f64 = i[0]
                    .par_chunks(CHUNK)
                    .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
                    .sum();
                o[0][0] = if accumulate {
                    o[0][0] + s as f32
                } else {
                    s as f32
                };
            });
        }
    }
    Ok(())
}

pub fn history_blobs(rule: &UpdateRule) -> usize {
    match rule {
        UpdateRule::AdaDelta { .. } | UpdateRule::Adam { .. } => 2,
        _ => 1,
    }
}

fn sign(x: f32) -> f32 {
    // Caffe's caffe_cpu_sign: (0 < x) - (x < 0).
    ((0.0 < x) as i32 - (x < 0.0) as i32) as f32
}

/// One element of Caffe's ComputeUpdateValue for each solver; returns the update value.
fn apply_rule(
    rule: UpdateRule,
    rate: f32,
    g: f32,
    h0: Option<&mut f32>,
    h1: Option<&mut f32>,
) -> f32 {
    let mut dummy0 = 0.0;
    let mut dummy1 = 0.0;
    let h0 = h0.unwrap_or(&mut dummy0);
    let h1 = h1.unwrap_or(&mut dummy1);
    match rule {
        UpdateRule::Sgd { momentum } => {
            *h0 = rate * g + momentum * *h0;
            *h0
        }
        UpdateRule::Nesterov { momentum } => {
            let previous = *h0;
            *h0 = rate * g + momentum * *h0;
            (1.0 + momentum) * *h0 - momentum * previous
        }
        UpdateRule::AdaGrad { delta } => {
            *h0 += g * g;
            rate * (g / (h0.sqrt() + delta))
        }
        UpdateRule::RmsProp { rms_decay, delta } => {
            *h0 = (1.0 - rms_decay) * (g * g) + rms_decay * *h0;
            rate * (g / (h0.sqrt() + delta))
        }
        UpdateRule::AdaDelta { momentum, delta } => {
            *h0 = (1.0 - momentum) * (g * g) + momentum * *h0;
            let step = g * ((*h1 + delta) / (*h0 + delta)).sqrt();
            *h1 = (1.0 - momentum) * (step * step) + momentum * *h1;
            rate * step
        }
        UpdateRule::Adam {
            beta1,
            beta2,
            eps,
            correction,
        } => {
            *h0 = (1.0 - beta1) * g + beta1 * *h0;
            *h1 = (1.0 - beta2) * (g * g) + beta2 * *h1;
            rate * correction * (*h0 / (h1.sqrt() + eps))
        }
    }
}
