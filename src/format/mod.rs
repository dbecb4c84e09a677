//! Bytes <-> messages. Nothing in here knows about engines or the graph.
pub mod caffemodel;
pub mod tensors;
pub mod text;
pub mod transcode;
pub mod upgrade;

use std::path::Path;

use anyhow::{Context, Result};

use crate::proto::{NetParameter, SolverParameter};

/// Reads a text .prototxt net and upgrades it from V0/V1 if needed.
pub fn read_net_prototxt(path: &Path) -> Result<NetParameter> {
    let mut net: NetParameter = transcode::read_text_file(path, "caffe.NetParameter")?;
    upgrade::upgrade_net(&mut net).with_context(|| format!("upgrading {}", path.display()))?;
    Ok(net)
}

/// Reads a text solver file and upgrades its legacy `solver_type`.
pub fn read_solver_prototxt(path: &Path) -> Result<SolverParameter> {
    let mut solver: SolverParameter = transcode::read_text_file(path, "caffe.SolverParameter")?;
    upgrade::upgrade_solver(&mut solver)
        .with_context(|| format!("upgrading {}", path.display()))?;
    default_snapshot_prefix(path, &mut solver);
    Ok(solver)
}

/// Caffe's UpgradeSnapshotPrefixProperty: no prefix -> the solver path without extension; a
/// prefix naming a directory -> that directory / the solver file's stem.
pub fn default_snapshot_prefix(solver_path: &Path, solver: &mut SolverParameter) {
    match &solver.snapshot_prefix {
        None => solver.snapshot_prefix = Some(solver_path.with_extension("").display().to_string()),
        Some(prefix) if Path::new(prefix).is_dir() => {
            let stem = solver_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            solver.snapshot_prefix = Some(Path::new(prefix).join(stem).display().to_string());
        }
        Some(_) => {}
    }
}
pub mod safetensors;
