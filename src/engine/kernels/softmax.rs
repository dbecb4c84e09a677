//! Softmax and the loss / metric kernels (the "softmax/loss" shader family).
//!
//! Layout convention: a blob seen as `[outer, channels, inner]` (Caffe's outer_num / axis dim /
//! inner_num); a label blob holds one value per (outer, inner) position, read as Caffe does with a
//! truncating cast to an integer. Losses are written on-device into a 1-element view; the loss
//! weight that backward needs is the top's diff (`top_diff`, 1 element), never a host value.
use crate::engine::View;

/// How a loss sum is divided (Caffe's LossParameter.NormalizationMode); the divisor is max(1, n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalization {
    /// n = outer * inner (every position, ignored ones included).
    Full,
    /// n = number of positions whose label is not the ignore label.
    Valid,
    /// n = outer.
    BatchSize,
    /// n = 1.
    None,
}

/// What ArgMax writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgMaxOut {
    /// `y[(o*top_k + j)*inner + i]` = index of the j-th largest.
    Indices,
    /// `y[(o*top_k + j)*inner + i]` = value of the j-th largest.
    Values,
    /// (inner must be 1) `y[2*o*top_k + j]` = index, `y[2*o*top_k + top_k + j]` = value.
    IndicesThenValues,
}

#[derive(Clone, Debug)]
pub enum SoftmaxKernel {
    /// y = exp(x - max_c x) / sum_c exp(x - max_c x) along `channels` of `[outer, channels, inner]`.
    Forward {
        x: View,
        y: View,
        outer: usize,
        channels: usize,
        inner: usize,
    },
    /// dx = y * (dy - sum_c dy * y) along `channels`.
    Backward {
        y: View,
        dy: View,
        dx: View,
        outer: usize,
        channels: usize,
        inner: usize,
    },
    /// loss[0] = -sum_{non-ignored (o,i)} sum_k H[l,k] * log(max(prob[o,k,i], log_min)) / norm[0]
    /// with l = label[o*inner+i], H = `infogain` (channels x channels) or the identity when `None`;
    /// norm[0] = max(1, n) per `mode` (stored for the backward pass).
    CrossEntropy {
        prob: View,
        label: View,
        infogain: Option<View>,
        loss: View,
        norm: View,
        outer: usize,
        channels: usize,
        inner: usize,
        ignore_label: Option<i32>,
        mode: Normalization,
        log_min: f32,
    },
    /// dx[o,k,i] = (prob[o,k,i] * sum_j H[l,j] - H[l,k]) * top_diff[0] / norm[0] (H = identity when
    /// `None`, i.e. prob - onehot); 0 at ignored positions.
    CrossEntropyGrad {
        prob: View,
        label: View,
        infogain: Option<View>,
        top_diff: View,
        norm: View,
        dx: View,
        outer: usize,
        channels: usize,
        inner: usize,
        ignore_label: Option<i32>,
    },
    /// loss[0] = -sum_o log(max(prob[o, label[o]], 1e-20)) / outer (prob is `[outer, dim]`).
    MultinomialLogistic {
        prob: View,
        label: View,
        loss: View,
        outer: usize,
        dim: usize,
    },
    /// dx = 0 except dx[o, label[o]] = -top_diff[0] / outer / max(prob[o, label[o]], 1e-20).
    MultinomialLogisticGrad {
        prob: View,
        label: View,
        top_diff: View,
        dx: View,
        outer: usize,
        dim: usize,
    },
    /// loss[0] = -sum_{non-ignored e} [x*(t - (x>=0)) - log(1 + exp(x - 2x(x>=0)))] / norm[0]
    /// over the `outer * inner` elements of x and target t; norm[0] = max(1, n) per `mode`.
    SigmoidCrossEntropy {
        x: View,
        target: View,
        loss: View,
        norm: View,
        outer: usize,
        inner: usize,
        ignore_label: Option<i32>,
        mode: Normalization,
    },
    /// dx = (sigmoid(x) - t) * top_diff[0] / norm[0]; 0 where t (truncated) is the ignore label.
    SigmoidCrossEntropyGrad {
        x: View,
        target: View,
        top_diff: View,
        norm: View,
        dx: View,
        ignore_label: Option<i32>,
    },
    /// diff = a - b; loss[0] = sum(diff^2) / outer / 2.
    Euclidean {
        a: View,
        b: View,
        diff: View,
        loss: View,
        outer: usize,
    },
    /// y = (sign * w[0] / divisor) * x, w a 1-element device view (a loss weight).
    ScaleByWeight {
        x: View,
        w: View,
        sign: f32,
        divisor: f32,
        y: View,
    },
    /// margin[o,k] = max(0, 1 - t*x[o,k]) with t = +1 at k == label[o], -1 elsewhere;
    /// loss[0] = sum(margin) / outer (L1) or sum(margin^2) / outer (L2). x is `[outer, dim]`.
    Hinge {
        x: View,
        label: View,
        margin: View,
        loss: View,
        outer: usize,
        dim: usize,
        l2: bool,
    },
    /// dx = -t * sign(margin) * top_diff[0] / outer (L1) or -t * 2 * margin * top_diff[0] / outer (L2).
    HingeGrad {
        margin: View,
        label: View,
        top_diff: View,
        dx: View,
        outer: usize,
        dim: usize,
        l2: bool,
    },
    /// diff = a - b (`[outer, channels]`), dist_sq[o] = |diff_o|^2, loss[0] = sum_o term / outer / 2
    /// with term = dist_sq if sim[o] (truncated) != 0, else max(margin - dist_sq, 0) (legacy) or
    /// max(margin - sqrt(dist_sq), 0)^2.
    Contrastive {
        a: View,
        b: View,
        sim: View,
        diff: View,
        dist_sq: View,
        loss: View,
        outer: usize,
        channels: usize,
        margin: f32,
        legacy: bool,
    },
    /// dx_o = alpha * diff_o if similar, else (when m > 0) beta * diff_o, else 0, where
    /// alpha = sign * top_diff[0] / outer, and m = margin - dist_sq, beta = -alpha (legacy) or
    /// m = margin - d, beta = -alpha * m / (d + 1e-4), d = sqrt(dist_sq).
    ContrastiveGrad {
        diff: View,
        dist_sq: View,
        sim: View,
        top_diff: View,
        dx: View,
        outer: usize,
        channels: usize,
        margin: f32,
        legacy: bool,
        sign: f32,
    },
    /// acc[0] = (#non-ignored positions whose label is among the top_k scores, ties counting
    /// against) / (#non-ignored positions), 0 when there are none; `per_class[c]` (length
    /// `channels`) = the same ratio over positions labelled c, 0 for a class without positions.
    Accuracy {
        x: View,
        label: View,
        acc: View,
        per_class: Option<View>,
        outer: usize,
        channels: usize,
        inner: usize,
        top_k: usize,
        ignore_label: Option<i32>,
    },
    /// The `top_k` largest of x along `channels` of `[outer, channels, inner]`, in decreasing order,
    /// equal values ordered by decreasing index (Caffe's std::greater on (value, index) pairs).
    ArgMax {
        x: View,
        y: View,
        outer: usize,
        channels: usize,
        inner: usize,
        top_k: usize,
        out: ArgMaxOut,
    },
}
