//! One file per command; main.rs only parses flags and dispatches here.
pub mod compute_image_mean;
pub mod convert;
pub mod convert_imageset;
pub mod demo;
pub mod forward;
pub mod inspect;
pub mod test;
pub mod time;
pub mod train;
pub mod upgrade;

use anyhow::Result;

use crate::engine::Engine;

/// The engine for a `-gpu` flag value ("0", "0,1", "all"). GPU mode needs an adapter.
pub fn engine_for_gpu_flag(list: &str) -> Result<Box<dyn Engine>> {
    let first = list.split(',').next().unwrap_or("0");
    let index: usize = if first == "all" {
        0
    } else {
        first.trim().parse().map_err(|_| {
            anyhow::anyhow!("-gpu expects device indices like 0 or 0,1 or all, got \"{list}\"")
        })?
    };
    gpu_engine(index)
}

fn gpu_engine(index: usize) -> Result<Box<dyn Engine>> {
    Ok(Box::new(crate::engine::gpu::GpuEngine::new(index)?))
}
