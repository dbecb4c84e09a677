//! Data: reads Datum records from an LMDB or LevelDB (`data_param`), transforms them
//! (`transform_param`) on a prefetch thread and outputs data [N, C, H, W] (+ label [N]).
//!
//! `reshape` reads the first record to learn the shapes, so a missing or empty database is
//! reported while the net is built; those errors start with `data source "<path>"`. Records are
//! read cyclically from the first one (a resumed run starts from record 0, as in Caffe).
use anyhow::{Context, Result, anyhow, bail, ensure};
use prost::Message;
use rayon::prelude::*;

use super::{Ctx, Layer, Shapes};
use crate::data::db::{self, Backend, Cursor};
use crate::data::transformer::{check_mean_shape, datum_pixels};
use crate::data::{Batch, DataTransformer, Prefetcher, Shard};
use crate::proto::{Datum, LayerParameter, Phase, TransformationParameter};
use crate::rng::Rng;

pub struct DataLayer {
    name: String,
    phase: Phase,
    source: String,
    backend: Backend,
    batch_size: usize,
    rand_skip: usize,
    prefetch: usize,
    transform: TransformationParameter,
    output_labels: bool,
    /// The share of the records this layer reads (multi-device training); TEST ignores it.
    pub shard: Shard,
    /// [C, H, W] of one transformed record, known after `reshape`.
    item: Option<[usize; 3]>,
    prefetcher: Option<Prefetcher<Batch>>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let dp = param.data_param.clone().unwrap_or_default();
    let name = param.name().to_string();
    ensure!(
        dp.batch_size() > 0,
        "Data layer '{name}': data_param.batch_size must be positive"
    );
    Ok(Box::new(DataLayer {
        name,
        phase: param.phase(),
        source: dp.source().to_string(),
        backend: Backend::from_proto(dp.backend()),
        batch_size: dp.batch_size() as usize,
        rand_skip: dp.rand_skip() as usize,
        prefetch: dp.prefetch().max(1) as usize,
        transform: param.transform_param.clone().unwrap_or_default(),
        output_labels: param.top.len() != 1,
        shard: crate::data::thread_shard(),
        item: None,
        prefetcher: None,
    }))
}

fn parse_datum(cursor: &dyn Cursor, source: &str) -> Result<Datum> {
    Datum::decode(cursor.value()).map_err(|e| {
        anyhow!(
            "data source \"{source}\": record \"{}\" is not a Datum: {e}",
            String::from_utf8_lossy(cursor.key())
        )
    })
}

/// Reads records in order, cycling back to the first after the last.
struct RecordReader {
    cursor: Box<dyn Cursor>,
    source: String,
    offset: u64,
}

impl RecordReader {
    fn open(backend: Backend, source: &str) -> Result<Self> {
        let cursor = db::open_cursor(backend, source)?;
        ensure!(
            cursor.valid(),
            "data source \"{source}\" ({}) is empty",
            backend.name()
        );
        Ok(RecordReader {
            cursor,
            source: source.to_string(),
            offset: 0,
        })
    }

    fn advance(&mut self) -> Result<()> {
        self.cursor
            .next()
            .with_context(|| format!("data source \"{}\"", self.source))?;
        if !self.cursor.valid() {
            self.cursor
                .seek_to_first()
                .with_context(|| format!("data source \"{}\"", self.source))?;
            ensure!(
                self.cursor.valid(),
                "data source \"{}\" became empty",
                self.source
            );
        }
        self.offset += 1;
        Ok(())
    }

    fn key(&self) -> String {
        String::from_utf8_lossy(self.cursor.key()).into_owned()
    }
}

impl DataLayer {
    fn start(&mut self, seed: u64) -> Result<()> {
        let item = self
            .item
            .ok_or_else(|| anyhow!("Data layer '{}': forward before reshape", self.name))?;
        let (backend, source) = (self.backend, self.source.clone());
        let (batch_size, rand_skip, labels) = (self.batch_size, self.rand_skip, self.output_labels);
        let shard = if self.phase == Phase::Test {
            Shard::default()
        } else {
            self.shard
        };
        let mut transformer = DataTransformer::new(&self.transform, self.phase)?;
        let mut rng = Rng::new(seed);
        transformer.reseed(rng.next_u64());
        let p = Prefetcher::spawn(&self.name, self.prefetch, move || {
            let mut reader = RecordReader::open(backend, &source)?;
            if rand_skip > 0 {
                for _ in 0..rng.below(rand_skip) {
                    reader.advance()?;
                }
            }
            let per_item: usize = item.iter().product();
            Ok(move |reuse: Option<Batch>| -> Result<Batch> {
                // Read the batch's records in order, then decode + transform them in parallel.
                let mut records: Vec<(String, Vec<u8>)> = Vec::with_capacity(batch_size);
                for _ in 0..batch_size {
                    while !shard.keeps(reader.offset) {
                        reader.advance()?;
                    }
                    records.push((reader.key(), reader.cursor.value().to_vec()));
                    reader.advance()?;
                }
                let seeds: Vec<u64> = (0..batch_size).map(|_| transformer.next_seed()).collect();
                let mut data = reuse.map(|b| b.data).unwrap_or_default();
                data.resize(batch_size * per_item, 0.0);
                let t = &transformer;
                let label: Vec<f32> = data
                    .par_chunks_mut(per_item)
                    .zip(records.par_iter())
                    .zip(seeds.par_iter())
                    .map(|((out, (key, value)), &seed)| {
                        let ctx = || format!("data source \"{source}\": record \"{key}\"");
                        let datum = Datum::decode(value.as_slice()).map_err(|e| anyhow!("{}: not a Datum: {e}", ctx()))?;
                        let px = datum_pixels(&datum, t.color_mode()).with_context(ctx)?;
                        let s = px.sample();
                        let shape = t.output_shape(s.channels, s.height, s.width).with_context(ctx)?;
                        if shape != item {
                            bail!(
                                "{}: gives a {}x{}x{} sample but the first record gave {}x{}x{} (all records must have the same size)",
                                ctx(),
                                shape[0],
                                shape[1],
                                shape[2],
                                item[0],
                                item[1],
                                item[2]
                            );
                        }
                        t.transform_with(&s, out, &mut Rng::new(seed)).with_context(ctx)?;
                        Ok(datum.label() as f32)
                    })
                    .collect::<Result<Vec<f32>>>()?;
                Ok(Batch {
                    data,
                    label: if labels { label } else { Vec::new() },
                })
            })
        })?;
        self.prefetcher = Some(p);
        Ok(())
    }
}

impl Layer for DataLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        ensure!(
            bottoms.is_empty(),
            "Data layer '{}' takes no bottom blobs",
            self.name
        );
        if self.item.is_none() {
            let t = DataTransformer::new(&self.transform, self.phase)
                .with_context(|| format!("Data layer '{}'", self.name))?;
            let reader = RecordReader::open(self.backend, &self.source)?;
            let datum = parse_datum(reader.cursor.as_ref(), &self.source)?;
            let ctx = || {
                format!(
                    "data source \"{}\": record \"{}\"",
                    self.source,
                    reader.key()
                )
            };
            let px = datum_pixels(&datum, t.color_mode()).with_context(ctx)?;
            let s = px.sample();
            check_mean_shape(&t, s.channels, s.height, s.width).with_context(ctx)?;
            self.item = Some(
                t.output_shape(s.channels, s.height, s.width)
                    .with_context(ctx)?,
            );
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
            None => bail!("Data layer '{}': prefetch thread not running", self.name),
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

/// Puts a prepared batch into top 0 (data) and, when present, top 1 (labels).
pub(crate) fn upload_batch(cx: &mut Ctx, batch: &Batch, layer: &str) -> Result<()> {
    let top = cx
        .tops
        .first()
        .ok_or_else(|| anyhow!("data layer '{layer}' has no top blob"))?;
    ensure!(
        top.count() == batch.data.len(),
        "data layer '{layer}': batch has {} values but the top blob holds {}",
        batch.data.len(),
        top.count()
    );
    cx.eng.upload(top.data(), &batch.data);
    if let Some(label_top) = cx.tops.get(1) {
        ensure!(
            label_top.count() == batch.label.len(),
            "data layer '{layer}': {} labels but the label blob holds {}",
            batch.label.len(),
            label_top.count()
        );
        cx.eng.upload(label_top.data(), &batch.label);
    }
    Ok(())
}
