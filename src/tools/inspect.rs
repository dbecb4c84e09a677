//! `caffe-rs inspect`: the layer table of a net (shapes, parameters, multiply-adds), the
//! fine-tuning plan with `-weights`, as a table, JSON or Graphviz dot.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::json;

use crate::format;
use crate::format::caffemodel::TrainedWeights;
use crate::net::builder::{LayerNode, NetGraph, Strictness};
use crate::net::state::make_state;
use crate::net::weights::{self, CopyPlan, LayerFate, shape_text};
use crate::proto::Phase;

pub struct InspectArgs {
    pub model: PathBuf,
    pub weights: Option<PathBuf>,
    pub phase: Phase,
    pub level: i32,
    pub stages: Vec<String>,
    pub format: String,
}

fn dims(shape: &Option<Vec<usize>>) -> String {
    match shape {
        Some(s) if s.is_empty() => "scalar".into(),
        Some(s) => shape_text(s),
        None => "?".into(),
    }
}

fn count(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

fn human(n: u64) -> String {
    match n {
        n if n >= 10_000_000_000 => format!("{:.1}G", n as f64 / 1e9),
        n if n >= 10_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn macs(node: &LayerNode) -> u64 {
    if node.problem.is_some() {
        0
    } else {
        node.layer.as_ref().map_or(0, |l| l.macs())
    }
}

/// Notes on a layer: in-place, BatchNorm+Scale pairs, shared params, problems.
fn notes(graph: &NetGraph, i: usize) -> Vec<String> {
    let node = &graph.layers[i];
    let mut notes = Vec::new();
    if node
        .tops
        .iter()
        .enumerate()
        .any(|(j, _)| node.is_in_place(j))
    {
        notes.push("in-place".to_string());
    }
    if node.type_name() == "BatchNorm"
        && let Some(next) = graph
            .layers
            .iter()
            .skip(i + 1)
            .find(|l| l.bottoms.first() == node.tops.first())
        && next.type_name() == "Scale"
    {
        notes.push(format!("BatchNorm+Scale pair with '{}'", next.name()));
    }
    for &p in &node.params {
        let param = &graph.params[p];
        if param.owner != p {
            let owner = &graph.params[param.owner];
            notes.push(format!(
                "param {} shared with '{}'",
                param.index,
                graph.layers[owner.layer].name()
            ));
        }
    }
    for (j, w) in node.loss_weights.iter().enumerate() {
        if *w != 0.0 {
            notes.push(format!("loss weight {w} on top {j}"));
        }
    }
    if let Some(problem) = &node.problem {
        notes.push(format!("shape unknown: {problem}"));
    }
    notes
}

fn fate_text(fate: &LayerFate, frozen: bool) -> String {
    let mut text = match fate {
        LayerFate::Loaded => "loaded".to_string(),
        LayerFate::Initialised(fillers) => {
            format!("initialised by {} (not in the file)", fillers.join("/"))
        }
        LayerFate::ShapeMismatch { blob, file, net } => format!(
            "shape mismatch (param {blob}): file {} vs net {}: rename the layer to re-initialise it",
            shape_text(file),
            shape_text(net)
        ),
        LayerFate::BlobCountMismatch { file, net } => {
            format!(
                "blob count mismatch: file {file} vs net {net}: rename the layer to re-initialise it"
            )
        }
    };
    if frozen {
        text.push_str(", frozen (lr_mult 0)");
    }
    text
}

pub struct Totals {
    pub params: u64,
    pub macs: u64,
    pub activations: u64,
}

pub fn totals(graph: &NetGraph) -> Totals {
    Totals {
        params: graph
            .params
            .iter()
            .enumerate()
            .filter(|(i, p)| p.owner == *i)
            .map(|(_, p)| count(&p.shape))
            .sum(),
        macs: graph.layers.iter().map(macs).sum(),
        activations: graph
            .blobs
            .iter()
            .filter_map(|b| b.shape.as_ref())
            .map(|s| count(s))
            .sum(),
    }
}

pub fn table(graph: &NetGraph, plan: Option<&CopyPlan>) -> String {
    let header = [
        "#",
        "name",
        "type",
        "bottoms -> tops",
        "top shapes",
        "params",
        "lr/decay",
        "MACs",
        "notes",
    ];
    let mut rows: Vec<[String; 9]> = Vec::new();
    for (i, node) in graph
        .layers
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.auto_split)
    {
        let blob_names = |ids: &[usize]| {
            ids.iter()
                .map(|&b| graph.blobs[graph.user_blob(b)].name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let tops: Vec<String> = node
            .tops
            .iter()
            .map(|&t| dims(&graph.blobs[t].shape))
            .collect();
        let params: Vec<String> = node
            .param_defs
            .iter()
            .map(|d| shape_text(&d.shape))
            .collect();
        let mults: Vec<String> = node
            .params
            .iter()
            .map(|&p| format!("{}/{}", graph.params[p].lr_mult, graph.params[p].decay_mult))
            .collect();
        let mut note = notes(graph, i);
        if let Some(plan) = plan
            && let Some(lp) = plan.layers.iter().find(|l| l.layer == node.name())
        {
            note.insert(0, fate_text(&lp.fate, lp.frozen));
        }
        let m = macs(node);
        rows.push([
            i.to_string(),
            node.name().to_string(),
            node.type_name().to_string(),
            format!(
                "{} -> {}",
                blob_names(&node.bottoms),
                blob_names(&node.tops)
            ),
            tops.join(" "),
            params.join(" "),
            mults.join(" "),
            if m > 0 { human(m) } else { String::new() },
            note.join("; "),
        ]);
    }
    let mut widths = header.map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (k, cell) in cells.iter().enumerate() {
            if k + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = widths[k] - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "net: {} (phase {:?})", graph.name, graph.phase());
    let _ = writeln!(out, "{}", line(&header.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    let t = totals(graph);
    let _ = writeln!(
        out,
        "totals: {} parameters ({} MB), {} multiply-adds per forward, {} activation values ({} MB for the batch, data + diff {} MB)",
        t.params,
        t.params * 4 / 1_000_000,
        human(t.macs),
        t.activations,
        t.activations * 4 / 1_000_000,
        t.activations * 8 / 1_000_000
    );
    if let Some(plan) = plan {
        if plan.ignored.is_empty() {
            let _ = writeln!(out, "weights: every layer of the file is used");
        } else {
            let _ = writeln!(
                out,
                "weights: layers of the file the net ignores: {}",
                plan.ignored.join(", ")
            );
        }
    }
    let problems = graph.problems();
    if !problems.is_empty() {
        let _ = writeln!(out, "unknown shapes:");
        for (layer, why) in problems.iter().filter(|(_, w)| w != "input shapes unknown") {
            let _ = writeln!(out, "  {layer}: {why}");
        }
    }
    out
}

pub fn to_json(graph: &NetGraph, plan: Option<&CopyPlan>) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = graph
        .layers
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.auto_split)
        .map(|(i, node)| {
            let fate = plan.and_then(|p| p.layers.iter().find(|l| l.layer == node.name())).map(|l| fate_text(&l.fate, l.frozen));
            json!({
                "name": node.name(),
                "type": node.type_name(),
                "bottoms": node.bottoms.iter().map(|&b| graph.blobs[graph.user_blob(b)].name.clone()).collect::<Vec<_>>(),
                "tops": node.tops.iter().map(|&b| graph.blobs[b].name.clone()).collect::<Vec<_>>(),
                "top_shapes": node.tops.iter().map(|&b| graph.blobs[b].shape.clone()).collect::<Vec<_>>(),
                "params": node.params.iter().map(|&p| {
                    let param = &graph.params[p];
                    json!({"shape": param.shape, "count": count(&param.shape), "lr_mult": param.lr_mult, "decay_mult": param.decay_mult,
                           "shared_with": (param.owner != p).then(|| graph.layers[graph.params[param.owner].layer].name().to_string())})
                }).collect::<Vec<_>>(),
                "loss_weights": node.loss_weights,
                "macs": macs(node),
                "in_place": node.tops.iter().enumerate().any(|(j, _)| node.is_in_place(j)),
                "notes": notes(graph, i),
                "weights": fate,
                "problem": node.problem,
            })
        })
        .collect();
    let t = totals(graph);
    json!({
        "name": graph.name,
        "phase": format!("{:?}", graph.phase()).to_uppercase(),
        "layers": layers,
        "totals": {"parameters": t.params, "macs": t.macs, "activations": t.activations},
        "ignored_source_layers": plan.map(|p| p.ignored.clone()),
    })
}

/// Graphviz dot in the style of Caffe's draw_net.py: layers as boxes, blobs as octagons.
pub fn to_dot(graph: &NetGraph) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{\n  rankdir=LR;", esc(&graph.name));
    for (i, node) in graph
        .layers
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.auto_split)
    {
        let _ = writeln!(
            out,
            "  \"layer{i}\" [shape=record, style=filled, fillcolor=\"#6495ED\", label=\"{}\\n({})\"];",
            esc(node.name()),
            esc(node.type_name())
        );
    }
    for (b, blob) in graph
        .blobs
        .iter()
        .enumerate()
        .filter(|(b, _)| graph.user_blob(*b) == *b)
    {
        let _ = writeln!(
            out,
            "  \"blob{b}\" [shape=octagon, style=filled, fillcolor=\"#E0E0E0\", label=\"{}\\n{}\"];",
            esc(&blob.name),
            dims(&blob.shape)
        );
    }
    for (i, node) in graph
        .layers
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.auto_split)
    {
        for &b in &node.bottoms {
            let b = graph.user_blob(b);
            let _ = writeln!(out, "  \"blob{b}\" -> \"layer{i}\";");
        }
        for &t in &node.tops {
            let _ = writeln!(out, "  \"layer{i}\" -> \"blob{t}\";");
        }
    }
    out.push_str("}\n");
    out
}

pub fn run(args: &InspectArgs) -> Result<String> {
    let net = format::read_net_prototxt(&args.model)?;
    let state = make_state(&net, args.phase, args.level, &args.stages);
    let graph = NetGraph::build(&net, &state, Strictness::Lenient)?;
    let plan = match &args.weights {
        Some(paths) => {
            let mut merged = crate::proto::NetParameter::default();
            for path in paths.to_string_lossy().split(',') {
                // The structure is enough for the plan: the values stay in the file.
                let w = format::caffemodel::WeightsFile::open(std::path::Path::new(path))?;
                merged.layer.extend(w.net().layer.iter().cloned());
            }
            Some(weights::plan(&graph, &merged))
        }
        None => None,
    };
    Ok(match args.format.as_str() {
        "table" | "" => table(&graph, plan.as_ref()),
        "json" => serde_json::to_string_pretty(&to_json(&graph, plan.as_ref()))? + "\n",
        "dot" => to_dot(&graph),
        other => bail!("unknown format \"{other}\" (expected table, json or dot)"),
    })
}
