//! Solver kernels: one dispatch per parameter blob per step.
use crate::engine::View;

/// Caffe's update rules (ComputeUpdateValue). After the kernel `diff` holds the update value, as
/// in Caffe, and `data` has been updated (`data -= diff`, Caffe's Net::Update).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateRule {
    Sgd {
        momentum: f32,
    },
    Nesterov {
        momentum: f32,
    },
    AdaGrad {
        delta: f32,
    },
    RmsProp {
        rms_decay: f32,
        delta: f32,
    },
    AdaDelta {
        momentum: f32,
        delta: f32,
    },
    /// `correction` = sqrt(1 - beta2^t) / (1 - beta1^t).
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        correction: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regularization {
    None,
    /// diff += decay * data
    L2 {
        decay: f32,
    },
    /// diff += decay * sign(data)
    L1 {
        decay: f32,
    },
}

#[derive(Clone, Debug)]
pub enum SolverKernel {
    /// diff *= scale (iter_size normalisation, gradient clipping), then regularization, then the
    /// update rule with `rate` (= lr * lr_mult), then data -= diff. `history` has the rule's
    /// history blobs (1, or 2 for AdaDelta and Adam), each as long as `data`.
    Update {
        data: View,
        diff: View,
        history: Vec<View>,
        scale: f32,
        regularization: Regularization,
        rule: UpdateRule,
        rate: f32,
    },
    /// out[0] (+)= sum(x^2): for clip_gradients' global norm.
    SumSquares {
        x: View,
        out: View,
        accumulate: bool,
    },
}
