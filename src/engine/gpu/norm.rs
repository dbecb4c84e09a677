//! Host side of the norm family (shaders/norm.wgsl).
use anyhow::Result;

use super::GpuEngine;
use crate::engine::kernels::norm::NormKernel;

pub fn launch(e: &mut GpuEngine, k: &NormKernel) -> Result<()> {
    let name = format!("{k:?}");
    let variant = name.split([' ', '(', '{']).next().unwrap_or("?");
    Err(e.unimplemented(&format!("Norm::{variant}")))
}
