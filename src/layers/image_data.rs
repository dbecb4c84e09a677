//! ImageData: reads the images named in a list file (`<path> <label>` lines, split at the last
//! space), decodes them as OpenCV does (BGR), optionally resizes them (INTER_LINEAR), transforms
//! them on a prefetch thread and outputs data [N, C, H, W] + label [N].
//!
//! Paths are `root_folder + path` (plain concatenation, as in Caffe); relative ones are relative
//! to the working directory.
use anyhow::{Context, Result, anyhow, bail, ensure};
use rayon::prelude::*;

use super::data::upload_batch;
use super::{Ctx, Layer, Shapes};
use crate::data::image::{ColorMode, Image, read_image, resize_linear};
use crate::data::transformer::{Sample, check_mean_shape};
use crate::data::{Batch, DataTransformer, Prefetcher, read_image_list};
use crate::proto::{LayerParameter, Phase, TransformationParameter};
use crate::rng::Rng;

pub struct ImageDataLayer {
    name: String,
    phase: Phase,
    source: String,
    root_folder: String,
    batch_size: usize,
    rand_skip: usize,
    shuffle: bool,
    new_height: usize,
    new_width: usize,
    mode: ColorMode,
    transform: TransformationParameter,
    output_labels: bool,
    prefetch: usize,
    lines: Vec<(String, i32)>,
    item: Option<[usize; 3]>,
    prefetcher: Option<Prefetcher<Batch>>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.image_data_param.clone().unwrap_or_default();
    let name = param.name().to_string();
    ensure!(
        p.batch_size() > 0,
        "ImageData layer '{name}': image_data_param.batch_size must be positive"
    );
    let (nh, nw) = (p.new_height() as usize, p.new_width() as usize);
    ensure!(
        (nh == 0) == (nw == 0),
        "ImageData layer '{name}': new_height and new_width must be set together (got {nh} and {nw})"
    );
    Ok(Box::new(ImageDataLayer {
        name,
        phase: param.phase(),
        source: p.source().to_string(),
        root_folder: p.root_folder().to_string(),
        batch_size: p.batch_size() as usize,
        rand_skip: p.rand_skip() as usize,
        shuffle: p.shuffle(),
        new_height: nh,
        new_width: nw,
        mode: ColorMode::from_is_color(p.is_color()),
        transform: param.transform_param.clone().unwrap_or_default(),
        output_labels: param.top.len() != 1,
        // Caffe's prefetching layers all take the depth from data_param.prefetch (default 4).
        prefetch: param.data_param.as_ref().map_or(4, |d| d.prefetch()).max(1) as usize,
        lines: Vec::new(),
        item: None,
        prefetcher: None,
    }))
}

/// Reads, decodes and (when asked) resizes one listed image.
fn load(root: &str, file: &str, mode: ColorMode, new_h: usize, new_w: usize) -> Result<Image> {
    let path = format!("{root}{file}");
    let img = read_image(&path, mode)?;
    if new_h > 0 && new_w > 0 {
        resize_linear(&img, new_w, new_h).with_context(|| format!("resizing {path}"))
    } else {
        Ok(img)
    }
}

impl ImageDataLayer {
    fn start(&mut self, seed: u64) -> Result<()> {
        let item = self
            .item
            .ok_or_else(|| anyhow!("ImageData layer '{}': forward before reshape", self.name))?;
        let mut lines = self.lines.clone();
        let (root, mode, nh, nw) = (
            self.root_folder.clone(),
            self.mode,
            self.new_height,
            self.new_width,
        );
        let (batch_size, labels, shuffle) = (self.batch_size, self.output_labels, self.shuffle);
        let mut rng = Rng::new(seed);
        let mut transformer = DataTransformer::new(&self.transform, self.phase)?;
        transformer.reseed(rng.next_u64());
        if shuffle {
            rng.shuffle(&mut lines);
        }
        let mut pos = if self.rand_skip > 0 {
            rng.below(self.rand_skip) % lines.len()
        } else {
            0
        };
        let p = Prefetcher::spawn(&self.name, self.prefetch, move || {
            let per_item: usize = item.iter().product();
            Ok(move |reuse: Option<Batch>| -> Result<Batch> {
                // Pick the batch's images in order, then read + decode + transform in parallel.
                let mut picked: Vec<(String, i32, u64)> = Vec::with_capacity(batch_size);
                for _ in 0..batch_size {
                    let (file, label) = &lines[pos];
                    picked.push((file.clone(), *label, transformer.next_seed()));
                    pos += 1;
                    if pos >= lines.len() {
                        pos = 0;
                        if shuffle {
                            rng.shuffle(&mut lines);
                        }
                    }
                }
                let mut data = reuse.map(|b| b.data).unwrap_or_default();
                data.resize(batch_size * per_item, 0.0);
                let t = &transformer;
                data.par_chunks_mut(per_item).zip(picked.par_iter()).try_for_each(|(out, (file, _, seed))| {
                    let img = load(&root, file, mode, nh, nw)?;
                    let shape =
                        t.output_shape(img.channels, img.height, img.width).with_context(|| format!("image {root}{file}"))?;
                    if shape != item {
                        bail!(
                            "image {root}{file} gives a {}x{}x{} sample but the first image gave {}x{}x{} \
                             (set new_height/new_width or use images of one size)",
                            shape[0],
                            shape[1],
                            shape[2],
                            item[0],
                            item[1],
                            item[2]
                        );
                    }
                    t.transform_with(&Sample::from_image(&img), out, &mut Rng::new(*seed))
                        .with_context(|| format!("image {root}{file}"))
                })?;
                let label = if labels {
                    picked.iter().map(|(_, l, _)| *l as f32).collect()
                } else {
                    Vec::new()
                };
                Ok(Batch { data, label })
            })
        })?;
        self.prefetcher = Some(p);
        Ok(())
    }
}

impl Layer for ImageDataLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        ensure!(
            bottoms.is_empty(),
            "ImageData layer '{}' takes no bottom blobs",
            self.name
        );
        if self.item.is_none() {
            if self.source.is_empty() {
                bail!(
                    "data source is not set (image_data_param.source of layer '{}')",
                    self.name
                );
            }
            if !std::path::Path::new(&self.source).exists() {
                bail!(
                    "data source \"{}\" (image list) does not exist",
                    self.source
                );
            }
            let lines = read_image_list(&self.source)?;
            ensure!(
                !lines.is_empty(),
                "data source \"{}\" (image list) lists no images",
                self.source
            );
            let t = DataTransformer::new(&self.transform, self.phase)
                .with_context(|| format!("ImageData layer '{}'", self.name))?;
            let (file, _) = &lines[0];
            let img = load(
                &self.root_folder,
                file,
                self.mode,
                self.new_height,
                self.new_width,
            )
            .with_context(|| format!("data source \"{}\"", self.source))?;
            let ctx = || format!("image {}{file}", self.root_folder);
            check_mean_shape(&t, img.channels, img.height, img.width).with_context(ctx)?;
            self.item = Some(
                t.output_shape(img.channels, img.height, img.width)
                    .with_context(ctx)?,
            );
            self.lines = lines;
        }
        let [c, h, w] = self.item.unwrap_or_default();
        let mut tops = vec![vec![self.batch_size, c, h, w]];
        if self.output_labels {
            tops.push(vec![self.batch_size]);
        }
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        if self.prefetcher.is_none() {
            let seed = cx.rng.next_u64();
            self.start(seed)?;
        }
        let batch = match self.prefetcher.as_mut() {
            Some(p) => p.next_item()?,
            None => bail!(
                "ImageData layer '{}': prefetch thread not running",
                self.name
            ),
        };
        upload_batch(cx, &batch, &self.name)?;
        if let Some(p) = &self.prefetcher {
            p.recycle(batch);
        }
        Ok(())
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }
}
