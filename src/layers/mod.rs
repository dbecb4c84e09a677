//! One file per Caffe layer type: its parameters, its pure shape rule (`reshape`) and its forward and
//! backward written once against the engine interface. Registered by Caffe's type string in
//! [`REGISTRY`]; nothing else needs to change to add a layer.
use anyhow::{Result, bail};

use crate::engine::kernels::conv::Epilogue;
use crate::engine::kernels::elementwise::{ChannelDims, ChannelStage, UnaryOp};
use crate::engine::{Engine, TensorId, View};
use crate::proto::{FillerParameter, LayerParameter, Phase};
use crate::rng::Rng;

pub mod common;
pub mod testing;

/// A blob as layers see it: a shape and two tensors (values and gradients).
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub shape: Vec<usize>,
    pub data: TensorId,
    pub diff: TensorId,
}

impl Blob {
    pub fn count(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn data(&self) -> View {
        View::new(self.data, 0, self.count())
    }
    pub fn diff(&self) -> View {
        View::new(self.diff, 0, self.count())
    }
}

/// A learnable (or stored) parameter blob the layer asks for: its shape and how to initialise it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    pub shape: Vec<usize>,
    pub filler: FillerParameter,
}

/// What `reshape` decides: the shapes of the tops and the parameter blobs the layer owns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shapes {
    pub tops: Vec<Vec<usize>>,
    pub params: Vec<ParamDef>,
}

/// Everything a forward or backward pass touches.
pub struct Ctx<'a> {
    pub eng: &'a mut dyn Engine,
    pub bottoms: &'a [Blob],
    pub tops: &'a [Blob],
    pub params: &'a [Blob],
    pub phase: Phase,
    pub rng: &'a mut Rng,
    /// What backward does with each param's diff (Caffe's param_propagate_down, and whether the
    /// diff may be overwritten). Empty means every param accumulates its gradient.
    pub param_grads: &'a [ParamGrad],
}

/// What a layer's backward does with one parameter's diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGrad {
    /// No gradient (lr_mult 0: Caffe's param_propagate_down is false).
    Skip,
    /// Add the gradient to the diff, as Caffe does.
    Accumulate,
    /// The diff was cleared but not zeroed yet (see [`Layer::overwrites_cleared_param_diffs`]):
    /// write the gradient, as adding it to zero would.
    Overwrite,
}

impl Ctx<'_> {
    /// Whether param `i` wants its gradient.
    pub fn param_grad(&self, i: usize) -> bool {
        self.param_grads.get(i) != Some(&ParamGrad::Skip)
    }

    /// The beta with which param `i`'s gradient goes into its diff: 1 (accumulate) or 0
    /// (overwrite a cleared diff).
    pub fn param_diff_beta(&self, i: usize) -> f32 {
        if self.param_grads.get(i) == Some(&ParamGrad::Overwrite) {
            0.0
        } else {
            1.0
        }
    }
}

pub trait Layer: Send {
    /// Caffe's LayerSetUp + Reshape as a pure shape rule: validates the bottom shapes and the layer's
    /// parameters, remembers what forward needs and returns the top and parameter shapes. Called
    /// again whenever the bottom shapes change; the parameter shapes must then stay the same.
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes>;

    fn forward(&mut self, cx: &mut Ctx) -> Result<()>;

    /// Adds nothing to parameter diffs when the layer has no parameters; writes (overwrites)
    /// `bottom.diff` for each bottom with `propagate_down[i]`, and accumulates into param diffs
    /// (Caffe's semantics: param diffs are accumulated, bottom diffs are overwritten), or
    /// overwrites a param diff whose [`Ctx::param_diff_beta`] is 0.
    fn backward(&mut self, _cx: &mut Ctx, _propagate_down: &[bool]) -> Result<()> {
        Ok(())
    }

    /// Whether backward honours [`Ctx::param_diff_beta`] for every param it writes. The net then
    /// leaves cleared diffs unzeroed until this layer writes them: a memory pass saved per big
    /// parameter and iteration (InnerProduct's weights are most of a classifier's parameters).
    fn overwrites_cleared_param_diffs(&self) -> bool {
        false
    }

    /// Whether gradient can flow into bottom `i` (false for labels, indices, selectors).
    fn can_propagate_down(&self, _bottom: usize) -> bool {
        true
    }

    /// Loss layers put an implicit loss_weight of 1 on their first top.
    fn is_loss(&self) -> bool {
        false
    }

    /// Multiply-adds of one forward pass with the shapes of the last `reshape`.
    fn macs(&self) -> u64 {
        0
    }

    /// Top shapes that depend on the data (Filter): read after `forward`; `None` when the shapes
    /// `reshape` gave still hold.
    fn forwarded_top_shapes(&self) -> Option<Vec<Vec<usize>>> {
        None
    }

    /// Bottoms whose shape is read but not their values, e.g. Crop's reference blob.
    fn shape_only_bottom(&self, _bottom: usize) -> bool {
        false
    }

    /// Whether the tops are views of bottom 0 (Caffe's ShareData / ShareDiff). The net then gives
    /// the tops bottom 0's tensors, so the layer's copies between them become no-ops and the
    /// values are stored once.
    fn top_sharing(&self) -> TopSharing {
        TopSharing::None
    }

    /// Whether this phase's forward is one point-wise step over the (outer, channels, inner)
    /// layout of its one bottom ([`StageDims`]), which the net may fuse with the in-place layers
    /// around it into one memory pass (BatchNorm with stored statistics, Scale, ReLU).
    fn stage_dims(&self, _phase: Phase) -> Option<StageDims> {
        None
    }

    /// The forward as that step, for a layer whose [`Layer::stage_dims`] is Some: launches what
    /// the step reads (BatchNorm's statistics) and returns the step instead of running it. Its
    /// input is the bottom's values and its output the top's (the same tensor in place);
    /// what the layer keeps for backward goes to the step's `save` or its own outputs, unless
    /// `for_backward` is false (no backward will follow this forward).
    fn forward_stage(&mut self, _cx: &mut Ctx, _for_backward: bool) -> Result<ChannelStage> {
        bail!("internal: this layer's forward is no point-wise step")
    }

    /// The (outer, channels, inner) layout of the one top when this phase's forward can end with
    /// point-wise steps over it ([`Layer::forward_with_epilogue`]): a convolution, which applies
    /// the in-place layers after it (BatchNorm with stored statistics, Scale, ReLU) as it stores
    /// its output.
    fn epilogue_dims(&self, _phase: Phase) -> Option<ChannelDims> {
        None
    }

    /// The forward followed by `epilogue`: its stages in place on the top (the
    /// [`Layer::forward_stage`] steps of the layers after it), then its junction (an Eltwise SUM
    /// reading the top, and the steps on that SUM's top), for a layer whose
    /// [`Layer::epilogue_dims`] is Some.
    fn forward_with_epilogue(&mut self, _cx: &mut Ctx, _epilogue: Epilogue) -> Result<()> {
        bail!("internal: this layer's forward takes no epilogue")
    }

    /// This layer's backward as a point-wise step that the net can join with its neighbours'
    /// in one pass: a neuron or a BatchNorm with stored statistics in place beside an in-place
    /// Scale ([`Layer::backward_joined`]), and the run Eltwise SUM, neuron, Split around a sum
    /// junction ([`ElementwiseKernel::JunctionBackward`]). Launches nothing.
    ///
    /// [`ElementwiseKernel::JunctionBackward`]: crate::engine::kernels::elementwise::ElementwiseKernel::JunctionBackward
    fn backward_step(&mut self, _cx: &mut Ctx) -> Option<BackwardStep> {
        None
    }

    /// The backward, with the backward steps of the in-place layers after it (`after`, run
    /// first) and before it (`before`, run last) in the same pass; false (nothing run) when the
    /// layer cannot take them. For Scale.
    fn backward_joined(
        &mut self,
        _cx: &mut Ctx,
        _propagate_down: &[bool],
        _after: Option<BackwardStep>,
        _before: Option<BackwardStep>,
    ) -> Result<bool> {
        Ok(false)
    }
}

/// See [`Layer::backward_step`].
#[derive(Clone, Debug, PartialEq)]
pub enum BackwardStep {
    /// dx = the neuron's backward at (x, y), as
    /// [`crate::engine::kernels::elementwise::ElementwiseKernel::UnaryBackward`] computes it.
    Neuron(UnaryOp, View, View),
    /// dx = dy / std[c] over this layout (BatchNorm with stored statistics).
    FrozenNorm(ChannelDims, View),
    /// dx = the sum of the top diffs in top order (Split).
    SumOfTops,
    /// The diff of bottom j = coeffs[j] * dy (Eltwise SUM).
    Distribute(Vec<f32>),
}

/// What a [`Layer::stage_dims`] step needs of the fused pass's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageDims {
    /// Element by element: any layout.
    Any,
    /// Per-channel operands over exactly this layout.
    Channels(ChannelDims),
}

impl StageDims {
    /// The layout two steps can share, if any.
    pub fn merge(self, other: StageDims) -> Option<StageDims> {
        match (self, other) {
            (StageDims::Any, d) | (d, StageDims::Any) => Some(d),
            (StageDims::Channels(a), StageDims::Channels(b)) => (a == b).then_some(self),
        }
    }
}

/// See [`Layer::top_sharing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopSharing {
    None,
    /// Every top holds bottom 0's values; gradients stay separate (Split: they are summed).
    Data,
    /// Every top is bottom 0 under another shape, values and gradients (Flatten, Reshape).
    DataAndDiff,
}

pub type Factory = fn(&LayerParameter) -> Result<Box<dyn Layer>>;

macro_rules! registry {
    ($($type_name:literal => $module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every layer type Caffe 1.0 registers, by its type string.
        pub const REGISTRY: &[(&str, Factory)] = &[$(($type_name, $module::create)),*];
    };
}

registry! {
    "AbsVal" => absval,
    "Accuracy" => accuracy,
    "ArgMax" => argmax,
    "BatchNorm" => batch_norm,
    "BatchReindex" => batch_reindex,
    "Bias" => bias,
    "BNLL" => bnll,
    "Clip" => clip,
    "Concat" => concat,
    "ContrastiveLoss" => contrastive_loss,
    "Convolution" => convolution,
    "Crop" => crop,
    "Data" => data,
    "Deconvolution" => deconvolution,
    "Dropout" => dropout,
    "DummyData" => dummy_data,
    "Eltwise" => eltwise,
    "ELU" => elu,
    "Embed" => embed,
    "EuclideanLoss" => euclidean_loss,
    "Exp" => exp,
    "Filter" => filter,
    "Flatten" => flatten,
    "HDF5Data" => hdf5_data,
    "HDF5Output" => hdf5_output,
    "HingeLoss" => hinge_loss,
    "Im2col" => im2col,
    "ImageData" => image_data,
    "InfogainLoss" => infogain_loss,
    "InnerProduct" => inner_product,
    "Input" => input,
    "Log" => log,
    "LRN" => lrn,
    "LSTM" => lstm,
    "LSTMUnit" => lstm_unit,
    "MemoryData" => memory_data,
    "MultinomialLogisticLoss" => multinomial_logistic_loss,
    "MVN" => mvn,
    "Parameter" => parameter,
    "Pooling" => pooling,
    "Power" => power,
    "PReLU" => prelu,
    "Python" => python,
    "Reduction" => reduction,
    "ReLU" => relu,
    "Reshape" => reshape,
    "RNN" => rnn,
    "Scale" => scale,
    "Sigmoid" => sigmoid,
    "SigmoidCrossEntropyLoss" => sigmoid_cross_entropy_loss,
    "Silence" => silence,
    "Slice" => slice,
    "Softmax" => softmax,
    "SoftmaxWithLoss" => softmax_with_loss,
    "Split" => split,
    "SPP" => spp,
    "Swish" => swish,
    "TanH" => tanh,
    "Threshold" => threshold,
    "Tile" => tile,
    "WindowData" => window_data,
}

/// Creates the layer for `param.type`, or an error naming the layer and the nearest known type.
pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let type_name = param.r#type();
    match REGISTRY.iter().find(|(name, _)| *name == type_name) {
        Some((_, factory)) => factory(param),
        None => {
            let nearest = REGISTRY
                .iter()
                .map(|(name, _)| {
                    (
                        common::edit_distance(&name.to_lowercase(), &type_name.to_lowercase()),
                        *name,
                    )
                })
                .min()
                .map(|(_, name)| name)
                .unwrap_or("");
            bail!("unknown layer type \"{type_name}\" (did you mean \"{nearest}\"?)")
        }
    }
}
