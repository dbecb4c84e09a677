//! Host side of the conv family (shaders/conv.wgsl).
use anyhow::Result;

use super::GpuEngine;
use crate::engine::kernels::conv::ConvKernel;

pub fn launch(e: &mut GpuEngine, k: &ConvKernel) -> Result<()> {
    let name = format!("{k:?}");
    let variant = name.split([' ', '(', '{']).next().unwrap_or("?");
    Err(e.unimplemented(&format!("Conv::{variant}")))
}
