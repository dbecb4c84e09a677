//! caffemodel <-> safetensors: export and import, naming schemes (raw `layer.i`, PyTorch-style) and
//! BatchNorm folding. Pure format code: no engine, no graph builder (shape expectations for an
//! import come from the caller as a function, see [`ExpectedShapes`]).
//!
//! Export (`caffemodel -> safetensors`):
//! - [`NameScheme::Raw`]: tensor `<layer>.<i>` per blob, shape exactly as in the caffemodel
//!   (`BlobShape`, or the legacy num/channels/height/width).
//! - [`NameScheme::Pytorch`]: `<layer>.weight` / `<layer>.bias`; BatchNorm becomes
//!   `<layer>.running_mean` / `<layer>.running_var` already divided by the scale factor (blob 2;
//!   factor 0 when blob 2 is 0, as Caffe does) and no tensor for the factor; Scale -> `.weight` /
//!   `.bias`; PReLU -> `.weight`; Bias -> `.bias`; InnerProduct legacy 4-D weights squeezed to 2-D;
//!   legacy 4-D biases / statistics squeezed to 1-D. A layer of another type with more than two
//!   blobs keeps raw `<layer>.<i>` names.
//! - `__metadata__`: `format` = `caffe-rs`, `names` = the scheme, `dtype`, `source_sha256` (of the
//!   input file), `prototxt` (the model text when given; the folded net when folding), `folded_bn`.
//! - The input is scanned zero-copy (packed float data is written straight from the input bytes),
//!   so a file needs about 1x its size in memory (2x when folding BatchNorm).
//!
//! Import (`safetensors -> caffemodel`): see [`safetensors_to_net`].
//!
//! Reading a caffemodel here does not go through `format::caffemodel` on purpose: a protobuf wire
//! scanner borrows the packed float data instead of decoding it (speed and memory for VGG-sized
//! files). V0 nets fall back to a full `prost` decode + [`crate::format::upgrade::upgrade_net`].
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use prost::Message;
use safetensors::Dtype;

use crate::proto::v1_layer_parameter::LayerType;
use crate::proto::{BlobProto, BlobShape, LayerParameter, NetParameter};

/// Tensor naming scheme of an exported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameScheme {
    /// `<layer>.<i>`, shapes as stored.
    #[default]
    Raw,
    /// `<layer>.weight`, `.bias`, `.running_mean`, `.running_var`.
    Pytorch,
}

impl NameScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            NameScheme::Raw => "raw",
            NameScheme::Pytorch => "pytorch",
        }
    }
}

impl std::str::FromStr for NameScheme {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Ok(NameScheme::Raw),
            "pytorch" | "torch" => Ok(NameScheme::Pytorch),
            _ => bail!("unknown naming scheme '{s}' (expected raw or pytorch)"),
        }
    }
}

/// Element type of the exported tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    #[default]
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
    fn st_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            _ => bail!("unknown dtype '{s}' (expected f32, f16 or bf16)"),
        }
    }
}

/// Options of a caffemodel -> safetensors export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub names: NameScheme,
    pub dtype: DType,
    /// Fold BatchNorm (+ the following Scale) into the preceding Convolution / InnerProduct;
    /// needs `model`.
    pub fold_bn: bool,
    /// The net (`-model deploy.prototxt`), already parsed. Used for folding and for layer types
    /// when the caffemodel lacks them.
    pub model: Option<NetParameter>,
    /// The text of `-model`, stored as `__metadata__.prototxt`.
    pub model_text: Option<String>,
}

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Tensor names in file order.
    pub tensors: Vec<String>,
    /// Size of the written safetensors file.
    pub bytes_written: u64,
    /// SHA-256 (hex) of the input caffemodel bytes.
    pub source_sha256: String,
    /// `(conv_or_ip, batchnorm)` pairs folded (empty without `fold_bn`).
    pub folded: Vec<(String, String)>,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Layers written, with their blob count.
    pub layers: Vec<(String, usize)>,
    /// Tensors of the file that matched no layer of the net (or an unknown suffix).
    pub unused: Vec<String>,
    /// Net layers for which `expected` announced blobs but the file had no tensor.
    pub missing: Vec<String>,
    /// The file's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

/// Expected blob shapes of a layer of the net, by layer name: `Some(shapes)` (one per blob, in
/// Caffe order, as the net's shape inference sets them up) or `None` when unknown (the tensors'
/// stored shapes are then used unchecked).
pub type ExpectedShapes<'a> = dyn Fn(&str) -> Option<Vec<Vec<usize>>> + 'a;

// -------------------------------------------------------------------------------------------
// tensor data, borrowed where possible

const CHUNK: usize = 16 * 1024;

/// A blob's values: borrowed little-endian bytes of the input, borrowed floats or owned floats.
enum Data<'a> {
    F32Le(&'a [u8]),
    F16Le(&'a [u8]),
    BF16Le(&'a [u8]),
    F64Le(&'a [u8]),
    Floats(&'a [f32]),
    Owned(Vec<f32>),
}

impl<'a> Data<'a> {
    fn len(&self) -> usize {
        match self {
            Data::F32Le(b) => b.len() / 4,
            Data::F16Le(b) | Data::BF16Le(b) => b.len() / 2,
            Data::F64Le(b) => b.len() / 8,
            Data::Floats(f) => f.len(),
            Data::Owned(v) => v.len(),
        }
    }

    /// A cheap view of the same values.
    fn view(&self) -> Data<'_> {
        match self {
            Data::F32Le(b) => Data::F32Le(b),
            Data::F16Le(b) => Data::F16Le(b),
            Data::BF16Le(b) => Data::BF16Le(b),
            Data::F64Le(b) => Data::F64Le(b),
            Data::Floats(f) => Data::Floats(f),
            Data::Owned(v) => Data::Floats(v),
        }
    }

    /// The values as f32, chunk by chunk.
    fn for_each_chunk(&self, mut f: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
        fn decode<const N: usize>(
            bytes: &[u8],
            conv: impl Fn([u8; N]) -> f32,
            f: &mut dyn FnMut(&[f32]) -> Result<()>,
        ) -> Result<()> {
            let mut buf = Vec::with_capacity(CHUNK.min(bytes.len() / N));
            for chunk in bytes.chunks(CHUNK * N) {
                buf.clear();
                buf.extend(chunk.chunks_exact(N).map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    conv(a)
                }));
                f(&buf)?;
            }
            Ok(())
        }
        match self {
            Data::F32Le(b) => decode::<4>(b, f32::from_le_bytes, &mut f),
            Data::F16Le(b) => decode::<2>(b, |a| f16::from_le_bytes(a).to_f32(), &mut f),
            Data::BF16Le(b) => decode::<2>(b, |a| bf16::from_le_bytes(a).to_f32(), &mut f),
            Data::F64Le(b) => decode::<8>(b, |a| f64::from_le_bytes(a) as f32, &mut f),
            Data::Floats(v) => v.chunks(CHUNK).try_for_each(f),
            Data::Owned(v) => v.chunks(CHUNK).try_for_each(f),
        }
    }

    fn to_vec(&self) -> Result<Vec<f32>> {
        if let Data::Floats(v) = self {
            return Ok(v.to_vec());
        }
        if let Data::Owned(v) = self {
            return Ok(v.clone());
        }
        let mut out = Vec::with_capacity(self.len());
        self.for_each_chunk(|c| {
            out.extend_from_slice(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// Write the values as little-endian `dtype`.
    fn write_as<W: Write + ?Sized>(&self, w: &mut W, dtype: DType) -> Result<()> {
        if let (DType::F32, Data::F32Le(b)) = (dtype, self) {
            w.write_all(b)?;
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(CHUNK * dtype.size());
        let mut half16 = Vec::new();
        let mut halfb = Vec::new();
        self.for_each_chunk(|c| {
            bytes.clear();
            match dtype {
                DType::F32 => bytes.extend(c.iter().flat_map(|v| v.to_le_bytes())),
                DType::F16 => {
                    half16.clear();
                    half16.resize(c.len(), f16::ZERO);
                    half16.convert_from_f32_slice(c);
                    bytes.extend(half16.iter().flat_map(|v| v.to_le_bytes()));
                }
                DType::BF16 => {
                    halfb.clear();
                    halfb.resize(c.len(), bf16::ZERO);
                    halfb.convert_from_f32_slice(c);
                    bytes.extend(halfb.iter().flat_map(|v| v.to_le_bytes()));
                }
            }
            w.write_all(&bytes)?;
            Ok(())
        })
    }
}

fn checked_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

// -------------------------------------------------------------------------------------------
// caffemodel scanning (protobuf wire format, zero-copy for packed floats)

enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> WireReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        WireReader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| anyhow!("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| anyhow!("truncated field ({n} bytes announced)"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Wire<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            bail!("invalid field number 0");
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(self.take(8)?);
                Wire::Fixed64(a)
            }
            2 => {
                let n = usize::try_from(self.varint()?).context("field length overflows")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(self.take(4)?);
                Wire::Fixed32(a)
            }
            w => bail!("unsupported wire type {w} (field {field})"),
        };
        Ok(Some((field, wire)))
    }
}

/// A layer with its blobs, read from a caffemodel (borrowing from its bytes) or a NetParameter.
struct SrcLayer<'a> {
    name: String,
    ty: String,
    blobs: Vec<SrcBlob<'a>>,
}

struct SrcBlob<'a> {
    shape: Vec<usize>,
    data: Data<'a>,
}

/// The shape a blob holds: `BlobProto::dims()` (Caffe's `Blob::FromProto`: `shape`, else the
/// legacy num/channels/height/width, else 0 axes), checked against the value count.
fn blob_shape(
    shape: Option<BlobShape>,
    legacy: [Option<i32>; 4],
    len: usize,
) -> Result<Vec<usize>> {
    let dims = BlobProto {
        shape,
        num: legacy[0],
        channels: legacy[1],
        height: legacy[2],
        width: legacy[3],
        ..Default::default()
    }
    .dims();
    match checked_count(&dims) {
        Some(n) if n == len => Ok(dims),
        _ => bail!("shape {} does not match its {len} values", shape_str(&dims)),
    }
}

fn scan_dims(bytes: &[u8], dims: &mut Vec<i64>) -> Result<()> {
    let mut r = WireReader::new(bytes);
    while let Some((field, wire)) = r.next_field()? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => {
                let mut p = WireReader::new(b);
                while p.pos < b.len() {
                    dims.push(p.varint()? as i64);
                }
            }
            (1, Wire::Varint(v)) => dims.push(v as i64),
            _ => {}
        }
    }
    Ok(())
}

fn scan_blob(bytes: &[u8]) -> Result<SrcBlob<'_>> {
    enum Acc<'a> {
        Empty,
        Slice(&'a [u8]),
        Owned(Vec<f32>),
    }
    let le = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut shape: Option<Vec<i64>> = None;
    let mut legacy = [None; 4];
    let mut data = Acc::Empty;
    let mut double: Vec<f32> = Vec::new();
    let mut r = WireReader::new(bytes);
    while let Some((field, wire)) = r.next_field()? {
        match (field, wire) {
            (7, Wire::Bytes(b)) => scan_dims(b, shape.get_or_insert_with(Vec::new))?,
            (1..=4, Wire::Varint(v)) => legacy[field as usize - 1] = Some(v as i32),
            (5, Wire::Bytes(b)) => {
                if b.len() % 4 != 0 {
                    bail!("packed float data of {} bytes", b.len());
                }
                data = match data {
                    Acc::Empty => Acc::Slice(b),
                    Acc::Slice(s) => {
                        let mut v = le(s);
                        v.extend(le(b));
                        Acc::Owned(v)
                    }
                    Acc::Owned(mut v) => {
                        v.extend(le(b));
                        Acc::Owned(v)
                    }
                }
            }
            (5, Wire::Fixed32(a)) => {
                let v = f32::from_le_bytes(a);
                data = match data {
                    Acc::Empty => Acc::Owned(vec![v]),
                    Acc::Slice(s) => {
                        let mut o = le(s);
                        o.push(v);
                        Acc::Owned(o)
                    }
                    Acc::Owned(mut o) => {
                        o.push(v);
                        Acc::Owned(o)
                    }
                }
            }
            (8, Wire::Bytes(b)) => {
                if b.len() % 8 != 0 {
                    bail!("packed double data of {} bytes", b.len());
                }
                double.extend(b.chunks_exact(8).map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    f64::from_le_bytes(a) as f32
                }));
            }
            (8, Wire::Fixed64(a)) => double.push(f64::from_le_bytes(a) as f32),
            _ => {}
        }
    }
    let data = match data {
        Acc::Slice(s) => Data::F32Le(s),
        Acc::Owned(v) => Data::Owned(v),
        Acc::Empty => Data::Owned(double),
    };
    let shape = blob_shape(shape.map(|dim| BlobShape { dim }), legacy, data.len())?;
    Ok(SrcBlob { shape, data })
}

fn utf8(b: &[u8], what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| anyhow!("{what} is not valid UTF-8"))
}

/// Scan a V2 (`layer`, `v1 == false`) or V1 (`layers`) layer message. `Ok(None)` for a V0 layer.
fn scan_layer(bytes: &[u8], v1: bool, index: usize) -> Result<Option<SrcLayer<'_>>> {
    let (name_f, type_f, blobs_f) = if v1 { (4, 5, 6) } else { (1, 2, 7) };
    let mut name = String::new();
    let mut ty = String::new();
    let mut blob_bytes = Vec::new();
    let mut r = WireReader::new(bytes);
    while let Some((field, wire)) = r.next_field()? {
        match wire {
            Wire::Bytes(b) if field == name_f => name = utf8(b, "layer name")?,
            Wire::Bytes(b) if field == type_f && !v1 => ty = utf8(b, "layer type")?,
            Wire::Varint(v) if field == type_f && v1 => {
                ty = LayerType::try_from(v as i32)
                    .map(crate::format::upgrade::upgrade_v1_layer_type)
                    .unwrap_or("")
                    .to_string()
            }
            Wire::Bytes(b) if field == blobs_f => blob_bytes.push(b),
            Wire::Bytes(_) if v1 && field == 1 => return Ok(None),
            _ => {}
        }
    }
    let label = if name.is_empty() {
        format!("#{index}")
    } else {
        name.clone()
    };
    let blobs = blob_bytes
        .into_iter()
        .enumerate()
        .map(|(i, b)| scan_blob(b).with_context(|| format!("layer '{label}' blob {i}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(SrcLayer { name, ty, blobs }))
}

/// Scan a binary NetParameter. `Ok(None)` when it holds V0 layers (decode + upgrade instead).
fn scan_net(bytes: &[u8]) -> Result<Option<Vec<SrcLayer<'_>>>> {
    let mut layers = Vec::new();
    let mut r = WireReader::new(bytes);
    while let Some((field, wire)) = r.next_field()? {
        match (field, wire) {
            (100, Wire::Bytes(b)) => match scan_layer(b, false, layers.len())? {
                Some(l) => layers.push(l),
                None => return Ok(None),
            },
            (2, Wire::Bytes(b)) => match scan_layer(b, true, layers.len())? {
                Some(l) => layers.push(l),
                None => return Ok(None),
            },
            _ => {}
        }
    }
    Ok(Some(layers))
}

/// Decode a binary NetParameter fully and upgrade it to V2 layers.
fn decode_net(bytes: &[u8]) -> Result<NetParameter> {
    crate::format::caffemodel::decode_net_bytes(bytes, "the caffemodel")
}

/// The layers and blobs of a NetParameter, borrowed.
fn src_layers_of_net(net: &NetParameter) -> Result<Vec<SrcLayer<'_>>> {
    fn blob<'b>(layer: &str, i: usize, b: &'b BlobProto) -> Result<SrcBlob<'b>> {
        let data = if b.data.is_empty() && !b.double_data.is_empty() {
            Data::Owned(b.double_data.iter().map(|&v| v as f32).collect())
        } else {
            Data::Floats(&b.data)
        };
        let legacy = [b.num, b.channels, b.height, b.width];
        let shape = blob_shape(b.shape.clone(), legacy, data.len())
            .with_context(|| format!("layer '{layer}' blob {i}"))?;
        Ok(SrcBlob { shape, data })
    }
    let mut out = Vec::new();
    for l in &net.layer {
        let name = l.name().to_string();
        let blobs = l
            .blobs
            .iter()
            .enumerate()
            .map(|(i, b)| blob(&name, i, b))
            .collect::<Result<_>>()?;
        out.push(SrcLayer {
            ty: l.r#type().to_string(),
            name,
            blobs,
        });
    }
    for l in &net.layers {
        if l.layer.is_some() {
            bail!("the net has V0 layers; upgrade it first (format::upgrade::upgrade_net)");
        }
        let name = l.name().to_string();
        let ty = LayerType::try_from(l.r#type.unwrap_or(0))
            .map(crate::format::upgrade::upgrade_v1_layer_type)
            .unwrap_or("")
            .to_string();
        let blobs = l
            .blobs
            .iter()
            .enumerate()
            .map(|(i, b)| blob(&name, i, b))
            .collect::<Result<_>>()?;
        out.push(SrcLayer { name, ty, blobs });
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------
// export

struct OutTensor<'a> {
    name: String,
    shape: Vec<usize>,
    data: Data<'a>,
}

/// `[1, 1, .., n]`-style legacy shapes -> `[n]` (all axes but one are 1).
fn squeeze_1d(shape: &[usize]) -> Vec<usize> {
    if shape.len() > 1 && shape.iter().filter(|&&d| d != 1).count() <= 1 {
        vec![shape.iter().product()]
    } else {
        shape.to_vec()
    }
}

/// BatchNorm statistic divided by the scale factor, as Caffe computes it (f32).
fn bn_stat(blob: &SrcBlob<'_>, factor: f32) -> Result<Vec<f32>> {
    let mut v = blob.data.to_vec()?;
    for x in &mut v {
        *x *= factor;
    }
    Ok(v)
}

fn bn_factor(blob: &SrcBlob<'_>) -> Result<f32> {
    let v = blob.data.to_vec()?;
    let b2 = *v
        .first()
        .ok_or_else(|| anyhow!("empty scale-factor blob"))?;
    Ok(if b2 == 0.0 { 0.0 } else { 1.0 / b2 })
}

fn export_tensors<'a>(
    layers: &'a [SrcLayer<'a>],
    names: NameScheme,
    model: Option<&NetParameter>,
) -> Result<Vec<OutTensor<'a>>> {
    let model_types: HashMap<&str, &str> = model
        .map(|m| m.layer.iter().map(|l| (l.name(), l.r#type())).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for layer in layers.iter().filter(|l| !l.blobs.is_empty()) {
        if !seen.insert(layer.name.as_str()) {
            bail!(
                "two layers named '{}' hold blobs; their tensor names would collide",
                layer.name
            );
        }
        let ty = if layer.ty.is_empty() {
            model_types.get(layer.name.as_str()).copied().unwrap_or("")
        } else {
            layer.ty.as_str()
        };
        let raw = |out: &mut Vec<OutTensor<'a>>| {
            for (i, b) in layer.blobs.iter().enumerate() {
                out.push(OutTensor {
                    name: format!("{}.{i}", layer.name),
                    shape: b.shape.clone(),
                    data: b.data.view(),
                });
            }
        };
        if names == NameScheme::Raw {
            raw(&mut out);
            continue;
        }
        let n = layer.blobs.len();
        let named = |suffix: &str, b: &'a SrcBlob<'a>, shape: Vec<usize>| OutTensor {
            name: format!("{}.{suffix}", layer.name),
            shape,
            data: b.data.view(),
        };
        match ty {
            "BatchNorm" => {
                if n != 3 {
                    bail!(
                        "layer '{}' (BatchNorm) has {n} blobs, expected 3",
                        layer.name
                    );
                }
                let factor = bn_factor(&layer.blobs[2])
                    .with_context(|| format!("layer '{}' (BatchNorm)", layer.name))?;
                for (suffix, b) in [
                    ("running_mean", &layer.blobs[0]),
                    ("running_var", &layer.blobs[1]),
                ] {
                    out.push(OutTensor {
                        name: format!("{}.{suffix}", layer.name),
                        shape: squeeze_1d(&b.shape),
                        data: Data::Owned(bn_stat(b, factor)?),
                    });
                }
            }
            "Bias" if n == 1 => out.push(named(
                "bias",
                &layer.blobs[0],
                squeeze_1d(&layer.blobs[0].shape),
            )),
            "PReLU" if n == 1 => out.push(named(
                "weight",
                &layer.blobs[0],
                layer.blobs[0].shape.clone(),
            )),
            _ if n <= 2 => {
                let w = &layer.blobs[0];
                let wshape = if ty == "InnerProduct"
                    && w.shape.len() == 4
                    && w.shape[0] == 1
                    && w.shape[1] == 1
                {
                    w.shape[2..].to_vec()
                } else {
                    w.shape.clone()
                };
                out.push(named("weight", w, wshape));
                if let Some(b) = layer.blobs.get(1) {
                    out.push(named("bias", b, squeeze_1d(&b.shape)));
                }
            }
            _ => raw(&mut out),
        }
    }
    let mut names = HashSet::new();
    if let Some(t) = out.iter().find(|t| !names.insert(t.name.as_str())) {
        bail!("two blobs would both be stored as tensor '{}'", t.name);
    }
    Ok(out)
}

fn safetensors_header(
    tensors: &[OutTensor<'_>],
    dtype: DType,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut s = String::from("{\"__metadata__\":");
    s.push_str(&serde_json::to_string(metadata)?);
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.data.len() * dtype.size();
        write!(
            s,
            ",{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            serde_json::to_string(&t.name)?,
            dtype.st_name(),
            serde_json::to_string(&t.shape)?,
        )?;
        offset = end;
    }
    s.push('}');
    while s.len() % 8 != 0 {
        s.push(' ');
    }
    Ok(s.into_bytes())
}

fn write_safetensors<W: Write + ?Sized>(
    w: &mut W,
    tensors: &[OutTensor<'_>],
    dtype: DType,
    metadata: &BTreeMap<String, String>,
) -> Result<(u64, Option<usize>)> {
    let header = safetensors_header(tensors, dtype, metadata)?;
    // the metadata map comes first and no JSON string can hold an unescaped quote, so the first
    // match is the metadata entry
    const KEY: &[u8] = b"\"source_sha256\":\"";
    let sha_offset = header
        .windows(KEY.len())
        .position(|win| win == KEY)
        .map(|p| 8 + p + KEY.len());
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    let mut total = 8 + header.len() as u64;
    for t in tensors {
        t.data
            .write_as(w, dtype)
            .with_context(|| format!("writing tensor {}", t.name))?;
        total += (t.data.len() * dtype.size()) as u64;
    }
    Ok((total, sha_offset))
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Export core: `bytes` is a binary NetParameter; the safetensors file goes to `w`.
///
/// `sha`: the input's SHA-256 when known; `None` writes a placeholder of 64 `0`s and returns its
/// byte offset in the output, to be patched once the hash (computed concurrently) is known.
fn export_to<W: Write + ?Sized>(
    bytes: &[u8],
    opts: &ExportOptions,
    w: &mut W,
    sha: Option<String>,
) -> Result<(ExportReport, Option<usize>)> {
    if bytes.is_empty() {
        bail!("the caffemodel is empty (0 bytes), not a binary NetParameter");
    }
    let deferred = sha.is_none();
    let sha = sha.unwrap_or_else(|| "0".repeat(64));
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "caffe-rs".to_string());
    metadata.insert("names".to_string(), opts.names.as_str().to_string());
    metadata.insert("dtype".to_string(), opts.dtype.as_str().to_string());
    metadata.insert("source_sha256".to_string(), sha.clone());
    if let Some(text) = &opts.model_text {
        metadata.insert("prototxt".to_string(), text.clone());
    }
    let mut folded = Vec::new();
    let decoded;
    let scanned;
    let mut model = opts.model.clone();
    if let Some(m) = &mut model {
        crate::format::upgrade::upgrade_net(m).context("upgrading the -model net")?;
    }
    let layers: &[SrcLayer<'_>] = if opts.fold_bn {
        let Some(net) = &mut model else {
            bail!("folding BatchNorm needs the net (-model deploy.prototxt)");
        };
        let mut weights = decode_net(bytes)?;
        folded = fold_bn_net(net, &mut weights)?;
        metadata.insert(
            "prototxt".to_string(),
            crate::format::transcode::to_text(net, "caffe.NetParameter"),
        );
        let pairs: Vec<String> = folded.iter().map(|(c, b)| format!("{c}:{b}")).collect();
        metadata.insert("folded_bn".to_string(), pairs.join(","));
        decoded = weights;
        scanned = src_layers_of_net(&decoded)?;
        &scanned
    } else {
        scanned = match scan_net(bytes) {
            Ok(Some(l)) => l,
            Ok(None) => {
                decoded = decode_net(bytes)?;
                src_layers_of_net(&decoded)?
            }
            // A wire-level error is best explained by the full decoder; if that succeeds, the
            // scan failed on the content (a blob whose shape does not match its data).
            Err(e) => {
                decode_net(bytes)?;
                return Err(e);
            }
        };
        &scanned
    };
    let tensors = export_tensors(layers, opts.names, model.as_ref())?;
    let (bytes_written, sha_offset) = write_safetensors(w, &tensors, opts.dtype, &metadata)?;
    let report = ExportReport {
        tensors: tensors.iter().map(|t| t.name.clone()).collect(),
        bytes_written,
        source_sha256: sha,
        folded,
    };
    Ok((report, sha_offset.filter(|_| deferred)))
}

/// In-memory export: caffemodel bytes -> safetensors bytes.
pub fn caffemodel_bytes_to_safetensors(
    bytes: &[u8],
    opts: &ExportOptions,
) -> Result<(Vec<u8>, ExportReport)> {
    let mut out = Vec::with_capacity(bytes.len() + (1 << 16));
    let (report, _) = export_to(bytes, opts, &mut out, Some(sha256_hex(bytes)))?;
    Ok((out, report))
}

/// In-memory export of an already decoded NetParameter (its binary encoding is what
/// `source_sha256` describes).
pub fn net_to_safetensors(
    weights: &NetParameter,
    opts: &ExportOptions,
) -> Result<(Vec<u8>, ExportReport)> {
    caffemodel_bytes_to_safetensors(&weights.encode_to_vec(), opts)
}

/// `caffe-rs convert src.caffemodel dst.safetensors`: maps `src`, streams the safetensors file to
/// a temporary file beside `dst` (hashing the input on a second thread meanwhile; the hash is
/// patched into the header at the end) and renames it into place.
pub fn caffemodel_to_safetensors(
    src: &Path,
    dst: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    let bytes = map_file(src)?;
    let bytes: &[u8] = &bytes;
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| sha256_hex(bytes));
        write_atomic_with(dst, |w| {
            let (mut report, offset) = export_to(bytes, opts, w, None)?;
            let sha = hasher
                .join()
                .map_err(|_| anyhow!("the hashing thread panicked"))?;
            if let Some(offset) = offset {
                w.flush()?;
                let file = w.get_mut();
                file.seek(SeekFrom::Start(offset as u64))?;
                file.write_all(sha.as_bytes())?;
            }
            report.source_sha256 = sha;
            Ok(report)
        })
    })
    .with_context(|| format!("converting {} to {}", src.display(), dst.display()))
}

/// The bytes of `path`, memory-mapped (read-only, pages prefetched). Like every reader of mapped
/// files, this assumes nobody truncates the file while it is converted.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len == 0 {
        bail!("{} is empty (0 bytes)", path.display());
    }
    // SAFETY: the map is read-only and private to this call; the file is not modified by us.
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))
}

/// Write `dst` through a temporary file in the same directory, renamed into place on success
/// (no fsync: a conversion is rerun rather than recovered).
fn write_atomic_with<T>(
    dst: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dst
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", dst.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> Result<T> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let value = f(&mut w)?;
        w.flush()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(value)
    })()
    .and_then(|v| {
        fs::rename(&tmp, dst)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()))?;
        Ok(v)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

// -------------------------------------------------------------------------------------------
// import

struct PlanBlob<'a> {
    shape: Vec<usize>,
    data: Data<'a>,
}

struct PlanLayer<'a> {
    param: LayerParameter,
    blobs: Vec<PlanBlob<'a>>,
}

struct Tensor<'a> {
    name: String,
    shape: Vec<usize>,
    data: Data<'a>,
}

/// The tensors of a safetensors file in file (offset) order, plus its metadata.
fn read_tensors(bytes: &[u8]) -> Result<(Vec<Tensor<'_>>, BTreeMap<String, String>)> {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("not a valid safetensors file: {e}"))?;
    let data = &bytes[8 + n..];
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let infos = meta.tensors();
    let mut out: Vec<Tensor<'_>> = Vec::with_capacity(infos.len());
    let mut names: Vec<(&String, _)> = infos.iter().collect();
    names.sort_by_key(|(_, info)| info.data_offsets);
    for (name, info) in names {
        let (s, e) = info.data_offsets;
        let raw = data
            .get(s..e)
            .ok_or_else(|| anyhow!("tensor {name}: data out of range"))?;
        let data = match info.dtype {
            Dtype::F32 => Data::F32Le(raw),
            Dtype::F16 => Data::F16Le(raw),
            Dtype::BF16 => Data::BF16Le(raw),
            Dtype::F64 => Data::F64Le(raw),
            other => bail!(
                "tensor {name} has dtype {other:?}; only F32, F16, BF16 and F64 become Caffe blobs"
            ),
        };
        out.push(Tensor {
            name: name.clone(),
            shape: info.shape.clone(),
            data,
        });
    }
    Ok((out, metadata))
}

/// `a.b.c` -> (`a.b`, `c`).
fn split_name(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.')
}

fn shape_fits(stored: &[usize], expected: &[usize]) -> bool {
    if stored == expected {
        return true;
    }
    let strip = |s: &[usize]| -> Vec<usize> { s.iter().copied().skip_while(|&d| d == 1).collect() };
    checked_count(stored) == checked_count(expected) && strip(stored) == strip(expected)
}

/// Blob index of a PyTorch-style suffix for a layer type; `None` for unknown suffixes.
fn pytorch_slot(ty: &str, suffix: &str) -> Option<usize> {
    match (ty, suffix) {
        ("BatchNorm", "running_mean") => Some(0),
        ("BatchNorm", "running_var") => Some(1),
        ("BatchNorm", _) => None,
        ("Bias", "bias") | ("PReLU", "weight") => Some(0),
        ("Bias" | "PReLU", _) => None,
        (_, "weight") => Some(0),
        (_, "bias") => Some(1),
        _ => None,
    }
}

fn plan_import<'a>(
    tensors: Vec<Tensor<'a>>,
    model: Option<&NetParameter>,
    expected: Option<&ExpectedShapes<'_>>,
    report: &mut ImportReport,
) -> Result<Vec<PlanLayer<'a>>> {
    let Some(model) = model else {
        return plan_import_raw(tensors);
    };
    let upgraded;
    let model = if crate::format::upgrade::net_needs_upgrade(model) {
        let mut m = model.clone();
        crate::format::upgrade::upgrade_net(&mut m).context("upgrading the -model net")?;
        upgraded = m;
        &upgraded
    } else {
        model
    };
    let layer_names: HashSet<&str> = model.layer.iter().map(|l| l.name()).collect();
    // layer name -> (suffix, tensor)
    let mut by_layer: HashMap<String, Vec<(String, Tensor<'a>)>> = HashMap::new();
    let total = tensors.len();
    for t in tensors {
        match split_name(&t.name) {
            Some((layer, suffix)) if layer_names.contains(layer) => {
                let (layer, suffix) = (layer.to_string(), suffix.to_string());
                by_layer.entry(layer).or_default().push((suffix, t))
            }
            _ => report.unused.push(t.name.clone()),
        }
    }
    let mut plan = Vec::new();
    let mut done = HashSet::new();
    for layer in &model.layer {
        let name = layer.name();
        if !done.insert(name) {
            continue;
        }
        let ty = layer.r#type();
        let entries = by_layer.remove(name).unwrap_or_default();
        let exp = expected.and_then(|f| f(name));
        if entries.is_empty() {
            if exp.as_ref().is_some_and(|e| !e.is_empty()) {
                report.missing.push(name.to_string());
            }
            continue;
        }
        let is_raw = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let raw = entries.iter().any(|(s, _)| is_raw(s));
        let named = entries
            .iter()
            .any(|(s, _)| !is_raw(s) && *s != "num_batches_tracked");
        if raw && named {
            let list: Vec<&str> = entries.iter().map(|(_, t)| t.name.as_str()).collect();
            bail!(
                "layer {name} ({ty}): tensors mix raw and PyTorch-style names: {}",
                list.join(", ")
            );
        }
        let mut slots: Vec<Option<Tensor<'a>>> = Vec::new();
        let mut bn_factor_slot = false;
        for (suffix, t) in entries {
            let slot = if raw {
                suffix.parse::<usize>().ok()
            } else if suffix == "num_batches_tracked" {
                continue;
            } else {
                pytorch_slot(ty, &suffix)
            };
            let Some(slot) = slot else {
                report.unused.push(t.name.to_string());
                continue;
            };
            if slot >= slots.len() {
                slots.resize_with(slot + 1, || None);
            }
            if let Some(prev) = &slots[slot] {
                bail!(
                    "tensors {} and {} are both blob {slot} of layer {name}",
                    prev.name,
                    t.name
                );
            }
            if !raw && ty == "BatchNorm" {
                bn_factor_slot = true;
            }
            slots[slot] = Some(t);
        }
        if slots.is_empty() {
            continue;
        }
        let mut blobs_src: Vec<(String, Vec<usize>, Data<'a>)> = Vec::new();
        for (i, s) in slots.into_iter().enumerate() {
            match s {
                Some(t) => blobs_src.push((t.name.to_string(), t.shape, t.data)),
                None => bail!("layer {name} ({ty}): the file has no tensor for blob {i}"),
            }
        }
        if bn_factor_slot {
            if blobs_src.len() != 2 {
                bail!("layer {name} (BatchNorm): needs both running_mean and running_var");
            }
            blobs_src.push((
                format!("{name}.<scale factor>"),
                vec![1],
                Data::Owned(vec![1.0]),
            ));
        }
        let mut blobs = Vec::with_capacity(blobs_src.len());
        if let Some(exp) = &exp {
            if exp.len() != blobs_src.len() {
                let list: Vec<&str> = blobs_src.iter().map(|b| b.0.as_str()).collect();
                bail!(
                    "layer {name} ({ty}) expects {} blobs but the file has {} ({})",
                    exp.len(),
                    blobs_src.len(),
                    list.join(", ")
                );
            }
            for ((tname, shape, data), want) in blobs_src.into_iter().zip(exp) {
                if !shape_fits(&shape, want) {
                    bail!(
                        "tensor {tname} has shape {} but layer {name} ({ty}) expects {}",
                        shape_str(&shape),
                        shape_str(want)
                    );
                }
                blobs.push(PlanBlob {
                    shape: want.clone(),
                    data,
                });
            }
        } else {
            blobs.extend(
                blobs_src
                    .into_iter()
                    .map(|(_, shape, data)| PlanBlob { shape, data }),
            );
        }
        let mut param = layer.clone();
        param.blobs.clear();
        plan.push(PlanLayer { param, blobs });
    }
    if plan.is_empty() && total > 0 {
        bail!(
            "none of the {total} tensors matches a layer of the net (first: {})",
            report.unused.first().map(String::as_str).unwrap_or("?")
        );
    }
    Ok(plan)
}

fn plan_import_raw(tensors: Vec<Tensor<'_>>) -> Result<Vec<PlanLayer<'_>>> {
    let mut order: Vec<String> = Vec::new();
    let mut by_layer: HashMap<String, Vec<(usize, Tensor<'_>)>> = HashMap::new();
    for t in tensors {
        let parsed = split_name(&t.name)
            .filter(|(_, i)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|(l, i)| Some((l.to_string(), i.parse::<usize>().ok()?)));
        let Some((layer, idx)) = parsed else {
            bail!(
                "tensor {} is not a raw `<layer>.<i>` name; PyTorch-style names need the net \
                 (-model deploy.prototxt) to map them to Caffe blobs",
                t.name
            );
        };
        let entry = by_layer.entry(layer.clone()).or_insert_with(|| {
            order.push(layer);
            Vec::new()
        });
        entry.push((idx, t));
    }
    let mut plan = Vec::with_capacity(order.len());
    for layer in order {
        let mut entries = by_layer.remove(&layer).unwrap_or_default();
        entries.sort_by_key(|(i, _)| *i);
        let mut blobs = Vec::with_capacity(entries.len());
        for (pos, (idx, t)) in entries.into_iter().enumerate() {
            if idx != pos {
                bail!(
                    "layer {layer}: tensor {} found but blob {pos} is missing or repeated",
                    t.name
                );
            }
            blobs.push(PlanBlob {
                shape: t.shape,
                data: t.data,
            });
        }
        plan.push(PlanLayer {
            param: LayerParameter {
                name: Some(layer),
                ..Default::default()
            },
            blobs,
        });
    }
    Ok(plan)
}

fn materialize(name: Option<String>, plan: Vec<PlanLayer<'_>>) -> Result<NetParameter> {
    let mut net = NetParameter {
        name,
        ..Default::default()
    };
    for PlanLayer { mut param, blobs } in plan {
        for b in blobs {
            param
                .blobs
                .push(BlobProto::from_shape_data(&b.shape, b.data.to_vec()?));
        }
        net.layer.push(param);
    }
    Ok(net)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Stream a NetParameter (`name` + one `layer` per plan entry) without materializing the blob
/// data: each layer's non-blob fields are encoded by prost, the blobs (field 7) are appended by
/// hand with their packed float data written straight from the source.
fn write_caffemodel<W: Write + ?Sized>(
    w: &mut W,
    name: Option<&str>,
    plan: &[PlanLayer<'_>],
) -> Result<u64> {
    let mut total = 0u64;
    let mut head = Vec::new();
    if let Some(name) = name {
        head.push(0x0a);
        put_varint(&mut head, name.len() as u64);
        head.extend_from_slice(name.as_bytes());
    }
    w.write_all(&head)?;
    total += head.len() as u64;
    for layer in plan {
        let param = layer.param.encode_to_vec();
        // per blob: (blob header bytes, data byte count)
        let mut blob_heads = Vec::with_capacity(layer.blobs.len());
        let mut layer_len = param.len();
        for b in &layer.blobs {
            let mut dims = Vec::new();
            for &d in &b.shape {
                put_varint(&mut dims, d as u64);
            }
            let mut shape_msg = Vec::new();
            if !dims.is_empty() {
                shape_msg.push(0x0a);
                put_varint(&mut shape_msg, dims.len() as u64);
                shape_msg.extend_from_slice(&dims);
            }
            let n = b.data.len();
            let data_bytes = 4 * n;
            let data_field = if n == 0 {
                0
            } else {
                1 + varint_len(data_bytes as u64) + data_bytes
            };
            let blob_len = 1 + varint_len(shape_msg.len() as u64) + shape_msg.len() + data_field;
            let mut bh = vec![0x3a];
            put_varint(&mut bh, blob_len as u64);
            bh.push(0x3a);
            put_varint(&mut bh, shape_msg.len() as u64);
            bh.extend_from_slice(&shape_msg);
            if n > 0 {
                bh.push(0x2a);
                put_varint(&mut bh, data_bytes as u64);
            }
            layer_len += bh.len() + data_bytes;
            blob_heads.push(bh);
        }
        let mut lh = Vec::with_capacity(12);
        put_varint(&mut lh, (100 << 3) | 2);
        put_varint(&mut lh, layer_len as u64);
        w.write_all(&lh)?;
        w.write_all(&param)?;
        for (bh, b) in blob_heads.iter().zip(&layer.blobs) {
            w.write_all(bh)?;
            b.data.write_as(w, DType::F32)?;
        }
        total += (lh.len() + layer_len) as u64;
    }
    Ok(total)
}

/// In-memory import: safetensors bytes -> a weights NetParameter (`layer` entries holding only
/// blobs, or the net's layer parameters plus blobs when `model` is given).
///
/// - Without `model`: tensor names must be raw `<layer>.<i>`; layers come in file order, shapes
///   as stored, layer parameters hold the name only.
/// - With `model` (the deploy net): one layer per net layer that has tensors (raw or PyTorch-style
///   names, `num_batches_tracked` ignored; a BatchNorm from running stats gets scale factor 1).
///   When `expected` is given and returns `Some(shapes)` for a layer, the blob count must match
///   and each tensor's shape must fit (equal, or equal after dropping leading 1-axes with the same
///   count, like Caffe's legacy-shape rule): blobs then take the expected shapes. A misfit is
///   refused by name: `tensor conv1.0 has shape [20, 1, 5, 5] but layer conv1 (Convolution)
///   expects [20, 3, 5, 5]`. Tensors matching no layer are listed in `ImportReport::unused`;
///   an error when none matches.
pub fn safetensors_to_net(
    bytes: &[u8],
    model: Option<&NetParameter>,
    expected: Option<&ExpectedShapes<'_>>,
) -> Result<(NetParameter, ImportReport)> {
    let (plan, report) = import_plan(bytes, model, expected)?;
    let net = materialize(model.and_then(|m| m.name.clone()), plan)?;
    Ok((net, report))
}

fn import_plan<'a>(
    bytes: &'a [u8],
    model: Option<&NetParameter>,
    expected: Option<&ExpectedShapes<'_>>,
) -> Result<(Vec<PlanLayer<'a>>, ImportReport)> {
    let (tensors, metadata) = read_tensors(bytes)?;
    let mut report = ImportReport {
        metadata,
        ..Default::default()
    };
    let plan = plan_import(tensors, model, expected, &mut report)?;
    report.layers = plan
        .iter()
        .map(|l| (l.param.name().to_string(), l.blobs.len()))
        .collect();
    Ok((plan, report))
}

/// In-memory import written as caffemodel bytes (same encoding as [`safetensors_to_caffemodel`]).
pub fn safetensors_to_caffemodel_bytes(
    bytes: &[u8],
    model: Option<&NetParameter>,
    expected: Option<&ExpectedShapes<'_>>,
) -> Result<(Vec<u8>, ImportReport)> {
    let (plan, report) = import_plan(bytes, model, expected)?;
    let mut out = Vec::new();
    write_caffemodel(&mut out, model.and_then(|m| m.name.as_deref()), &plan)?;
    Ok((out, report))
}

/// `caffe-rs convert src.safetensors dst.caffemodel [-model deploy.prototxt]`: see
/// [`safetensors_to_net`]; the caffemodel is streamed to a temporary file beside `dst` and
/// renamed into place (memory: the input file plus one header per layer).
pub fn safetensors_to_caffemodel(
    src: &Path,
    dst: &Path,
    model: Option<&NetParameter>,
    expected: Option<&ExpectedShapes<'_>>,
) -> Result<ImportReport> {
    let bytes = map_file(src)?;
    let (plan, report) = import_plan(&bytes, model, expected)
        .with_context(|| format!("reading {}", src.display()))?;
    write_atomic_with(dst, |w| {
        write_caffemodel(w, model.and_then(|m| m.name.as_deref()), &plan)
    })
    .with_context(|| format!("writing {}", dst.display()))?;
    Ok(report)
}

// -------------------------------------------------------------------------------------------
// BatchNorm folding

struct Fold {
    conv: usize,
    bn: usize,
    scale: Option<usize>,
    /// The name the conv's top takes (the last folded layer's top).
    top: String,
}

/// Readers of blob `blob` after layer `from`, up to and including the first layer that writes it.
fn readers_after(layers: &[LayerParameter], from: usize, blob: &str) -> Vec<usize> {
    let mut readers = Vec::new();
    for (j, l) in layers.iter().enumerate().skip(from + 1) {
        if l.bottom.iter().any(|b| b == blob) {
            readers.push(j);
        }
        if l.top.iter().any(|t| t == blob) {
            break;
        }
    }
    readers
}

fn find_folds(layers: &[LayerParameter]) -> Vec<Fold> {
    let mut folds = Vec::new();
    for (i, conv) in layers.iter().enumerate() {
        let ty = conv.r#type();
        let axis_ok = match ty {
            "Convolution" => conv
                .convolution_param
                .as_ref()
                .is_none_or(|p| p.axis() == 1),
            "InnerProduct" => conv
                .inner_product_param
                .as_ref()
                .is_none_or(|p| p.axis() == 1),
            _ => false,
        };
        if !axis_ok || conv.top.len() != 1 || conv.param.iter().any(|p| !p.name().is_empty()) {
            continue;
        }
        let t = conv.top[0].as_str();
        if conv.bottom.iter().any(|b| b == t) {
            continue;
        }
        let [b] = readers_after(layers, i, t)[..] else {
            continue;
        };
        let bn = &layers[b];
        if bn.r#type() != "BatchNorm"
            || bn.bottom.len() != 1
            || bn.top.len() != 1
            || bn
                .batch_norm_param
                .as_ref()
                .and_then(|p| p.use_global_stats)
                == Some(false)
        {
            continue;
        }
        let u = bn.top[0].as_str();
        let mut scale = None;
        let mut top = u;
        if let [s] = readers_after(layers, b, u)[..] {
            let sl = &layers[s];
            let sp = sl.scale_param.clone().unwrap_or_default();
            if sl.r#type() == "Scale"
                && sl.bottom.len() == 1
                && sl.top.len() == 1
                && sp.axis() == 1
                && sp.num_axes() == 1
                && sl.param.iter().all(|p| p.name().is_empty())
            {
                scale = Some(s);
                top = sl.top[0].as_str();
            }
        }
        let last = scale.unwrap_or(b);
        let names = [t, u, top];
        let clash = (i + 1..last).filter(|&j| j != b).any(|j| {
            let l = &layers[j];
            l.bottom
                .iter()
                .chain(&l.top)
                .any(|x| names.contains(&x.as_str()))
        });
        if clash {
            continue;
        }
        folds.push(Fold {
            conv: i,
            bn: b,
            scale,
            top: top.to_string(),
        });
    }
    folds
}

/// Fold each BatchNorm (and the Scale right after it, if any) into the Convolution /
/// InnerProduct feeding it, in both the net (`net`: the deploy NetParameter with its layers) and
/// the weights (`weights`: the caffemodel's NetParameter). Returns the `(conv, batchnorm)` pairs.
///
/// A pair is folded when the conv/IP (axis 1, unshared params) has one top read only by a
/// BatchNorm (in-place or not, `use_global_stats` not false); a Scale (one bottom, axis 1,
/// num_axes 1) that is the only reader of the BatchNorm's output is folded too. Then
/// `a = gamma / sqrt(var + eps)`, `w' = w * a` (per output channel), `b' = (b - mean) * a + beta`
/// with `mean = b0 * f`, `var = b1 * f`, `f = 1 / b2` (0 when b2 is 0), eps from
/// batch_norm_param. The net loses the BatchNorm/Scale layers, the conv takes over the last top
/// and gets `bias_term: true`; the weights lose the BatchNorm/Scale layers, the conv gets the new
/// weights and a bias blob. Both messages are upgraded to V2 layers first when needed.
pub fn fold_bn_net(
    net: &mut NetParameter,
    weights: &mut NetParameter,
) -> Result<Vec<(String, String)>> {
    crate::format::upgrade::upgrade_net(net).context("upgrading the net")?;
    crate::format::upgrade::upgrade_net(weights).context("upgrading the weights")?;
    let folds = find_folds(&net.layer);
    let mut pairs = Vec::new();
    let mut drop_net = HashSet::new();
    let mut drop_weights: HashSet<String> = HashSet::new();
    for f in &folds {
        let conv = &net.layer[f.conv];
        let bn = &net.layer[f.bn];
        let (conv_name, bn_name) = (conv.name().to_string(), bn.name().to_string());
        let eps = f64::from(bn.batch_norm_param.unwrap_or_default().eps());
        let transpose = conv.r#type() == "InnerProduct"
            && conv
                .inner_product_param
                .as_ref()
                .is_some_and(|p| p.transpose());
        let scale_name = f.scale.map(|s| net.layer[s].name().to_string());
        let find = |name: &str| weights.layer.iter().position(|l| l.name() == name);
        let ctx = || format!("folding {bn_name} into {conv_name}");
        let wi = find(&conv_name)
            .ok_or_else(|| anyhow!("layer '{conv_name}' has no blobs in the weights"))
            .with_context(ctx)?;
        let bi = find(&bn_name)
            .ok_or_else(|| anyhow!("layer '{bn_name}' (BatchNorm) has no blobs in the weights"))
            .with_context(ctx)?;
        let bn_blobs = &weights.layer[bi].blobs;
        if bn_blobs.len() != 3 {
            bail!(
                "layer '{bn_name}' (BatchNorm) has {} blobs, expected 3",
                bn_blobs.len()
            );
        }
        let b2 = bn_blobs[2].values_f32().first().copied().unwrap_or(0.0);
        let factor = if b2 == 0.0 { 0.0 } else { 1.0 / b2 };
        let mean: Vec<f32> = bn_blobs[0]
            .values_f32()
            .iter()
            .map(|v| v * factor)
            .collect();
        let var: Vec<f32> = bn_blobs[1]
            .values_f32()
            .iter()
            .map(|v| v * factor)
            .collect();
        let c = mean.len();
        if var.len() != c || c == 0 {
            bail!(
                "layer '{bn_name}' (BatchNorm): mean has {c} values, variance {}",
                var.len()
            );
        }
        let (gamma, beta) = match &scale_name {
            Some(sn) => {
                let si = find(sn)
                    .ok_or_else(|| anyhow!("layer '{sn}' (Scale) has no blobs in the weights"))
                    .with_context(ctx)?;
                let sb = &weights.layer[si].blobs;
                let gamma = sb.first().map(BlobProto::values_f32).unwrap_or_default();
                let beta = sb
                    .get(1)
                    .map(BlobProto::values_f32)
                    .unwrap_or_else(|| vec![0.0; c]);
                if gamma.len() != c || beta.len() != c {
                    bail!(
                        "layer '{sn}' (Scale) has {} / {} values, its BatchNorm '{bn_name}' has {c} channels",
                        gamma.len(),
                        beta.len()
                    );
                }
                (gamma, beta)
            }
            None => (vec![1.0; c], vec![0.0; c]),
        };
        let a: Vec<f64> = (0..c)
            .map(|k| f64::from(gamma[k]) / (f64::from(var[k]) + eps).sqrt())
            .collect();
        let wl = &mut weights.layer[wi];
        let Some(w) = wl.blobs.first() else {
            bail!("layer '{conv_name}' has no weight blob in the weights");
        };
        let mut wv = w.values_f32();
        if wv.len() % c != 0 {
            bail!(
                "layer '{conv_name}': weight of {} values does not split into {c} output channels ({bn_name})",
                wv.len()
            );
        }
        let per = wv.len() / c;
        for (idx, x) in wv.iter_mut().enumerate() {
            let k = if transpose { idx % c } else { idx / per };
            *x = (f64::from(*x) * a[k]) as f32;
        }
        let old_bias = wl
            .blobs
            .get(1)
            .map(BlobProto::values_f32)
            .unwrap_or_else(|| vec![0.0; c]);
        if old_bias.len() != c {
            bail!(
                "layer '{conv_name}': bias has {} values, {bn_name} has {c} channels",
                old_bias.len()
            );
        }
        let bias: Vec<f32> = (0..c)
            .map(|k| {
                ((f64::from(old_bias[k]) - f64::from(mean[k])) * a[k] + f64::from(beta[k])) as f32
            })
            .collect();
        let wshape = wl.blobs[0].dims();
        wl.blobs = vec![
            BlobProto::from_shape_data(&wshape, wv),
            BlobProto::from_shape_data(&[c], bias),
        ];
        set_bias_term(wl);
        drop_weights.insert(bn_name.clone());
        drop_net.insert(f.bn);
        if let Some(s) = f.scale {
            drop_net.insert(s);
        }
        if let Some(sn) = scale_name {
            drop_weights.insert(sn);
        }
        let conv = &mut net.layer[f.conv];
        conv.top[0] = f.top.clone();
        set_bias_term(conv);
        pairs.push((conv_name, bn_name));
    }
    let mut idx = 0;
    net.layer.retain(|_| {
        idx += 1;
        !drop_net.contains(&(idx - 1))
    });
    weights.layer.retain(|l| !drop_weights.contains(l.name()));
    Ok(pairs)
}

fn set_bias_term(l: &mut LayerParameter) {
    match l.r#type() {
        "Convolution" => {
            l.convolution_param
                .get_or_insert_with(Default::default)
                .bias_term = Some(true)
        }
        "InnerProduct" => {
            l.inner_product_param
                .get_or_insert_with(Default::default)
                .bias_term = Some(true)
        }
        _ => {}
    }
}
