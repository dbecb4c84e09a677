//! Everything that feeds nets with data: databases (LMDB, LevelDB), image decoding and resizing,
//! Caffe's DataTransformer and the prefetch thread. The data layers in `layers/` and the dataset
//! tools (`convert_imageset`, `compute_image_mean`) are built on these.
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};

pub mod db;
pub mod hdf5;
pub mod image;
pub mod prefetch;
pub mod transformer;

pub use db::{Backend, Cursor, Writer};
pub use image::{ColorMode, Image};
pub use prefetch::{Batch, Prefetcher};
pub use transformer::DataTransformer;

/// Which share of a database a data layer reads in multi-device training: record `offset` is kept
/// when `offset % count == rank` (Caffe's `DataLayer::Skip`). TEST-phase layers read everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { rank: 0, count: 1 }
    }
}

impl Shard {
    pub fn keeps(&self, offset: u64) -> bool {
        self.count <= 1 || offset % self.count as u64 == self.rank as u64
    }
}

thread_local! {
    static THREAD_SHARD: Cell<Shard> = const { Cell::new(Shard { rank: 0, count: 1 }) };
}

/// Sets the shard data layers created on this thread will read (Caffe's per-thread
/// `solver_rank` / `solver_count`): a multi-device trainer calls this on each solver thread
/// before building that solver's net.
pub fn set_thread_shard(shard: Shard) {
    THREAD_SHARD.with(|s| s.set(shard));
}

pub fn thread_shard() -> Shard {
    THREAD_SHARD.with(|s| s.get())
}

/// Reads an image list (`convert_imageset` / ImageData `source`): one `<path> <label>` per line,
/// split at the last space so paths may contain spaces. Blank lines are skipped; a line without
/// a label or with a label that is not an integer is an error naming the file and line.
pub fn read_image_list(path: &str) -> Result<Vec<(String, i32)>> {
    let text = std::fs::read(path)
        .with_context(|| format!("data source \"{path}\": cannot read the image list"))?;
    let text = String::from_utf8_lossy(&text);
    let mut items = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some(pos) = line.rfind(' ') else {
            bail!(
                "{path}:{}: line \"{line}\" has no label (expected \"<image path> <label>\")",
                i + 1
            );
        };
        let (file, label) = (&line[..pos], line[pos + 1..].trim());
        let label: i32 = label.parse().map_err(|_| {
            anyhow::anyhow!("{path}:{}: label \"{label}\" is not an integer", i + 1)
        })?;
        if file.is_empty() {
            bail!("{path}:{}: line \"{line}\" has no image path", i + 1);
        }
        items.push((file.to_string(), label));
    }
    Ok(items)
}

/// Data handed to MemoryData layers through the library API, by layer name.
#[derive(Clone, Debug, Default)]
pub struct MemoryFeed {
    /// `n * channels * height * width` values.
    pub data: Vec<f32>,
    /// `n` labels.
    pub labels: Vec<f32>,
}

fn memory_feeds() -> &'static Mutex<HashMap<String, MemoryFeed>> {
    static FEEDS: OnceLock<Mutex<HashMap<String, MemoryFeed>>> = OnceLock::new();
    FEEDS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Gives the MemoryData layer named `layer` its data (Caffe's `MemoryDataLayer::Reset`): `n`
/// samples of the layer's channels x height x width, with `n` a multiple of its batch size.
/// The layer reads them cyclically, one batch per forward, starting over after a new feed.
pub fn feed_memory_data(layer: &str, data: Vec<f32>, labels: Vec<f32>) {
    let mut feeds = memory_feeds().lock().unwrap_or_else(|e| e.into_inner());
    feeds.insert(layer.to_string(), MemoryFeed { data, labels });
}

/// Takes the pending feed of a MemoryData layer, if any.
pub fn take_memory_feed(layer: &str) -> Option<MemoryFeed> {
    let mut feeds = memory_feeds().lock().unwrap_or_else(|e| e.into_inner());
    feeds.remove(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keeps_round_robin() {
        let s = Shard { rank: 1, count: 3 };
        let kept: Vec<u64> = (0..9).filter(|&o| s.keeps(o)).collect();
        assert_eq!(kept, vec![1, 4, 7]);
        assert!(Shard::default().keeps(5));
    }

    #[test]
    fn list_lines_split_at_last_space() {
        let dir = std::env::temp_dir().join(format!("caffe_rs_list_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("list.txt");
        std::fs::write(&p, "a b.png 3\r\nc.jpg -1\n\n").unwrap();
        let items = read_image_list(p.to_str().unwrap()).unwrap();
        assert_eq!(
            items,
            vec![("a b.png".to_string(), 3), ("c.jpg".to_string(), -1)]
        );
        std::fs::write(&p, "ok.png 1\nnolabel.png\n").unwrap();
        let err = read_image_list(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("list.txt:2") && err.contains("no label"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
