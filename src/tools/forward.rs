//! `caffe-rs forward`: run a net on tensors from a safetensors file and write every blob back
//! (`output.<blob>`); with `-backward` also `bottom_diff.<blob>` and `param_diff.<layer>.<i>`.
//! The tensor names are those of ../shared/golden.
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};

use crate::engine::Engine;
use crate::format::caffemodel::{TrainedWeights, WeightsFile};
use crate::format::tensors::{TensorMap, read_tensors, write_tensors};
use crate::net::state::make_state;
use crate::net::{Net, NetGraph, Strictness};
use crate::proto::{NetParameter, Phase};

pub struct ForwardOptions {
    pub phase: Phase,
    pub level: i32,
    pub stages: Vec<String>,
    pub backward: bool,
    /// Only these blobs in the output (all when empty).
    pub blobs: Vec<String>,
    pub seed: u64,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            phase: Phase::Test,
            level: 0,
            stages: Vec::new(),
            backward: false,
            blobs: Vec::new(),
            seed: 1701,
        }
    }
}

fn is_split_blob(name: &str) -> bool {
    name.contains("_split_")
}

/// Builds the net, loads weights and inputs, runs forward (and backward) and collects the tensors.
pub fn run_net<W: TrainedWeights>(
    eng: &mut dyn Engine,
    net_param: &NetParameter,
    weights: &[W],
    inputs: &TensorMap,
    opts: &ForwardOptions,
) -> Result<TensorMap> {
    let state = make_state(net_param, opts.phase, opts.level, &opts.stages);
    let graph = NetGraph::build(net_param, &state, Strictness::Strict)?;
    let mut net = Net::new_for_weights(graph, eng, Some(opts.seed), weights)?;
    net.forward_only = !opts.backward;
    for w in weights {
        net.copy_trained_layers(eng, w, &mut |line| eprintln!("{line}"))?;
    }
    // Feed Input layers' tops.
    let mut fed = Vec::new();
    for node in &net.graph.layers {
        if node.type_name() != "Input" {
            continue;
        }
        for &t in &node.tops {
            let name = &net.graph.blobs[t].name;
            let key = format!("input.{name}");
            let (shape, values) = inputs.get(&key).ok_or_else(|| {
                anyhow!("the input file has no tensor \"{key}\" for Input blob '{name}'")
            })?;
            let blob = &net.blobs[t];
            if shape != &blob.shape && values.len() != blob.count() {
                bail!(
                    "tensor \"{key}\" has shape {shape:?} but blob '{name}' has shape {:?}",
                    blob.shape
                );
            }
            if values.len() != blob.count() {
                bail!(
                    "tensor \"{key}\" has {} values but blob '{name}' needs {}",
                    values.len(),
                    blob.count()
                );
            }
            fed.push((blob.data(), values.clone()));
        }
    }
    for (view, values) in fed {
        eng.upload(view, &values);
    }
    net.forward(eng)?;
    let wanted = |name: &str| opts.blobs.is_empty() || opts.blobs.iter().any(|b| b == name);
    let mut out = TensorMap::new();
    for (b, blob) in net.graph.blobs.iter().enumerate() {
        if is_split_blob(&blob.name) || !wanted(&blob.name) {
            continue;
        }
        let t = &net.blobs[b];
        out.insert(
            format!("output.{}", blob.name),
            (t.shape.clone(), eng.download(t.data())),
        );
    }
    if opts.backward {
        net.clear_param_diffs();
        net.seed_loss_diffs(eng);
        for (name, (_, values)) in inputs
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("top_diff.").map(|n| (n, v)))
        {
            let blob = net
                .blob(name)
                .ok_or_else(|| anyhow!("top_diff.{name}: the net has no blob '{name}'"))?;
            if values.len() != blob.count() {
                bail!(
                    "top_diff.{name} has {} values but blob '{name}' has {}",
                    values.len(),
                    blob.count()
                );
            }
            let view = blob.diff();
            eng.upload(view, values);
        }
        net.backward_layers(eng)?;
        for node in &net.graph.layers {
            if node.type_name() == "Input" {
                for &t in &node.tops {
                    let blob = &net.blobs[t];
                    out.insert(
                        format!("bottom_diff.{}", net.graph.blobs[t].name),
                        (blob.shape.clone(), eng.download(blob.diff())),
                    );
                }
            }
            for (i, &p) in node.params.iter().enumerate() {
                let blob = &net.params[p];
                out.insert(
                    format!("param_diff.{}.{i}", node.name()),
                    (blob.shape.clone(), eng.download(blob.diff())),
                );
            }
        }
    }
    // The parameters (BatchNorm statistics change in TRAIN) only when every tensor is asked for.
    for node in net.graph.layers.iter().filter(|_| opts.blobs.is_empty()) {
        for (i, &p) in node.params.iter().enumerate() {
            let blob = &net.params[p];
            out.insert(
                format!("param.{}.{i}", node.name()),
                (blob.shape.clone(), eng.download(blob.data())),
            );
        }
    }
    Ok(out)
}

pub struct ForwardArgs {
    pub model: PathBuf,
    pub weights: Option<String>,
    pub input: Option<PathBuf>,
    pub output: PathBuf,
    pub opts: ForwardOptions,
}

pub fn run(eng: &mut dyn Engine, args: &ForwardArgs) -> Result<usize> {
    let net = crate::format::read_net_prototxt(&args.model)?;
    let mut weights = Vec::new();
    if let Some(list) = &args.weights {
        for path in list.split(',').filter(|p| !p.is_empty()) {
            weights.push(WeightsFile::open(std::path::Path::new(path))?);
        }
    }
    let inputs = match &args.input {
        Some(p) => read_tensors(p)?,
        None => TensorMap::new(),
    };
    let out = run_net(eng, &net, &weights, &inputs, &args.opts)
        .with_context(|| format!("running {}", args.model.display()))?;
    write_tensors(&args.output, &out)?;
    Ok(out.len())
}
