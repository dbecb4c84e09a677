//! One file per command; main.rs only parses flags and dispatches here.
pub mod compute_image_mean;
pub mod convert;
pub mod convert_imageset;
pub mod demo;
pub mod device_query;
pub mod forward;
pub mod inspect;
pub mod plot;
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

/// The device indices of a `-gpu` flag: "0", "0,1", "0,0" (one adapter twice), or "all".
pub fn gpu_devices(list: &str) -> Result<Vec<usize>> {
    if list.trim() == "all" {
        let n = crate::engine::gpu::list_adapters().len();
        if n == 0 {
            anyhow::bail!("{}", crate::engine::gpu::no_adapter_message());
        }
        return Ok((0..n).collect());
    }
    list.split(',')
        .map(|d| {
            d.trim().parse().map_err(|_| {
                anyhow::anyhow!("-gpu expects device indices like 0 or 0,1 or all, got \"{list}\"")
            })
        })
        .collect()
}

fn gpu_engine(index: usize) -> Result<Box<dyn Engine>> {
    Ok(Box::new(crate::engine::gpu::GpuEngine::new(index)?))
}
