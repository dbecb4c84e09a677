//! Host side of the elementwise family (shaders/elementwise.wgsl).
use anyhow::Result;

use super::GpuEngine;
use crate::engine::kernels::elementwise::ElementwiseKernel;

pub fn launch(e: &mut GpuEngine, k: &ElementwiseKernel) -> Result<()> {
    let name = format!("{k:?}");
    let variant = name.split([' ', '(', '{']).next().unwrap_or("?");
    Err(e.unimplemented(&format!("Elementwise::{variant}")))
}
