//! `caffe-rs upgrade`: V0/V1 nets (text or binary) and legacy solver files to the current format,
//! as Caffe's upgrade_net_proto_text / upgrade_net_proto_binary / upgrade_solver_proto_text.
use std::path::Path;

use anyhow::{Context, Result};

use crate::format::{caffemodel, transcode, upgrade};
use crate::proto::{NetParameter, SolverParameter};

fn is_binary(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_err()
}

/// Upgrades `input` into `output` (same kind: text stays text, binary stays binary) and returns a
/// one-line report.
pub fn run(input: &Path, output: &Path) -> Result<String> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    if is_binary(&bytes) {
        let mut net = caffemodel::decode_net_bytes_raw(&bytes, &input.display().to_string())?;
        let changed = upgrade::upgrade_net(&mut net)?;
        caffemodel::write_net_binary(output, &net)?;
        return Ok(report(input, output, changed, "binary net"));
    }
    let text = String::from_utf8_lossy(&bytes);
    let label = input.display().to_string();
    let looks_like_solver =
        transcode::parse_text::<SolverParameter>(&text, &label, "caffe.SolverParameter").is_ok()
            && transcode::parse_text::<NetParameter>(&text, &label, "caffe.NetParameter").is_err();
    if looks_like_solver {
        let mut solver: SolverParameter =
            transcode::parse_text(&text, &label, "caffe.SolverParameter")?;
        let changed = upgrade::upgrade_solver(&mut solver)?;
        caffemodel::write_atomic(
            output,
            transcode::to_text(&solver, "caffe.SolverParameter").as_bytes(),
        )?;
        return Ok(report(input, output, changed, "solver"));
    }
    let mut net: NetParameter = transcode::parse_text(&text, &label, "caffe.NetParameter")?;
    let changed = upgrade::upgrade_net(&mut net)?;
    caffemodel::write_atomic(
        output,
        transcode::to_text(&net, "caffe.NetParameter").as_bytes(),
    )?;
    Ok(report(input, output, changed, "net"))
}

fn report(input: &Path, output: &Path, changed: bool, what: &str) -> String {
    if changed {
        format!(
            "Wrote upgraded {what} {} to {}",
            input.display(),
            output.display()
        )
    } else {
        format!(
            "{what} {} was already in the current format; wrote it to {}",
            input.display(),
            output.display()
        )
    }
}
