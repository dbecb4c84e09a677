//! GPU mode: WGSL compute shaders on `wgpu` (Vulkan first, Metal/DX12 where they exist, GL as a
//! fallback; Mesa's lavapipe on machines without a GPU). The only module that imports wgpu.
//!
//! - Adapters are listed in a fixed order (Vulkan/Metal/DX12 before GL, discrete before integrated
//!   before software); `-gpu N` is the index in [`list_adapters`].
//! - A tensor is one storage buffer. A shader binds a window of it (offset aligned down to the
//!   adapter's storage offset alignment, the remainder passed as an element shift). Kernels whose
//!   windows would exceed `max_storage_buffer_binding_size` are split into several dispatches over
//!   their outer units (elements, rows, images), so large tensors work on every adapter.
//! - Every dispatch, copy and upload is recorded into one command encoder; the encoder is submitted
//!   only by [`Engine::download`], [`Engine::sync`] and [`Engine::read_timestamps`]. Uniform
//!   parameters of all dispatches of a batch live in a few arena buffers written once before the
//!   submission.
//! - Where the adapter has timestamp queries, [`Engine::timestamp`] records one between commands of
//!   the batch (`time` marks layer boundaries with it and reads them once per pass).
//! - Pipelines (one per shader + entry point) and their explicit bind group layouts are created once
//!   and cached.
mod blas;
mod conv;
mod conv_gemm;
mod elementwise;
mod norm;
mod pool;
mod softmax;
mod solver;
mod transfer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use wgpu::util::DeviceExt;

use crate::engine::{Engine, Kernel, TensorId, View};

const NO_ADAPTER: &str = "no GPU adapter found: install a GPU driver, or Mesa's software Vulkan \
                          driver with `apt-get install mesa-vulkan-drivers`";

/// Width in texels of the linear textures (must match `TEX_SHIFT` in common.wgsl).
pub(crate) const TEX_W: u32 = 4096;
/// Words of uniform parameters one dispatch may pass (the shaders read `array<vec4<u32>, 16>`).
const PARAM_WORDS: usize = 64;
/// Size of one uniform arena buffer.
const ARENA_BYTES: u64 = 64 * 1024;
/// Invocations per workgroup of the 1-D shaders (must match `WG` in common.wgsl).
pub(crate) const WG: u32 = 256;

/// Description of one adapter, as `device_query` prints it.
#[derive(Clone, Debug)]
pub struct AdapterInfo {
    /// Position in [`list_adapters`] (the `-gpu` index).
    pub index: usize,
    pub name: String,
    /// "Vulkan", "Metal", "Dx12", "Gl", ...
    pub backend: String,
    /// "DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Cpu", "Other".
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Key limits as (name, value).
    pub limits: Vec<(&'static str, u64)>,
    /// Every supported feature, by wgpu's name.
    pub features: Vec<String>,
}

fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(
        wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12 | wgpu::Backends::GL,
    )
}

fn make_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends();
    desc.flags = wgpu::InstanceFlags::VALIDATION_INDIRECT_CALL.with_env();
    wgpu::Instance::new(desc)
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal | wgpu::Backend::Dx12 => 1,
        wgpu::Backend::Gl => 2,
        _ => 3,
    }
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// The adapters in `-gpu` index order.
fn sorted_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends()));
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (backend_rank(info.backend), type_rank(info.device_type))
    });
    adapters
}

fn key_limits(l: &wgpu::Limits) -> Vec<(&'static str, u64)> {
    vec![
        ("max_buffer_size", l.max_buffer_size),
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        ),
        (
            "max_uniform_buffer_binding_size",
            l.max_uniform_buffer_binding_size,
        ),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_size_x",
            l.max_compute_workgroup_size_x as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
        (
            "min_storage_buffer_offset_alignment",
            l.min_storage_buffer_offset_alignment as u64,
        ),
        (
            "min_uniform_buffer_offset_alignment",
            l.min_uniform_buffer_offset_alignment as u64,
        ),
        ("max_bind_groups", l.max_bind_groups as u64),
    ]
}

fn describe(index: usize, a: &wgpu::Adapter) -> AdapterInfo {
    let info = a.get_info();
    let limits = a.limits();
    AdapterInfo {
        index,
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        vendor: info.vendor,
        device: info.device,
        subgroup_min_size: info.subgroup_min_size,
        subgroup_max_size: info.subgroup_max_size,
        limits: key_limits(&limits),
        features: a
            .features()
            .iter_names()
            .map(|(name, _)| name.to_string())
            .collect(),
    }
}

/// Every adapter wgpu finds, in `-gpu` index order (empty when there is none).
pub fn list_adapters() -> Vec<AdapterInfo> {
    let instance = make_instance();
    sorted_adapters(&instance)
        .iter()
        .enumerate()
        .map(|(i, a)| describe(i, a))
        .collect()
}

/// The error to give when GPU mode is requested on a machine without an adapter.
pub fn no_adapter_message() -> &'static str {
    NO_ADAPTER
}

struct Tensor {
    buf: wgpu::Buffer,
    len: usize,
}

/// A window of a buffer as one shader binding: bytes `[offset, offset + size)`, the view starting
/// `shift` elements into it.
#[derive(Clone)]
pub(crate) struct Bound {
    buf: wgpu::Buffer,
    offset: u64,
    size: u64,
    pub shift: u32,
}

/// The vec4 twin of a point-wise kernel (see [`GpuEngine::dispatch_pointwise`]): its entry in
/// elementwise4.wgsl, the value of its OP constant (op code, mode or flags) and, for channel
/// kernels, whether rows of `inner` elements hold whole vec4s (ROWS4: one channel per vec4).
#[derive(Clone, Copy)]
pub(crate) struct Wide {
    pub entry: &'static str,
    pub op: u32,
    pub rows4: bool,
}

impl Wide {
    pub fn new(entry: &'static str, op: u32) -> Wide {
        Wide {
            entry,
            op,
            rows4: false,
        }
    }
    /// For a kernel over [outer, channels, inner] tensors.
    pub fn channels(entry: &'static str, op: u32, inner: usize) -> Wide {
        Wide {
            entry,
            op,
            rows4: inner.is_multiple_of(4),
        }
    }
}

impl Bound {
    /// The binding grown to whole 16-byte units (for vec4 arrays), if its buffer allows it.
    pub(crate) fn widened(&self) -> Option<Bound> {
        let size = self.size.next_multiple_of(16);
        (self.offset + size <= self.buf.size()).then(|| Bound {
            size,
            ..self.clone()
        })
    }
}

/// One binding of a dispatch: a storage buffer window or a float texture.
pub(crate) enum Res<'a> {
    B(&'a Bound),
    T(&'a wgpu::TextureView),
}

struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: Arc<wgpu::BindGroupLayout>,
}

/// Shader, entry point and the values of its pipeline-overridable constants.
type PipeKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

/// Uniform parameters of one dispatch, as 32-bit words.
#[derive(Default, Clone)]
pub(crate) struct Params(pub Vec<u32>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::with_capacity(16))
    }
    /// An unsigned word (values are checked by [`GpuEngine::check_u32`] at the call sites that
    /// may overflow; sizes inside one binding always fit).
    pub fn u(mut self, v: usize) -> Self {
        self.0.push(v as u32);
        self
    }
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    pub fn shift(self, b: &Bound) -> Self {
        self.u(b.shift as usize)
    }
}

/// Work recorded but not yet submitted.
#[derive(Default)]
struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    /// Host copies of the uniform arenas used by this batch.
    arena_data: Vec<Vec<u8>>,
    /// Commands recorded since the last submission.
    commands: usize,
}

/// GPU mode engine: one adapter, one device, one queue.
pub struct GpuEngine {
    _instance: wgpu::Instance,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    subgroup_gemm: bool,
    textures_for_reads: bool,
    /// Point-wise kernels on vec4 lanes where aligned (see [`Self::dispatch_pointwise`]).
    wide_pointwise: bool,
    tensors: Vec<Option<Tensor>>,
    free_ids: Vec<u32>,
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<PipeKey, Arc<Pipe>>,
    layouts: HashMap<Vec<bool>, (Arc<wgpu::BindGroupLayout>, wgpu::PipelineLayout)>,
    textures: HashMap<&'static str, wgpu::Texture>,
    arenas: Vec<wgpu::Buffer>,
    param_slot: usize,
    rec: Recorder,
    scratch: HashMap<&'static str, wgpu::Buffer>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Elements one storage binding may span (the adapter's limit unless lowered for tests).
    max_bind_elems: usize,
    /// Timestamp queries for [`Engine::timestamp`] (None when the device has none).
    timer: Option<Timer>,
    /// Per-kernel device times (`CAFFE_RS_GPU_PROFILE=1`), printed when the engine is dropped.
    profile: Option<Profile>,
    /// The block of op(A) the packed-A texture holds, while its source is unchanged (see
    /// `blas::pack_cached`).
    pub(crate) packed_a: Option<blas::PackedKey>,
}

/// A developer's profile: a timestamp before and after every dispatch and texture copy, resolved
/// at each submission (which then waits), summed per shader entry point.
struct Profile {
    set: wgpu::QuerySet,
    /// Label of each pair of timestamps recorded in the current batch.
    pending: Vec<&'static str>,
    /// Label -> (milliseconds, count).
    totals: HashMap<&'static str, (f64, usize)>,
    period_ns: f64,
}

/// Device timestamps recorded since the last [`Engine::read_timestamps`]: query sets of
/// `QUERY_SET_MAX_QUERIES` entries, created as needed.
struct Timer {
    sets: Vec<wgpu::QuerySet>,
    used: u32,
    /// Whether timestamps may be written between passes (else each one is an empty compute pass
    /// that writes it at its beginning, which needs only `TIMESTAMP_QUERY`).
    inside_encoders: bool,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl GpuEngine {
    /// Opens adapter `index` of [`list_adapters`] with its full limits and the optional features
    /// the kernels use (subgroups, timestamp queries) when it has them.
    pub fn new(index: usize) -> Result<GpuEngine> {
        let instance = make_instance();
        let mut adapters = sorted_adapters(&instance);
        if adapters.is_empty() {
            bail!(NO_ADAPTER);
        }
        if index >= adapters.len() {
            let names: Vec<String> = adapters
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {}", a.get_info().name))
                .collect();
            bail!(
                "GPU adapter {index} does not exist; the adapters are: {}",
                names.join(", ")
            );
        }
        let adapter = adapters.swap_remove(index);
        let info = adapter.get_info();
        let limits = adapter.limits();
        let wanted = wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("caffe-rs"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| anyhow!("cannot open GPU adapter {index} ({}): {e}", info.name))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        {
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                errors.lock().unwrap().push(e.to_string());
            }));
        }
        {
            let errors = errors.clone();
            device.set_device_lost_callback(move |reason, msg| {
                if reason != wgpu::DeviceLostReason::Destroyed {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("GPU device lost ({reason:?}): {msg}"));
                }
            });
        }
        // The subgroup GEMM runs 8 lanes per workgroup and needs them in one subgroup.
        let subgroup_gemm = features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size >= 8
            && std::env::var("CAFFE_RS_NO_SUBGROUPS")
                .map(|v| v == "0")
                .unwrap_or(true);
        let textures_for_reads = info.device_type == wgpu::DeviceType::Cpu;
        let param_slot = (PARAM_WORDS * 4)
            .max(limits.min_uniform_buffer_offset_alignment as usize)
            .next_multiple_of(16);
        let align = limits.min_storage_buffer_offset_alignment as usize;
        let max_bind_elems =
            ((limits.max_storage_buffer_binding_size as usize).saturating_sub(align) / 4) & !63;
        let timer = (features.contains(wgpu::Features::TIMESTAMP_QUERY)
            && std::env::var("CAFFE_RS_NO_TIMESTAMPS")
                .map(|v| v == "0")
                .unwrap_or(true))
        .then(|| Timer {
            sets: Vec::new(),
            used: 0,
            inside_encoders: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
            period_ns: queue.get_timestamp_period() as f64,
        });
        let profile = (features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
            && std::env::var("CAFFE_RS_GPU_PROFILE").is_ok_and(|v| v != "0"))
        .then(|| Profile {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: wgpu::QUERY_SET_MAX_QUERIES,
            }),
            pending: Vec::new(),
            totals: HashMap::new(),
            period_ns: queue.get_timestamp_period() as f64,
        });
        Ok(GpuEngine {
            _instance: instance,
            device,
            queue,
            info,
            limits,
            subgroup_gemm,
            textures_for_reads,
            wide_pointwise: true,
            tensors: Vec::new(),
            free_ids: Vec::new(),
            modules: HashMap::new(),
            pipelines: HashMap::new(),
            layouts: HashMap::new(),
            textures: HashMap::new(),
            arenas: Vec::new(),
            param_slot,
            rec: Recorder::default(),
            scratch: HashMap::new(),
            errors,
            max_bind_elems,
            timer,
            profile,
            packed_a: None,
        })
    }

    /// Backend of the opened adapter ("Vulkan", "Gl", ...).
    pub fn backend(&self) -> String {
        format!("{:?}", self.info.backend)
    }

    /// Whether kernels should read big inputs through texture copies: on CPU adapters (lavapipe)
    /// storage-buffer loads go lane by lane while texel fetches are gathered.
    pub(crate) fn prefers_textures(&self) -> bool {
        self.textures_for_reads
    }

    /// Whether kernels read inputs through texture copies (see [`Self::set_texture_reads`]).
    pub fn uses_texture_reads(&self) -> bool {
        self.textures_for_reads
    }

    /// Chooses whether kernels read inputs through texture copies (default: on CPU adapters).
    pub fn set_texture_reads(&mut self, on: bool) {
        self.textures_for_reads = on;
    }

    /// Whether point-wise kernels run on vec4 lanes where aligned.
    pub(crate) fn wide_pointwise(&self) -> bool {
        self.wide_pointwise
    }

    /// Chooses whether point-wise kernels run on vec4 lanes where aligned (default: on); off,
    /// every element gets its own invocation (tests compare the two).
    pub fn set_wide_pointwise(&mut self, on: bool) {
        self.wide_pointwise = on;
    }

    /// Whether the GEMM runs the subgroup kernel (else the portable register-tiled one).
    pub fn uses_subgroups(&self) -> bool {
        self.subgroup_gemm
    }

    /// Chooses the GEMM kernel: the subgroup one is used only when the adapter supports it.
    pub fn set_subgroups(&mut self, on: bool) {
        self.subgroup_gemm = on
            && self.device.features().contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size >= 8;
    }

    /// Lowers the number of elements one shader binding may span (tests use it to exercise the
    /// split dispatches without allocating hundreds of MiB). Values above the adapter's limit are
    /// clamped to it.
    pub fn set_max_binding_elems(&mut self, elems: usize) {
        let align = self.limits.min_storage_buffer_offset_alignment as usize;
        let cap = ((self.limits.max_storage_buffer_binding_size as usize).saturating_sub(align)
            / 4)
            & !63;
        self.max_bind_elems = elems.clamp(64, cap.max(64)) & !63;
    }

    /// Elements one storage binding may span.
    pub(crate) fn max_bind(&self) -> usize {
        self.max_bind_elems
    }

    fn take_errors(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            return Ok(());
        }
        let msg = errs.join("\n");
        errs.clear();
        Err(anyhow!("GPU error on {}: {msg}", self.info.name))
    }

    fn tensor(&self, id: TensorId) -> &Tensor {
        self.tensors
            .get(id.0 as usize)
            .and_then(|t| t.as_ref())
            .unwrap_or_else(|| {
                panic!(
                    "GPU tensor {} does not exist (freed or never allocated)",
                    id.0
                )
            })
    }

    pub(crate) fn check_view(&self, v: View) -> Result<()> {
        let t = self
            .tensors
            .get(v.id.0 as usize)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| {
                anyhow!(
                    "GPU tensor {} does not exist (freed or never allocated)",
                    v.id.0
                )
            })?;
        if v.offset + v.len > t.len {
            bail!(
                "view [{}, {}) of tensor {} is outside its {} elements",
                v.offset,
                v.offset + v.len,
                v.id.0,
                t.len
            );
        }
        Ok(())
    }

    // ---- recording -------------------------------------------------------------------------

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.rec.commands += 1;
        let device = &self.device;
        self.rec.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// Profiling: a timestamp before the next command (false when the batch has no room left).
    fn prof_begin(&mut self) -> bool {
        let Some(p) = self.profile.as_ref() else {
            return false;
        };
        let index = p.pending.len() as u32 * 2;
        if index + 2 > wgpu::QUERY_SET_MAX_QUERIES {
            return false;
        }
        let set = p.set.clone();
        self.encoder().write_timestamp(&set, index);
        true
    }

    /// Profiling: the timestamp after the command begun by [`Self::prof_begin`].
    fn prof_end(&mut self, label: &'static str) {
        let Some(p) = self.profile.as_mut() else {
            return;
        };
        let index = p.pending.len() as u32 * 2 + 1;
        p.pending.push(label);
        let set = p.set.clone();
        self.encoder().write_timestamp(&set, index);
    }

    /// Profiling: adds the times of the batch just submitted (waits for it).
    fn prof_collect(&mut self, staging: Option<wgpu::Buffer>) {
        let (Some(p), Some(staging)) = (self.profile.as_mut(), staging) else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        if let Ok(Ok(())) = rx.recv()
            && let Ok(mapped) = staging.get_mapped_range(..)
        {
            let ticks: &[u64] = bytemuck::cast_slice(&mapped);
            for (i, label) in p.pending.iter().enumerate() {
                let ms = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * p.period_ns * 1e-6;
                let e = p.totals.entry(label).or_default();
                e.0 += ms;
                e.1 += 1;
            }
        }
        p.pending.clear();
    }

    /// Submits everything recorded (without waiting, unless profiling).
    fn flush(&mut self) {
        let staging = match self.profile.as_ref() {
            Some(p) if !p.pending.is_empty() => {
                let bytes = p.pending.len() as u64 * 16;
                let set = p.set.clone();
                let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("profile read-back"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let n = p.pending.len() as u32 * 2;
                let enc = self.encoder();
                enc.resolve_query_set(&set, 0..n, &resolve, 0);
                enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
                Some(staging)
            }
            _ => None,
        };
        let Some(encoder) = self.rec.encoder.take() else {
            return;
        };
        for (arena, data) in self.arenas.iter().zip(&self.rec.arena_data) {
            if !data.is_empty() {
                self.queue.write_buffer(arena, 0, data);
            }
        }
        self.rec.arena_data.clear();
        self.rec.commands = 0;
        self.queue.submit([encoder.finish()]);
        self.prof_collect(staging);
    }

    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("GPU wait failed on {}: {e}", self.info.name))?;
        Ok(())
    }

    /// Reserves a uniform slot for `params`; returns (arena index, byte offset).
    fn push_params(&mut self, params: &[u32]) -> Result<(usize, u64)> {
        if params.len() > PARAM_WORDS {
            bail!(
                "internal: {} parameter words exceed {PARAM_WORDS}",
                params.len()
            );
        }
        let slot = self.param_slot;
        let arena = match self
            .rec
            .arena_data
            .iter()
            .position(|d| d.len() + slot <= ARENA_BYTES as usize)
        {
            Some(i) => i,
            None => {
                self.rec
                    .arena_data
                    .push(Vec::with_capacity(ARENA_BYTES as usize));
                self.rec.arena_data.len() - 1
            }
        };
        while self.arenas.len() <= arena {
            self.arenas
                .push(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: ARENA_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
        }
        let data = &mut self.rec.arena_data[arena];
        let offset = data.len() as u64;
        data.extend_from_slice(bytemuck::cast_slice(params));
        data.resize(offset as usize + slot, 0);
        Ok((arena, offset))
    }

    /// The layout of uniform binding 0 then one storage buffer (false) or float texture (true) per
    /// entry of `sig`.
    fn layout(&mut self, sig: &[bool]) -> (Arc<wgpu::BindGroupLayout>, &wgpu::PipelineLayout) {
        let device = &self.device;
        let (bgl, pl) = self.layouts.entry(sig.to_vec()).or_insert_with(|| {
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }];
            for (i, &tex) in sig.iter().enumerate() {
                let ty = if tex {
                    wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    }
                } else {
                    wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    }
                };
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: i as u32 + 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty,
                    count: None,
                });
            }
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            (Arc::new(bgl), pl)
        });
        (bgl.clone(), pl)
    }

    fn pipeline(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        sig: &[bool],
    ) -> Result<Arc<Pipe>> {
        let key: PipeKey = (
            shader,
            entry,
            constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        );
        if let Some(p) = self.pipelines.get(&key) {
            return Ok(p.clone());
        }
        if !self.modules.contains_key(shader) {
            let source = shader_source(shader)?;
            let code = format!(
                "{}\n{}",
                include_str!("../../../shaders/common.wgsl"),
                source
            );
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(shader),
                source: wgpu::ShaderSource::Wgsl(code.into()),
            };
            let module = self.device.create_shader_module(desc);
            self.take_errors()
                .map_err(|e| anyhow!("compiling shader {shader}.wgsl: {e}"))?;
            self.modules.insert(shader, module);
        }
        let (bgl, _) = self.layout(sig);
        let pipeline = {
            let module = &self.modules[shader];
            let pl = &self.layouts[sig].1;
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(pl),
                    module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        ..Default::default()
                    },
                    cache: None,
                })
        };
        self.take_errors()
            .map_err(|e| anyhow!("creating pipeline {shader}::{entry}: {e}"))?;
        let p = Arc::new(Pipe {
            pipeline,
            layout: bgl,
        });
        self.pipelines.insert(key, p.clone());
        Ok(p)
    }

    /// The binding of a view (which must fit one binding; callers split larger work).
    pub(crate) fn bind(&self, v: View) -> Result<Bound> {
        self.check_view(v)?;
        let t = self.tensor(v.id);
        self.bind_buffer(&t.buf, v.offset, v.len)
    }

    /// The buffer holding a tensor.
    pub(crate) fn buffer(&self, id: TensorId) -> wgpu::Buffer {
        self.tensor(id).buf.clone()
    }

    /// The binding of `len` elements of `buf` from element `offset`.
    pub(crate) fn bind_buffer(
        &self,
        buf: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Bound> {
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let start = offset as u64 * 4;
        let aligned = start / align * align;
        let shift = (start - aligned) / 4;
        let size = (shift + len.max(1) as u64) * 4;
        let size = size.min(buf.size() - aligned);
        if size > self.limits.max_storage_buffer_binding_size {
            bail!(
                "a window of {len} elements exceeds the adapter's max_storage_buffer_binding_size ({} bytes)",
                self.limits.max_storage_buffer_binding_size
            );
        }
        Ok(Bound {
            buf: buf.clone(),
            offset: aligned,
            size,
            shift: shift as u32,
        })
    }

    /// The same window bound as `array<vec4<f32>>`: its size rounded up to whole texels (the
    /// buffer holds them: buffers are sized in texels and offsets are texel-aligned).
    pub(crate) fn texel_binding(&self, b: &Bound) -> Bound {
        let size = b.size.next_multiple_of(16).min(b.buf.size() - b.offset);
        Bound { size, ..b.clone() }
    }

    /// A scratch buffer of at least `len` elements, reused across calls under `name`.
    /// Reuse inside one batch is safe: commands run in order with barriers between them.
    pub(crate) fn scratch(&mut self, name: &'static str, len: usize) -> Result<Bound> {
        let bytes = (len.max(1) as u64 * 4).next_multiple_of(256);
        if bytes > self.limits.max_buffer_size {
            bail!("scratch buffer of {len} elements exceeds the adapter's max_buffer_size");
        }
        let need_new = self.scratch.get(name).is_none_or(|b| b.size() < bytes);
        if need_new {
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.scratch.insert(name, buf);
        }
        let buf = self.scratch[name].clone();
        self.bind_buffer(&buf, 0, len.max(4))
    }

    /// Copies a view into scratch buffer `name` (for inputs that alias an output).
    pub(crate) fn scratch_copy(&mut self, name: &'static str, v: View) -> Result<Bound> {
        self.check_view(v)?;
        let s = self.scratch(name, v.len)?;
        let src = self.tensor(v.id).buf.clone();
        let (dst, len) = (s.buf.clone(), v.len as u64 * 4);
        if len > 0 {
            self.encoder()
                .copy_buffer_to_buffer(&src, v.offset as u64 * 4, &dst, 0, len);
        }
        Ok(s)
    }

    /// Records a copy of a bound window (of `dst.len` elements) into a view.
    pub(crate) fn copy_from_bound(&mut self, src: &Bound, dst: View) -> Result<()> {
        self.check_view(dst)?;
        if dst.len == 0 {
            return Ok(());
        }
        let d = self.tensor(dst.id).buf.clone();
        let s = src.buf.clone();
        let from = src.offset + src.shift as u64 * 4;
        self.encoder().copy_buffer_to_buffer(
            &s,
            from,
            &d,
            dst.offset as u64 * 4,
            dst.len as u64 * 4,
        );
        Ok(())
    }

    /// Binds `input`, copying it to scratch first when it overlaps one of `outputs` (a kernel whose
    /// invocations may read what another writes). `pointwise` kernels read and write each index in
    /// the same invocation, so an input that coincides exactly with an output is bound directly.
    pub(crate) fn bind_input(
        &mut self,
        name: &'static str,
        input: View,
        outputs: &[View],
        pointwise: bool,
    ) -> Result<Bound> {
        let clash = outputs.iter().any(|o| {
            o.id == input.id
                && o.offset < input.offset + input.len
                && input.offset < o.offset + o.len
                && !(pointwise && o.offset == input.offset && o.len == input.len)
        });
        if clash {
            self.scratch_copy(name, input)
        } else {
            self.bind(input)
        }
    }

    /// Records one dispatch of `shader::entry` with `params` and the storage bindings `bufs`
    /// (bindings 1..=bufs.len()).
    pub(crate) fn dispatch(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        params: &Params,
        bufs: &[&Bound],
        groups: [u32; 3],
    ) -> Result<()> {
        let res: Vec<Res> = bufs.iter().map(|b| Res::B(b)).collect();
        self.dispatch_res(shader, entry, params, &res, groups)
    }

    /// [`Self::dispatch`] with storage buffers and textures (bindings 1..=res.len()).
    pub(crate) fn dispatch_res(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        params: &Params,
        res: &[Res],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_spec(shader, entry, &[], params, res, groups)
    }

    /// Dispatches a point-wise kernel over `n` elements, one invocation per element, with the
    /// parameter words [n, the shifts of `binds`, (zeros up to word 8), `words`]. `per_element`
    /// marks the bindings read or written at the element's index (the others, per-channel
    /// values, are indexed by channel). With a [`Wide`] twin (an entry of elementwise4.wgsl),
    /// when `n`, `first` (the global index of element 0, for channel arithmetic) and
    /// the per-element bindings' shifts are multiples of 4, it runs that entry on 4 elements per
    /// invocation instead: lavapipe turns every scalar storage access into a per-lane gather, and
    /// vec4 loads and stores move about 3x as much per instruction. Word 0 is then n / 4.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_pointwise(
        &mut self,
        (shader, entry): (&'static str, &'static str),
        wide: Option<Wide>,
        n: usize,
        first: usize,
        binds: &[Bound],
        per_element: &[bool],
        words: &[u32],
    ) -> Result<()> {
        let aligned = n.is_multiple_of(4)
            && first.is_multiple_of(4)
            && binds
                .iter()
                .zip(per_element)
                .all(|(b, &elementwise)| !elementwise || b.shift.is_multiple_of(4));
        let widened: Option<Vec<Bound>> = wide
            .filter(|_| aligned && self.wide_pointwise)
            .and_then(|_| binds.iter().map(Bound::widened).collect());
        let (count, binds) = match &widened {
            Some(w) => (n / 4, &w[..]),
            None => (n, binds),
        };
        let mut p = Params::new().u(count);
        for b in binds {
            p = p.shift(b);
        }
        while p.0.len() < 8 {
            p = p.u(0);
        }
        p.0.extend_from_slice(words);
        let res: Vec<Res> = binds.iter().map(Res::B).collect();
        let groups = self.groups_1d(count);
        match (wide, &widened) {
            (Some(w), Some(_)) => self.dispatch_spec(
                "elementwise4",
                w.entry,
                &[("OP", w.op as f64), ("ROWS4", f64::from(u8::from(w.rows4)))],
                &p,
                &res,
                groups,
            ),
            _ => self.dispatch_spec(shader, entry, &[], &p, &res, groups),
        }
    }

    /// [`Self::dispatch_res`] of the pipeline specialised with values of the shader's
    /// pipeline-overridable constants (one pipeline per set of values).
    pub(crate) fn dispatch_spec(
        &mut self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &Params,
        res: &[Res],
        groups: [u32; 3],
    ) -> Result<()> {
        if groups.contains(&0) {
            return Ok(());
        }
        let maxg = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > maxg) {
            bail!(
                "internal: dispatch {groups:?} of {shader}::{entry} exceeds {maxg} workgroups per dimension"
            );
        }
        let sig: Vec<bool> = res.iter().map(|r| matches!(r, Res::T(_))).collect();
        let pipe = self.pipeline(shader, entry, constants, &sig)?;
        let (arena, offset) = self.push_params(&params.0)?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.arenas[arena],
                offset,
                size: wgpu::BufferSize::new(self.param_slot as u64),
            }),
        }];
        for (i, r) in res.iter().enumerate() {
            let resource = match r {
                Res::B(b) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buf,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
                Res::T(t) => wgpu::BindingResource::TextureView(t),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource,
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.layout,
            entries: &entries,
        });
        let profiled = self.prof_begin();
        let enc = self.encoder();
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipe.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        if profiled {
            self.prof_end(entry);
        }
        Ok(())
    }

    /// A float texture used as a linear array of at least `floats` floats (texel t holds floats
    /// 4t..4t+4 at (t % TEX_W, t / TEX_W)), reused under `name` like [`Self::scratch`].
    ///
    /// Lavapipe reads textures with real gathers but storage buffers one lane at a time, so the
    /// hot loops (GEMM) read their operands from textures.
    pub(crate) fn scratch_tex(
        &mut self,
        name: &'static str,
        floats: usize,
    ) -> Result<wgpu::Texture> {
        let rows = floats
            .div_ceil(TEX_W as usize * 4)
            .max(1)
            .next_power_of_two() as u32;
        if rows > self.limits.max_texture_dimension_2d {
            bail!("a texture of {floats} floats exceeds the adapter's max_texture_dimension_2d");
        }
        let need_new = self.textures.get(name).is_none_or(|t| t.height() < rows);
        if need_new {
            let tex = self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some(name),
                size: wgpu::Extent3d {
                    width: TEX_W,
                    height: rows,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            self.textures.insert(name, tex);
        }
        Ok(self.textures[name].clone())
    }

    /// Records copies of `floats` floats of `buf` from byte `offset` (a multiple of 16) into the
    /// linear texture `tex`. The buffer must hold whole texels up to the end.
    pub(crate) fn copy_to_tex(
        &mut self,
        buf: &wgpu::Buffer,
        offset: u64,
        floats: usize,
        tex: &wgpu::Texture,
    ) {
        let row_floats = TEX_W as usize * 4;
        let (full, rest) = (floats / row_floats, floats % row_floats);
        let profiled = self.prof_begin();
        let enc = self.encoder();
        if full > 0 {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: buf,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset,
                        bytes_per_row: Some(TEX_W * 16),
                        rows_per_image: Some(full as u32),
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: tex,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width: TEX_W,
                    height: full as u32,
                    depth_or_array_layers: 1,
                },
            );
        }
        if rest > 0 {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: buf,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: offset + (full * row_floats * 4) as u64,
                        bytes_per_row: Some(TEX_W * 16),
                        rows_per_image: Some(1),
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: tex,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: full as u32,
                        z: 0,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width: rest.div_ceil(4) as u32,
                    height: 1,
                    depth_or_array_layers: 1,
                },
            );
        }
        if profiled {
            self.prof_end("copy_to_tex");
        }
    }

    /// Copies a window of a buffer (element `offset`, `len` elements) into linear texture `name`;
    /// returns the texture view and the shift of the window's first element in it.
    pub(crate) fn buffer_tex(
        &mut self,
        name: &'static str,
        buf: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<(wgpu::TextureView, u32)> {
        let start = offset & !3;
        let shift = offset - start;
        let floats = shift + len.max(1);
        if (start + floats.next_multiple_of(4)) as u64 * 4 > buf.size() {
            bail!("internal: texture copy beyond the end of a buffer");
        }
        let tex = self.scratch_tex(name, floats)?;
        self.copy_to_tex(buf, start as u64 * 4, floats, &tex);
        Ok((tex.create_view(&Default::default()), shift as u32))
    }

    /// Workgroup counts covering `threads` invocations of a 1-D shader (`WG` per workgroup),
    /// folded into two dimensions when needed (see `gid` in common.wgsl).
    pub(crate) fn groups_1d(&self, threads: usize) -> [u32; 3] {
        let groups = threads.div_ceil(WG as usize);
        let maxg = self.limits.max_compute_workgroups_per_dimension as usize;
        if groups <= maxg {
            [groups as u32, 1, 1]
        } else {
            [maxg as u32, groups.div_ceil(maxg) as u32, 1]
        }
    }

    /// Splits `units` into ranges such that every binding, which spans `per_unit[i]` elements per
    /// unit (plus `extra[i]`), fits one binding. Errors when one unit alone is too large.
    pub(crate) fn unit_chunks(
        &self,
        what: &str,
        units: usize,
        per_unit: &[usize],
    ) -> Result<Vec<std::ops::Range<usize>>> {
        let max = self.max_bind();
        let widest = per_unit.iter().copied().max().unwrap_or(1).max(1);
        if widest > max {
            bail!(
                "GPU kernel {what}: one unit spans {widest} elements, more than one binding may hold ({max}) on {}",
                self.info.name
            );
        }
        let step = (max / widest).max(1);
        Ok((0..units)
            .step_by(step)
            .map(|s| s..(s + step).min(units))
            .collect())
    }

    pub(crate) fn record_fill(&mut self, dst: View, value: f32) -> Result<()> {
        self.check_view(dst)?;
        if dst.len == 0 {
            return Ok(());
        }
        if value.to_bits() == 0 {
            let buf = self.tensor(dst.id).buf.clone();
            self.encoder()
                .clear_buffer(&buf, dst.offset as u64 * 4, Some(dst.len as u64 * 4));
            return Ok(());
        }
        for r in self.unit_chunks("fill", dst.len, &[1])? {
            let b = self.bind(dst.slice(r.start, r.len()))?;
            let p = Params::new().u(r.len()).shift(&b).f(value);
            let g = self.groups_1d(r.len());
            self.dispatch("util", "fill", &p, &[&b], g)?;
        }
        Ok(())
    }

    pub(crate) fn record_copy(&mut self, src: View, dst: View) -> Result<()> {
        self.check_view(src)?;
        self.check_view(dst)?;
        if src.len != dst.len {
            bail!(
                "copy between views of different lengths ({} and {})",
                src.len,
                dst.len
            );
        }
        if src.len == 0 {
            return Ok(());
        }
        if src.id != dst.id {
            let (s, d) = (
                self.tensor(src.id).buf.clone(),
                self.tensor(dst.id).buf.clone(),
            );
            self.encoder().copy_buffer_to_buffer(
                &s,
                src.offset as u64 * 4,
                &d,
                dst.offset as u64 * 4,
                src.len as u64 * 4,
            );
            return Ok(());
        }
        if src.offset == dst.offset {
            return Ok(());
        }
        if src.offset < dst.offset + dst.len && dst.offset < src.offset + src.len {
            // Overlapping ranges: go through scratch.
            let s = self.scratch_copy("copy", src)?;
            let d = self.tensor(dst.id).buf.clone();
            self.encoder().copy_buffer_to_buffer(
                &s.buf,
                0,
                &d,
                dst.offset as u64 * 4,
                src.len as u64 * 4,
            );
            return Ok(());
        }
        for r in self.unit_chunks("copy", src.len, &[1])? {
            let s = self.bind(src.slice(r.start, r.len()))?;
            let d = self.bind(dst.slice(r.start, r.len()))?;
            let p = Params::new().u(r.len()).shift(&s).shift(&d);
            let g = self.groups_1d(r.len());
            self.dispatch("util", "copy", &p, &[&s, &d], g)?;
        }
        Ok(())
    }

    fn record_upload(&mut self, dst: View, data: &[f32]) -> Result<()> {
        self.check_view(dst)?;
        if data.len() > dst.len {
            bail!("upload of {} values into a view of {}", data.len(), dst.len);
        }
        if data.is_empty() {
            return Ok(());
        }
        let buf = self.tensor(dst.id).buf.clone();
        if self.rec.encoder.is_none() {
            // Nothing recorded yet: a queue write is ordered before the next submission.
            self.queue
                .write_buffer(&buf, dst.offset as u64 * 4, bytemuck::cast_slice(data));
        } else {
            let staging = self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("upload"),
                    contents: bytemuck::cast_slice(data),
                    usage: wgpu::BufferUsages::COPY_SRC,
                });
            self.encoder().copy_buffer_to_buffer(
                &staging,
                0,
                &buf,
                dst.offset as u64 * 4,
                data.len() as u64 * 4,
            );
        }
        Ok(())
    }

    fn record_download(&mut self, src: View) -> Result<Vec<f32>> {
        self.check_view(src)?;
        if src.len == 0 {
            self.flush();
            return Ok(Vec::new());
        }
        let bytes = src.len as u64 * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let buf = self.tensor(src.id).buf.clone();
        self.encoder()
            .copy_buffer_to_buffer(&buf, src.offset as u64 * 4, &staging, 0, bytes);
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| anyhow!("GPU read-back was dropped"))?
            .map_err(|e| anyhow!("GPU read-back failed: {e}"))?;
        let out = {
            let mapped = staging
                .get_mapped_range(..)
                .map_err(|e| anyhow!("GPU read-back failed: {e:?}"))?;
            bytemuck::cast_slice::<u8, f32>(&mapped).to_vec()
        };
        staging.unmap();
        self.take_errors()?;
        Ok(out)
    }

    fn record_timestamp(&mut self) -> Result<()> {
        let Some(t) = self.timer.as_mut() else {
            return Ok(());
        };
        let max = wgpu::QUERY_SET_MAX_QUERIES;
        let (set, index) = ((t.used / max) as usize, t.used % max);
        if set == t.sets.len() {
            t.sets
                .push(self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: max,
                }));
        }
        t.used += 1;
        let (query_set, inside) = (t.sets[set].clone(), t.inside_encoders);
        let enc = self.encoder();
        if inside {
            enc.write_timestamp(&query_set, index);
        } else {
            // An empty pass whose end is stamped: ordered after every earlier command.
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("timestamp"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: None,
                    end_of_pass_write_index: Some(index),
                }),
            });
        }
        Ok(())
    }

    fn record_read_timestamps(&mut self) -> Result<Vec<f64>> {
        let (sets, used, period) = match &self.timer {
            Some(t) if t.used > 0 => (t.sets.clone(), t.used, t.period_ns),
            _ => {
                self.sync()?;
                return Ok(Vec::new());
            }
        };
        let max = wgpu::QUERY_SET_MAX_QUERIES;
        let bytes = used as u64 * 8;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps read-back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let enc = self.encoder();
        for (i, set) in sets.iter().enumerate() {
            let first = i as u32 * max;
            if first >= used {
                break;
            }
            let count = (used - first).min(max);
            enc.resolve_query_set(set, 0..count, &resolve, first as u64 * 8);
        }
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
        if let Some(t) = self.timer.as_mut() {
            t.used = 0;
        }
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| anyhow!("GPU timestamp read-back was dropped"))?
            .map_err(|e| anyhow!("GPU timestamp read-back failed: {e}"))?;
        let ticks: Vec<u64> = {
            let mapped = staging
                .get_mapped_range(..)
                .map_err(|e| anyhow!("GPU timestamp read-back failed: {e:?}"))?;
            bytemuck::cast_slice::<u8, u64>(&mapped).to_vec()
        };
        staging.unmap();
        self.take_errors()?;
        Ok(ticks
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 * period * 1e-6)
            .collect())
    }
}

impl Drop for GpuEngine {
    fn drop(&mut self) {
        let Some(p) = self.profile.as_ref() else {
            return;
        };
        let mut rows: Vec<_> = p.totals.iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        let all: f64 = rows.iter().map(|r| r.1.0).sum();
        eprintln!("GPU profile ({}): {all:.3} ms in all", self.info.name);
        for (label, (ms, n)) in rows {
            eprintln!(
                "{ms:>12.3} ms {:>5.1}% {n:>8} x {:>10.4} ms  {label}",
                100.0 * ms / all.max(1e-9),
                ms / *n as f64
            );
        }
    }
}

fn shader_source(name: &str) -> Result<&'static str> {
    Ok(match name {
        "util" => include_str!("../../../shaders/util.wgsl"),
        "blas" => include_str!("../../../shaders/blas.wgsl"),
        "blas_subgroup" => include_str!("../../../shaders/blas_subgroup.wgsl"),
        "elementwise" => concat!(
            include_str!("../../../shaders/elementwise_ops.wgsl"),
            include_str!("../../../shaders/elementwise.wgsl")
        ),
        "elementwise4" => concat!(
            include_str!("../../../shaders/elementwise_ops.wgsl"),
            include_str!("../../../shaders/elementwise4.wgsl")
        ),
        "conv" => include_str!("../../../shaders/conv.wgsl"),
        "conv_gemm" => include_str!("../../../shaders/conv_gemm.wgsl"),
        "pool" => concat!(
            include_str!("../../../shaders/pool_common.wgsl"),
            include_str!("../../../shaders/pool.wgsl")
        ),
        "pool4" => concat!(
            include_str!("../../../shaders/pool_common.wgsl"),
            include_str!("../../../shaders/pool4.wgsl")
        ),
        "softmax" => include_str!("../../../shaders/softmax.wgsl"),
        "transfer" => include_str!("../../../shaders/transfer.wgsl"),
        "solver" => include_str!("../../../shaders/solver.wgsl"),
        "norm" => include_str!("../../../shaders/norm.wgsl"),
        _ => bail!("internal: unknown shader {name}"),
    })
}

impl Engine for GpuEngine {
    fn name(&self) -> String {
        self.info.name.clone()
    }

    fn alloc(&mut self, len: usize) -> TensorId {
        let bytes = (len.max(1) as u64 * 4).next_multiple_of(16);
        let too_big = bytes > self.limits.max_buffer_size;
        if too_big {
            self.errors.lock().unwrap().push(format!(
                "a tensor of {len} elements ({bytes} bytes) exceeds the adapter's max_buffer_size ({} bytes)",
                self.limits.max_buffer_size
            ));
        }
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: if too_big { 16 } else { bytes },
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let t = Tensor {
            buf,
            len: if too_big { 0 } else { len },
        };
        if let Some(id) = self.free_ids.pop() {
            self.tensors[id as usize] = Some(t);
            TensorId(id)
        } else {
            self.tensors.push(Some(t));
            TensorId(self.tensors.len() as u32 - 1)
        }
    }

    fn free(&mut self, id: TensorId) {
        self.packed_a = None;
        if let Some(slot) = self.tensors.get_mut(id.0 as usize)
            && slot.take().is_some()
        {
            self.free_ids.push(id.0);
        }
    }

    fn len(&self, id: TensorId) -> usize {
        self.tensor(id).len
    }

    fn upload(&mut self, dst: View, data: &[f32]) {
        self.packed_a = None;
        if let Err(e) = self.record_upload(dst, data) {
            self.errors.lock().unwrap().push(format!("upload: {e}"));
        }
    }

    fn download(&mut self, src: View) -> Vec<f32> {
        match self.take_errors().and_then(|_| self.record_download(src)) {
            Ok(v) => v,
            Err(e) => panic!("GPU download failed: {e:#}"),
        }
    }

    fn fill(&mut self, dst: View, value: f32) {
        self.packed_a = None;
        if let Err(e) = self.record_fill(dst, value) {
            self.errors.lock().unwrap().push(format!("fill: {e}"));
        }
    }

    fn copy(&mut self, src: View, dst: View) {
        self.packed_a = None;
        if let Err(e) = self.record_copy(src, dst) {
            self.errors.lock().unwrap().push(format!("copy: {e}"));
        }
    }

    fn launch(&mut self, kernel: &Kernel) -> Result<()> {
        self.take_errors()?;
        // The packed A block survives only GEMMs (which forget it when their C is its tensor)
        // and im2col into other tensors.
        let keeps_packed_a = match kernel {
            Kernel::Blas(crate::engine::kernels::blas::BlasKernel::Gemm(_)) => true,
            Kernel::Conv(crate::engine::kernels::conv::ConvKernel::Im2col(k)) => {
                self.packed_a.as_ref().is_some_and(|p| p.tensor != k.col.id)
            }
            _ => false,
        };
        if !keeps_packed_a {
            self.packed_a = None;
        }
        match kernel {
            Kernel::Blas(k) => blas::launch(self, k),
            Kernel::Conv(k) => conv::launch(self, k),
            Kernel::Elementwise(k) => elementwise::launch(self, k),
            Kernel::Norm(k) => norm::launch(self, k),
            Kernel::Pool(k) => pool::launch(self, k),
            Kernel::Softmax(k) => softmax::launch(self, k),
            Kernel::Solver(k) => solver::launch(self, k),
            Kernel::Transfer(k) => transfer::launch(self, k),
        }?;
        self.take_errors()
    }

    fn sync(&mut self) -> Result<()> {
        self.flush();
        self.wait()?;
        self.take_errors()
    }

    fn has_timestamps(&self) -> bool {
        self.timer.is_some()
    }

    fn timestamp(&mut self) -> Result<()> {
        self.take_errors()?;
        self.record_timestamp()
    }

    fn read_timestamps(&mut self) -> Result<Vec<f64>> {
        self.take_errors()?;
        self.record_read_timestamps()
    }
}
