//! GEMM micro-kernel lab: times WGSL micro-kernel files (read at run time, so kernels can be
//! changed without rebuilding) on packed operands with device timestamps, and checks the results.
//!
//! `cargo run --release --example gemm_lab -- M N K REPS FILE ENTRY...`
//!
//! The kernels are timed in turns (one dispatch each per round), so that changes in the machine's
//! load affect them alike; the minimum and median per kernel are printed.
//!
//! FILE is written by scripts/gen_gemm_sg.py; an ENTRY `gemm_<TM>x<TN>_<a><b>[_k<KU>]` names its
//! tile and operand layouts, and the operands are laid out accordingly: in place (A^T or A
//! row-major, B row-major or B^T; B=M at a misaligned start), or packed in panels as the engine
//! does with `LAB_PACK_A=1` / `LAB_PACK_B=1` (`LAB_PACKED=1` for both; T layouts of A, N of B).
//!
//! Besides wall times it prints the process CPU time per dispatch. That is steadier than the wall
//! clock when other processes load the machine, but not comparable across runs at different
//! loads (lavapipe's threads cost more CPU time on an idle machine), so compare kernels within
//! one run.
use wgpu::util::DeviceExt;

/// CPU time of every thread of this process so far (ns).
fn cpu_ns() -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = e.unwrap().path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            total += s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        }
    }
    total
}

struct Variant {
    cpu: Vec<f64>,
    name: String,
    pipeline: wgpu::ComputePipeline,
    bg: wgpu::BindGroup,
    c: wgpu::Buffer,
    groups: [u32; 3],
    times: Vec<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: gemm_lab M N K REPS FILE ENTRY...");
        std::process::exit(2);
    }
    let (m, n, k): (usize, usize, usize) = (
        args[1].parse().unwrap(),
        args[2].parse().unwrap(),
        args[3].parse().unwrap(),
    );
    let reps: usize = args[4].parse().unwrap();
    let val = |i: usize, s: usize| ((i * 7919 + s * 104729) % 1000) as f32 / 1000.0 - 0.5;
    let a: Vec<f32> = (0..m * k).map(|i| val(i, 1)).collect();
    let b: Vec<f32> = (0..k * n).map(|i| val(i, 2)).collect();

    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let features = wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: features,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .unwrap();
    let tex = |data: &[f32]| {
        let texels = data.len().div_ceil(4);
        let rows = texels.div_ceil(4096).max(1).next_power_of_two();
        let mut padded = data.to_vec();
        padded.resize(rows * 4096 * 4, 0.0);
        device
            .create_texture_with_data(
                &queue,
                &wgpu::TextureDescriptor {
                    label: None,
                    size: wgpu::Extent3d {
                        width: 4096,
                        height: rows as u32,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::Rgba32Float,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                },
                Default::default(),
                bytemuck::cast_slice(&padded),
            )
            .create_view(&Default::default())
    };
    let tex_entry = |binding| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        count: None,
    };
    let buf_entry = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &[
            buf_entry(0, wgpu::BufferBindingType::Uniform),
            tex_entry(1),
            tex_entry(2),
            buf_entry(3, wgpu::BufferBindingType::Storage { read_only: false }),
            buf_entry(4, wgpu::BufferBindingType::Storage { read_only: false }),
            // The tap table and the epilogue's operands, unused here but in every kernel's layout.
            tex_entry(5),
            buf_entry(6, wgpu::BufferBindingType::Storage { read_only: false }),
            buf_entry(7, wgpu::BufferBindingType::Storage { read_only: false }),
            buf_entry(8, wgpu::BufferBindingType::Storage { read_only: false }),
        ],
    });
    let unused_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let unused_tex = tex(&[0.0; 4]);
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });

    let src = std::fs::read_to_string(&args[5]).expect("read kernel");
    let code = format!("{}\n{}", include_str!("../shaders/common.wgsl"), src);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(code.into()),
    });
    let mut variants = Vec::new();
    for entry in &args[6..] {
        // gemm_<tm>x<tn>_<a><b>
        let rest = entry.strip_prefix("gemm_").expect("gemm_ entry");
        let (tile, lay) = rest.split_once('_').unwrap();
        let (tm, tn) = tile.split_once('x').unwrap();
        let (tm, tn): (usize, usize) = (tm.parse().unwrap(), tn.parse().unwrap());
        let lay = lay.as_bytes();
        let (al, bl) = (lay[0], lay[1]);
        let (m4, k4, n4) = (
            m.next_multiple_of(4),
            k.next_multiple_of(4),
            n.next_multiple_of(4),
        );
        // A
        let packed = std::env::var("LAB_PACKED").is_ok_and(|v| v == "1");
        let pack_a = packed || std::env::var("LAB_PACK_A").is_ok_and(|v| v == "1");
        let pack_b = packed || std::env::var("LAB_PACK_B").is_ok_and(|v| v == "1");
        let (adata, lda, aps) = if al == b't' && pack_a {
            // panels of tm rows: [panel][k][tm]
            let pm = m.div_ceil(tm);
            let mut t = vec![0f32; pm * k * tm];
            for i in 0..m {
                for kk in 0..k {
                    t[((i / tm) * k + kk) * tm + i % tm] = a[i * k + kk];
                }
            }
            (t, tm / 4, k * tm / 4)
        } else if al == b't' {
            let mut t = vec![0f32; k * m4];
            for i in 0..m {
                for kk in 0..k {
                    t[kk * m4 + i] = a[i * k + kk];
                }
            }
            (t, m4 / 4, tm / 4)
        } else {
            let mut t = vec![0f32; m * k4];
            for i in 0..m {
                t[i * k4..i * k4 + k].copy_from_slice(&a[i * k..i * k + k]);
            }
            (t, k4 / 4, tm * k4 / 4)
        };
        let (bdata, ldb, bbase, bps) = match bl {
            b'n' if pack_b => {
                let pn = n.div_ceil(tn);
                let mut t = vec![0f32; pn * k * tn];
                for kk in 0..k {
                    for j in 0..n {
                        t[((j / tn) * k + kk) * tn + j % tn] = b[kk * n + j];
                    }
                }
                (t, tn / 4, 0, k * tn / 4)
            }
            b'n' => {
                let mut t = vec![0f32; k * n4];
                for kk in 0..k {
                    t[kk * n4..kk * n4 + n].copy_from_slice(&b[kk * n..kk * n + n]);
                }
                (t, n4 / 4, 0, tn / 4)
            }
            b't' => {
                let mut t = vec![0f32; n * k4];
                for kk in 0..k {
                    for j in 0..n {
                        t[j * k4 + kk] = b[kk * n + j];
                    }
                }
                (t, k4 / 4, 0, tn * k4 / 4)
            }
            _ => {
                let mut t = vec![0f32; 1];
                t.extend_from_slice(&b);
                (t, n, 1, tn)
            }
        };
        let (ta, tb) = (tex(&adata), tex(&bdata));
        let c = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (m * n * 4).next_multiple_of(16) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut params = [0u32; 64];
        params[..16].copy_from_slice(&[
            m as u32,
            n as u32,
            k as u32,
            n as u32,
            0,
            0,
            0,
            0,
            lda as u32,
            bbase,
            0,
            ldb as u32,
            1f32.to_bits(),
            0f32.to_bits(),
            aps as u32,
            bps as u32,
        ]);
        let ubuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let c4 = if n % 4 == 0 { 1.0 } else { 0.0 };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[("BETA0", 1.0), ("C4", c4)],
                ..Default::default()
            },
            cache: None,
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
                    resource: wgpu::BindingResource::TextureView(&ta),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&tb),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: c.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: c.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: wgpu::BindingResource::TextureView(&unused_tex),
                },
                wgpu::BindGroupEntry {
                    binding: 6,
                    resource: unused_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 7,
                    resource: unused_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 8,
                    resource: unused_buf.as_entire_binding(),
                },
            ],
        });
        variants.push(Variant {
            name: entry.clone(),
            pipeline,
            bg,
            c,
            groups: [n.div_ceil(tn) as u32, m.div_ceil(tm) as u32, 1],
            times: Vec::new(),
            cpu: Vec::new(),
        });
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
    let read = |device: &wgpu::Device, buf: &wgpu::Buffer| -> Vec<u8> {
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, .., move |r| tx.send(r).unwrap());
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        rx.recv().unwrap().unwrap();
        let v = buf.get_mapped_range(..).unwrap().to_vec();
        buf.unmap();
        v
    };
    let period = queue.get_timestamp_period() as f64;
    for rep in 0..=reps {
        for v in variants.iter_mut() {
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
                pass.set_pipeline(&v.pipeline);
                pass.set_bind_group(0, &v.bg, &[]);
                pass.dispatch_workgroups(v.groups[0], v.groups[1], v.groups[2]);
            }
            enc.write_timestamp(&qs, 1);
            enc.resolve_query_set(&qs, 0..2, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
            let c0 = cpu_ns();
            queue.submit([enc.finish()]);
            let t: Vec<u64> = bytemuck::cast_slice(&read(&device, &staging)).to_vec();
            let c1 = cpu_ns();
            if rep > 0 {
                v.times.push((t[1] - t[0]) as f64 * period * 1e-9);
                v.cpu.push((c1 - c0) as f64 * 1e-9);
            }
        }
    }
    let flop = 2.0 * (m * n * k) as f64;
    for v in variants.iter_mut() {
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (m * n * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&v.c, 0, &staging, 0, (m * n * 4) as u64);
        queue.submit([enc.finish()]);
        let got: Vec<f32> = bytemuck::cast_slice(&read(&device, &staging)).to_vec();
        let mut max_err = 0f64;
        let step = ((m * n) / 20000).max(1);
        for idx in (0..m * n).step_by(step) {
            let (i, j) = (idx / n, idx % n);
            let want: f64 = (0..k)
                .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
                .sum();
            max_err = max_err.max((want - got[idx] as f64).abs() / (1.0 + want.abs()));
        }
        v.times.sort_by(f64::total_cmp);
        v.cpu.sort_by(f64::total_cmp);
        let (t0, tm) = (v.times[0], v.times[v.times.len() / 2]);
        let c = v.cpu[v.cpu.len() / 2];
        println!(
            "{:<22} {m}x{n}x{k}: cpu {:7.2} ms (2 cores: {:5.1} GFLOP/s)  wall min {:7.2} ms ({:5.1}) median {:7.2} ms ({:5.1}) err {max_err:.1e}{}",
            v.name,
            c * 1e3,
            flop / (c / 2.0) / 1e9,
            t0 * 1e3,
            flop / t0 / 1e9,
            tm * 1e3,
            flop / tm / 1e9,
            if max_err > 1e-4 { "  WRONG" } else { "" }
        );
    }
}
