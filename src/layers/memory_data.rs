//! MemoryData: outputs batches of data [N, C, H, W] and label [N] from arrays handed over through
//! the library API ([`crate::data::feed_memory_data`], Caffe's `MemoryDataLayer::Reset`), read
//! cyclically one batch per forward. The values are used as given (no transform), as in Caffe.
use anyhow::{Result, bail, ensure};

use super::data::upload_batch;
use super::{Ctx, Layer, Shapes};
use crate::data::{Batch, MemoryFeed, take_memory_feed};
use crate::proto::LayerParameter;

pub struct MemoryDataLayer {
    name: String,
    shape: [usize; 4],
    feed: Option<MemoryFeed>,
    pos: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.memory_data_param.unwrap_or_default();
    let name = param.name().to_string();
    let shape = [
        p.batch_size() as usize,
        p.channels() as usize,
        p.height() as usize,
        p.width() as usize,
    ];
    ensure!(
        shape.iter().all(|&d| d > 0),
        "MemoryData layer '{name}': batch_size, channels, height and width must all be positive (got {shape:?})"
    );
    Ok(Box::new(MemoryDataLayer {
        name,
        shape,
        feed: None,
        pos: 0,
    }))
}

impl Layer for MemoryDataLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        ensure!(
            bottoms.is_empty(),
            "MemoryData layer '{}' takes no bottom blobs",
            self.name
        );
        Ok(Shapes {
            tops: vec![self.shape.to_vec(), vec![self.shape[0]]],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let [n, c, h, w] = self.shape;
        let per = c * h * w;
        if let Some(feed) = take_memory_feed(&self.name) {
            let count = feed.labels.len();
            ensure!(
                feed.data.len() == count * per,
                "MemoryData layer '{}': {} values fed for {count} labels of {c}x{h}x{w} samples",
                self.name,
                feed.data.len()
            );
            ensure!(
                count > 0 && count % n == 0,
                "MemoryData layer '{}': the number of samples fed ({count}) must be a positive multiple of batch_size {n}",
                self.name
            );
            self.feed = Some(feed);
            self.pos = 0;
        }
        let Some(feed) = &self.feed else {
            bail!(
                "MemoryData layer '{}' has no data: feed it with caffe_rs::data::feed_memory_data before forward",
                self.name
            );
        };
        let batch = Batch {
            data: feed.data[self.pos * per..(self.pos + n) * per].to_vec(),
            label: feed.labels[self.pos..self.pos + n].to_vec(),
        };
        self.pos = (self.pos + n) % feed.labels.len();
        upload_batch(cx, &batch, &self.name)
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }
}
