//! Caffe's CopyTrainedLayersFrom: copying a .caffemodel's blobs into a net by layer name, and the
//! same decisions as a plan that `inspect -weights` prints.
use std::collections::HashSet;

use anyhow::{Result, bail};

use super::builder::NetGraph;
use crate::proto::{BlobProto, NetParameter};

/// What fine-tuning does with one layer of the net that has parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerFate {
    Loaded,
    /// Not in the file: the layer keeps its filler initialisation (filler type names).
    Initialised(Vec<String>),
    ShapeMismatch {
        blob: usize,
        file: Vec<usize>,
        net: Vec<usize>,
    },
    BlobCountMismatch {
        file: usize,
        net: usize,
    },
}

#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub layer: String,
    pub type_name: String,
    pub fate: LayerFate,
    /// Every parameter has lr_mult 0.
    pub frozen: bool,
}

#[derive(Clone, Debug, Default)]
pub struct CopyPlan {
    pub layers: Vec<LayerPlan>,
    /// Layers of the file that the net does not have (Caffe: "Ignoring source layer X").
    pub ignored: Vec<String>,
}

/// Caffe's Blob::ShapeEquals(BlobProto): a legacy 4-D proto matches a net blob of at most 4 axes
/// whose shape padded with leading 1s equals (num, channels, height, width).
pub fn proto_shape_matches(proto: &BlobProto, shape: &[usize]) -> bool {
    let legacy = proto.shape.is_none()
        && (proto.num.is_some()
            || proto.channels.is_some()
            || proto.height.is_some()
            || proto.width.is_some());
    if legacy {
        if shape.len() > 4 {
            return false;
        }
        let mut padded = vec![1usize; 4 - shape.len()];
        padded.extend_from_slice(shape);
        let file = [proto.num(), proto.channels(), proto.height(), proto.width()];
        return padded.iter().zip(file).all(|(&a, b)| a as i64 == b as i64);
    }
    proto.dims() == shape
}

pub fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// The decisions CopyTrainedLayersFrom would take for `weights` on `graph`.
pub fn plan(graph: &NetGraph, weights: &NetParameter) -> CopyPlan {
    let mut plan = CopyPlan::default();
    let mut claimed: HashSet<usize> = HashSet::new();
    let mut fates: Vec<Option<LayerFate>> = vec![None; graph.layers.len()];
    for source in &weights.layer {
        let Some(target) = graph.layer_index(source.name()) else {
            plan.ignored.push(source.name().to_string());
            continue;
        };
        if !claimed.insert(target) {
            continue;
        }
        let node = &graph.layers[target];
        let net_shapes: Vec<Vec<usize>> = node.param_defs.iter().map(|d| d.shape.clone()).collect();
        let fate = if source.blobs.len() != net_shapes.len() {
            LayerFate::BlobCountMismatch {
                file: source.blobs.len(),
                net: net_shapes.len(),
            }
        } else if let Some(j) =
            (0..net_shapes.len()).find(|&j| !proto_shape_matches(&source.blobs[j], &net_shapes[j]))
        {
            LayerFate::ShapeMismatch {
                blob: j,
                file: source.blobs[j].dims(),
                net: net_shapes[j].clone(),
            }
        } else {
            LayerFate::Loaded
        };
        fates[target] = Some(fate);
    }
    for (i, node) in graph.layers.iter().enumerate() {
        if node.param_defs.is_empty() {
            continue;
        }
        let fate = fates[i].clone().unwrap_or_else(|| {
            LayerFate::Initialised(
                node.param_defs
                    .iter()
                    .map(|d| d.filler.r#type().to_string())
                    .collect(),
            )
        });
        let frozen = node.params.iter().all(|&p| graph.params[p].lr_mult == 0.0);
        plan.layers.push(LayerPlan {
            layer: node.name().to_string(),
            type_name: node.type_name().to_string(),
            fate,
            frozen,
        });
    }
    plan
}

/// The error CopyTrainedLayersFrom gives for a plan that cannot be carried out.
pub fn check_plan(plan: &CopyPlan) -> Result<()> {
    for l in &plan.layers {
        match &l.fate {
            LayerFate::BlobCountMismatch { file, net } => bail!(
                "cannot copy layer '{}' ({}): the weights file has {file} blob(s), the net expects {net}; rename the layer to re-initialise it",
                l.layer,
                l.type_name
            ),
            LayerFate::ShapeMismatch { blob, file, net } => bail!(
                "cannot copy param {blob} of layer '{}' ({}): shape mismatch: file {} vs net {}; rename the layer to re-initialise it",
                l.layer,
                l.type_name,
                shape_text(file),
                shape_text(net)
            ),
            _ => {}
        }
    }
    Ok(())
}
