//! `caffe-rs convert`: .caffemodel <-> .safetensors, the direction taken from the file names.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::format::safetensors::{self as st, DType, ExportOptions, NameScheme};
use crate::net::state::make_state;
use crate::net::{NetGraph, Strictness};
use crate::proto::Phase;

pub struct ConvertArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    pub model: Option<PathBuf>,
    pub names: NameScheme,
    pub fold_bn: bool,
    pub dtype: DType,
}

fn is_safetensors(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Converts and returns the lines to report.
pub fn run(args: &ConvertArgs) -> Result<Vec<String>> {
    let model = match &args.model {
        Some(p) => Some(crate::format::read_net_prototxt(p)?),
        None => None,
    };
    match (is_safetensors(&args.input), is_safetensors(&args.output)) {
        (false, true) => {
            if args.fold_bn && model.is_none() {
                bail!("-fold_bn needs -model (the net tells which BatchNorm follows which layer)");
            }
            let model_text = match &args.model {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let folded_model = match (&model, args.fold_bn) {
                (Some(m), true) => {
                    let mut net = m.clone();
                    let mut weights = crate::format::caffemodel::read_net_binary(&args.input)?;
                    st::fold_bn_net(&mut net, &mut weights)?;
                    Some(net)
                }
                _ => None,
            };
            let opts = ExportOptions {
                names: args.names,
                dtype: args.dtype,
                fold_bn: args.fold_bn,
                model,
                model_text,
            };
            let report = st::caffemodel_to_safetensors(&args.input, &args.output, &opts)?;
            let mut lines = vec![format!(
                "Wrote {} tensors ({} bytes, {}) to {}",
                report.tensors.len(),
                report.bytes_written,
                args.dtype.as_str(),
                args.output.display()
            )];
            for (a, b) in &report.folded {
                lines.push(format!("Folded {b} into {a}"));
            }
            if let Some(net) = folded_model {
                let path = args.output.with_extension("prototxt");
                let text = crate::format::transcode::to_text(&net, "caffe.NetParameter");
                crate::format::caffemodel::write_atomic(&path, text.as_bytes())?;
                lines.push(format!("Wrote the folded net to {}", path.display()));
            }
            Ok(lines)
        }
        (true, false) => {
            let graph = match &model {
                Some(m) => Some(NetGraph::build(
                    m,
                    &make_state(m, Phase::Test, 0, &[]),
                    Strictness::Lenient,
                )?),
                None => None,
            };
            let expected = |layer: &str| -> Option<Vec<Vec<usize>>> {
                let g = graph.as_ref()?;
                let node = &g.layers[g.layer_index(layer)?];
                if node.problem.is_some() {
                    return None;
                }
                Some(node.param_defs.iter().map(|d| d.shape.clone()).collect())
            };
            let report = st::safetensors_to_caffemodel(
                &args.input,
                &args.output,
                model.as_ref(),
                Some(&expected),
            )?;
            let mut lines = vec![format!(
                "Wrote {} layers to {}",
                report.layers.len(),
                args.output.display()
            )];
            if !report.unused.is_empty() {
                lines.push(format!(
                    "Tensors that fit no layer (ignored): {}",
                    report.unused.join(", ")
                ));
            }
            if !report.missing.is_empty() {
                lines.push(format!(
                    "Layers without tensors (not written): {}",
                    report.missing.join(", ")
                ));
            }
            Ok(lines)
        }
        _ => bail!(
            "convert goes from .caffemodel to .safetensors or back; got {} -> {}",
            args.input.display(),
            args.output.display()
        ),
    }
}
