// Temporary lab: runs a WGSL entry point on buffers and times it.
// usage: wgsl_lab_tmp FILE ENTRY GX GY GZ NBUF BUFLEN_FLOATS [ITERS] [params...]
use std::time::Instant;
use wgpu::util::DeviceExt;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let src = std::fs::read_to_string(&a[1]).unwrap();
    let entry = &a[2];
    let g: Vec<u32> = a[3..6].iter().map(|s| s.parse().unwrap()).collect();
    let nbuf: usize = a[6].parse().unwrap();
    let len: u64 = a[7].parse().unwrap();
    let iters: usize = a.get(8).map(|s| s.parse().unwrap()).unwrap_or(5);
    let mut params = vec![0u32; 64];
    for (i, s) in a.iter().skip(9).enumerate() {
        params[i] = if s.contains('.') {
            s.parse::<f32>().unwrap().to_bits()
        } else {
            s.parse().unwrap()
        };
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let inst = wgpu::Instance::new(desc);
    let ad = pollster::block_on(inst.request_adapter(&Default::default())).unwrap();
    if std::env::var("LAB_LIMITS").is_ok() {
        println!("{:#?}\n{:?}", ad.limits(), ad.features());
    }
    let (dev, q) = pollster::block_on(ad.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: ad.features() & wgpu::Features::SUBGROUP,
        required_limits: ad.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: Default::default(),
        trace: Default::default(),
    }))
    .unwrap();
    let m = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pb = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let bufs: Vec<wgpu::Buffer> = (0..nbuf)
        .map(|_| {
            let data: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
                .collect();
            dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&data),
                usage: wgpu::BufferUsages::STORAGE,
            })
        })
        .collect();
    let p = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &m,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    });
    let bgl = p.get_bind_group_layout(0);
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: pb.as_entire_binding(),
    }];
    let ubo = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&vec![1.0f32; 16384]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let tex = dev.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 1024,
            height: 1024,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let tv = tex.create_view(&Default::default());
    let mode = std::env::var("LAB_MODE").unwrap_or_default();
    for (i, b) in bufs.iter().enumerate() {
        let binding = i as u32 + 1;
        if binding == 1 && mode == "tex" {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::TextureView(&tv),
            });
            continue;
        }
        if binding == 1 && mode == "ubo" {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: ubo.as_entire_binding(),
            });
            continue;
        }
        entries.push(wgpu::BindGroupEntry {
            binding,
            resource: b.as_entire_binding(),
        });
    }
    let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &bgl,
        entries: &entries,
    });
    for it in 0..iters + 1 {
        let t = Instant::now();
        let mut e = dev.create_command_encoder(&Default::default());
        {
            let mut ps = e.begin_compute_pass(&Default::default());
            ps.set_pipeline(&p);
            ps.set_bind_group(0, &bg, &[]);
            ps.dispatch_workgroups(g[0], g[1], g[2]);
        }
        q.submit([e.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        if it > 0 {
            println!("{:.2} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
}
