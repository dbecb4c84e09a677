//! Host side of the solver family (shaders/solver.wgsl): one dispatch per parameter blob.
use anyhow::{Result, ensure};

use super::{Bound, GpuEngine, Params};
use crate::engine::kernels::solver::{Regularization, SolverKernel, UpdateRule};

fn rule_words(rule: &UpdateRule) -> (usize, [f32; 4]) {
    match *rule {
        UpdateRule::Sgd { momentum } => (0, [momentum, 0.0, 0.0, 0.0]),
        UpdateRule::Nesterov { momentum } => (1, [momentum, 0.0, 0.0, 0.0]),
        UpdateRule::AdaGrad { delta } => (2, [delta, 0.0, 0.0, 0.0]),
        UpdateRule::RmsProp { rms_decay, delta } => (3, [rms_decay, delta, 0.0, 0.0]),
        UpdateRule::AdaDelta { momentum, delta } => (4, [momentum, delta, 0.0, 0.0]),
        UpdateRule::Adam {
            beta1,
            beta2,
            eps,
            correction,
        } => (5, [beta1, beta2, eps, correction]),
    }
}

pub fn launch(e: &mut GpuEngine, k: &SolverKernel) -> Result<()> {
    match k {
        SolverKernel::Update {
            data,
            diff,
            history,
            scale,
            regularization,
            rule,
            rate,
        } => {
            let (code, consts) = rule_words(rule);
            let needed = if code >= 4 { 2 } else { 1 };
            ensure!(
                history.len() == needed,
                "{rule:?} needs {needed} history blobs, got {}",
                history.len()
            );
            ensure!(
                diff.len == data.len && history.iter().all(|h| h.len == data.len),
                "solver update operands differ in length"
            );
            let (reg, decay) = match *regularization {
                Regularization::None => (0, 0.0),
                Regularization::L2 { decay } => (1, decay),
                Regularization::L1 { decay } => (2, decay),
            };
            let entry = if needed == 2 { "update2" } else { "update1" };
            for r in e.unit_chunks(entry, data.len, &[1])? {
                let mut binds: Vec<Bound> = vec![
                    e.bind(data.slice(r.start, r.len()))?,
                    e.bind(diff.slice(r.start, r.len()))?,
                ];
                for h in history {
                    binds.push(e.bind(h.slice(r.start, r.len()))?);
                }
                let mut p = Params::new().u(r.len());
                for b in &binds {
                    p = p.shift(b);
                }
                while p.0.len() < 8 {
                    p = p.u(0);
                }
                p = p.u(code).u(reg).f(decay).f(*scale).f(*rate);
                for c in consts {
                    p = p.f(c);
                }
                let refs: Vec<&Bound> = binds.iter().collect();
                let groups = e.groups_1d(r.len());
                e.dispatch("solver", entry, &p, &refs, groups)?;
            }
            Ok(())
        }
        SolverKernel::SumSquares { x, out, accumulate } => {
            ensure!(out.len >= 1, "sum_squares needs a 1-element output");
            // One workgroup loops over a chunk; lavapipe ends an invocation's loops after 65535
            // iterations, so a chunk holds at most 256 * 32768 elements.
            const CHUNK: usize = 256 * 32768;
            let chunks: Vec<_> = e
                .unit_chunks("sum_squares", x.len, &[1])?
                .into_iter()
                .flat_map(|r| {
                    (r.start..r.end)
                        .step_by(CHUNK)
                        .map(move |s| s..(s + CHUNK).min(r.end))
                })
                .collect();
            if chunks.is_empty() && !accumulate {
                return e.record_fill(out.slice(0, 1), 0.0);
            }
            for (n, r) in chunks.into_iter().enumerate() {
                let binds = [e.bind(x.slice(r.start, r.len()))?, e.bind(out.slice(0, 1))?];
                let p = Params::new()
                    .u(r.len())
                    .shift(&binds[0])
                    .shift(&binds[1])
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(usize::from(*accumulate || n > 0));
                e.dispatch(
                    "solver",
                    "sum_squares",
                    &p,
                    &[&binds[0], &binds[1]],
                    [1, 1, 1],
                )?;
            }
            Ok(())
        }
    }
}
