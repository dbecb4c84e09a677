//! Host side of the softmax family (shaders/softmax.wgsl).
use anyhow::Result;

use super::GpuEngine;
use crate::engine::kernels::softmax::SoftmaxKernel;

pub fn launch(e: &mut GpuEngine, k: &SoftmaxKernel) -> Result<()> {
    let name = format!("{k:?}");
    let variant = name.split([' ', '(', '{']).next().unwrap_or("?");
    Err(e.unimplemented(&format!("Softmax::{variant}")))
}
