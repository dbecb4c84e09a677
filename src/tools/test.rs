//! `caffe-rs test`: score a model over `-iterations` batches, printing Caffe's lines.
use std::path::PathBuf;

use anyhow::Result;

use crate::engine::Engine;
use crate::net::state::make_state;
use crate::net::{Net, NetGraph, Strictness};
use crate::proto::Phase;
use crate::solver::blob_loss_weight;
use crate::solver::log::{fmt_g, info};

pub struct TestArgs {
    pub model: PathBuf,
    pub weights: Option<String>,
    pub iterations: i32,
    pub level: i32,
    pub stages: Vec<String>,
}

/// Returns (output name, mean score) for every output value.
pub fn run(eng: &mut dyn Engine, args: &TestArgs) -> Result<Vec<(String, f32)>> {
    let param = crate::format::read_net_prototxt(&args.model)?;
    let state = make_state(&param, Phase::Test, args.level, &args.stages);
    let graph = NetGraph::build(&param, &state, Strictness::Strict)?;
    let weights = crate::format::caffemodel::WeightsFile::open_list(args.weights.as_deref())?;
    let mut net = Net::new_for_weights(graph, eng, None, &weights)?;
    net.forward_only = true;
    for w in weights {
        net.copy_trained_layers(eng, &w, &mut |l| info("net.cpp:1137", l))?;
    }
    info(
        "caffe.cpp:304",
        &format!("Running for {} iterations.", args.iterations),
    );
    let mut scores: Vec<(String, f32, f32)> = Vec::new();
    let mut loss = 0.0f32;
    for i in 0..args.iterations {
        net.forward(eng)?;
        loss += net.loss(eng);
        let mut idx = 0;
        for &b in &net.graph.outputs.clone() {
            let name = net.graph.blobs[b].name.clone();
            let weight = blob_loss_weight(&net.graph, b);
            for v in eng.download(net.blobs[b].data()) {
                if i == 0 {
                    scores.push((name.clone(), v, weight));
                } else {
                    scores[idx].1 += v;
                }
                idx += 1;
                info(
                    "caffe.cpp:323",
                    &format!("Batch {i}, {name} = {}", fmt_g(v as f64)),
                );
            }
        }
    }
    let n = args.iterations.max(1) as f32;
    info(
        "caffe.cpp:328",
        &format!("Loss: {}", fmt_g((loss / n) as f64)),
    );
    let mut out = Vec::new();
    for (name, sum, weight) in scores {
        let mean = sum / n;
        let extra = if weight != 0.0 {
            format!(
                " (* {} = {} loss)",
                fmt_g(weight as f64),
                fmt_g((weight * mean) as f64)
            )
        } else {
            String::new()
        };
        info(
            "caffe.cpp:340",
            &format!("{name} = {}{extra}", fmt_g(mean as f64)),
        );
        out.push((name, mean));
    }
    Ok(out)
}
