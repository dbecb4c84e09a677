//! Caffe's learning-rate policies (SGDSolver::GetLearningRate).
use anyhow::{Result, bail};

use crate::proto::SolverParameter;

/// The rate at `iter`; `current_step` is the multistep/step state Caffe keeps (and snapshots).
/// Returns the rate and, for multistep, whether the step advanced (Caffe logs it).
pub fn learning_rate(
    p: &SolverParameter,
    iter: i32,
    current_step: &mut i32,
) -> Result<(f32, bool)> {
    let base = p.base_lr() as f64;
    let gamma = p.gamma() as f64;
    let it = iter as f64;
    let mut advanced = false;
    let rate = match p.lr_policy() {
        "fixed" => base,
        "step" => {
            if p.stepsize() <= 0 {
                bail!("lr_policy \"step\" needs a positive stepsize");
            }
            *current_step = iter / p.stepsize();
            base * gamma.powi(*current_step)
        }
        "exp" => base * gamma.powf(it),
        "inv" => base * (1.0 + gamma * it).powf(-(p.power() as f64)),
        "multistep" => {
            if (*current_step as usize) < p.stepvalue.len()
                && iter >= p.stepvalue[*current_step as usize]
            {
                *current_step += 1;
                advanced = true;
            }
            base * gamma.powi(*current_step)
        }
        "poly" => base * (1.0 - it / p.max_iter() as f64).powf(p.power() as f64),
        "sigmoid" => base * (1.0 / (1.0 + (-gamma * (it - p.stepsize() as f64)).exp())),
        "" => bail!(
            "the solver has no lr_policy (expected fixed, step, exp, inv, multistep, poly or sigmoid)"
        ),
        other => bail!(
            "unknown lr_policy \"{other}\" (expected fixed, step, exp, inv, multistep, poly or sigmoid)"
        ),
    };
    Ok((rate as f32, advanced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solver(policy: &str) -> SolverParameter {
        SolverParameter {
            lr_policy: Some(policy.into()),
            base_lr: Some(0.1),
            gamma: Some(0.5),
            power: Some(2.0),
            stepsize: Some(10),
            max_iter: Some(100),
            stepvalue: vec![5, 20],
            ..Default::default()
        }
    }

    #[test]
    fn policies() {
        let mut step = 0;
        let lr = |p: &str, it: i32, step: &mut i32| learning_rate(&solver(p), it, step).unwrap().0;
        assert_eq!(lr("fixed", 50, &mut step), 0.1);
        assert!((lr("step", 25, &mut step) - 0.025).abs() < 1e-7);
        assert!((lr("exp", 2, &mut step) - 0.025).abs() < 1e-7);
        assert!((lr("inv", 2, &mut step) - 0.025).abs() < 1e-7);
        assert!((lr("poly", 50, &mut step) - 0.025).abs() < 1e-7);
        assert!((lr("sigmoid", 10, &mut step) - 0.05).abs() < 1e-7);
        let mut ms = 0;
        assert_eq!(lr("multistep", 4, &mut ms), 0.1);
        assert!((lr("multistep", 5, &mut ms) - 0.05).abs() < 1e-7);
        assert_eq!(ms, 1);
        assert!(learning_rate(&solver("bogus"), 0, &mut ms).is_err());
    }
}
