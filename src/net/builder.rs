//! The graph of a net, without an engine: split insertion for fan-out, blob resolution with in-place
//! tops, shared parameters, loss weights, which layers need backward, and every shape (from each
//! layer's pure shape rule). `inspect` works on this alone; `Net` adds tensors.
use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};

use crate::layers::{self, Layer, ParamDef};
use crate::proto::{LayerParameter, NetParameter, NetState, Phase, param_spec::DimCheckMode};

/// One blob of the graph (in-place layers write the same blob again).
#[derive(Clone, Debug)]
pub struct BlobNode {
    pub name: String,
    /// `None` when it could not be inferred (e.g. a data source is absent); see `NetGraph::unknown`.
    pub shape: Option<Vec<usize>>,
}

/// A parameter blob slot of a layer.
#[derive(Clone, Debug)]
pub struct ParamSlot {
    pub def: ParamDef,
    /// Index into `NetGraph::params` of the blob holding the values (itself when owned).
    pub owner: usize,
    pub lr_mult: f32,
    pub decay_mult: f32,
}

/// A parameter blob of the net (Caffe's params_), shared or owned.
#[derive(Clone, Debug)]
pub struct NetParam {
    pub layer: usize,
    pub index: usize,
    pub name: String,
    /// Index of the owning NetParam (== own index when it owns its values).
    pub owner: usize,
    pub lr_mult: f32,
    pub decay_mult: f32,
    pub shape: Vec<usize>,
}

pub struct LayerNode {
    pub param: LayerParameter,
    pub layer: Option<Box<dyn Layer>>,
    pub bottoms: Vec<usize>,
    pub tops: Vec<usize>,
    /// Indices into `NetGraph::params`.
    pub params: Vec<usize>,
    pub param_defs: Vec<ParamDef>,
    pub loss_weights: Vec<f32>,
    pub need_backward: bool,
    pub bottom_need_backward: Vec<bool>,
    /// Why the shapes of this layer are unknown (or the layer could not be built).
    pub problem: Option<String>,
    /// A Split layer inserted for fan-out (not in the user's prototxt).
    pub auto_split: bool,
}

impl LayerNode {
    pub fn name(&self) -> &str {
        self.param.name()
    }
    pub fn type_name(&self) -> &str {
        self.param.r#type()
    }
    pub fn is_in_place(&self, top: usize) -> bool {
        self.bottoms.contains(&self.tops[top])
    }
}

pub struct NetGraph {
    pub name: String,
    pub state: NetState,
    pub layers: Vec<LayerNode>,
    pub blobs: Vec<BlobNode>,
    pub params: Vec<NetParam>,
    /// Blobs that no layer consumes (the net's outputs, like Caffe's output_blobs).
    pub outputs: Vec<usize>,
    pub force_backward: bool,
}

/// How to treat layers whose shape cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Any problem is an error (for running the net).
    Strict,
    /// Record problems on the layers and keep going (for `inspect`).
    Lenient,
}

fn split_layer_name(layer: &str, blob: &str, top: usize) -> String {
    format!("{blob}_{layer}_{top}_split")
}

fn split_blob_name(layer: &str, blob: &str, top: usize, k: usize) -> String {
    format!("{blob}_{layer}_{top}_split_{k}")
}

/// Caffe's InsertSplits: a top read by several bottoms (or read and also weighted as a loss) goes
/// through a Split layer so that the gradients of its consumers add up.
pub fn insert_splits(net: &NetParameter) -> Result<NetParameter> {
    let mut last_top: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut source_of_bottom: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
    let mut consumers: HashMap<(usize, usize), usize> = HashMap::new();
    let mut loss_weight: HashMap<(usize, usize), f32> = HashMap::new();
    for (i, layer) in net.layer.iter().enumerate() {
        for (j, bottom) in layer.bottom.iter().enumerate() {
            let source = *last_top.get(bottom.as_str()).ok_or_else(|| {
                anyhow!(
                    "layer '{}' ({}): unknown bottom blob '{}' (no earlier layer produces it)",
                    layer.name(),
                    layer.r#type(),
                    bottom
                )
            })?;
            source_of_bottom.insert((i, j), source);
            *consumers.entry(source).or_default() += 1;
        }
        for (j, top) in layer.top.iter().enumerate() {
            last_top.insert(top.as_str(), (i, j));
        }
        for (j, &w) in layer.loss_weight.iter().enumerate() {
            if w != 0.0 {
                loss_weight.insert((i, j), w);
                *consumers.entry((i, j)).or_default() += 1;
            }
        }
    }
    let mut out = net.clone();
    out.layer.clear();
    let mut split_index: HashMap<(usize, usize), usize> = HashMap::new();
    for (i, layer) in net.layer.iter().enumerate() {
        let mut layer = layer.clone();
        for j in 0..layer.bottom.len() {
            let source = source_of_bottom[&(i, j)];
            if consumers.get(&source).copied().unwrap_or(0) > 1 {
                let k = split_index.entry(source).or_default();
                let source_layer = net.layer[source.0].name();
                layer.bottom[j] = split_blob_name(source_layer, &layer.bottom[j], source.1, *k);
                *k += 1;
            }
        }
        let name = layer.name().to_string();
        let tops = layer.top.clone();
        let phase = layer.phase;
        let mut splits = Vec::new();
        for (j, top) in tops.iter().enumerate() {
            let count = consumers.get(&(i, j)).copied().unwrap_or(0);
            if count > 1 {
                let weight = loss_weight.get(&(i, j)).copied();
                let mut split = LayerParameter {
                    name: Some(split_layer_name(&name, top, j)),
                    r#type: Some("Split".into()),
                    bottom: vec![top.clone()],
                    top: (0..count)
                        .map(|k| split_blob_name(&name, top, j, k))
                        .collect(),
                    phase,
                    ..Default::default()
                };
                if let Some(w) = weight {
                    split.loss_weight = (0..count).map(|k| if k == 0 { w } else { 0.0 }).collect();
                    if j < layer.loss_weight.len() {
                        layer.loss_weight[j] = 0.0;
                    }
                }
                splits.push(split);
            }
        }
        if splits.iter().any(|s| !s.loss_weight.is_empty())
            && layer.loss_weight.iter().all(|&w| w == 0.0)
        {
            layer.loss_weight.clear();
        }
        out.layer.push(layer);
        out.layer.extend(splits);
    }
    Ok(out)
}

impl NetGraph {
    /// Builds the graph of an (already upgraded) net in `state`.
    pub fn build(net: &NetParameter, state: &NetState, strictness: Strictness) -> Result<NetGraph> {
        let filtered = super::state::filter_net(net, state)?;
        let user_layers: std::collections::HashSet<String> = filtered
            .layer
            .iter()
            .map(|l| l.name().to_string())
            .collect();
        let mut net = insert_splits(&filtered)?;
        let phase = state.phase();
        for layer in &mut net.layer {
            layer.phase = Some(phase as i32);
        }
        let mut graph = NetGraph {
            name: net.name().to_string(),
            state: state.clone(),
            layers: Vec::new(),
            blobs: Vec::new(),
            params: Vec::new(),
            outputs: Vec::new(),
            force_backward: net.force_backward(),
        };
        let mut blob_by_name: HashMap<String, usize> = HashMap::new();
        let mut param_by_name: HashMap<String, usize> = HashMap::new();
        let mut blob_known: Vec<bool> = Vec::new();
        for param in net.layer {
            let label = format!("layer '{}' ({})", param.name(), param.r#type());
            let mut node = LayerNode {
                layer: None,
                bottoms: Vec::new(),
                tops: Vec::new(),
                params: Vec::new(),
                param_defs: Vec::new(),
                loss_weights: Vec::new(),
                need_backward: false,
                bottom_need_backward: Vec::new(),
                problem: None,
                auto_split: param.r#type() == "Split" && !user_layers.contains(param.name()),
                param,
            };
            for bottom in &node.param.bottom {
                let &b = blob_by_name
                    .get(bottom)
                    .ok_or_else(|| anyhow!("{label}: unknown bottom blob '{bottom}'"))?;
                node.bottoms.push(b);
            }
            for top in &node.param.top {
                let in_place = node.param.bottom.iter().position(|b| b == top);
                let id = match in_place {
                    Some(j) => node.bottoms[j],
                    None => {
                        if blob_by_name.contains_key(top) {
                            bail!("{label}: top blob '{top}' produced by multiple sources");
                        }
                        graph.blobs.push(BlobNode {
                            name: top.clone(),
                            shape: None,
                        });
                        blob_known.push(false);
                        blob_by_name.insert(top.clone(), graph.blobs.len() - 1);
                        graph.blobs.len() - 1
                    }
                };
                node.tops.push(id);
            }
            let result: Result<()> = (|| {
                let mut layer = layers::create(&node.param)?;
                let bottoms_known = node.bottoms.iter().all(|&b| blob_known[b]);
                let problem_upstream = !bottoms_known;
                node.loss_weights = (0..node.tops.len())
                    .map(|j| match node.param.loss_weight.get(j) {
                        Some(&w) => w,
                        None if j == 0 && layer.is_loss() && node.param.loss_weight.is_empty() => {
                            1.0
                        }
                        None => 0.0,
                    })
                    .collect();
                if problem_upstream {
                    node.layer = Some(layer);
                    node.problem = Some("input shapes unknown".into());
                    return Ok(());
                }
                let bottom_shapes: Vec<Vec<usize>> = node
                    .bottoms
                    .iter()
                    .map(|&b| graph.blobs[b].shape.clone().unwrap_or_default())
                    .collect();
                let shapes = layer.reshape(&bottom_shapes)?;
                if shapes.tops.len() != node.tops.len() {
                    bail!(
                        "produces {} top blob(s) but {} are named",
                        shapes.tops.len(),
                        node.tops.len()
                    );
                }
                for (j, &t) in node.tops.iter().enumerate() {
                    graph.blobs[t].shape = Some(shapes.tops[j].clone());
                    blob_known[t] = true;
                }
                node.param_defs = shapes.params;
                node.layer = Some(layer);
                Ok(())
            })();
            if let Err(e) = result {
                let message = format!("{label}: {e:#}");
                if strictness == Strictness::Strict {
                    return Err(anyhow!(message));
                }
                node.problem = Some(format!("{e:#}"));
            }
            let layer_index = graph.layers.len();
            graph
                .append_params(&mut node, layer_index, &mut param_by_name)
                .with_context(|| label.clone())?;
            graph.layers.push(node);
        }
        graph.compute_backward_needs();
        let mut produced_last: Vec<usize> = Vec::new();
        for l in &graph.layers {
            for &t in &l.tops {
                if !produced_last.contains(&t) {
                    produced_last.push(t);
                }
            }
        }
        graph.outputs = produced_last;
        graph.outputs.retain(|&b| {
            // Caffe's output blobs: those the last layer touching them writes rather than reads.
            let last_touch = graph
                .layers
                .iter()
                .rposition(|l| l.bottoms.contains(&b) || l.tops.contains(&b));
            last_touch.is_some_and(|i| graph.layers[i].tops.contains(&b))
        });
        Ok(graph)
    }

    fn append_params(
        &mut self,
        node: &mut LayerNode,
        layer_index: usize,
        param_by_name: &mut HashMap<String, usize>,
    ) -> Result<()> {
        let is_batch_norm = node.type_name() == "BatchNorm";
        for (i, def) in node.param_defs.iter().enumerate() {
            let given = node.param.param.get(i).cloned();
            let mut spec = given.clone().unwrap_or_default();
            if is_batch_norm {
                // Caffe masks BatchNorm's statistics from the solver.
                if given.is_some() && spec.lr_mult() != 0.0 {
                    bail!(
                        "cannot configure batch normalization statistics as layer parameters (lr_mult must be 0)"
                    );
                }
                spec.lr_mult = Some(0.0);
            }
            let id = self.params.len();
            let name = spec.name().to_string();
            let mut owner = id;
            if !name.is_empty() {
                if let Some(&existing) = param_by_name.get(&name) {
                    owner = existing;
                    let owner_shape = &self.params[existing].shape;
                    match spec.share_mode() {
                        DimCheckMode::Strict => {
                            if owner_shape != &def.shape {
                                bail!(
                                    "cannot share param '{name}': shape {:?} differs from the owner's {:?} (share_mode STRICT)",
                                    def.shape,
                                    owner_shape
                                );
                            }
                        }
                        DimCheckMode::Permissive => {
                            let (a, b): (usize, usize) =
                                (def.shape.iter().product(), owner_shape.iter().product());
                            if a != b {
                                bail!(
                                    "cannot share param '{name}': count {a} differs from the owner's {b} (share_mode PERMISSIVE)"
                                );
                            }
                        }
                    }
                } else {
                    param_by_name.insert(name.clone(), id);
                }
            }
            self.params.push(NetParam {
                layer: layer_index,
                index: i,
                name,
                owner,
                lr_mult: spec.lr_mult(),
                decay_mult: spec.decay_mult(),
                shape: def.shape.clone(),
            });
            node.params.push(id);
        }
        Ok(())
    }

    /// Caffe's Net::Init backward analysis: which layers and bottoms need gradients.
    fn compute_backward_needs(&mut self) {
        let mut blob_need_backward = vec![false; self.blobs.len()];
        for node in &mut self.layers {
            let mut need = false;
            node.bottom_need_backward = node
                .bottoms
                .iter()
                .enumerate()
                .map(|(j, &b)| {
                    need |= blob_need_backward[b];
                    let mut n = blob_need_backward[b];
                    if !node.param.propagate_down.is_empty() {
                        n = node.param.propagate_down.get(j).copied().unwrap_or(false);
                    }
                    n && node.layer.as_ref().is_none_or(|l| l.can_propagate_down(j))
                })
                .collect();
            for &p in &node.params {
                need |= self.params[p].lr_mult != 0.0;
            }
            node.need_backward = need;
            if need {
                for &t in &node.tops {
                    blob_need_backward[t] = true;
                }
            }
        }
        // Prune layers that do not contribute to any loss (walking from the end).
        let mut under_loss = vec![false; self.blobs.len()];
        let mut skip_backprop = vec![false; self.blobs.len()];
        for node in self.layers.iter_mut().rev() {
            let mut contributes = false;
            let mut skip_propagate = true;
            for (j, &t) in node.tops.iter().enumerate() {
                if node.loss_weights.get(j).copied().unwrap_or(0.0) != 0.0 || under_loss[t] {
                    contributes = true;
                }
                if !skip_backprop[t] {
                    skip_propagate = false;
                }
            }
            if node.need_backward && skip_propagate {
                node.need_backward = false;
                node.bottom_need_backward
                    .iter_mut()
                    .for_each(|b| *b = false);
            }
            if !contributes {
                node.need_backward = false;
            }
            for (j, &b) in node.bottoms.iter().enumerate() {
                if contributes {
                    under_loss[b] = true;
                } else {
                    node.bottom_need_backward[j] = false;
                }
                if !node.bottom_need_backward[j] {
                    skip_backprop[b] = true;
                }
            }
        }
        if self.force_backward {
            for node in &mut self.layers {
                node.need_backward = true;
                for j in 0..node.bottoms.len() {
                    let allowed = node.layer.as_ref().is_none_or(|l| l.can_propagate_down(j));
                    node.bottom_need_backward[j] = node.bottom_need_backward[j] || allowed;
                }
            }
        }
    }

    /// The blob a user wrote for `b`: the source of an auto-inserted split's tops.
    pub fn user_blob(&self, b: usize) -> usize {
        for node in &self.layers {
            if node.auto_split && node.tops.contains(&b) {
                return node.bottoms[0];
            }
        }
        b
    }

    pub fn blob_index(&self, name: &str) -> Option<usize> {
        self.blobs.iter().position(|b| b.name == name)
    }

    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name() == name)
    }

    /// Layers whose shapes are unknown, with the reason.
    pub fn problems(&self) -> Vec<(String, String)> {
        self.layers
            .iter()
            .filter_map(|l| {
                l.problem
                    .as_ref()
                    .map(|p| (l.name().to_string(), p.clone()))
            })
            .collect()
    }

    pub fn phase(&self) -> Phase {
        self.state.phase()
    }
}
