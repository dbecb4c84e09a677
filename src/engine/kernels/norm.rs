//! Normalisation kernels: per-channel moments and normalisation (BatchNorm, MVN) with their
//! backward, BatchNorm's stored statistics, and local response normalisation (LRN).
//!
//! Statistics are taken per channel `c` of a tensor viewed as `[outer, channels, inner]` (see
//! [`ChannelDims`]) over all `outer * inner` elements of that channel: BatchNorm uses
//! (N, C, H*W); MVN uses (1, rows, row length).
use super::elementwise::ChannelDims;
use crate::engine::View;

/// How the standard deviation is formed from the variance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpsMode {
    /// std = sqrt(var + eps) (BatchNorm).
    SqrtVarPlusEps,
    /// std = sqrt(var) + eps (MVN).
    SqrtVarThenEps,
}

/// Which gradient [`NormKernel::NormalizeBackward`] computes (m = outer * inner, means per channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormGrad {
    /// Statistics of the batch: dx = (dy - (sum(dy * y) * y + sum(dy)) / m) / std.
    Full,
    /// Fixed statistics (BatchNorm use_global_stats): dx = dy / std.
    Frozen,
    /// Mean subtraction only (MVN without variance): dx = dy - sum(dy) / m.
    CenterOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrnRegion {
    /// Window of `size` channels centred on c (zero padded), same (h, w).
    AcrossChannels,
    /// Window of `size` x `size` positions centred on (h, w) (zero padded), same channel.
    WithinChannel,
}

/// LRN geometry and constants. x, y, scale are [num, channels, height, width].
/// scale = k + alpha / n * sum_{window} x^2 with n = size (across) or size^2 (within), and
/// y = x * scale^-beta. `size` is odd.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    pub region: LrnRegion,
    pub num: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

impl Lrn {
    pub fn count(&self) -> usize {
        self.num * self.channels * self.height * self.width
    }
}

#[derive(Clone, Debug)]
pub enum NormKernel {
    /// mean[c] = sum_{o, i} x[o, c, i] / m; var[c] (when given) = sum (x - mean[c])^2 / m (biased),
    /// m = outer * inner.
    Moments {
        dims: ChannelDims,
        x: View,
        mean: View,
        var: Option<View>,
    },
    /// BatchNorm's stored statistics: f = count[0] == 0 ? 0 : 1 / count[0];
    /// mean[c] = f * sums[c], var[c] = f * sq_sums[c].
    StoredStats {
        sums: View,
        sq_sums: View,
        count: View,
        mean: View,
        var: View,
    },
    /// BatchNorm's running statistics update: count[0] = count[0] * maf + 1,
    /// sums[c] = mean[c] + maf * sums[c], sq_sums[c] = correction * var[c] + maf * sq_sums[c].
    StatsUpdate {
        maf: f32,
        correction: f32,
        mean: View,
        var: View,
        sums: View,
        sq_sums: View,
        count: View,
    },
    /// With var: std[c] = eps_mode(var[c], eps) is written and y = (x - mean[c]) / std[c];
    /// without var (and std): y = x - mean[c].
    Normalize {
        dims: ChannelDims,
        eps: f32,
        eps_mode: EpsMode,
        x: View,
        mean: View,
        var: Option<View>,
        std: Option<View>,
        y: View,
    },
    /// Backward of Normalize from its output y (see [`NormGrad`]); `std` is needed except for
    /// CenterOnly.
    NormalizeBackward {
        dims: ChannelDims,
        grad: NormGrad,
        y: View,
        dy: View,
        std: Option<View>,
        dx: View,
    },
    /// LRN forward: writes scale and y from x.
    Lrn {
        lrn: Lrn,
        x: View,
        scale: View,
        y: View,
    },
    /// LRN backward: dx = dy * scale^-beta - 2 alpha beta / n * x * sum_{window} (dy * y / scale),
    /// from the forward's x, y and scale (n as in [`Lrn`]).
    LrnBackward {
        lrn: Lrn,
        x: View,
        y: View,
        scale: View,
        dy: View,
        dx: View,
    },
}
