//! HDF5Output: writes its two bottoms to `hdf5_output_param.file_name` as the datasets "data" and
//! "label" with Caffe's legacy 4-D shapes (num, channels, height, width). Each forward rewrites
//! the file with the current batch (real Caffe can only write one batch: a second forward fails
//! because the datasets exist).
use anyhow::{Result, bail, ensure};

use super::{Ctx, Layer, Shapes};
use crate::data::hdf5::write_datasets;
use crate::proto::LayerParameter;

pub struct Hdf5OutputLayer {
    name: String,
    file_name: String,
    shapes: Vec<Vec<usize>>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let p = param.hdf5_output_param.clone().unwrap_or_default();
    let name = param.name().to_string();
    ensure!(
        !p.file_name().is_empty(),
        "HDF5Output layer '{name}': hdf5_output_param.file_name is not set"
    );
    Ok(Box::new(Hdf5OutputLayer {
        name,
        file_name: p.file_name().to_string(),
        shapes: Vec::new(),
    }))
}

/// Caffe's legacy (num, channels, height, width) view of a blob of at most 4 axes.
fn legacy_4d(shape: &[usize], layer: &str) -> Result<Vec<usize>> {
    if shape.len() > 4 {
        bail!(
            "HDF5Output layer '{layer}': cannot save a {}-axis blob (at most 4 axes)",
            shape.len()
        );
    }
    Ok((0..4).map(|i| shape.get(i).copied().unwrap_or(1)).collect())
}

impl Layer for Hdf5OutputLayer {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        ensure!(
            bottoms.len() == 2,
            "HDF5Output layer '{}' takes 2 bottoms (data, label), got {}",
            self.name,
            bottoms.len()
        );
        let (d, l) = (
            legacy_4d(&bottoms[0], &self.name)?,
            legacy_4d(&bottoms[1], &self.name)?,
        );
        ensure!(
            d[0] == l[0],
            "HDF5Output layer '{}': data has {} items but label has {}",
            self.name,
            d[0],
            l[0]
        );
        self.shapes = vec![d, l];
        Ok(Shapes {
            tops: vec![],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        let data = cx.eng.download(cx.bottoms[0].data());
        let label = cx.eng.download(cx.bottoms[1].data());
        write_datasets(
            &self.file_name,
            &[
                ("data", &self.shapes[0], &data),
                ("label", &self.shapes[1], &label),
            ],
        )
    }

    fn can_propagate_down(&self, _bottom: usize) -> bool {
        false
    }
}
