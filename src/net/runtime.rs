//! A runnable net: the graph plus one engine's tensors for every blob and parameter.
use anyhow::{Context, Result, anyhow, bail};

use super::builder::{NetGraph, Strictness};
use super::weights;
use crate::engine::kernels::Kernel;
use crate::engine::kernels::conv::{Epilogue, EpilogueJunction};
use crate::engine::kernels::elementwise::{ChannelDims, ElementwiseKernel, StageOp};
use crate::engine::{Engine, TensorId, View};
use crate::format::caffemodel::TrainedWeights;
use crate::layers::{BackwardStep, Blob, Ctx, Layer, ParamGrad, StageDims, TopSharing};
use crate::proto::{BlobProto, BlobShape, NetParameter, NetState};
use crate::rng::Rng;

pub struct Net {
    pub graph: NetGraph,
    /// Elements allocated for each blob (shapes may shrink and grow back within it).
    capacity: Vec<usize>,
    /// Bottom shapes of each layer at its last reshape.
    reshaped_for: Vec<Vec<Vec<usize>>>,
    /// Tensors of each blob of the graph.
    pub blobs: Vec<Blob>,
    /// Blobs whose tensors are another blob's (the tops of a layer with [`crate::layers::Layer::top_sharing`]):
    /// the source blob and what is shared.
    shared_from: Vec<Option<(usize, TopSharing)>>,
    /// Tensors of each parameter (shared parameters hold their owner's tensors).
    pub params: Vec<Blob>,
    /// Owner parameters whose diffs [`Net::clear_param_diffs`] cleared but nothing has zeroed or
    /// written yet: the first backward to reach one overwrites or zeroes it.
    cleared_diffs: Vec<bool>,
    pub rng: Rng,
    /// Whether runs of point-wise in-place layers go through memory once, forward (see
    /// [`Net::fused_run_end`]) and backward (see [`Net::backward_step`]); their values are the
    /// same either way. Off with CAFFE_RS_NO_FUSION=1.
    pub fuse: bool,
    /// Set when no backward will follow the forwards (`test`, `forward`, a solver's test nets):
    /// fused layers then keep nothing for it.
    pub forward_only: bool,
}

/// For each blob, the blob whose tensors it uses (see [`crate::layers::Layer::top_sharing`]).
fn top_sharing(graph: &NetGraph) -> Vec<Option<(usize, TopSharing)>> {
    let mut shared_from = vec![None; graph.blobs.len()];
    for node in &graph.layers {
        let sharing = node
            .layer
            .as_ref()
            .map_or(TopSharing::None, |l| l.top_sharing());
        if sharing == TopSharing::None {
            continue;
        }
        for &t in &node.tops {
            // In place (top = bottom) there is nothing to share.
            if t != node.bottoms[0] {
                shared_from[t] = Some((node.bottoms[0], sharing));
            }
        }
    }
    shared_from
}

/// The top of `node` when it is a point-wise step over several bottoms (an Eltwise SUM) that
/// reads blob `run` once into a top of its own, so that it can join the epilogue of the
/// convolution that writes `run` (see [`crate::engine::kernels::conv::EpilogueJunction`]).
fn junction_top(node: &super::builder::LayerNode, run: usize) -> Option<usize> {
    let &[top] = &node.tops[..] else {
        return None;
    };
    let reads = node.bottoms.iter().filter(|&&b| b == run).count();
    (node.bottoms.len() >= 2 && reads == 1 && !node.bottoms.contains(&top)).then_some(top)
}

/// Whether a blob with `sharing` takes `what` (Data: its values; DataAndDiff: its gradients too)
/// from its source.
fn shares(sharing: Option<(usize, TopSharing)>, what: TopSharing) -> bool {
    matches!(
        (sharing.map(|s| s.1), what),
        (Some(TopSharing::DataAndDiff), _) | (Some(TopSharing::Data), TopSharing::Data)
    )
}

/// A placeholder id for a tensor the blob takes from its source (replaced by [`link_shared`]).
fn eng_alloc_if(eng: &mut dyn Engine, owned: bool, count: usize) -> TensorId {
    if owned {
        eng.alloc(count)
    } else {
        TensorId(u32::MAX)
    }
}

/// Points blob `b`'s shared tensors at its source's (following chains, e.g. Flatten of a Split).
fn link_shared(blobs: &mut [Blob], shared_from: &[Option<(usize, TopSharing)>], b: usize) {
    let Some((mut src, sharing)) = shared_from[b] else {
        return;
    };
    while let Some((next, _)) = shared_from[src].filter(|s| shares(Some(*s), TopSharing::Data)) {
        src = next;
    }
    blobs[b].data = blobs[src].data;
    if sharing == TopSharing::DataAndDiff {
        let mut src = shared_from[b].unwrap().0;
        while let Some((next, _)) =
            shared_from[src].filter(|s| shares(Some(*s), TopSharing::DataAndDiff))
        {
            src = next;
        }
        blobs[b].diff = blobs[src].diff;
    }
}

fn new_blob(eng: &mut dyn Engine, shape: &[usize]) -> Blob {
    let count: usize = shape.iter().product();
    Blob {
        shape: shape.to_vec(),
        data: eng.alloc(count),
        diff: eng.alloc(count),
    }
}

impl Net {
    /// Builds the net of `param` in `state`, allocates its tensors and fills its parameters.
    pub fn from_param(
        param: &NetParameter,
        state: &NetState,
        eng: &mut dyn Engine,
        seed: Option<u64>,
    ) -> Result<Net> {
        let graph = NetGraph::build(param, state, Strictness::Strict)?;
        Net::new(graph, eng, seed)
    }

    pub fn new(graph: NetGraph, eng: &mut dyn Engine, seed: Option<u64>) -> Result<Net> {
        Net::new_for_weights::<NetParameter>(graph, eng, seed, &[])
    }

    /// Like [`Net::new`], for a net about to receive `weights` (copy_trained_layers): the layers
    /// those files hold are not run through their fillers, so their values are written once and
    /// no filler output sits beside the loaded weights in memory. The other layers' filler values
    /// then depend on which layers were skipped (the seed stays deterministic).
    pub fn new_for_weights<W: TrainedWeights>(
        graph: NetGraph,
        eng: &mut dyn Engine,
        seed: Option<u64>,
        weights: &[W],
    ) -> Result<Net> {
        let loaded: std::collections::HashSet<&str> = weights
            .iter()
            .flat_map(|w| w.net().layer.iter().map(|l| l.name()))
            .collect();
        let mut rng = seed.map(Rng::new).unwrap_or_else(Rng::from_clock);
        let shared_from = top_sharing(&graph);
        let mut blobs = Vec::with_capacity(graph.blobs.len());
        for (b, blob) in graph.blobs.iter().enumerate() {
            let shape = blob
                .shape
                .as_ref()
                .ok_or_else(|| anyhow!("blob '{}' has an unknown shape", blob.name))?;
            let count: usize = shape.iter().product();
            let owns = |what| !shares(shared_from[b], what);
            blobs.push(Blob {
                shape: shape.to_vec(),
                data: eng_alloc_if(eng, owns(TopSharing::Data), count),
                diff: eng_alloc_if(eng, owns(TopSharing::DataAndDiff), count),
            });
        }
        for b in 0..blobs.len() {
            link_shared(&mut blobs, &shared_from, b);
        }
        let mut params: Vec<Blob> = Vec::with_capacity(graph.params.len());
        for (i, p) in graph.params.iter().enumerate() {
            if p.owner == i {
                let blob = new_blob(eng, &p.shape);
                if loaded.contains(graph.layers[p.layer].name()) {
                    params.push(blob);
                    continue;
                }
                let def = &graph.layers[p.layer].param_defs[p.index];
                let values =
                    super::filler::fill(&def.filler, &def.shape, &mut rng).with_context(|| {
                        format!(
                            "layer '{}': param {}",
                            graph.layers[p.layer].name(),
                            p.index
                        )
                    })?;
                eng.upload(blob.data(), &values);
                params.push(blob);
            } else {
                let owner = params[p.owner].clone();
                params.push(Blob {
                    shape: p.shape.clone(),
                    ..owner
                });
            }
        }
        let capacity = blobs.iter().map(|b| b.count()).collect();
        let reshaped_for = graph
            .layers
            .iter()
            .map(|l| l.bottoms.iter().map(|&b| blobs[b].shape.clone()).collect())
            .collect();
        Ok(Net {
            graph,
            capacity,
            reshaped_for,
            blobs,
            shared_from,
            cleared_diffs: vec![false; params.len()],
            params,
            rng,
            fuse: std::env::var_os("CAFFE_RS_NO_FUSION").is_none_or(|v| v == "0"),
            forward_only: false,
        })
    }

    fn layer_blobs(&self, i: usize) -> (Vec<Blob>, Vec<Blob>, Vec<Blob>) {
        let node = &self.graph.layers[i];
        (
            node.bottoms
                .iter()
                .map(|&b| self.blobs[b].clone())
                .collect(),
            node.tops.iter().map(|&t| self.blobs[t].clone()).collect(),
            node.params
                .iter()
                .map(|&p| self.params[p].clone())
                .collect(),
        )
    }

    fn label(&self, i: usize) -> String {
        let node = &self.graph.layers[i];
        format!("layer '{}' ({})", node.name(), node.type_name())
    }

    /// Forward of layers `start..end`.
    pub fn forward_range(&mut self, eng: &mut dyn Engine, start: usize, end: usize) -> Result<()> {
        let end = end.min(self.graph.layers.len());
        let mut i = start;
        while i < end {
            i = self.forward_step(eng, i, end)?;
        }
        Ok(())
    }

    /// Forward of layer `i`, or of the run of layers from `i` that [`Net::fused_run_end`] fuses
    /// (ending before `limit`); returns the index of the next layer to run.
    pub fn forward_step(&mut self, eng: &mut dyn Engine, i: usize, limit: usize) -> Result<usize> {
        self.reshape_if_needed(eng, i)?;
        let end = self.fused_run_end(eng, i, limit)?;
        if end > i + 1 {
            self.forward_fused(eng, i, end)?;
            return Ok(end);
        }
        self.with_layer(eng, i, &[], |layer, cx| layer.forward(cx))?;
        let forwarded = self.graph.layers[i].layer.as_ref();
        if let Some(shapes) = forwarded.and_then(|l| l.forwarded_top_shapes()) {
            let tops = self.graph.layers[i].tops.clone();
            for (&t, shape) in tops.iter().zip(shapes) {
                self.set_blob_shape(eng, t, shape);
            }
        }
        Ok(i + 1)
    }

    /// The end of the run of layers from `i` (before `limit`) whose forwards go into one
    /// point-wise pass: layer `i` is a [`crate::layers::Layer::forward_stage`] step from its
    /// first bottom (Eltwise SUM reads the others too) to its one top, or a layer that takes an
    /// epilogue ([`crate::layers::Layer::epilogue_dims`]: a convolution) into its one top, and
    /// each next layer such a step in place on that top, with the same channel layout; after a
    /// convolution, one Eltwise SUM that reads the run's blob into a top of its own may join too
    /// (see [`EpilogueJunction`]), and the steps in place on that top after it. `i + 1` when
    /// there is nothing to fuse. Reshapes the run's layers.
    fn fused_run_end(&mut self, eng: &mut dyn Engine, i: usize, limit: usize) -> Result<usize> {
        if !self.fuse {
            return Ok(i + 1);
        }
        let phase = self.graph.phase();
        let node = &self.graph.layers[i];
        let step_dims = |node: &super::builder::LayerNode| {
            node.layer.as_ref().and_then(|l| l.stage_dims(phase))
        };
        let head_dims = step_dims(node).or_else(|| {
            let layer = node.layer.as_ref()?;
            layer.epilogue_dims(phase).map(StageDims::Channels)
        });
        let (Some(mut dims), [_, ..], &[mut top]) = (head_dims, &node.bottoms[..], &node.tops[..])
        else {
            return Ok(i + 1);
        };
        let epilogue_head = step_dims(node).is_none();
        let mut joined = false;
        let mut end = i + 1;
        while end < limit {
            let next = &self.graph.layers[end];
            if step_dims(next).is_none() {
                break;
            }
            if next.bottoms == [top] && next.tops == [top] {
                // In place on the run's blob.
            } else if epilogue_head
                && !joined
                && let Some(sum_top) = junction_top(next, top)
            {
                joined = true;
                top = sum_top;
            } else {
                break;
            }
            self.reshape_if_needed(eng, end)?;
            let Some(merged) = step_dims(&self.graph.layers[end]).and_then(|d| dims.merge(d))
            else {
                break;
            };
            dims = merged;
            end += 1;
        }
        Ok(end)
    }

    /// Runs layers `start..end` (see [`Net::fused_run_end`]) as one point-wise pass, or as the
    /// forward of layer `start` with the others as its epilogue.
    fn forward_fused(&mut self, eng: &mut dyn Engine, start: usize, end: usize) -> Result<()> {
        let phase = self.graph.phase();
        let head = self.graph.layers[start].layer.as_ref();
        let epilogue_dims = head
            .filter(|l| l.stage_dims(phase).is_none())
            .and_then(|l| l.epilogue_dims(phase));
        let first_step = start + usize::from(epilogue_dims.is_some());
        let mut stages = Vec::with_capacity(end - first_step);
        let mut junction: Option<EpilogueJunction> = None;
        let mut run_top = self.graph.layers[start].tops[0];
        let mut dims = epilogue_dims.map_or(StageDims::Any, StageDims::Channels);
        for i in first_step..end {
            let node = &self.graph.layers[i];
            let for_backward = !self.forward_only && node.need_backward;
            // The Eltwise SUM that reads the run's blob into its own top (see fused_run_end).
            let joins = epilogue_dims.is_some() && node.tops != [run_top];
            let sum_blobs = joins.then(|| {
                let bottoms: Vec<View> =
                    node.bottoms.iter().map(|&b| self.blobs[b].data()).collect();
                let position = node.bottoms.iter().position(|&b| b == run_top);
                (bottoms, position, node.tops[0])
            });
            let stage = self.with_layer(eng, i, &[], |layer, cx| {
                dims = layer
                    .stage_dims(phase)
                    .and_then(|d| dims.merge(d))
                    .ok_or_else(|| anyhow!("internal: the layer no longer fuses"))?;
                layer.forward_stage(cx, for_backward)
            })?;
            match (sum_blobs, &mut junction) {
                (Some((bottoms, Some(position), top)), None) => {
                    let StageOp::Sum { coeffs, .. } = stage.op else {
                        bail!(
                            "internal: {} joins a convolution's epilogue but is no sum",
                            self.label(i)
                        );
                    };
                    junction = Some(EpilogueJunction {
                        coeffs,
                        bottoms,
                        position,
                        top: self.blobs[top].data(),
                        stages: Vec::new(),
                    });
                    run_top = top;
                }
                (Some(_), _) => bail!("internal: {} no longer joins the run", self.label(i)),
                (None, Some(junction)) => junction.stages.push(stage),
                (None, None) => stages.push(stage),
            }
        }
        if epilogue_dims.is_some() {
            let epilogue = Epilogue { stages, junction };
            return self
                .with_layer(eng, start, &[], |layer, cx| {
                    layer.forward_with_epilogue(cx, epilogue)
                })
                .with_context(|| {
                    let names: Vec<String> = (first_step..end).map(|i| self.label(i)).collect();
                    format!(
                        "forward of {} with {} as its epilogue",
                        self.label(start),
                        names.join(", ")
                    )
                });
        }
        let (bottoms, tops, _) = self.layer_blobs(start);
        let (x, y) = (bottoms[0].data(), tops[0].data());
        let dims = match dims {
            StageDims::Channels(dims) => dims,
            StageDims::Any => ChannelDims::new(1, 1, x.len),
        };
        let kernel = ElementwiseKernel::ChannelStages { dims, x, y, stages };
        eng.launch(&Kernel::Elementwise(kernel)).with_context(|| {
            let names: Vec<String> = (start..end).map(|i| self.label(i)).collect();
            format!("fused forward of {}", names.join(", "))
        })
    }

    /// Caffe reshapes every layer at each forward; here a layer is re-shaped only when its bottom
    /// shapes changed since its last reshape (data-dependent shapes, e.g. after a Filter).
    fn reshape_if_needed(&mut self, eng: &mut dyn Engine, i: usize) -> Result<()> {
        let current: Vec<Vec<usize>> = self.graph.layers[i]
            .bottoms
            .iter()
            .map(|&b| self.blobs[b].shape.clone())
            .collect();
        if current == self.reshaped_for[i] {
            return Ok(());
        }
        let label = self.label(i);
        let layer = self.graph.layers[i]
            .layer
            .as_mut()
            .ok_or_else(|| anyhow!("{label}: not built"))?;
        let shapes = layer.reshape(&current).with_context(|| label.clone())?;
        let tops = self.graph.layers[i].tops.clone();
        for (&t, shape) in tops.iter().zip(shapes.tops) {
            self.set_blob_shape(eng, t, shape);
        }
        self.reshaped_for[i] = current;
        Ok(())
    }

    fn set_blob_shape(&mut self, eng: &mut dyn Engine, b: usize, shape: Vec<usize>) {
        let count: usize = shape.iter().product();
        let sharing = self.shared_from[b];
        if count > self.capacity[b] {
            let blob = &mut self.blobs[b];
            if !shares(sharing, TopSharing::Data) {
                eng.free(blob.data);
                blob.data = eng.alloc(count);
            }
            if !shares(sharing, TopSharing::DataAndDiff) {
                eng.free(blob.diff);
                blob.diff = eng.alloc(count);
            }
            self.capacity[b] = count;
        }
        // The source was reshaped first (it is an earlier layer's top) and may have new tensors.
        link_shared(&mut self.blobs, &self.shared_from, b);
        self.graph.blobs[b].shape = Some(shape.clone());
        self.blobs[b].shape = shape;
    }

    pub fn forward(&mut self, eng: &mut dyn Engine) -> Result<()> {
        let n = self.graph.layers.len();
        self.forward_range(eng, 0, n)
    }

    /// Sets each loss top's diff to its loss weight, then runs backward through every layer that
    /// needs it.
    pub fn backward(&mut self, eng: &mut dyn Engine) -> Result<()> {
        self.seed_loss_diffs(eng);
        self.backward_layers(eng)
    }

    pub fn seed_loss_diffs(&mut self, eng: &mut dyn Engine) {
        for node in &self.graph.layers {
            for (j, &t) in node.tops.iter().enumerate() {
                let w = node.loss_weights.get(j).copied().unwrap_or(0.0);
                if w != 0.0 {
                    eng.fill(self.blobs[t].diff(), w);
                }
            }
        }
    }

    /// Backward without touching top diffs (callers may have set them). Every parameter diff
    /// holds its value afterwards (cleared diffs no layer wrote are zeroed).
    pub fn backward_layers(&mut self, eng: &mut dyn Engine) -> Result<()> {
        let mut end = self.graph.layers.len();
        while end > 0 {
            end = self.backward_step(eng, end - 1)?;
        }
        self.zero_cleared_diffs(eng);
        Ok(())
    }

    /// Backward of layer `i`, or of the run of layers ending at `i` whose backwards go into one
    /// pass: a sum junction (an Eltwise SUM, the neuron in place after it, the Split of its top;
    /// see [`ElementwiseKernel::JunctionBackward`]), or a Scale with the neuron after
    /// it and/or the BatchNorm with stored statistics before it, all in place on one blob (the
    /// run after every ResNet convolution; see [`crate::layers::Layer::backward_joined`]).
    /// Returns the run's first layer, where the backward goes on below.
    pub fn backward_step(&mut self, eng: &mut dyn Engine, i: usize) -> Result<usize> {
        if self.fuse {
            if let Some(first) = self.backward_junction(eng, i)? {
                return Ok(first);
            }
            if let Some(first) = self.backward_run(eng, i)? {
                return Ok(first);
            }
        }
        self.backward_layer(eng, i)?;
        Ok(i)
    }

    /// Runs the backward of the junction run ending at `i` in one pass when there is one (see
    /// [`ElementwiseKernel::JunctionBackward`]): an Eltwise SUM into a blob, then optionally the
    /// neuron in place on that blob, then optionally its Split, at least one of the two. (A
    /// neuron after a Scale joins the Scale's pass instead, see [`Net::backward_run`].) Returns
    /// the run's first layer.
    fn backward_junction(&mut self, eng: &mut dyn Engine, i: usize) -> Result<Option<usize>> {
        let step = |net: &mut Self, eng: &mut dyn Engine, k: usize| {
            net.with_layer(eng, k, &[], |layer, cx| Ok(layer.backward_step(cx)))
        };
        let node = &self.graph.layers[i];
        let splits = node.bottoms.len() == 1
            && node.need_backward
            && node.bottom_need_backward.first() == Some(&true);
        let (blob, sums, mut next) =
            if splits && step(self, eng, i)? == Some(BackwardStep::SumOfTops) {
                let node = &self.graph.layers[i];
                let sums = node.tops.iter().map(|&t| self.blobs[t].diff()).collect();
                (node.bottoms[0], sums, i.checked_sub(1))
            } else if let &[top] = &self.graph.layers[i].tops[..] {
                (top, vec![], Some(i))
            } else {
                return Ok(None);
            };
        let mut neuron_grad = None;
        if let Some(k) = next {
            let node = &self.graph.layers[k];
            let in_place = node.bottoms == [blob]
                && node.tops == [blob]
                && node.need_backward
                && node.bottom_need_backward.first() == Some(&true);
            if in_place && let Some(BackwardStep::Neuron(op, x, y)) = step(self, eng, k)? {
                neuron_grad = Some((op, x, y));
                next = k.checked_sub(1);
            }
        }
        let Some(first) = next else {
            return Ok(None);
        };
        let node = &self.graph.layers[first];
        if node.tops != [blob] || !node.need_backward || (sums.is_empty() && neuron_grad.is_none())
        {
            return Ok(None);
        }
        let Some(BackwardStep::Distribute(coeffs)) = step(self, eng, first)? else {
            return Ok(None);
        };
        let node = &self.graph.layers[first];
        let outs = (coeffs
            .iter()
            .zip(&node.bottoms)
            .zip(&node.bottom_need_backward))
        .filter(|(_, down)| **down)
        .map(|((&c, &b), _)| (c, self.blobs[b].diff()))
        .collect();
        let kernel = ElementwiseKernel::JunctionBackward {
            sums,
            neuron_grad,
            dy: self.blobs[blob].diff(),
            outs,
        };
        eng.launch(&Kernel::Elementwise(kernel)).with_context(|| {
            let names: Vec<String> = (first..=i).map(|k| self.label(k)).collect();
            format!("joined backward of {}", names.join(", "))
        })?;
        Ok(Some(first))
    }

    /// Runs the fused backward of the run ending at `i` when there is one; returns its first
    /// layer.
    fn backward_run(&mut self, eng: &mut dyn Engine, i: usize) -> Result<Option<usize>> {
        // Layer k runs in place on `blob`, needs its backward and passes the gradient down.
        let in_place_on = |net: &Self, k: usize, blob: usize| {
            let node = &net.graph.layers[k];
            node.bottoms == [blob]
                && node.tops == [blob]
                && node.need_backward
                && node.bottom_need_backward.first() == Some(&true)
        };
        let node = &self.graph.layers[i];
        let &[blob] = &node.tops[..] else {
            return Ok(None);
        };
        if !in_place_on(self, i, blob) {
            return Ok(None);
        }
        let step = |net: &mut Self, eng: &mut dyn Engine, k: usize| {
            net.with_layer(eng, k, &[], |layer, cx| Ok(layer.backward_step(cx)))
        };
        // The neuron after the Scale, if layer i is one.
        let after = step(self, eng, i)?.filter(|s| matches!(s, BackwardStep::Neuron(..)));
        let Some(scale) = i.checked_sub(usize::from(after.is_some())) else {
            return Ok(None);
        };
        if after.is_some() && !in_place_on(self, scale, blob) {
            return Ok(None);
        }
        let before = if scale > 0 && in_place_on(self, scale - 1, blob) {
            step(self, eng, scale - 1)?.filter(|s| matches!(s, BackwardStep::FrozenNorm(..)))
        } else {
            None
        };
        if after.is_none() && before.is_none() {
            return Ok(None);
        }
        let propagate_down = self.graph.layers[scale].bottom_need_backward.clone();
        let param_grads = self.param_grads(eng, scale);
        let (has_after, has_before) = (after.is_some(), before.is_some());
        let joined = self.with_layer(eng, scale, &param_grads, |layer, cx| {
            layer
                .backward_joined(cx, &propagate_down, after, before)
                .context("backward")
        })?;
        if !joined {
            // The Scale ran nothing: its backward alone, as the layer-by-layer order has it
            // after the neuron's.
            if has_after {
                self.backward_layer(eng, i)?;
            }
            return self
                .with_layer(eng, scale, &param_grads, |layer, cx| {
                    layer.backward(cx, &propagate_down).context("backward")
                })
                .map(|()| Some(scale));
        }
        let first = scale - usize::from(has_before);
        for k in (first..=i).filter(|&k| k != scale) {
            // Their parameter diffs (BatchNorm's statistics) as their own backwards treat them.
            self.param_grads(eng, k);
        }
        Ok(Some(first))
    }

    /// Zeroes the diffs [`Net::clear_param_diffs`] left to the backward pass that no layer wrote
    /// (after [`Net::backward_step`]s from the last layer down to the first).
    pub fn zero_cleared_diffs(&mut self, eng: &mut dyn Engine) {
        for (owner, cleared) in self.cleared_diffs.iter_mut().enumerate() {
            if std::mem::take(cleared) {
                eng.fill(self.params[owner].diff(), 0.0);
            }
        }
    }

    /// How layer `i`'s backward treats each of its params' diffs. A cleared diff is handed to
    /// the layer to overwrite when it can (and wants the gradient), and zeroed here otherwise.
    fn param_grads(&mut self, eng: &mut dyn Engine, i: usize) -> Vec<ParamGrad> {
        let node = &self.graph.layers[i];
        let overwrites = node
            .layer
            .as_ref()
            .is_some_and(|l| l.overwrites_cleared_param_diffs());
        let owners: Vec<usize> = node
            .params
            .iter()
            .map(|&p| self.graph.params[p].owner)
            .collect();
        node.params
            .iter()
            .zip(&owners)
            .map(|(&p, &owner)| {
                let wanted = self.graph.params[p].lr_mult != 0.0;
                let grad = if wanted {
                    ParamGrad::Accumulate
                } else {
                    ParamGrad::Skip
                };
                if !std::mem::take(&mut self.cleared_diffs[owner]) {
                    return grad;
                }
                // A param the layer holds twice gets two gradients: the second adds.
                let once = owners.iter().filter(|&&o| o == owner).count() == 1;
                if overwrites && wanted && once {
                    ParamGrad::Overwrite
                } else {
                    eng.fill(self.params[owner].diff(), 0.0);
                    grad
                }
            })
            .collect()
    }

    /// Backward of layer `i` alone, when it needs one.
    pub fn backward_layer(&mut self, eng: &mut dyn Engine, i: usize) -> Result<()> {
        if !self.graph.layers[i].need_backward {
            return Ok(());
        }
        let propagate_down = self.graph.layers[i].bottom_need_backward.clone();
        let param_grads = self.param_grads(eng, i);
        self.with_layer(eng, i, &param_grads, |layer, cx| {
            layer.backward(cx, &propagate_down).context("backward")
        })
    }

    /// Calls `f` with layer `i` and a context over its blobs; errors name the layer.
    fn with_layer<R>(
        &mut self,
        eng: &mut dyn Engine,
        i: usize,
        param_grads: &[ParamGrad],
        f: impl FnOnce(&mut dyn Layer, &mut Ctx) -> Result<R>,
    ) -> Result<R> {
        let phase = self.graph.phase();
        let (bottoms, tops, params) = self.layer_blobs(i);
        let label = self.label(i);
        let layer = self.graph.layers[i]
            .layer
            .as_mut()
            .ok_or_else(|| anyhow!("{label}: not built"))?;
        let mut cx = Ctx {
            eng,
            bottoms: &bottoms,
            tops: &tops,
            params: &params,
            phase,
            rng: &mut self.rng,
            param_grads,
        };
        f(layer.as_mut(), &mut cx).with_context(|| label)
    }

    /// The weighted sum of every loss top (reads back only the loss tops).
    pub fn loss(&self, eng: &mut dyn Engine) -> f32 {
        let mut loss = 0.0f32;
        for node in &self.graph.layers {
            for (j, &t) in node.tops.iter().enumerate() {
                let w = node.loss_weights.get(j).copied().unwrap_or(0.0);
                if w != 0.0 {
                    let values = eng.download(self.blobs[t].data());
                    loss += w * values.iter().sum::<f32>();
                }
            }
        }
        loss
    }

    /// Caffe's ClearParamDiffs. The diffs are zeroed lazily: the next backward overwrites them
    /// where a layer can ([`Layer::overwrites_cleared_param_diffs`]) and zeroes the rest, so no
    /// pass over all the parameters is spent on zeros. Read diffs only after a backward.
    ///
    /// [`Layer::overwrites_cleared_param_diffs`]: crate::layers::Layer::overwrites_cleared_param_diffs
    pub fn clear_param_diffs(&mut self) {
        for (i, p) in self.graph.params.iter().enumerate() {
            if p.owner == i {
                self.cleared_diffs[i] = true;
            }
        }
    }

    pub fn blob(&self, name: &str) -> Option<&Blob> {
        self.graph.blob_index(name).map(|i| &self.blobs[i])
    }

    pub fn blob_data(&self, eng: &mut dyn Engine, name: &str) -> Option<Vec<f32>> {
        self.blob(name).map(|b| eng.download(b.data()))
    }

    /// Parameter blobs of a layer by layer name.
    pub fn layer_params(&self, layer: &str) -> Vec<&Blob> {
        match self.graph.layer_index(layer) {
            Some(i) => self.graph.layers[i]
                .params
                .iter()
                .map(|&p| &self.params[p])
                .collect(),
            None => Vec::new(),
        }
    }

    /// Caffe's CopyTrainedLayersFrom; `log` receives "Ignoring source layer X" lines. The values
    /// go to the engine blob by blob, in pieces, straight from `weights` (a [`WeightsFile`]
    /// never holds them in memory as a whole).
    ///
    /// [`WeightsFile`]: crate::format::caffemodel::WeightsFile
    pub fn copy_trained_layers(
        &mut self,
        eng: &mut dyn Engine,
        weights: &dyn TrainedWeights,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let file = weights.net();
        let plan = weights::plan(&self.graph, file);
        weights::check_plan(&plan)?;
        for name in &plan.ignored {
            log(&format!("Ignoring source layer {name}"));
        }
        let mut done = std::collections::HashSet::new();
        for (s, source) in file.layer.iter().enumerate() {
            let Some(target) = self.graph.layer_index(source.name()) else {
                continue;
            };
            if !done.insert(target) {
                continue;
            }
            for (j, &p) in self.graph.layers[target].params.iter().enumerate() {
                let values = weights.blob_values(s, j)?;
                let blob = &self.params[p];
                if values.len() != blob.count() {
                    bail!(
                        "layer '{}' param {j}: the weights file holds {} values for a blob of {}",
                        source.name(),
                        values.len(),
                        blob.count()
                    );
                }
                let view = blob.data();
                values.for_each_chunk(&mut |offset, piece| {
                    eng.upload(view.slice(offset, piece.len()), piece)
                });
            }
        }
        Ok(())
    }

    /// Caffe's Net::ToProto: every layer's parameters and blobs (diffs too when `write_diff`).
    pub fn to_proto(&self, eng: &mut dyn Engine, write_diff: bool) -> NetParameter {
        let mut net = NetParameter {
            name: Some(self.graph.name.clone()),
            ..Default::default()
        };
        for node in &self.graph.layers {
            let mut layer = node.param.clone();
            layer.blobs = node
                .params
                .iter()
                .map(|&p| {
                    let blob = &self.params[p];
                    BlobProto {
                        shape: Some(BlobShape {
                            dim: blob.shape.iter().map(|&d| d as i64).collect(),
                        }),
                        data: eng.download(blob.data()),
                        diff: if !write_diff {
                            Vec::new()
                        } else if self.cleared_diffs[self.graph.params[p].owner] {
                            vec![0.0; blob.count()]
                        } else {
                            eng.download(blob.diff())
                        },
                        ..Default::default()
                    }
                })
                .collect();
            net.layer.push(layer);
        }
        net
    }

    pub fn view_of(&self, name: &str) -> Option<View> {
        self.blob(name).map(|b| b.data())
    }
}

impl Net {
    /// Caffe's ShareTrainedLayersWith: layers of the same name use `other`'s parameter tensors.
    /// The tensors this net no longer uses are returned so the caller can free them.
    pub fn share_trained_layers_with(&mut self, other: &Net) -> Result<Vec<Blob>> {
        let mut freed = Vec::new();
        for i in 0..self.graph.layers.len() {
            let name = self.graph.layers[i].name().to_string();
            let Some(j) = other.graph.layer_index(&name) else {
                continue;
            };
            let mine = self.graph.layers[i].params.clone();
            let theirs = &other.graph.layers[j].params;
            if mine.len() != theirs.len() {
                bail!(
                    "layer '{name}': {} parameter blobs here, {} in the net it shares with",
                    mine.len(),
                    theirs.len()
                );
            }
            for (&p, &q) in mine.iter().zip(theirs) {
                let source = &other.params[q];
                if source.shape != self.params[p].shape {
                    bail!(
                        "layer '{name}': cannot share a parameter of shape {:?} with one of shape {:?}",
                        self.params[p].shape,
                        source.shape
                    );
                }
                let own = std::mem::replace(&mut self.params[p], source.clone());
                if self.graph.params[p].owner == p && own.data != source.data {
                    freed.push(own);
                }
            }
        }
        Ok(freed)
    }
}
