//! `compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]`: the mean image of a Datum database, written
//! as a BlobProto (legacy num/channels/height/width) like Caffe's tool, summed in float32 in record
//! order so the file is the same as the one real Caffe writes.
use anyhow::{Context, Result, bail, ensure};
use prost::Message;

use crate::data::db::{self, Backend};
use crate::data::image::ColorMode;
use crate::data::transformer::{Pixels, datum_pixels};
use crate::proto::{BlobProto, Datum};

#[derive(Clone, Debug)]
pub struct ComputeImageMeanArgs {
    pub input_db: String,
    /// Where to write the binaryproto; `None` only prints the per-channel means.
    pub output_file: Option<String>,
    /// -backend: "lmdb" (default) or "leveldb".
    pub backend: String,
}

impl Default for ComputeImageMeanArgs {
    fn default() -> Self {
        ComputeImageMeanArgs {
            input_db: String::new(),
            output_file: None,
            backend: "lmdb".to_string(),
        }
    }
}

/// The mean BlobProto of every record of a database (encoded records are decoded natively).
pub fn compute_mean(backend: Backend, path: &str) -> Result<BlobProto> {
    let mut cursor = db::open_cursor(backend, path)?;
    ensure!(
        cursor.valid(),
        "data source \"{path}\" ({}) is empty",
        backend.name()
    );
    let mut sum: Vec<f32> = Vec::new();
    let mut shape = (0usize, 0usize, 0usize);
    let mut count = 0u64;
    eprintln!("Starting iteration");
    while cursor.valid() {
        let key = String::from_utf8_lossy(cursor.key()).into_owned();
        let ctx = || format!("data source \"{path}\": record \"{key}\"");
        let datum =
            Datum::decode(cursor.value()).with_context(|| format!("{}: not a Datum", ctx()))?;
        let px = datum_pixels(&datum, ColorMode::Native).with_context(ctx)?;
        let s = px.sample();
        if count == 0 {
            shape = (s.channels, s.height, s.width);
            sum = vec![0.0; s.channels * s.height * s.width];
        } else if (s.channels, s.height, s.width) != shape {
            bail!(
                "{}: size {}x{}x{} differs from the first record's {}x{}x{}",
                ctx(),
                s.channels,
                s.height,
                s.width,
                shape.0,
                shape.1,
                shape.2
            );
        }
        match s.pixels {
            Pixels::U8Chw(d) => sum.iter_mut().zip(d).for_each(|(a, &v)| *a += v as f32),
            Pixels::F32Chw(d) => sum.iter_mut().zip(d).for_each(|(a, &v)| *a += v),
            Pixels::U8Hwc(d) => {
                let (c, plane) = (s.channels, s.height * s.width);
                for (i, px) in d.chunks_exact(c).enumerate() {
                    for (ch, &v) in px.iter().enumerate() {
                        sum[ch * plane + i] += v as f32;
                    }
                }
            }
        }
        count += 1;
        if count.is_multiple_of(100) {
            crate::solver::log::progress(&format!("compute_image_mean: {count} images"));
        }
        if count.is_multiple_of(10000) {
            crate::solver::log::info(
                "compute_image_mean.cpp:96",
                &format!("Processed {count} files."),
            );
        }
        cursor.next().with_context(ctx)?;
    }
    if !count.is_multiple_of(10000) {
        crate::solver::log::info(
            "compute_image_mean.cpp:96",
            &format!("Processed {count} files."),
        );
    }
    let n = count as f32;
    let data: Vec<f32> = sum.iter().map(|v| v / n).collect();
    Ok(BlobProto {
        num: Some(1),
        channels: Some(shape.0 as i32),
        height: Some(shape.1 as i32),
        width: Some(shape.2 as i32),
        data,
        ..Default::default()
    })
}

pub fn run(args: &ComputeImageMeanArgs) -> Result<()> {
    let backend = Backend::parse(&args.backend)?;
    let blob = compute_mean(backend, &args.input_db)?;
    if let Some(out) = &args.output_file {
        eprintln!("Write to {out}");
        std::fs::write(out, blob.encode_to_vec()).with_context(|| format!("cannot write {out}"))?;
    }
    let channels = blob.channels() as usize;
    let dim = (blob.height() * blob.width()) as usize;
    eprintln!("Number of channels: {channels}");
    for c in 0..channels {
        let total: f32 = blob.data[c * dim..(c + 1) * dim].iter().sum();
        eprintln!("mean_value channel [{c}]: {}", total / dim as f32);
    }
    Ok(())
}
