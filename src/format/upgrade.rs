//! Legacy net and solver upgrades, with the semantics of BVLC Caffe's
//! `src/caffe/util/upgrade_proto.cpp` (`UpgradeNetAsNeeded`, `UpgradeSolverAsNeeded`).
//!
//! A net is upgraded in Caffe's order:
//! 1. V0 -> V1: `layers { layer { name type ... } bottom top }` becomes `layers { name type: ENUM
//!    ... }`; "padding" layers are folded into the conv/pool layer they feed; V0 fields move to the
//!    layer's `*_param` (data transformation fields to `transform_param`).
//! 2. Data transformation: `scale`, `mean_file`, `crop_size`, `mirror` of the `data_param`,
//!    `image_data_param` and `window_data_param` of V1 DATA / IMAGE_DATA / WINDOW_DATA layers move to
//!    `transform_param`.
//! 3. V1 -> V2: `layers { type: ENUM }` becomes `layer { type: "String" }`; `blobs_lr`,
//!    `weight_decay`, `param` names and `blob_share_mode` become `param { lr_mult decay_mult name
//!    share_mode }`; every `*_param`, `include`/`exclude`, `loss_weight` and the blobs are kept.
//! 4. Input: `input` + `input_shape` / `input_dim` become an `Input` layer named "input" at the
//!    front; the net's input fields are cleared (an `input` without shapes, as in old caffemodels,
//!    is simply dropped).
//! 5. BatchNorm: a BatchNorm layer with exactly three `param {}` gets `lr_mult: 0 decay_mult: 0` in
//!    each (its statistics are not learned by gradient), other ParamSpec fields untouched.
//!
//! Where Caffe aborts (unknown layer type, a padding layer feeding a non-conv layer, ...) these
//! functions return an error naming the layer; where Caffe logs "had one or more problems
//! upgrading ... continuing anyway" the problem is recorded in [`UpgradeReport::warnings`].
use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};

use crate::proto::{
    BlobShape, InputParameter, LayerParameter, NetParameter, ParamSpec, SolverParameter,
    V0LayerParameter, V1LayerParameter, param_spec, pooling_parameter, solver_parameter,
    v0_layer_parameter,
    v1_layer_parameter::{self, LayerType},
};

/// One of Caffe's net upgrade passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeStep {
    /// V0LayerParameter (`layers { layer { ... } }`) -> V1LayerParameter.
    V0ToV1,
    /// Data layer transformation fields -> `transform_param`.
    DataTransformation,
    /// V1LayerParameter (`layers`) -> LayerParameter (`layer`).
    V1ToV2,
    /// `input` / `input_shape` / `input_dim` -> an Input layer.
    Input,
    /// BatchNorm layers with three `param {}` -> lr_mult = decay_mult = 0.
    BatchNorm,
}

impl UpgradeStep {
    /// What the step does, in the words of Caffe's log lines.
    pub fn description(self) -> &'static str {
        match self {
            UpgradeStep::V0ToV1 => "upgraded deprecated V0LayerParameter layers to V1",
            UpgradeStep::DataTransformation => {
                "moved deprecated data transformation parameters to transform_param"
            }
            UpgradeStep::V1ToV2 => {
                "upgraded deprecated V1LayerParameter `layers` to LayerParameter `layer`"
            }
            UpgradeStep::Input => "upgraded deprecated input fields to an Input layer",
            UpgradeStep::BatchNorm => "set lr_mult and decay_mult of BatchNorm params to 0",
        }
    }
}

/// What [`upgrade_net_reporting`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpgradeReport {
    /// The passes that ran, in order (a pass runs when Caffe's `NetNeeds*Upgrade` says so).
    pub steps: Vec<UpgradeStep>,
    /// Parts of the legacy net that could not be carried over (Caffe logs these and continues).
    pub warnings: Vec<String>,
    /// Whether the message changed. Differs from `!steps.is_empty()` only for the BatchNorm pass,
    /// which Caffe runs on every BatchNorm with three `param {}` even when they are already 0.
    pub changed: bool,
}

/// Caffe's `NetNeedsUpgrade`: whether any upgrade pass applies.
pub fn net_needs_upgrade(net: &NetParameter) -> bool {
    net_needs_v0_to_v1_upgrade(net)
        || net_needs_v1_to_v2_upgrade(net)
        || net_needs_data_upgrade(net)
        || net_needs_input_upgrade(net)
        || net_needs_batch_norm_upgrade(net)
}

/// Any `layers` entry holds a V0 `layer`.
pub fn net_needs_v0_to_v1_upgrade(net: &NetParameter) -> bool {
    net.layers.iter().any(|l| l.layer.is_some())
}

/// The net uses V1 `layers`.
pub fn net_needs_v1_to_v2_upgrade(net: &NetParameter) -> bool {
    !net.layers.is_empty()
}

/// A V1 DATA / IMAGE_DATA / WINDOW_DATA layer sets scale, mean_file, crop_size or mirror in its
/// data parameter.
pub fn net_needs_data_upgrade(net: &NetParameter) -> bool {
    net.layers.iter().any(
        |l| match l.r#type.and_then(|t| LayerType::try_from(t).ok()) {
            Some(LayerType::Data) => l.data_param.as_ref().is_some_and(|p| {
                p.scale.is_some()
                    || p.mean_file.is_some()
                    || p.crop_size.is_some()
                    || p.mirror.is_some()
            }),
            Some(LayerType::ImageData) => l.image_data_param.as_ref().is_some_and(|p| {
                p.scale.is_some()
                    || p.mean_file.is_some()
                    || p.crop_size.is_some()
                    || p.mirror.is_some()
            }),
            Some(LayerType::WindowData) => l.window_data_param.as_ref().is_some_and(|p| {
                p.scale.is_some()
                    || p.mean_file.is_some()
                    || p.crop_size.is_some()
                    || p.mirror.is_some()
            }),
            _ => false,
        },
    )
}

/// The net declares `input` fields.
pub fn net_needs_input_upgrade(net: &NetParameter) -> bool {
    !net.input.is_empty()
}

/// A BatchNorm layer declares exactly three `param {}` (the old BatchNorm definition).
pub fn net_needs_batch_norm_upgrade(net: &NetParameter) -> bool {
    net.layer
        .iter()
        .any(|l| l.r#type() == "BatchNorm" && l.param.len() == 3)
}

/// Upgrade a legacy net in place (Caffe's `UpgradeNetAsNeeded`); returns whether it changed.
/// Problems Caffe only logs are dropped; use [`upgrade_net_reporting`] to see them.
pub fn upgrade_net(net: &mut NetParameter) -> Result<bool> {
    Ok(upgrade_net_reporting(net)?.changed)
}

/// Upgrade a legacy net in place and say what was done. On error the net is left in an
/// unspecified (but valid) state.
pub fn upgrade_net_reporting(net: &mut NetParameter) -> Result<UpgradeReport> {
    let mut report = UpgradeReport::default();
    if net_needs_v0_to_v1_upgrade(net) {
        upgrade_v0_net(net, &mut report.warnings)?;
        report.steps.push(UpgradeStep::V0ToV1);
        report.changed = true;
    }
    if net_needs_data_upgrade(net) {
        upgrade_net_data_transformation(net);
        report.steps.push(UpgradeStep::DataTransformation);
        report.changed = true;
    }
    if net_needs_v1_to_v2_upgrade(net) {
        upgrade_v1_net(net, &mut report.warnings)?;
        report.steps.push(UpgradeStep::V1ToV2);
        report.changed = true;
    }
    if net_needs_input_upgrade(net) {
        upgrade_net_input(net)?;
        report.steps.push(UpgradeStep::Input);
        report.changed = true;
    }
    if net_needs_batch_norm_upgrade(net) {
        if upgrade_net_batch_norm(net) {
            report.changed = true;
        }
        report.steps.push(UpgradeStep::BatchNorm);
    }
    Ok(report)
}

/// How a layer is named in error messages: `layer #3 'conv1'` (or `layer #3` when unnamed).
fn layer_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("layer #{index} '{n}'"),
        None => format!("layer #{index}"),
    }
}

// ---------------------------------------------------------------------------------------------
// V0 -> V1

/// Caffe's `UpgradeV0Net`: fold padding layers, upgrade every layer, and keep only the net's name,
/// input, input_dim and force_backward (everything else is cleared, as in Caffe).
fn upgrade_v0_net(net: &mut NetParameter, warnings: &mut Vec<String>) -> Result<()> {
    let padded = upgrade_v0_padding_layers(std::mem::take(&mut net.layers), &net.input)?;
    let mut upgraded = NetParameter {
        name: net.name.take(),
        input: std::mem::take(&mut net.input),
        input_dim: std::mem::take(&mut net.input_dim),
        force_backward: net.force_backward,
        ..Default::default()
    };
    for (i, layer) in padded.into_iter().enumerate() {
        upgraded.layers.push(upgrade_v0_layer(layer, i, warnings)?);
    }
    *net = upgraded;
    Ok(())
}

/// Caffe's `UpgradeV0PaddingLayers`: drop V0 "padding" layers, give their `pad` to the conv or
/// pool layer that consumes their output and connect that layer to the padding layer's input.
fn upgrade_v0_padding_layers(
    layers: Vec<V1LayerParameter>,
    inputs: &[String],
) -> Result<Vec<V1LayerParameter>> {
    struct Info {
        is_padding: bool,
        pad: u32,
        name: Option<String>,
        bottom: Vec<String>,
        top_count: usize,
    }
    let v0_type = |l: &V1LayerParameter| -> String {
        l.layer
            .as_ref()
            .map(|v0| v0.r#type().to_string())
            .unwrap_or_default()
    };
    let infos: Vec<Info> = layers
        .iter()
        .map(|l| Info {
            is_padding: v0_type(l) == "padding",
            pad: l.layer.as_ref().map_or(0, |v0| v0.pad()),
            name: l.layer.as_ref().and_then(|v0| v0.name.clone()),
            bottom: l.bottom.clone(),
            top_count: l.top.len(),
        })
        .collect();
    let mut last_top: HashMap<String, Option<usize>> =
        inputs.iter().map(|name| (name.clone(), None)).collect();
    let mut out: Vec<V1LayerParameter> = Vec::with_capacity(layers.len());
    for (i, layer) in layers.into_iter().enumerate() {
        let ty = v0_type(&layer);
        let label = layer_label(i, layer.layer.as_ref().and_then(|v0| v0.name.as_deref()));
        let tops = layer.top.clone();
        let bottoms = layer.bottom.clone();
        let kept = ty != "padding";
        if kept {
            out.push(layer);
        }
        for (j, blob) in bottoms.iter().enumerate() {
            let Some(&source_index) = last_top.get(blob) else {
                bail!(
                    "{label}: bottom '{blob}' (bottom #{j}) is neither a net input nor the top of an \
                     earlier layer"
                );
            };
            let Some(source_index) = source_index else {
                continue;
            };
            let source = infos
                .get(source_index)
                .ok_or_else(|| anyhow!("{label}: internal error: bad source layer index"))?;
            if !source.is_padding {
                continue;
            }
            let source_label = layer_label(source_index, source.name.as_deref());
            if ty != "conv" && ty != "pool" {
                bail!(
                    "{label}: padding layer input to non-convolutional / non-pooling layer type \
                     '{ty}' (the padding {source_label} can only feed a conv or pool layer)"
                );
            }
            if bottoms.len() != 1 {
                bail!(
                    "{label}: a conv/pool layer fed by the padding {source_label} must take a single \
                     bottom, it has {}",
                    bottoms.len()
                );
            }
            if source.bottom.len() != 1 {
                bail!(
                    "{source_label}: a padding layer takes a single bottom, it has {}",
                    source.bottom.len()
                );
            }
            if source.top_count != 1 {
                bail!(
                    "{source_label}: a padding layer produces a single top, it has {}",
                    source.top_count
                );
            }
            let target = out
                .last_mut()
                .ok_or_else(|| anyhow!("{label}: internal error: no upgraded layer"))?;
            target.layer.get_or_insert_with(Default::default).pad = Some(source.pad);
            if let (Some(slot), Some(src)) = (target.bottom.get_mut(j), source.bottom.first()) {
                *slot = src.clone();
            }
        }
        for top in tops {
            last_top.insert(top, Some(i));
        }
    }
    Ok(out)
}

/// Caffe's `UpgradeV0LayerType`.
fn upgrade_v0_layer_type(ty: &str) -> Option<LayerType> {
    Some(match ty {
        "accuracy" => LayerType::Accuracy,
        "bnll" => LayerType::Bnll,
        "concat" => LayerType::Concat,
        "conv" => LayerType::Convolution,
        "data" => LayerType::Data,
        "dropout" => LayerType::Dropout,
        "euclidean_loss" => LayerType::EuclideanLoss,
        "flatten" => LayerType::Flatten,
        "hdf5_data" => LayerType::Hdf5Data,
        "hdf5_output" => LayerType::Hdf5Output,
        "im2col" => LayerType::Im2col,
        "images" => LayerType::ImageData,
        "infogain_loss" => LayerType::InfogainLoss,
        "innerproduct" => LayerType::InnerProduct,
        "lrn" => LayerType::Lrn,
        "multinomial_logistic_loss" => LayerType::MultinomialLogisticLoss,
        "pool" => LayerType::Pooling,
        "relu" => LayerType::Relu,
        "sigmoid" => LayerType::Sigmoid,
        "softmax" => LayerType::Softmax,
        "softmax_loss" => LayerType::SoftmaxLoss,
        "split" => LayerType::Split,
        "tanh" => LayerType::Tanh,
        "window_data" => LayerType::WindowData,
        _ => return None,
    })
}

/// Caffe's `UpgradeV0LayerParameter`: a V1 layer holding a V0 `layer` -> a plain V1 layer.
fn upgrade_v0_layer(
    conn: V1LayerParameter,
    index: usize,
    warnings: &mut Vec<String>,
) -> Result<V1LayerParameter> {
    let mut out = V1LayerParameter {
        bottom: conn.bottom,
        top: conn.top,
        ..Default::default()
    };
    let Some(v0) = conn.layer else {
        return Ok(out);
    };
    let label = layer_label(index, v0.name.as_deref());
    let V0LayerParameter {
        name,
        r#type,
        num_output,
        biasterm,
        weight_filler,
        bias_filler,
        pad,
        kernelsize,
        group,
        stride,
        pool,
        dropout_ratio,
        local_size,
        alpha,
        beta,
        k,
        source,
        scale,
        meanfile,
        batchsize,
        cropsize,
        mirror,
        blobs,
        blobs_lr,
        weight_decay,
        rand_skip,
        det_fg_threshold,
        det_bg_threshold,
        det_fg_fraction,
        det_context_pad,
        det_crop_mode,
        new_num: _,
        new_channels: _,
        new_height,
        new_width,
        shuffle_images,
        concat_dim,
        hdf5_output_param,
    } = v0;
    out.name = name;
    let ty = r#type.clone().unwrap_or_default();
    if r#type.is_some() {
        let v1 = upgrade_v0_layer_type(&ty)
            .ok_or_else(|| anyhow!("{label}: unknown V0 layer type '{ty}'"))?;
        out.r#type = Some(v1 as i32);
    }
    out.blobs = blobs;
    out.blobs_lr = blobs_lr;
    out.weight_decay = weight_decay;

    let t = ty.as_str();
    macro_rules! unknown {
        ($param:literal) => {
            warnings.push(format!(
                "{label}: unknown parameter {} for V0 layer type '{t}'; dropped",
                $param
            ))
        };
    }
    if let Some(v) = num_output {
        match t {
            "conv" => {
                out.convolution_param
                    .get_or_insert_with(Default::default)
                    .num_output = Some(v)
            }
            "innerproduct" => {
                out.inner_product_param
                    .get_or_insert_with(Default::default)
                    .num_output = Some(v)
            }
            _ => unknown!("num_output"),
        }
    }
    if let Some(v) = biasterm {
        match t {
            "conv" => {
                out.convolution_param
                    .get_or_insert_with(Default::default)
                    .bias_term = Some(v)
            }
            "innerproduct" => {
                out.inner_product_param
                    .get_or_insert_with(Default::default)
                    .bias_term = Some(v)
            }
            _ => unknown!("biasterm"),
        }
    }
    if let Some(v) = weight_filler {
        match t {
            "conv" => {
                out.convolution_param
                    .get_or_insert_with(Default::default)
                    .weight_filler = Some(v)
            }
            "innerproduct" => {
                out.inner_product_param
                    .get_or_insert_with(Default::default)
                    .weight_filler = Some(v)
            }
            _ => unknown!("weight_filler"),
        }
    }
    if let Some(v) = bias_filler {
        match t {
            "conv" => {
                out.convolution_param
                    .get_or_insert_with(Default::default)
                    .bias_filler = Some(v)
            }
            "innerproduct" => {
                out.inner_product_param
                    .get_or_insert_with(Default::default)
                    .bias_filler = Some(v)
            }
            _ => unknown!("bias_filler"),
        }
    }
    if let Some(v) = pad {
        match t {
            "conv" => out
                .convolution_param
                .get_or_insert_with(Default::default)
                .pad
                .push(v),
            "pool" => out.pooling_param.get_or_insert_with(Default::default).pad = Some(v),
            _ => unknown!("pad"),
        }
    }
    if let Some(v) = kernelsize {
        match t {
            "conv" => out
                .convolution_param
                .get_or_insert_with(Default::default)
                .kernel_size
                .push(v),
            "pool" => {
                out.pooling_param
                    .get_or_insert_with(Default::default)
                    .kernel_size = Some(v)
            }
            _ => unknown!("kernelsize"),
        }
    }
    if let Some(v) = group {
        match t {
            "conv" => {
                out.convolution_param
                    .get_or_insert_with(Default::default)
                    .group = Some(v)
            }
            _ => unknown!("group"),
        }
    }
    if let Some(v) = stride {
        match t {
            "conv" => out
                .convolution_param
                .get_or_insert_with(Default::default)
                .stride
                .push(v),
            "pool" => {
                out.pooling_param
                    .get_or_insert_with(Default::default)
                    .stride = Some(v)
            }
            _ => unknown!("stride"),
        }
    }
    if let Some(v) = pool {
        if t == "pool" {
            let method = match v0_layer_parameter::PoolMethod::try_from(v) {
                Ok(v0_layer_parameter::PoolMethod::Max) => Some(pooling_parameter::PoolMethod::Max),
                Ok(v0_layer_parameter::PoolMethod::Ave) => Some(pooling_parameter::PoolMethod::Ave),
                Ok(v0_layer_parameter::PoolMethod::Stochastic) => {
                    Some(pooling_parameter::PoolMethod::Stochastic)
                }
                Err(_) => None,
            };
            match method {
                Some(m) => {
                    out.pooling_param.get_or_insert_with(Default::default).pool = Some(m as i32)
                }
                None => warnings.push(format!("{label}: unknown pool method {v}; dropped")),
            }
        } else {
            unknown!("pool");
        }
    }
    if let Some(v) = dropout_ratio {
        match t {
            "dropout" => {
                out.dropout_param
                    .get_or_insert_with(Default::default)
                    .dropout_ratio = Some(v)
            }
            _ => unknown!("dropout_ratio"),
        }
    }
    if let Some(v) = local_size {
        match t {
            "lrn" => {
                out.lrn_param
                    .get_or_insert_with(Default::default)
                    .local_size = Some(v)
            }
            _ => unknown!("local_size"),
        }
    }
    if let Some(v) = alpha {
        match t {
            "lrn" => out.lrn_param.get_or_insert_with(Default::default).alpha = Some(v),
            _ => unknown!("alpha"),
        }
    }
    if let Some(v) = beta {
        match t {
            "lrn" => out.lrn_param.get_or_insert_with(Default::default).beta = Some(v),
            _ => unknown!("beta"),
        }
    }
    if let Some(v) = k {
        match t {
            "lrn" => out.lrn_param.get_or_insert_with(Default::default).k = Some(v),
            _ => unknown!("k"),
        }
    }
    if let Some(v) = source {
        match t {
            "data" => out.data_param.get_or_insert_with(Default::default).source = Some(v),
            "hdf5_data" => {
                out.hdf5_data_param
                    .get_or_insert_with(Default::default)
                    .source = Some(v)
            }
            "images" => {
                out.image_data_param
                    .get_or_insert_with(Default::default)
                    .source = Some(v)
            }
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .source = Some(v)
            }
            "infogain_loss" => {
                out.infogain_loss_param
                    .get_or_insert_with(Default::default)
                    .source = Some(v)
            }
            _ => unknown!("source"),
        }
    }
    if let Some(v) = scale {
        out.transform_param
            .get_or_insert_with(Default::default)
            .scale = Some(v);
    }
    if let Some(v) = meanfile {
        out.transform_param
            .get_or_insert_with(Default::default)
            .mean_file = Some(v);
    }
    if let Some(v) = batchsize {
        match t {
            "data" => {
                out.data_param
                    .get_or_insert_with(Default::default)
                    .batch_size = Some(v)
            }
            "hdf5_data" => {
                out.hdf5_data_param
                    .get_or_insert_with(Default::default)
                    .batch_size = Some(v)
            }
            "images" => {
                out.image_data_param
                    .get_or_insert_with(Default::default)
                    .batch_size = Some(v)
            }
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .batch_size = Some(v)
            }
            _ => unknown!("batchsize"),
        }
    }
    if let Some(v) = cropsize {
        out.transform_param
            .get_or_insert_with(Default::default)
            .crop_size = Some(v);
    }
    if let Some(v) = mirror {
        out.transform_param
            .get_or_insert_with(Default::default)
            .mirror = Some(v);
    }
    if let Some(v) = rand_skip {
        match t {
            "data" => {
                out.data_param
                    .get_or_insert_with(Default::default)
                    .rand_skip = Some(v)
            }
            "images" => {
                out.image_data_param
                    .get_or_insert_with(Default::default)
                    .rand_skip = Some(v)
            }
            _ => unknown!("rand_skip"),
        }
    }
    if let Some(v) = shuffle_images {
        match t {
            "images" => {
                out.image_data_param
                    .get_or_insert_with(Default::default)
                    .shuffle = Some(v)
            }
            _ => unknown!("shuffle"),
        }
    }
    // new_height / new_width are int32 in V0 but uint32 in ImageDataParameter; the C++ setter
    // converts implicitly (two's complement), and so do we.
    if let Some(v) = new_height {
        match t {
            "images" => {
                out.image_data_param
                    .get_or_insert_with(Default::default)
                    .new_height = Some(v as u32)
            }
            _ => unknown!("new_height"),
        }
    }
    if let Some(v) = new_width {
        match t {
            "images" => {
                out.image_data_param
                    .get_or_insert_with(Default::default)
                    .new_width = Some(v as u32)
            }
            _ => unknown!("new_width"),
        }
    }
    if let Some(v) = concat_dim {
        match t {
            "concat" => {
                out.concat_param
                    .get_or_insert_with(Default::default)
                    .concat_dim = Some(v)
            }
            _ => unknown!("concat_dim"),
        }
    }
    if let Some(v) = det_fg_threshold {
        match t {
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .fg_threshold = Some(v)
            }
            _ => unknown!("det_fg_threshold"),
        }
    }
    if let Some(v) = det_bg_threshold {
        match t {
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .bg_threshold = Some(v)
            }
            _ => unknown!("det_bg_threshold"),
        }
    }
    if let Some(v) = det_fg_fraction {
        match t {
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .fg_fraction = Some(v)
            }
            _ => unknown!("det_fg_fraction"),
        }
    }
    if let Some(v) = det_context_pad {
        match t {
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .context_pad = Some(v)
            }
            _ => unknown!("det_context_pad"),
        }
    }
    if let Some(v) = det_crop_mode {
        match t {
            "window_data" => {
                out.window_data_param
                    .get_or_insert_with(Default::default)
                    .crop_mode = Some(v)
            }
            _ => unknown!("det_crop_mode"),
        }
    }
    if let Some(v) = hdf5_output_param {
        match t {
            "hdf5_output" => out.hdf5_output_param = Some(v),
            _ => unknown!("hdf5_output_param"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Data transformation

/// Caffe's `UpgradeNetDataTransformation`. Like Caffe's macro it creates an (empty) data
/// parameter and transform_param on every DATA / IMAGE_DATA / WINDOW_DATA layer it visits.
fn upgrade_net_data_transformation(net: &mut NetParameter) {
    macro_rules! convert {
        ($layer:expr, $field:ident) => {{
            let layer = $layer;
            let p = layer.$field.get_or_insert_with(Default::default);
            let t = layer.transform_param.get_or_insert_with(Default::default);
            if let Some(v) = p.scale.take() {
                t.scale = Some(v);
            }
            if let Some(v) = p.mean_file.take() {
                t.mean_file = Some(v);
            }
            if let Some(v) = p.crop_size.take() {
                t.crop_size = Some(v);
            }
            if let Some(v) = p.mirror.take() {
                t.mirror = Some(v);
            }
        }};
    }
    for layer in &mut net.layers {
        match layer.r#type.and_then(|t| LayerType::try_from(t).ok()) {
            Some(LayerType::Data) => convert!(layer, data_param),
            Some(LayerType::ImageData) => convert!(layer, image_data_param),
            Some(LayerType::WindowData) => convert!(layer, window_data_param),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// V1 -> V2

/// Caffe's `UpgradeV1LayerType`.
pub fn upgrade_v1_layer_type(ty: LayerType) -> &'static str {
    match ty {
        LayerType::None => "",
        LayerType::Absval => "AbsVal",
        LayerType::Accuracy => "Accuracy",
        LayerType::Argmax => "ArgMax",
        LayerType::Bnll => "BNLL",
        LayerType::Concat => "Concat",
        LayerType::ContrastiveLoss => "ContrastiveLoss",
        LayerType::Convolution => "Convolution",
        LayerType::Deconvolution => "Deconvolution",
        LayerType::Data => "Data",
        LayerType::Dropout => "Dropout",
        LayerType::DummyData => "DummyData",
        LayerType::EuclideanLoss => "EuclideanLoss",
        LayerType::Eltwise => "Eltwise",
        LayerType::Exp => "Exp",
        LayerType::Flatten => "Flatten",
        LayerType::Hdf5Data => "HDF5Data",
        LayerType::Hdf5Output => "HDF5Output",
        LayerType::HingeLoss => "HingeLoss",
        LayerType::Im2col => "Im2col",
        LayerType::ImageData => "ImageData",
        LayerType::InfogainLoss => "InfogainLoss",
        LayerType::InnerProduct => "InnerProduct",
        LayerType::Lrn => "LRN",
        LayerType::MemoryData => "MemoryData",
        LayerType::MultinomialLogisticLoss => "MultinomialLogisticLoss",
        LayerType::Mvn => "MVN",
        LayerType::Pooling => "Pooling",
        LayerType::Power => "Power",
        LayerType::Relu => "ReLU",
        LayerType::Sigmoid => "Sigmoid",
        LayerType::SigmoidCrossEntropyLoss => "SigmoidCrossEntropyLoss",
        LayerType::Silence => "Silence",
        LayerType::Softmax => "Softmax",
        LayerType::SoftmaxLoss => "SoftmaxWithLoss",
        LayerType::Split => "Split",
        LayerType::Slice => "Slice",
        LayerType::Tanh => "TanH",
        LayerType::WindowData => "WindowData",
        LayerType::Threshold => "Threshold",
    }
}

/// Caffe's `UpgradeV1Net`: every `layers` entry becomes a `layer`; `layer` entries already
/// present are dropped (with a warning), as in Caffe.
fn upgrade_v1_net(net: &mut NetParameter, warnings: &mut Vec<String>) -> Result<()> {
    if !net.layer.is_empty() {
        warnings.push(format!(
            "the net already specifies {} 'layer' field(s) next to its V1 'layers'; they are \
             ignored by the upgrade",
            net.layer.len()
        ));
    }
    let v1_layers = std::mem::take(&mut net.layers);
    let mut layers = Vec::with_capacity(v1_layers.len());
    for (i, v1) in v1_layers.into_iter().enumerate() {
        layers.push(upgrade_v1_layer(v1, i, warnings)?);
    }
    net.layer = layers;
    Ok(())
}

/// Caffe's `UpgradeV1LayerParameter`.
fn upgrade_v1_layer(
    v1: V1LayerParameter,
    index: usize,
    warnings: &mut Vec<String>,
) -> Result<LayerParameter> {
    let label = layer_label(index, v1.name.as_deref());
    let V1LayerParameter {
        bottom,
        top,
        name,
        include,
        exclude,
        r#type,
        blobs,
        param,
        blob_share_mode,
        blobs_lr,
        weight_decay,
        loss_weight,
        accuracy_param,
        argmax_param,
        concat_param,
        contrastive_loss_param,
        convolution_param,
        data_param,
        dropout_param,
        dummy_data_param,
        eltwise_param,
        exp_param,
        hdf5_data_param,
        hdf5_output_param,
        hinge_loss_param,
        image_data_param,
        infogain_loss_param,
        inner_product_param,
        lrn_param,
        memory_data_param,
        mvn_param,
        pooling_param,
        power_param,
        relu_param,
        sigmoid_param,
        softmax_param,
        slice_param,
        tanh_param,
        threshold_param,
        window_data_param,
        transform_param,
        loss_param,
        layer,
    } = v1;
    let type_string = match r#type {
        None => None,
        Some(t) => {
            let ty = LayerType::try_from(t)
                .map_err(|_| anyhow!("{label}: unknown V1LayerParameter layer type {t}"))?;
            Some(upgrade_v1_layer_type(ty).to_string())
        }
    };
    let mut specs: Vec<ParamSpec> = Vec::new();
    fn spec(specs: &mut Vec<ParamSpec>, i: usize) -> &mut ParamSpec {
        while specs.len() <= i {
            specs.push(ParamSpec::default());
        }
        &mut specs[i]
    }
    for (i, n) in param.into_iter().enumerate() {
        spec(&mut specs, i).name = Some(n);
    }
    for (i, mode) in blob_share_mode.into_iter().enumerate() {
        let m = match v1_layer_parameter::DimCheckMode::try_from(mode) {
            Ok(v1_layer_parameter::DimCheckMode::Strict) => param_spec::DimCheckMode::Strict,
            Ok(v1_layer_parameter::DimCheckMode::Permissive) => {
                param_spec::DimCheckMode::Permissive
            }
            Err(_) => bail!("{label}: unknown blob_share_mode {mode}"),
        };
        spec(&mut specs, i).share_mode = Some(m as i32);
    }
    for (i, lr) in blobs_lr.into_iter().enumerate() {
        spec(&mut specs, i).lr_mult = Some(lr);
    }
    for (i, wd) in weight_decay.into_iter().enumerate() {
        spec(&mut specs, i).decay_mult = Some(wd);
    }
    if layer.is_some() {
        warnings.push(format!(
            "{label}: the V1 layer also holds a V0 layer; it is ignored"
        ));
    }
    Ok(LayerParameter {
        name,
        r#type: type_string,
        bottom,
        top,
        loss_weight,
        param: specs,
        blobs,
        include,
        exclude,
        transform_param,
        loss_param,
        accuracy_param,
        argmax_param,
        concat_param,
        contrastive_loss_param,
        convolution_param,
        data_param,
        dropout_param,
        dummy_data_param,
        eltwise_param,
        exp_param,
        hdf5_data_param,
        hdf5_output_param,
        hinge_loss_param,
        image_data_param,
        infogain_loss_param,
        inner_product_param,
        lrn_param,
        memory_data_param,
        mvn_param,
        pooling_param,
        power_param,
        relu_param,
        sigmoid_param,
        softmax_param,
        slice_param,
        tanh_param,
        threshold_param,
        window_data_param,
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Input fields, BatchNorm

/// Caffe's `UpgradeNetInput`: `input` + `input_shape` (or 4 `input_dim` per input) -> an Input
/// layer named "input" at the front of the net. Without shapes (legacy caffemodels) the inputs are
/// simply dropped. The net's input fields are cleared either way.
fn upgrade_net_input(net: &mut NetParameter) -> Result<()> {
    let has_shape = !net.input_shape.is_empty();
    let has_dim = !net.input_dim.is_empty();
    if has_shape || has_dim {
        let mut shapes = Vec::with_capacity(net.input.len());
        for (i, name) in net.input.iter().enumerate() {
            if has_shape {
                let shape = net.input_shape.get(i).ok_or_else(|| {
                    anyhow!(
                        "net input #{i} '{name}' has no input_shape ({} input_shape for {} inputs)",
                        net.input_shape.len(),
                        net.input.len()
                    )
                })?;
                shapes.push(shape.clone());
            } else {
                let dims = net.input_dim.get(4 * i..4 * i + 4).ok_or_else(|| {
                    anyhow!(
                        "net input #{i} '{name}' has no input_dim: legacy input_dim takes 4 values \
                         per input ({} values for {} inputs)",
                        net.input_dim.len(),
                        net.input.len()
                    )
                })?;
                shapes.push(BlobShape {
                    dim: dims.iter().map(|&d| i64::from(d)).collect(),
                });
            }
        }
        let layer = LayerParameter {
            name: Some("input".to_string()),
            r#type: Some("Input".to_string()),
            top: net.input.clone(),
            input_param: Some(InputParameter { shape: shapes }),
            ..Default::default()
        };
        net.layer.insert(0, layer);
    }
    net.input.clear();
    net.input_shape.clear();
    net.input_dim.clear();
    Ok(())
}

/// Caffe's `UpgradeNetBatchNorm`; returns whether any value changed.
fn upgrade_net_batch_norm(net: &mut NetParameter) -> bool {
    let mut changed = false;
    for layer in &mut net.layer {
        if layer.r#type() == "BatchNorm" && layer.param.len() == 3 {
            for p in &mut layer.param {
                changed |= p.lr_mult != Some(0.0) || p.decay_mult != Some(0.0);
                p.lr_mult = Some(0.0);
                p.decay_mult = Some(0.0);
            }
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// Solver

/// Caffe's `SolverNeedsTypeUpgrade`: the deprecated `solver_type` enum is set.
pub fn solver_needs_type_upgrade(solver: &SolverParameter) -> bool {
    solver.solver_type.is_some()
}

/// Caffe's `UpgradeSolverType`: `solver_type: ENUM` -> `type: "String"`; returns whether the
/// solver changed. Like Caffe, setting both `solver_type` and `type` is an error (even when they
/// agree).
pub fn upgrade_solver(solver: &mut SolverParameter) -> Result<bool> {
    let Some(old) = solver.solver_type else {
        return Ok(false);
    };
    if let Some(new) = &solver.r#type {
        bail!(
            "failed to upgrade solver: the old solver_type field (enum, here {}) and the new type \
             field (string, here \"{new}\") cannot both be specified",
            solver_parameter::SolverType::try_from(old)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| old.to_string())
        );
    }
    use solver_parameter::SolverType;
    let ty = match SolverType::try_from(old) {
        Ok(SolverType::Sgd) => "SGD",
        Ok(SolverType::Nesterov) => "Nesterov",
        Ok(SolverType::Adagrad) => "AdaGrad",
        Ok(SolverType::Rmsprop) => "RMSProp",
        Ok(SolverType::Adadelta) => "AdaDelta",
        Ok(SolverType::Adam) => "Adam",
        Err(_) => bail!("failed to upgrade solver: unknown solver_type {old}"),
    };
    solver.r#type = Some(ty.to_string());
    solver.solver_type = None;
    Ok(true)
}
