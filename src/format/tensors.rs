//! Named f32 tensors in safetensors files: the I/O of `forward` and of the golden cases.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors};

/// Tensor name -> (shape, values).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub fn decode_tensors(bytes: &[u8], label: &str) -> Result<TensorMap> {
    let st = SafeTensors::deserialize(bytes)
        .with_context(|| format!("{label}: not a safetensors file"))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I32 => view
                .data()
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            other => bail!("{label}: tensor {name} has dtype {other:?}; expected a float tensor"),
        };
        out.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok(out)
}

pub fn read_tensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_tensors(&bytes, &path.display().to_string())
}

/// The safetensors header of `tensors` (all F32, in map order), padded to 8 bytes.
fn header(tensors: &TensorMap) -> Vec<u8> {
    let mut entries = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, (shape, values)) in tensors {
        let end = offset + values.len() * 4;
        entries.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::Value::Object(entries).to_string().into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    header
}

/// Writes `tensors` as safetensors (F32) to `w`, tensor by tensor: no second copy in memory.
fn write_to(w: &mut dyn std::io::Write, tensors: &TensorMap) -> std::io::Result<()> {
    let header = header(tensors);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for (_, values) in tensors.values() {
        for chunk in values.chunks(1 << 14) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            w.write_all(&buf)?;
        }
    }
    Ok(())
}

pub fn encode_tensors(tensors: &TensorMap) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write_to(&mut bytes, tensors)?;
    Ok(bytes)
}

pub fn write_tensors(path: &Path, tensors: &TensorMap) -> Result<()> {
    super::caffemodel::write_atomic_with(path, |w| write_to(w, tensors))
}
