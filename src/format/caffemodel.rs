//! Binary protobuf files: `.caffemodel` (NetParameter), `.binaryproto` (BlobProto, e.g. mean
//! files) and `.solverstate` (SolverState).
//!
//! Reading memory-maps the file and decodes straight from the mapping with prost, so a 500 MB
//! model costs its decoded size on the heap and nothing more. Copying weights into a net needs
//! less still: a [`WeightsFile`] decodes only the structure (layers, blob shapes, where each
//! blob's values are) and hands the values over in pieces straight from the mapping, releasing
//! the file's pages behind it, so neither the file nor a decoded copy is ever resident as a
//! whole. When prost rejects the bytes, a descriptor-driven wire walker ([`check_wire_format`])
//! runs over them to say *where* and *why* ("truncated or corrupt protobuf at byte 1234
//! (layer[3] 'conv2' > blobs[0]): ..."); the fast path never pays for it.
//!
//! Writing is atomic: the bytes go to a temporary file in the destination directory, which is
//! fsynced and then renamed over the destination, so a reader never sees half a file.
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use prost::Message;
use prost_reflect::{Kind, MessageDescriptor};

use crate::proto::{BlobProto, NetParameter, SolverState};

/// Full protobuf name of a `.caffemodel`'s message.
pub const NET_PARAMETER: &str = "caffe.NetParameter";
/// Full protobuf name of a `.binaryproto`'s message.
pub const BLOB_PROTO: &str = "caffe.BlobProto";
/// Full protobuf name of a `.solverstate`'s message.
pub const SOLVER_STATE: &str = "caffe.SolverState";

/// Files smaller than this are read into memory rather than mapped.
const MMAP_THRESHOLD: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Reading

/// Read a binary `.caffemodel` and apply Caffe's legacy upgrades (V0/V1 `layers` -> `layer`,
/// input fields -> Input layer, ...; see [`super::upgrade`]).
pub fn read_net_binary(path: &Path) -> Result<NetParameter> {
    let label = path.display().to_string();
    let bytes = load(path)?;
    decode_net_bytes(&bytes, &label)
}

/// Read a binary `.caffemodel` exactly as stored (no legacy upgrade).
pub fn read_net_binary_raw(path: &Path) -> Result<NetParameter> {
    let label = path.display().to_string();
    let bytes = load(path)?;
    decode_net_bytes_raw(&bytes, &label)
}

/// Read a binary `.binaryproto` (a BlobProto, e.g. a mean file).
pub fn read_blob_proto(path: &Path) -> Result<BlobProto> {
    let label = path.display().to_string();
    let bytes = load(path)?;
    decode_blob_proto_bytes(&bytes, &label)
}

/// Read a binary `.solverstate`.
pub fn read_solver_state(path: &Path) -> Result<SolverState> {
    let label = path.display().to_string();
    let bytes = load(path)?;
    decode_solver_state_bytes(&bytes, &label)
}

/// Decode a binary BlobProto from memory (see [`decode_binary`] for the errors).
pub fn decode_blob_proto_bytes(bytes: &[u8], label: &str) -> Result<BlobProto> {
    match (bytes.is_empty(), fast::decode_blob(bytes)) {
        (false, Some(blob)) => Ok(blob),
        _ => decode_binary(bytes, label, BLOB_PROTO),
    }
}

/// Decode a binary SolverState from memory (see [`decode_binary`] for the errors).
pub fn decode_solver_state_bytes(bytes: &[u8], label: &str) -> Result<SolverState> {
    match (bytes.is_empty(), fast::decode_solver_state(bytes)) {
        (false, Some(state)) => Ok(state),
        _ => decode_binary(bytes, label, SOLVER_STATE),
    }
}

/// Read any message of proto/caffe.proto from a binary file; `full_name` is its protobuf name
/// (e.g. [`BLOB_PROTO`]) and is used to locate decoding errors.
pub fn read_binary<M: Message + Default>(path: &Path, full_name: &str) -> Result<M> {
    let label = path.display().to_string();
    let bytes = load(path)?;
    decode_binary(&bytes, &label, full_name)
}

/// Decode a binary NetParameter from memory and apply the legacy upgrades. `label` names the
/// source in error messages (usually the file path).
pub fn decode_net_bytes(bytes: &[u8], label: &str) -> Result<NetParameter> {
    let mut net = decode_net_bytes_raw(bytes, label)?;
    super::upgrade::upgrade_net(&mut net)
        .with_context(|| format!("{label}: cannot upgrade the legacy net"))?;
    Ok(net)
}

/// Decode a binary NetParameter from memory without upgrading it.
pub fn decode_net_bytes_raw(bytes: &[u8], label: &str) -> Result<NetParameter> {
    if bytes.is_empty() {
        bail!("{label} is empty (0 bytes), not a binary NetParameter");
    }
    match fast::decode_net(bytes) {
        Some(net) => Ok(net),
        None => {
            // The fast path gives no reason; prost's own decoder does (and rejects the same bytes).
            let e = match NetParameter::decode(bytes) {
                Ok(net) => return Ok(net),
                Err(e) => e,
            };
            if looks_like_text(bytes) {
                let detail = match check_wire_format(bytes, NET_PARAMETER) {
                    Err(w) => format!("decoding stops at byte {}: {}", w.offset, w.detail),
                    Ok(()) => format!("decoding fails: {e}"),
                };
                bail!("{label} is not a binary NetParameter (is it a text .prototxt?); {detail}");
            }
            Err(describe_decode_failure(bytes, label, NET_PARAMETER, &e))
        }
    }
}

/// Decode any message of proto/caffe.proto from memory; on failure the error names `label`, the
/// byte offset and the field where the bytes stop making sense.
pub fn decode_binary<M: Message + Default>(
    bytes: &[u8],
    label: &str,
    full_name: &str,
) -> Result<M> {
    if bytes.is_empty() {
        let short = full_name.rsplit('.').next().unwrap_or(full_name);
        bail!("{label} is empty (0 bytes), not a binary {short}");
    }
    M::decode(bytes).map_err(|e| describe_decode_failure(bytes, label, full_name, &e))
}

fn describe_decode_failure(
    bytes: &[u8],
    label: &str,
    full_name: &str,
    err: &prost::DecodeError,
) -> anyhow::Error {
    match check_wire_format(bytes, full_name) {
        Err(w) if w.offset == 0 && !w.detail.contains("runs past") => anyhow!(
            "{label}: truncated or corrupt protobuf {w} (the data does not start like a \
             {full_name}: is it the right kind of file?)"
        ),
        Err(w) => anyhow!("{label}: truncated or corrupt protobuf {w}"),
        Ok(()) => anyhow!("{label}: cannot decode as {full_name}: {err}"),
    }
}

/// True when the start of `bytes` reads as protobuf text (UTF-8 without control characters other
/// than tab, CR and LF, with a `:`, `{` or `#` somewhere), i.e. the file is probably a prototxt
/// rather than binary protobuf.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let text = match std::str::from_utf8(head) {
        Ok(s) => s,
        // A multi-byte character cut by the 4096-byte window is fine.
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    text.contains([':', '{', '#'])
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

/// The bytes of a file: mapped when large, read into memory when small (or when mapping fails).
pub struct FileBytes(FileBytesInner);

enum FileBytesInner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            FileBytesInner::Mapped(m) => m,
            FileBytesInner::Owned(v) => v,
        }
    }
}

impl FileBytes {
    fn owned(bytes: Vec<u8>) -> FileBytes {
        FileBytes(FileBytesInner::Owned(bytes))
    }

    /// Drop the pages of `range` from this process's memory (a mapped file reads them again
    /// from the page cache if they are used later). A no-op for bytes read into memory.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let FileBytesInner::Mapped(map) = &self.0
            && !range.is_empty()
        {
            // SAFETY: the mapping is read-only and file-backed, so dropping its pages loses
            // nothing: the next access maps the same file contents again.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

fn load(path: &Path) -> Result<FileBytes> {
    load_with(path, true)
}

/// Like [`load`] without reading the pages of a mapped file in advance: for files whose parts
/// are read once each and then released ([`FileBytes::release`]).
fn load_lazy(path: &Path) -> Result<FileBytes> {
    load_with(path, false)
}

fn load_with(path: &Path, populate: bool) -> Result<FileBytes> {
    let label = path.display();
    let mut file = File::open(path).with_context(|| format!("cannot open {label}"))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {label}"))?
        .len();
    if len >= MMAP_THRESHOLD {
        let mut options = memmap2::MmapOptions::new();
        if populate {
            options.populate();
        }
        // SAFETY: the mapping is read-only and private to the reader that asked for it. Like
        // every reader of memory-mapped files we rely on the file not being truncated or
        // rewritten in place meanwhile; our own writers never do that (they write a new file
        // and rename it).
        let mapped = unsafe { options.map(&file) };
        if let Ok(map) = mapped {
            #[cfg(unix)]
            {
                let _ = map.advise(memmap2::Advice::Sequential);
            }
            return Ok(FileBytes(FileBytesInner::Mapped(map)));
        }
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {label}"))?;
    Ok(FileBytes::owned(bytes))
}

// ---------------------------------------------------------------------------------------------
// Weights files, read blob by blob

/// Floats handed to an engine at a time when a blob is copied out of a mapped weights file.
const COPY_CHUNK_FLOATS: usize = 1 << 20;

/// Trained layers to copy into a net (Caffe's CopyTrainedLayersFrom): a decoded NetParameter,
/// or a [`WeightsFile`] whose blob values stay in the file until they are copied.
pub trait TrainedWeights {
    /// The net: layer names and types, every blob's shape (its values may be left out).
    fn net(&self) -> &NetParameter;
    /// The values of blob `blob` of `net().layer[layer]` (`data`, or `double_data` when that is
    /// what the blob holds, as [`BlobProto::values_f32`]).
    fn blob_values(&self, layer: usize, blob: usize) -> Result<BlobValues<'_>>;
}

impl TrainedWeights for NetParameter {
    fn net(&self) -> &NetParameter {
        self
    }

    fn blob_values(&self, layer: usize, blob: usize) -> Result<BlobValues<'_>> {
        let b = self
            .layer
            .get(layer)
            .and_then(|l| l.blobs.get(blob))
            .ok_or_else(|| anyhow!("no blob {blob} in layer {layer}"))?;
        // Borrowed when stored as floats: no copy of a 150 MB fc6 on its way in.
        Ok(if b.data.is_empty() && !b.double_data.is_empty() {
            BlobValues::Floats(b.values_f32().into())
        } else {
            BlobValues::Floats(b.data.as_slice().into())
        })
    }
}

/// The values of one blob, handed out in chunks by [`BlobValues::for_each_chunk`].
pub enum BlobValues<'a> {
    /// In memory.
    Floats(std::borrow::Cow<'a, [f32]>),
    /// Packed little-endian floats in these byte ranges of a (mapped) file.
    Stored {
        bytes: &'a FileBytes,
        runs: &'a [std::ops::Range<usize>],
    },
}

impl BlobValues<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            BlobValues::Floats(v) => v.len(),
            BlobValues::Stored { runs, .. } => runs.iter().map(|r| r.len() / 4).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `sink(offset, values)` for consecutive pieces of the values (at most about 4 MB
    /// each) in order. Stored values are decoded from the file piece by piece and the file's
    /// pages are released once read, so a weights file is never resident as a whole.
    pub fn for_each_chunk(&self, sink: &mut dyn FnMut(usize, &[f32])) {
        match self {
            BlobValues::Floats(v) => {
                for (i, piece) in v.chunks(COPY_CHUNK_FLOATS).enumerate() {
                    sink(i * COPY_CHUNK_FLOATS, piece);
                }
            }
            BlobValues::Stored { bytes, runs } => {
                let mut buf = vec![0f32; self.len().min(COPY_CHUNK_FLOATS)];
                let mut offset = 0;
                for run in runs.iter() {
                    for start in run.clone().step_by(COPY_CHUNK_FLOATS * 4) {
                        let end = (start + COPY_CHUNK_FLOATS * 4).min(run.end);
                        let n = (end - start) / 4;
                        for (v, b) in buf.iter_mut().zip(bytes[start..end].chunks_exact(4)) {
                            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                        sink(offset, &buf[..n]);
                        bytes.release(start..end);
                        offset += n;
                    }
                }
            }
        }
    }

    /// All the values in one vector.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each_chunk(&mut |_, piece| out.extend_from_slice(piece));
        out
    }
}

/// A `.caffemodel` opened for copying its blobs into a net without holding its values in memory:
/// the file stays mapped (pages read on demand, released after use) and only its structure is
/// decoded — layer names, types and parameters, every blob's shape and where its values are.
/// Legacy V0/V1 files are upgraded as [`read_net_binary`] does; the blobs follow their layers.
pub struct WeightsFile {
    label: String,
    bytes: FileBytes,
    /// The upgraded net with every blob's values left out (`data`, `diff`, `double_*` empty).
    net: NetParameter,
    /// Where the values of `net.layer[i].blobs[j]` are: `payloads[payload_of[i][j]]`.
    payload_of: Vec<Vec<usize>>,
    payloads: Vec<fast::BlobPayload>,
}

impl WeightsFile {
    /// Opens every file of a `-weights a,b` list (Caffe's comma-separated flag; empty entries are
    /// skipped), in order.
    pub fn open_list(list: Option<&str>) -> Result<Vec<WeightsFile>> {
        list.into_iter()
            .flat_map(|l| l.split(','))
            .filter(|p| !p.is_empty())
            .map(|p| WeightsFile::open(Path::new(p)))
            .collect()
    }

    /// Open a binary `.caffemodel`; errors are those of [`read_net_binary`] (a truncated or
    /// corrupt file names the file and the byte where decoding stops).
    pub fn open(path: &Path) -> Result<WeightsFile> {
        let label = path.display().to_string();
        let bytes = load_lazy(path)?;
        WeightsFile::from_file_bytes(bytes, label)
    }

    /// The same from bytes in memory (`label` names them in errors).
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<WeightsFile> {
        WeightsFile::from_file_bytes(FileBytes::owned(bytes), label.to_string())
    }

    fn from_file_bytes(bytes: FileBytes, label: String) -> Result<WeightsFile> {
        let mut decoder = fast::HeaderDecoder::new(&bytes);
        let header = if bytes.is_empty() {
            None
        } else {
            decoder.net()
        };
        let Some(mut net) = header else {
            // The full decoder says why (and if it accepts what the header decoder did not, its
            // net is what the file holds).
            let net = decode_net_bytes(&bytes, &label)?;
            return Ok(WeightsFile::decoded(net, label));
        };
        let payloads = std::mem::take(&mut decoder.payloads);
        super::upgrade::upgrade_net(&mut net)
            .with_context(|| format!("{label}: cannot upgrade the legacy net"))?;
        let mut untag = |blob: &mut BlobProto| -> Result<usize> {
            let tag = std::mem::take(&mut blob.double_diff);
            match tag[..] {
                [t] if (t as usize) < payloads.len() => Ok(t as usize),
                _ => bail!("{label}: internal error: a blob lost track of its values"),
            }
        };
        let mut payload_of = Vec::with_capacity(net.layer.len());
        for layer in &mut net.layer {
            payload_of.push(
                layer
                    .blobs
                    .iter_mut()
                    .map(&mut untag)
                    .collect::<Result<_>>()?,
            );
        }
        // Legacy layers are gone after the upgrade; untag anything left all the same.
        for layer in &mut net.layers {
            for blob in &mut layer.blobs {
                blob.double_diff.clear();
            }
            if let Some(v0) = &mut layer.layer {
                for blob in &mut v0.blobs {
                    blob.double_diff.clear();
                }
            }
        }
        Ok(WeightsFile {
            label,
            bytes,
            net,
            payload_of,
            payloads,
        })
    }

    /// A decoded net (values in memory) behind the same interface.
    fn decoded(net: NetParameter, label: String) -> WeightsFile {
        WeightsFile {
            label,
            bytes: FileBytes::owned(Vec::new()),
            payload_of: Vec::new(),
            payloads: Vec::new(),
            net,
        }
    }

    /// The name given in errors (the path).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The net and every blob with its values, as [`read_net_binary`] gives it.
    pub fn to_net(&self) -> Result<NetParameter> {
        let mut net = self.net.clone();
        for (i, layer) in net.layer.iter_mut().enumerate() {
            for (j, blob) in layer.blobs.iter_mut().enumerate() {
                if self.payload_of.is_empty() {
                    continue;
                }
                *blob = self.decode_blob(&self.payloads[self.payload_of[i][j]])?;
            }
        }
        Ok(net)
    }

    /// The whole BlobProto of `payload` (values included), decoded from the file.
    fn decode_blob(&self, payload: &fast::BlobPayload) -> Result<BlobProto> {
        let range = payload.message.clone();
        if range.is_empty() {
            return Ok(BlobProto::default());
        }
        let blob = decode_blob_proto_bytes(&self.bytes[range.clone()], &self.label);
        self.bytes.release(range);
        blob
    }
}

impl TrainedWeights for WeightsFile {
    fn net(&self) -> &NetParameter {
        &self.net
    }

    fn blob_values(&self, layer: usize, blob: usize) -> Result<BlobValues<'_>> {
        if self.payload_of.is_empty() {
            return self.net.blob_values(layer, blob);
        }
        let index = *self
            .payload_of
            .get(layer)
            .and_then(|l| l.get(blob))
            .ok_or_else(|| anyhow!("{}: no blob {blob} in layer {layer}", self.label))?;
        let payload = &self.payloads[index];
        if payload.decode {
            let decoded = self.decode_blob(payload)?;
            return Ok(BlobValues::Floats(decoded.values_f32().into()));
        }
        Ok(BlobValues::Stored {
            bytes: &self.bytes,
            runs: &payload.runs,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Write a NetParameter as a binary `.caffemodel`, atomically. Fields are written in field-number
/// order like C++ protobuf (so a model read and written back is byte-identical), one layer at a
/// time, so the extra memory needed is the largest layer's encoding, not the whole file's.
pub fn write_net_binary(path: &Path, net: &NetParameter) -> Result<()> {
    write_atomic_with(path, |w| write_net_to(net, w))
}

/// Encode `net` to `w` in field-number order, one layer at a time.
pub fn write_net_to(net: &NetParameter, w: &mut dyn Write) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    // Field 1 (name).
    NetParameter {
        name: net.name.clone(),
        ..Default::default()
    }
    .encode(&mut buf)
    .map_err(io::Error::other)?;
    w.write_all(&buf)?;
    // Field 2 (V1 layers).
    for layer in &net.layers {
        buf.clear();
        buf.reserve(layer.encoded_len() + 16);
        prost::encoding::message::encode(2, layer, &mut buf);
        w.write_all(&buf)?;
    }
    // Fields 3..=8.
    buf.clear();
    NetParameter {
        input: net.input.clone(),
        input_shape: net.input_shape.clone(),
        input_dim: net.input_dim.clone(),
        force_backward: net.force_backward,
        state: net.state.clone(),
        debug_info: net.debug_info,
        ..Default::default()
    }
    .encode(&mut buf)
    .map_err(io::Error::other)?;
    w.write_all(&buf)?;
    // Field 100 (layer).
    for layer in &net.layer {
        buf.clear();
        buf.reserve(layer.encoded_len() + 16);
        prost::encoding::message::encode(100, layer, &mut buf);
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Write a BlobProto as a binary `.binaryproto`, atomically.
pub fn write_blob_proto(path: &Path, blob: &BlobProto) -> Result<()> {
    write_atomic(path, &blob.encode_to_vec())
}

/// Write a SolverState as a binary `.solverstate`, atomically.
pub fn write_solver_state(path: &Path, state: &SolverState) -> Result<()> {
    write_atomic(path, &state.encode_to_vec())
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory is written,
/// fsynced and renamed over `path`. On failure `path` is untouched and the temporary file removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` writing into a buffered writer.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let label = path.display();
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write {label}: not a file path"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {label}"));
    }
    // Make the rename itself durable (best effort: not every platform can fsync a directory).
    #[cfg(unix)]
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Wire walker

/// Where and why bytes are not a valid encoding of a message (see [`check_wire_format`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Byte offset (from the start of the data) of the field key or value that fails.
    pub offset: usize,
    /// What is wrong, e.g. "length-delimited field 7 (blobs) of caffe.LayerParameter runs past
    /// the end of its enclosing message (needs 4000 bytes, 12 left)".
    pub detail: String,
    /// Where in the message tree, e.g. `layer[3] 'conv2' > blobs[0]` (empty at the top level).
    pub path: String,
}

impl fmt::Display for WireError {
    /// `at byte 1234 (layer[3] 'conv2' > blobs[0]): <detail>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}", self.offset)?;
        if !self.path.is_empty() {
            write!(f, " ({})", self.path)?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for WireError {}

/// Nesting limit of messages and groups (prost's and C++ protobuf's default recursion limit).
const MAX_DEPTH: usize = 100;

/// Walk `bytes` as an encoding of the message `full_name` of proto/caffe.proto, checking the wire
/// structure against the descriptors the way prost decodes it: every key and varint well formed,
/// every fixed-width and length-delimited value inside its enclosing message, known fields with
/// the wire type of their declared type (packed or unpacked for repeated scalars), nested
/// messages recursively, strings valid UTF-8, packed lists made of whole values, groups of
/// unknown fields closed by their own end tag.
pub fn check_wire_format(bytes: &[u8], full_name: &str) -> Result<(), WireError> {
    let Some(desc) = crate::proto::descriptor_pool().get_message_by_name(full_name) else {
        return Err(WireError {
            offset: 0,
            detail: format!("unknown message type {full_name}"),
            path: String::new(),
        });
    };
    let mut walker = Walker {
        bytes,
        path: Vec::new(),
    };
    walker.message(&desc, 0, bytes.len(), 0)
}

enum VarintError {
    Truncated,
    Overlong,
}

/// Read a varint at `pos`, not reading at or past `end`; returns (value, position after it).
fn read_varint(bytes: &[u8], pos: usize, end: usize) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    let mut p = pos;
    for i in 0..10 {
        if p >= end {
            return Err(VarintError::Truncated);
        }
        let b = *bytes.get(p).ok_or(VarintError::Truncated)?;
        p += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b >= 2 {
                return Err(VarintError::Overlong);
            }
            return Ok((value, p));
        }
    }
    Err(VarintError::Overlong)
}

fn wire_type_name(wt: u64) -> &'static str {
    match wt {
        0 => "varint",
        1 => "fixed64",
        2 => "length-delimited",
        3 => "start-group",
        4 => "end-group",
        5 => "fixed32",
        _ => "invalid",
    }
}

/// The wire type a value of `kind` is encoded with (unpacked).
fn kind_wire_type(kind: &Kind) -> u64 {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        Kind::String | Kind::Bytes | Kind::Message(_) => 2,
        Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Bool
        | Kind::Enum(_) => 0,
    }
}

struct Walker<'a> {
    bytes: &'a [u8],
    /// Breadcrumbs of the message fields being walked, e.g. `layer[3] 'conv2'`.
    path: Vec<String>,
}

impl Walker<'_> {
    fn fail(&self, offset: usize, detail: String) -> WireError {
        WireError {
            offset,
            detail,
            path: self.path.join(" > "),
        }
    }

    fn end_of(depth: usize) -> &'static str {
        if depth == 0 {
            "the end of the file"
        } else {
            "the end of its enclosing message"
        }
    }

    fn varint_error(&self, e: VarintError, offset: usize, what: &str, depth: usize) -> WireError {
        match e {
            VarintError::Truncated => {
                self.fail(offset, format!("{what} runs past {}", Self::end_of(depth)))
            }
            VarintError::Overlong => self.fail(
                offset,
                format!("{what} is a malformed varint (longer than 10 bytes)"),
            ),
        }
    }

    /// Walk the fields of a message of type `desc` occupying `start..end`.
    fn message(
        &mut self,
        desc: &MessageDescriptor,
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<(), WireError> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        let mut pos = start;
        while pos < end {
            let key_pos = pos;
            let (key, p) = read_varint(self.bytes, pos, end).map_err(|e| {
                self.varint_error(
                    e,
                    key_pos,
                    &format!("a field key of {}", desc.full_name()),
                    depth,
                )
            })?;
            pos = p;
            if key > u64::from(u32::MAX) {
                return Err(self.fail(
                    key_pos,
                    format!("invalid field key {key} in {}", desc.full_name()),
                ));
            }
            let wt = key & 7;
            let number = (key >> 3) as u32;
            if number == 0 {
                return Err(self.fail(
                    key_pos,
                    format!("invalid field number 0 in {}", desc.full_name()),
                ));
            }
            let field = desc.get_field(number);
            let what = match &field {
                Some(f) => format!("field {number} ({}) of {}", f.name(), desc.full_name()),
                None => format!("unknown field {number} of {}", desc.full_name()),
            };
            if wt == 6 || wt == 7 {
                return Err(self.fail(key_pos, format!("{what} has invalid wire type {wt}")));
            }
            if wt == 4 {
                return Err(self.fail(key_pos, format!("unexpected end-group tag ({what})")));
            }
            if let Some(f) = &field {
                let kind = f.kind();
                let expected = kind_wire_type(&kind);
                let packed_ok = wt == 2 && f.is_list() && expected != 2;
                if wt != expected && !packed_ok {
                    return Err(self.fail(
                        key_pos,
                        format!(
                            "{what} has wire type {} where {} is expected",
                            wire_type_name(wt),
                            wire_type_name(expected)
                        ),
                    ));
                }
            }
            match wt {
                0 => {
                    let (_, p) = read_varint(self.bytes, pos, end).map_err(|e| {
                        self.varint_error(e, key_pos, &format!("the value of {what}"), depth)
                    })?;
                    pos = p;
                }
                1 | 5 => {
                    let width = if wt == 1 { 8 } else { 4 };
                    let left = end - pos;
                    if left < width {
                        return Err(self.fail(
                            key_pos,
                            format!(
                                "{} {what} runs past {} (needs {width} bytes, {left} left)",
                                wire_type_name(wt),
                                Self::end_of(depth)
                            ),
                        ));
                    }
                    pos += width;
                }
                2 => {
                    let (len, p) = read_varint(self.bytes, pos, end).map_err(|e| {
                        self.varint_error(e, key_pos, &format!("the length of {what}"), depth)
                    })?;
                    let left = end - p;
                    let Some(len) = usize::try_from(len).ok().filter(|&l| l <= left) else {
                        if let Some(f) = &field
                            && let Kind::Message(m) = f.kind()
                        {
                            let index = counts.get(&number).copied().unwrap_or(0);
                            self.path
                                .push(self.crumb(f.name(), f.is_list(), index, &m, p, end));
                        }
                        return Err(self.fail(
                            key_pos,
                            format!(
                                "length-delimited {what} runs past {} (needs {len} bytes, {left} left)",
                                Self::end_of(depth)
                            ),
                        ));
                    };
                    let (s, e) = (p, p + len);
                    if let Some(f) = &field {
                        match f.kind() {
                            Kind::Message(m) => {
                                let counter = counts.entry(number).or_insert(0);
                                let index = *counter;
                                *counter += 1;
                                if depth + 1 >= MAX_DEPTH {
                                    return Err(self.fail(
                                        key_pos,
                                        format!("{what}: messages nested deeper than {MAX_DEPTH}"),
                                    ));
                                }
                                let crumb = self.crumb(f.name(), f.is_list(), index, &m, s, e);
                                self.path.push(crumb);
                                self.message(&m, s, e, depth + 1)?;
                                self.path.pop();
                            }
                            Kind::String => {
                                if let Err(u) = std::str::from_utf8(&self.bytes[s..e]) {
                                    return Err(self.fail(
                                        s + u.valid_up_to(),
                                        format!("string {what} is not valid UTF-8"),
                                    ));
                                }
                            }
                            Kind::Bytes => {}
                            kind => self.packed(&kind, &what, s, e)?,
                        }
                    }
                    pos = e;
                }
                3 => {
                    // Known fields were checked above (caffe.proto has no groups), so this is
                    // an unknown group: skip it like prost does.
                    pos = self.skip_group(number, key_pos, pos, end, depth + 1)?;
                }
                _ => unreachable!("wire types 4, 6 and 7 are rejected above"),
            }
        }
        Ok(())
    }

    /// Check a packed list of scalars occupying `s..e`.
    fn packed(&self, kind: &Kind, what: &str, s: usize, e: usize) -> Result<(), WireError> {
        let len = e - s;
        match kind_wire_type(kind) {
            5 if !len.is_multiple_of(4) => Err(self.fail(
                s,
                format!("packed {what} holds {len} bytes, not a whole number of 4-byte values"),
            )),
            1 if !len.is_multiple_of(8) => Err(self.fail(
                s,
                format!("packed {what} holds {len} bytes, not a whole number of 8-byte values"),
            )),
            0 => {
                let mut p = s;
                while p < e {
                    let at = p;
                    p = match read_varint(self.bytes, p, e) {
                        Ok((_, next)) => next,
                        Err(VarintError::Truncated) => {
                            return Err(self.fail(
                                at,
                                format!("packed {what} ends in the middle of a varint"),
                            ));
                        }
                        Err(VarintError::Overlong) => {
                            return Err(self.fail(
                                at,
                                format!(
                                    "packed {what} holds a malformed varint (longer than 10 bytes)"
                                ),
                            ));
                        }
                    };
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Skip an unknown group whose start key is at `key_pos` (its body starts at `pos`); returns
    /// the position after its end-group key.
    fn skip_group(
        &self,
        number: u32,
        key_pos: usize,
        mut pos: usize,
        end: usize,
        depth: usize,
    ) -> Result<usize, WireError> {
        if depth >= MAX_DEPTH {
            return Err(self.fail(key_pos, format!("groups nested deeper than {MAX_DEPTH}")));
        }
        loop {
            if pos >= end {
                return Err(self.fail(
                    key_pos,
                    format!(
                        "group (unknown field {number}) is not closed before {}",
                        Self::end_of(depth - 1)
                    ),
                ));
            }
            let inner_pos = pos;
            let (key, p) = read_varint(self.bytes, pos, end).map_err(|e| {
                self.varint_error(e, inner_pos, "a field key inside a group", depth)
            })?;
            pos = p;
            if key > u64::from(u32::MAX) || key >> 3 == 0 {
                return Err(self.fail(inner_pos, format!("invalid field key {key} inside a group")));
            }
            let wt = key & 7;
            let inner = (key >> 3) as u32;
            match wt {
                0 => {
                    pos = read_varint(self.bytes, pos, end)
                        .map_err(|e| {
                            self.varint_error(e, inner_pos, "a varint inside a group", depth)
                        })?
                        .1;
                }
                1 | 5 => {
                    let width = if wt == 1 { 8 } else { 4 };
                    if end - pos < width {
                        return Err(self.fail(
                            inner_pos,
                            format!(
                                "a {} value inside a group runs past the end",
                                wire_type_name(wt)
                            ),
                        ));
                    }
                    pos += width;
                }
                2 => {
                    let (len, p) = read_varint(self.bytes, pos, end).map_err(|e| {
                        self.varint_error(e, inner_pos, "a length inside a group", depth)
                    })?;
                    let left = end - p;
                    match usize::try_from(len).ok().filter(|&l| l <= left) {
                        Some(l) => pos = p + l,
                        None => {
                            return Err(self.fail(
                                inner_pos,
                                format!(
                                    "a length-delimited value inside a group runs past the end \
                                     (needs {len} bytes, {left} left)"
                                ),
                            ));
                        }
                    }
                }
                3 => pos = self.skip_group(inner, inner_pos, pos, end, depth + 1)?,
                4 => {
                    if inner == number {
                        return Ok(pos);
                    }
                    return Err(self.fail(
                        inner_pos,
                        format!(
                            "end-group tag of field {inner} inside the group of field {number}"
                        ),
                    ));
                }
                _ => {
                    return Err(
                        self.fail(inner_pos, format!("invalid wire type {wt} inside a group"))
                    );
                }
            }
        }
    }

    /// A breadcrumb for entering message field `name` (element `index` when repeated), with the
    /// element's `name` field when one can be found cheaply, e.g. `layer[3] 'conv2'`.
    fn crumb(
        &self,
        name: &str,
        repeated: bool,
        index: usize,
        desc: &MessageDescriptor,
        s: usize,
        e: usize,
    ) -> String {
        let mut crumb = if repeated {
            format!("{name}[{index}]")
        } else {
            name.to_string()
        };
        if let Some(n) = self.peek_name(desc, s, e.min(self.bytes.len())) {
            crumb.push_str(&format!(" '{n}'"));
        }
        crumb
    }

    /// The value of the string field called `name` among the first fields of the message at
    /// `s..e`, if it is there and well formed (no validation beyond that).
    fn peek_name(&self, desc: &MessageDescriptor, s: usize, e: usize) -> Option<String> {
        let field = desc.get_field_by_name("name")?;
        if !matches!(field.kind(), Kind::String) {
            return None;
        }
        let mut pos = s;
        for _ in 0..64 {
            if pos >= e {
                return None;
            }
            let (key, p) = read_varint(self.bytes, pos, e).ok()?;
            pos = p;
            match key & 7 {
                0 => pos = read_varint(self.bytes, pos, e).ok()?.1,
                1 => pos = pos.checked_add(8)?,
                5 => pos = pos.checked_add(4)?,
                2 => {
                    let (len, p) = read_varint(self.bytes, pos, e).ok()?;
                    let end = p.checked_add(usize::try_from(len).ok()?)?;
                    if key >> 3 == u64::from(field.number()) {
                        let raw = self.bytes.get(p..end.min(e))?;
                        let text = String::from_utf8_lossy(raw);
                        let short: String = text.chars().take(64).collect();
                        return Some(short);
                    }
                    pos = end;
                }
                _ => return None,
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Fast path

/// NetParameter / SolverState / BlobProto decoders that give prost's result with the float payload of every blob copied in
/// one go (prost pushes packed floats one at a time into a growing Vec, which is what dominates
/// reading a large model). Everything except the layer -> blob -> data/diff path is decoded by
/// prost's own `merge_field`, so the result is identical to `NetParameter::decode`; `None` means
/// the bytes are invalid (prost rejects them too) and the slow path should explain why.
mod fast {
    use std::ops::Range;

    use prost::Message;
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint};

    use crate::proto::{
        BlobProto, LayerParameter, NetParameter, SolverState, V0LayerParameter, V1LayerParameter,
    };

    /// Split a length-delimited payload off the front of `buf`.
    fn take_len_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
        if len > buf.len() {
            return None;
        }
        let (payload, rest) = buf.split_at(len);
        *buf = rest;
        Some(payload)
    }

    pub(super) fn decode_net(bytes: &[u8]) -> Option<NetParameter> {
        let mut net = NetParameter::default();
        let mut buf = bytes;
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            match (tag, wire_type) {
                (100, WireType::LengthDelimited) => {
                    net.layer.push(decode_layer(take_len_delimited(&mut buf)?)?)
                }
                (2, WireType::LengthDelimited) => net
                    .layers
                    .push(decode_v1_layer(take_len_delimited(&mut buf)?)?),
                _ => net
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .ok()?,
            }
        }
        Some(net)
    }

    pub(super) fn decode_solver_state(mut buf: &[u8]) -> Option<SolverState> {
        let mut state = SolverState::default();
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            match (tag, wire_type) {
                (3, WireType::LengthDelimited) => state
                    .history
                    .push(decode_blob(take_len_delimited(&mut buf)?)?),
                _ => state
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .ok()?,
            }
        }
        Some(state)
    }

    fn decode_layer(mut buf: &[u8]) -> Option<LayerParameter> {
        let mut layer = LayerParameter::default();
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            match (tag, wire_type) {
                (7, WireType::LengthDelimited) => layer
                    .blobs
                    .push(decode_blob(take_len_delimited(&mut buf)?)?),
                _ => layer
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .ok()?,
            }
        }
        Some(layer)
    }

    fn decode_v1_layer(mut buf: &[u8]) -> Option<V1LayerParameter> {
        let mut layer = V1LayerParameter::default();
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            match (tag, wire_type) {
                (6, WireType::LengthDelimited) => layer
                    .blobs
                    .push(decode_blob(take_len_delimited(&mut buf)?)?),
                _ => layer
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .ok()?,
            }
        }
        Some(layer)
    }

    fn extend_floats(values: &mut Vec<f32>, payload: &[u8]) -> Option<()> {
        if !payload.len().is_multiple_of(4) {
            return None;
        }
        values.reserve(payload.len() / 4);
        values.extend(
            payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Some(())
    }

    /// Where the values of one blob of a weights file are (see [`super::WeightsFile`]).
    #[derive(Clone, Debug, Default, PartialEq)]
    pub(super) struct BlobPayload {
        /// Byte range of the whole BlobProto message in the file.
        pub message: Range<usize>,
        /// Byte ranges of the packed little-endian floats of `data`, in order.
        pub runs: Vec<Range<usize>>,
        /// The blob also holds unpacked `data` values or `double_data`: its values are read by
        /// decoding `message` (rare; such files come from old or hand-made writers).
        pub decode: bool,
    }

    /// A NetParameter decoder that leaves out the values of every blob (`data`, `diff`,
    /// `double_data`, `double_diff`) and records where `data` / `double_data` are instead.
    /// Everything else is decoded by prost's `merge_field`, so the header is what
    /// `NetParameter::decode` gives minus the values. Each blob it returns carries its index in
    /// `payloads` as its only `double_diff` value (a tag that survives the legacy upgrades, which
    /// move blobs around whole); [`super::WeightsFile`] takes the tags off again.
    pub(super) struct HeaderDecoder<'a> {
        base: &'a [u8],
        pub payloads: Vec<BlobPayload>,
    }

    impl<'a> HeaderDecoder<'a> {
        pub fn new(base: &'a [u8]) -> Self {
            HeaderDecoder {
                base,
                payloads: Vec::new(),
            }
        }

        /// Offset of `part` (a sub-slice of the file) from the start of the file.
        fn offset(&self, part: &[u8]) -> usize {
            part.as_ptr() as usize - self.base.as_ptr() as usize
        }

        pub fn net(&mut self) -> Option<NetParameter> {
            let mut net = NetParameter::default();
            let mut buf = self.base;
            while !buf.is_empty() {
                let (tag, wire_type) = decode_key(&mut buf).ok()?;
                match (tag, wire_type) {
                    (100, WireType::LengthDelimited) => {
                        let layer = self.layer(take_len_delimited(&mut buf)?)?;
                        net.layer.push(layer)
                    }
                    (2, WireType::LengthDelimited) => {
                        let layer = self.v1_layer(take_len_delimited(&mut buf)?)?;
                        net.layers.push(layer)
                    }
                    _ => net
                        .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                        .ok()?,
                }
            }
            Some(net)
        }

        fn layer(&mut self, mut buf: &'a [u8]) -> Option<LayerParameter> {
            let mut layer = LayerParameter::default();
            while !buf.is_empty() {
                let (tag, wire_type) = decode_key(&mut buf).ok()?;
                match (tag, wire_type) {
                    (7, WireType::LengthDelimited) => {
                        let blob = self.blob(take_len_delimited(&mut buf)?)?;
                        layer.blobs.push(blob)
                    }
                    _ => layer
                        .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                        .ok()?,
                }
            }
            Some(layer)
        }

        fn v1_layer(&mut self, mut buf: &'a [u8]) -> Option<V1LayerParameter> {
            let mut layer = V1LayerParameter::default();
            while !buf.is_empty() {
                let (tag, wire_type) = decode_key(&mut buf).ok()?;
                match (tag, wire_type) {
                    (6, WireType::LengthDelimited) => {
                        let blob = self.blob(take_len_delimited(&mut buf)?)?;
                        layer.blobs.push(blob)
                    }
                    // A V0 layer inside (an optional message: repeated occurrences merge).
                    (1, WireType::LengthDelimited) => {
                        let payload = take_len_delimited(&mut buf)?;
                        let v0 = layer.layer.get_or_insert_with(Default::default);
                        self.merge_v0_layer(v0, payload)?
                    }
                    _ => layer
                        .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                        .ok()?,
                }
            }
            Some(layer)
        }

        fn merge_v0_layer(
            &mut self,
            layer: &mut V0LayerParameter,
            mut buf: &'a [u8],
        ) -> Option<()> {
            while !buf.is_empty() {
                let (tag, wire_type) = decode_key(&mut buf).ok()?;
                match (tag, wire_type) {
                    (50, WireType::LengthDelimited) => {
                        let blob = self.blob(take_len_delimited(&mut buf)?)?;
                        layer.blobs.push(blob)
                    }
                    _ => layer
                        .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                        .ok()?,
                }
            }
            Some(())
        }

        /// A blob without its values, tagged with its index in `payloads`.
        fn blob(&mut self, mut buf: &'a [u8]) -> Option<BlobProto> {
            let start = self.offset(buf);
            let mut payload = BlobPayload {
                message: start..start + buf.len(),
                ..Default::default()
            };
            let mut blob = BlobProto::default();
            while !buf.is_empty() {
                let (tag, wire_type) = decode_key(&mut buf).ok()?;
                match (tag, wire_type) {
                    // data / diff, packed.
                    (5 | 6, WireType::LengthDelimited) => {
                        let values = take_len_delimited(&mut buf)?;
                        if !values.len().is_multiple_of(4) {
                            return None;
                        }
                        if tag == 5 && !values.is_empty() {
                            let at = self.offset(values);
                            payload.runs.push(at..at + values.len());
                        }
                    }
                    // data / diff, one unpacked value.
                    (5 | 6, WireType::ThirtyTwoBit) => {
                        buf = buf.get(4..)?;
                        payload.decode |= tag == 5;
                    }
                    // double_data / double_diff, packed.
                    (8 | 9, WireType::LengthDelimited) => {
                        let values = take_len_delimited(&mut buf)?;
                        if !values.len().is_multiple_of(8) {
                            return None;
                        }
                        payload.decode |= tag == 8 && !values.is_empty();
                    }
                    // double_data / double_diff, one unpacked value.
                    (8 | 9, WireType::SixtyFourBit) => {
                        buf = buf.get(8..)?;
                        payload.decode |= tag == 8;
                    }
                    _ => blob
                        .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                        .ok()?,
                }
            }
            blob.double_diff = vec![self.payloads.len() as f64];
            self.payloads.push(payload);
            Some(blob)
        }
    }

    pub(super) fn decode_blob(mut buf: &[u8]) -> Option<BlobProto> {
        let mut blob = BlobProto::default();
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            match (tag, wire_type) {
                (5, WireType::LengthDelimited) => {
                    extend_floats(&mut blob.data, take_len_delimited(&mut buf)?)?
                }
                (6, WireType::LengthDelimited) => {
                    extend_floats(&mut blob.diff, take_len_delimited(&mut buf)?)?
                }
                _ => blob
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .ok()?,
            }
        }
        Some(blob)
    }
}
