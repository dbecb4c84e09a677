//! Times 1-D WGSL kernels in turns: `kernel_lab FILE N REPS ENTRY:GROUPS...` (common.wgsl is
//! prepended; `LAB_PARAMS=a,b,...` sets the first param words, else word 0 = N). Bindings: 0 the
//! params, 1 a storage buffer of 4N+64 floats, 2 a float texture of 4N floats, 3 a write-only
//! rgba32float storage texture of N texels (4096 wide).
//!
//! `examples/kernel_lab_primitives.wgsl` measures lavapipe's memory primitives, e.g.
//! `N=4194304; kernel_lab examples/kernel_lab_primitives.wgsl $N 5 st_scalar:$((N/256))
//! st_vec4:$((N/1024)) st_tex:$((N/1024)) tex_to_buf:$((N/1024)) buf_copy:$((N/256))
//! buf_copy4:$((N/1024))`. Measured here (ns per float, moderately loaded 2-core machine): scalar
//! storage store ~3.7, vec4 storage store ~1.2, texture store ~2, texel fetch + vec4 store ~2,
//! storage load + store ~15 (scalar) or ~12 (vec4).
use wgpu::util::DeviceExt;

fn cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let src = std::fs::read_to_string(&args[1]).unwrap();
    let n: usize = args[2].parse().unwrap();
    let reps: usize = args[3].parse().unwrap();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .unwrap();
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (4 * n as u64 + 64) * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let rows = n.div_ceil(4096).max(1) as u32;
    let mk = |usage| {
        device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: 4096,
                height: rows,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage,
            view_formats: &[],
        })
    };
    let tin = mk(wgpu::TextureUsages::TEXTURE_BINDING).create_view(&Default::default());
    let tout = mk(wgpu::TextureUsages::STORAGE_BINDING).create_view(&Default::default());
    let mut params = [0u32; 64];
    params[0] = n as u32;
    if let Ok(list) = std::env::var("LAB_PARAMS") {
        for (i, v) in list.split(',').enumerate() {
            params[i] = v.trim().parse().unwrap();
        }
    }
    let ubuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let code = format!("{}\n{}", include_str!("../shaders/common.wgsl"), src);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(code.into()),
    });
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 2,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 3,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::WriteOnly,
                    format: wgpu::TextureFormat::Rgba32Float,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                count: None,
            },
        ],
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &bgl,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ubuf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: buf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::TextureView(&tin),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: wgpu::BindingResource::TextureView(&tout),
            },
        ],
    });
    let mut kernels = Vec::new();
    for spec in &args[4..] {
        let (entry, groups) = spec.split_once(':').unwrap();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        kernels.push((
            entry.to_string(),
            groups.parse::<u32>().unwrap(),
            pipeline,
            Vec::new(),
            Vec::new(),
        ));
    }
    let qs = device.create_query_set(&wgpu::QuerySetDescriptor {
        label: None,
        ty: wgpu::QueryType::Timestamp,
        count: 2,
    });
    let resolve = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let period = queue.get_timestamp_period() as f64;
    for rep in 0..=reps {
        for (_, groups, pipeline, times, cpus) in kernels.iter_mut() {
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = device.create_command_encoder(&Default::default());
            enc.write_timestamp(&qs, 0);
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &bg, &[]);
                let g = *groups;
                let (x, y) = if g > 65535 {
                    (65535, g.div_ceil(65535))
                } else {
                    (g, 1)
                };
                pass.dispatch_workgroups(x, y, 1);
            }
            enc.write_timestamp(&qs, 1);
            enc.resolve_query_set(&qs, 0..2, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
            let c0 = cpu_ns();
            queue.submit([enc.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            staging.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r).unwrap());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            rx.recv().unwrap().unwrap();
            let t: Vec<u64> = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec();
            if rep > 0 {
                times.push((t[1] - t[0]) as f64 * period * 1e-6);
                cpus.push((cpu_ns() - c0) as f64 * 1e-6);
            }
        }
    }
    for (entry, _, _, times, cpus) in kernels.iter_mut() {
        times.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        let c = cpus[cpus.len() / 2];
        println!(
            "{entry:<24} cpu {c:8.3} ms ({:.2} ns per element on 2 cores)  wall min {:8.3} ms  median {:8.3} ms",
            c * 1e6 / 2.0 / n as f64,
            times[0],
            times[times.len() / 2]
        );
    }
}
