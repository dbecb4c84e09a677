//! `caffe-rs device_query [-gpu N|all]`: the GPU adapters wgpu finds, in `-gpu` index order, with
//! their backend, driver, device type, key limits and features (like `caffe device_query`).
use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::engine::gpu::{AdapterInfo, list_adapters, no_adapter_message};

/// Parses a `-gpu` value for one query: `None` / "all" lists every adapter, "N" (or "N,M") those.
fn wanted(gpu: Option<&str>, count: usize) -> Result<Vec<usize>> {
    match gpu.map(str::trim) {
        None | Some("all") | Some("") => Ok((0..count).collect()),
        Some(list) => list
            .split(',')
            .map(|s| {
                let i: usize = s.trim().parse().map_err(|_| anyhow::anyhow!("-gpu {s:?} is not an adapter index"))?;
                if i >= count {
                    bail!("GPU adapter {i} does not exist ({count} found; see `caffe-rs device_query`)");
                }
                Ok(i)
            })
            .collect(),
    }
}

/// One adapter's report block.
pub fn describe(a: &AdapterInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Device id: {}", a.index);
    let _ = writeln!(s, "Name: {}", a.name);
    let _ = writeln!(s, "Backend: {}", a.backend);
    let _ = writeln!(s, "Device type: {}", a.device_type);
    let _ = writeln!(s, "Driver: {} {}", a.driver, a.driver_info);
    let _ = writeln!(
        s,
        "Vendor / device id: {:#06x} / {:#06x}",
        a.vendor, a.device
    );
    let _ = writeln!(
        s,
        "Subgroup size: {}..{}",
        a.subgroup_min_size, a.subgroup_max_size
    );
    for (k, v) in &a.limits {
        let _ = writeln!(s, "{k}: {v}");
    }
    let _ = writeln!(s, "Features: {}", a.features.join(", "));
    s
}

/// The report for `-gpu` (None = every adapter); an error when there is no adapter at all.
pub fn report(gpu: Option<&str>) -> Result<String> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        bail!("{}", no_adapter_message());
    }
    let blocks: Vec<String> = wanted(gpu, adapters.len())?
        .into_iter()
        .map(|i| describe(&adapters[i]))
        .collect();
    Ok(blocks.join("\n"))
}
