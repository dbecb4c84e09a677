//! HDF5Data: reads the HDF5 files listed in `hdf5_data_param.source` (one path per line); each
//! top is the dataset of the same name, read `batch_size` rows at a time, moving on to the next
//! file at the end of one and cycling. `shuffle` permutes the files and the rows of each file.
//! As in Caffe this layer is not prefetched: whole files are held in memory.
use anyhow::{Context, Result, anyhow, bail, ensure};

use super::{Ctx, Layer, Shapes};
use crate::data::Shard;
use crate::data::hdf5::read_dataset;
use crate::proto::{LayerParameter, Phase};
use crate::rng::Rng;

pub struct Hdf5DataLayer {
    name: String,
    phase: Phase,
    source: String,
    batch_size: usize,
    shuffle: bool,
    tops: Vec<String>,
    /// The share of the rows this layer reads (multi-device training); TEST ignores it.
    pub shard: Shard,
    files: Vec<String>,
    file_perm: Vec<usize>,
    current_file: usize,
    loaded: Option<usize>,
    current_row: usize,
    /// (shape, values) of each top's dataset in the loaded file.
    blobs: Vec<(Vec<usize>, Vec<f32>)>,
    data_perm: Vec<usize>,
    offset: u64,
    rng: Option<Rng>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.hdf5_data_param.clone().unwrap_or_default();
    let name = param.name().to_string();
    ensure!(
        p.batch_size() > 0,
        "HDF5Data layer '{name}': hdf5_data_param.batch_size must be positive"
    );
    ensure!(
        !param.top.is_empty(),
        "HDF5Data layer '{name}' needs at least one top (the dataset names)"
    );
    Ok(Box::new(Hdf5DataLayer {
        name,
        phase: param.phase(),
        source: p.source().to_string(),
        batch_size: p.batch_size() as usize,
        shuffle: p.shuffle(),
        tops: param.top.clone(),
        shard: crate::data::thread_shard(),
        files: Vec::new(),
        file_perm: Vec::new(),
        current_file: 0,
        loaded: None,
        current_row: 0,
        blobs: Vec::new(),
        data_perm: Vec::new(),
        offset: 0,
        rng: None,
    }))
}

impl Hdf5DataLayer {
    /// Caffe's LoadHDF5FileData: every top's dataset, all with the same number of rows.
    fn load(&mut self, file_index: usize) -> Result<()> {
        let path = self.files[file_index].clone();
        let mut blobs = Vec::with_capacity(self.tops.len());
        for top in &self.tops {
            let (shape, values) = read_dataset(&path, top)?;
            ensure!(
                !shape.is_empty(),
                "HDF5 file {path}, dataset \"{top}\" has no axes"
            );
            blobs.push((shape, values));
        }
        let num = blobs[0].0[0];
        ensure!(
            num > 0,
            "HDF5 file {path}: dataset \"{}\" has no rows",
            self.tops[0]
        );
        for (top, (shape, _)) in self.tops.iter().zip(&blobs) {
            ensure!(
                shape[0] == num,
                "HDF5 file {path}: dataset \"{top}\" has {} rows but \"{}\" has {num}",
                shape[0],
                self.tops[0]
            );
        }
        if !self.blobs.is_empty() {
            for ((top, (shape, _)), (old_shape, _)) in self.tops.iter().zip(&blobs).zip(&self.blobs)
            {
                ensure!(
                    shape[1..] == old_shape[1..],
                    "HDF5 file {path}: dataset \"{top}\" has rows of shape {:?} but the first file's are {:?}",
                    &shape[1..],
                    &old_shape[1..]
                );
            }
        }
        self.blobs = blobs;
        self.data_perm = (0..num).collect();
        if self.shuffle
            && let Some(rng) = self.rng.as_mut()
        {
            rng.shuffle(&mut self.data_perm);
        }
        self.loaded = Some(file_index);
        Ok(())
    }

    fn next_row(&mut self) -> Result<()> {
        self.current_row += 1;
        if self.current_row == self.blobs[0].0[0] {
            if self.files.len() > 1 {
                self.current_file += 1;
                if self.current_file == self.files.len() {
                    self.current_file = 0;
                    if self.shuffle
                        && let Some(rng) = self.rng.as_mut()
                    {
                        rng.shuffle(&mut self.file_perm);
                    }
                }
                self.load(self.file_perm[self.current_file])?;
            } else if self.shuffle
                && let Some(rng) = self.rng.as_mut()
            {
                rng.shuffle(&mut self.data_perm);
            }
            self.current_row = 0;
        }
        self.offset += 1;
        Ok(())
    }
}

impl Layer for Hdf5DataLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        ensure!(
            bottoms.is_empty(),
            "HDF5Data layer '{}' takes no bottom blobs",
            self.name
        );
        if self.loaded.is_none() {
            if self.source.is_empty() {
                bail!(
                    "data source is not set (hdf5_data_param.source of layer '{}')",
                    self.name
                );
            }
            let text = std::fs::read_to_string(&self.source)
                .map_err(|e| anyhow!("data source \"{}\" (HDF5 file list): {e}", self.source))?;
            self.files = text.split_whitespace().map(str::to_string).collect();
            ensure!(
                !self.files.is_empty(),
                "data source \"{}\" (HDF5 file list) lists no HDF5 files",
                self.source
            );
            self.file_perm = (0..self.files.len()).collect();
            self.load(0)
                .with_context(|| format!("data source \"{}\"", self.source))?;
        }
        let tops = self
            .blobs
            .iter()
            .map(|(shape, _)| {
                let mut s = shape.clone();
                s[0] = self.batch_size;
                s
            })
            .collect();
        Ok(Shapes {
            tops,
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        if self.rng.is_none() {
            self.rng = Some(Rng::new(cx.rng.next_u64()));
            if self.shuffle {
                if let Some(rng) = self.rng.as_mut() {
                    rng.shuffle(&mut self.file_perm);
                }
                self.load(self.file_perm[0])
                    .with_context(|| format!("data source \"{}\"", self.source))?;
            }
        }
        ensure!(
            cx.tops.len() == self.blobs.len(),
            "HDF5Data layer '{}': top count changed",
            self.name
        );
        let dims: Vec<usize> = self
            .blobs
            .iter()
            .map(|(s, _)| s[1..].iter().product())
            .collect();
        let mut outs: Vec<Vec<f32>> = dims
            .iter()
            .map(|d| vec![0.0; d * self.batch_size])
            .collect();
        let shard = if self.phase == Phase::Test {
            Shard::default()
        } else {
            self.shard
        };
        for i in 0..self.batch_size {
            while !shard.keeps(self.offset) {
                self.next_row()?;
            }
            let row = self.data_perm[self.current_row];
            for ((out, (_, values)), &d) in outs.iter_mut().zip(&self.blobs).zip(&dims) {
                out[i * d..(i + 1) * d].copy_from_slice(&values[row * d..(row + 1) * d]);
            }
            self.next_row()?;
        }
        for (top, out) in cx.tops.iter().zip(&outs) {
            ensure!(
                top.count() == out.len(),
                "HDF5Data layer '{}': {} values for a top of {}",
                self.name,
                out.len(),
                top.count()
            );
            cx.eng.upload(top.data(), out);
        }
        Ok(())
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }
}
