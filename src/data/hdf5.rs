//! HDF5 datasets as Caffe's HDF5Data / HDF5Output layers use them (`hdf5_load_nd_dataset`,
//! `hdf5_save_nd_dataset`), through the pure-Rust `hdf5-pure` crate: no libhdf5 needed.
use anyhow::{Result, anyhow, ensure};

/// Reads dataset `name` of the HDF5 file at `path` as float32 (other numeric types are
/// converted, as H5LTread_dataset_float does). Returns (shape, values).
pub fn read_dataset(path: &str, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let file =
        hdf5_pure::File::open(path).map_err(|e| anyhow!("cannot read HDF5 file {path}: {e}"))?;
    let ds = file
        .dataset(name)
        .map_err(|e| anyhow!("HDF5 file {path}: failed to find dataset \"{name}\": {e}"))?;
    let shape: Vec<usize> = ds
        .shape()
        .map_err(|e| anyhow!("HDF5 file {path}, dataset \"{name}\": {e}"))?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let values = ds
        .read_f32()
        .map_err(|e| anyhow!("HDF5 file {path}, dataset \"{name}\": {e}"))?;
    ensure!(
        values.len() == shape.iter().product::<usize>(),
        "HDF5 file {path}, dataset \"{name}\": {} values for shape {shape:?}",
        values.len()
    );
    Ok((shape, values))
}

/// Writes float32 datasets to a new HDF5 file at `path` (replacing an existing file).
pub fn write_datasets(path: &str, datasets: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let mut builder = hdf5_pure::FileBuilder::new();
    for (name, shape, values) in datasets {
        ensure!(
            values.len() == shape.iter().product::<usize>(),
            "dataset \"{name}\": {} values for shape {shape:?}",
            values.len()
        );
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        builder
            .create_dataset(name)
            .with_f32_data(values)
            .with_shape(&dims);
    }
    builder
        .write(path)
        .map_err(|e| anyhow!("cannot write HDF5 file {path}: {e}"))
}
