//! Host side of the transfer family (shaders/transfer.wgsl).
use anyhow::Result;

use super::GpuEngine;
use crate::engine::kernels::transfer::TransferKernel;

pub fn launch(e: &mut GpuEngine, k: &TransferKernel) -> Result<()> {
    let name = format!("{k:?}");
    let variant = name.split([' ', '(', '{']).next().unwrap_or("?");
    Err(e.unimplemented(&format!("Transfer::{variant}")))
}
