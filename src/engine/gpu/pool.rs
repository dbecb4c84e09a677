//! Host side of the pool family (shaders/pool.wgsl).
use anyhow::Result;

use super::GpuEngine;
use crate::engine::kernels::pool::PoolKernel;

pub fn launch(e: &mut GpuEngine, k: &PoolKernel) -> Result<()> {
    let name = format!("{k:?}");
    let variant = name.split([' ', '(', '{']).next().unwrap_or("?");
    Err(e.unimplemented(&format!("Pool::{variant}")))
}
