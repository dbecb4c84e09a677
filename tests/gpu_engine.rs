//! GPU mode against CPU mode: every kernel variant the GPU engine implements runs on random inputs
//! in both engines and the results must agree within 1e-4 (relative to max(|cpu|, 1)).
//!
//! These tests need a GPU adapter (Mesa's lavapipe will do:
//! `apt-get install mesa-vulkan-drivers libvulkan1`); without one they fail with that advice.
use std::sync::{Mutex, MutexGuard, OnceLock};

use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::kernels::blas::{BlasKernel, Gemm};
use caffe_rs::engine::{Engine, Kernel, TensorId, View};

static GPU: OnceLock<Mutex<GpuEngine>> = OnceLock::new();

/// The shared GPU engine (one device per test process; pipelines compile once).
fn gpu() -> MutexGuard<'static, GpuEngine> {
    let m = GPU.get_or_init(|| {
        let e = GpuEngine::new(0).unwrap_or_else(|e| {
            panic!("the GPU tests need a GPU adapter and found none usable: {e:#}")
        });
        Mutex::new(e)
    });
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    // A test that lowered the binding limit may have panicked before restoring it.
    g.set_max_binding_elems(usize::MAX);
    g
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1)
    }
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() >> 8) as f32 / 16_777_216.0
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u32() as usize) % n.max(1)
    }
}

/// Runs `build` (which makes the kernels from the engine's tensor ids) on both engines over tensors
/// initialised with `init`, and returns the final contents of every tensor from (cpu, gpu).
fn run_both(
    gpu: &mut GpuEngine,
    init: &[Vec<f32>],
    build: &dyn Fn(&[TensorId]) -> Vec<Kernel>,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    fn run(
        e: &mut dyn Engine,
        init: &[Vec<f32>],
        build: &dyn Fn(&[TensorId]) -> Vec<Kernel>,
    ) -> Vec<Vec<f32>> {
        let ids: Vec<TensorId> = init
            .iter()
            .map(|d| {
                let id = e.alloc(d.len());
                e.upload(View::new(id, 0, d.len()), d);
                id
            })
            .collect();
        for k in build(&ids) {
            e.launch(&k)
                .unwrap_or_else(|err| panic!("{} failed on {k:?}: {err:#}", e.name()));
        }
        e.sync().unwrap();
        let out = ids
            .iter()
            .zip(init)
            .map(|(&id, d)| e.download(View::new(id, 0, d.len())))
            .collect();
        for id in ids {
            e.free(id);
        }
        out
    }
    let mut cpu = CpuEngine::new();
    (run(&mut cpu, init, build), run(gpu, init, build))
}

fn assert_close(what: &str, cpu: &[f32], gpu: &[f32], tol: f32) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (&c, &g)) in cpu.iter().zip(gpu).enumerate() {
        if c.is_nan() && g.is_nan() {
            continue;
        }
        if c == g {
            continue;
        }
        let err = (c - g).abs() / c.abs().max(1.0);
        if err.is_nan() || err > worst.0 {
            worst = (if err.is_nan() { f32::INFINITY } else { err }, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: element {} differs: cpu {} gpu {} (relative error {})",
        worst.1,
        cpu[worst.1],
        gpu[worst.1],
        worst.0
    );
}

/// Compares every tensor of a run.
fn check_all(
    what: &str,
    gpu: &mut GpuEngine,
    init: &[Vec<f32>],
    build: &dyn Fn(&[TensorId]) -> Vec<Kernel>,
) {
    check_all_tol(what, gpu, init, build, 1e-4);
}

/// [`check_all`] with a given tolerance.
fn check_all_tol(
    what: &str,
    gpu: &mut GpuEngine,
    init: &[Vec<f32>],
    build: &dyn Fn(&[TensorId]) -> Vec<Kernel>,
    tol: f32,
) {
    let (c, g) = run_both(gpu, init, build);
    for (i, (c, g)) in c.iter().zip(&g).enumerate() {
        assert_close(&format!("{what}, tensor {i}"), c, g, tol);
    }
}

fn whole(id: TensorId, len: usize) -> View {
    View::new(id, 0, len)
}

// ---- adapters -------------------------------------------------------------------------------

#[test]
fn adapter_is_listed_and_opens() {
    let list = caffe_rs::engine::gpu::list_adapters();
    assert!(
        !list.is_empty(),
        "{}",
        caffe_rs::engine::gpu::no_adapter_message()
    );
    for a in &list {
        assert!(!a.name.is_empty());
        assert!(
            a.limits
                .iter()
                .any(|(n, v)| *n == "max_storage_buffer_binding_size" && *v > 0)
        );
    }
    let g = gpu();
    assert!(!g.name().is_empty());
    assert!(GpuEngine::new(list.len() + 5).is_err());
}

// ---- blas -----------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn gemm_case(
    gpu: &mut GpuEngine,
    rng: &mut Rng,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    shared_a: bool,
) {
    gemm_case_at(gpu, rng, ta, tb, m, n, k, batch, shared_a, false)
}

/// `aligned`: views start at multiples of 4 elements and batch strides are multiples of 4 (the
/// kernels' whole-texel paths), else at random offsets.
#[allow(clippy::too_many_arguments)]
fn gemm_case_at(
    gpu: &mut GpuEngine,
    rng: &mut Rng,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    shared_a: bool,
    aligned: bool,
) {
    let (alpha, beta) = (
        rng.uniform(-2.0, 2.0),
        if rng.below(3) == 0 {
            0.0
        } else {
            rng.uniform(-1.0, 1.0)
        },
    );
    // Views start at odd offsets and batch entries have padding between them.
    let (oa, ob, oc) = if aligned {
        (4 * rng.below(2), 4 * rng.below(2), 4 * rng.below(2))
    } else {
        (rng.below(5), rng.below(5), rng.below(5))
    };
    let pad = |rng: &mut Rng, len: usize| {
        if aligned {
            len.next_multiple_of(4) + 4 * rng.below(2)
        } else {
            len + rng.below(3)
        }
    };
    let sa = if shared_a { 0 } else { pad(rng, m * k) };
    let (sb, sc) = (pad(rng, k * n), pad(rng, m * n));
    let la = oa + sa * (batch - 1) + m * k;
    let lb = ob + sb * (batch - 1) + k * n;
    let lc = oc + sc * (batch - 1) + m * n;
    let mut c0 = rng.vec(lc, -1.0, 1.0);
    if beta == 0.0 {
        c0[oc] = f32::NAN; // beta 0 overwrites, NaN included
    }
    let init = vec![rng.vec(la, -1.0, 1.0), rng.vec(lb, -1.0, 1.0), c0];
    let what = format!(
        "gemm ta {ta} tb {tb} m {m} n {n} k {k} batch {batch} shared_a {shared_a} aligned {aligned}"
    );
    check_all(&what, gpu, &init, &|ids| {
        vec![Kernel::Blas(BlasKernel::Gemm(Gemm {
            trans_a: ta,
            trans_b: tb,
            m,
            n,
            k,
            alpha,
            beta,
            a: View::new(ids[0], oa, la - oa),
            b: View::new(ids[1], ob, lb - ob),
            c: View::new(ids[2], oc, lc - oc),
            batch,
            stride_a: sa,
            stride_b: sb,
            stride_c: sc,
        }))]
    });
}

fn gemm_suite(gpu: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 33, 100),
        (33, 7, 1),
        (100, 65, 33),
        (64, 64, 64),
        (1, 130, 7),
        (129, 1, 257),
    ] {
        for ta in [false, true] {
            for tb in [false, true] {
                gemm_case(gpu, &mut rng, ta, tb, m, n, k, 1, false);
            }
        }
    }
    gemm_case(gpu, &mut rng, false, false, 5, 3, 0, 1, false);
    gemm_case(gpu, &mut rng, false, true, 17, 40, 9, 3, false);
    gemm_case(gpu, &mut rng, true, false, 20, 70, 50, 4, true);
    gemm_case(gpu, &mut rng, false, false, 96, 200, 75, 2, true);
}

#[test]
fn gemm_matches_cpu() {
    let mut g = gpu();
    g.set_subgroups(true);
    gemm_suite(&mut g, 1);
}

/// Shapes for each micro-kernel tile (op(A) of <= 8, <= 16, <= 32 rows, and 48 or 64-row tiles), k
/// not a multiple of 4,
/// operands and C at whole texels (unshifted packing, vec4 stores of C) and not.
fn gemm_tile_suite(gpu: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    for &(m, n, k) in &[
        (8, 64, 16),
        (5, 128, 30),
        (16, 68, 9),
        (12, 200, 64),
        (32, 64, 4),
        (40, 132, 101),
        (96, 300, 363),
        (128, 68, 50),
        (70, 72, 17),
    ] {
        for ta in [false, true] {
            for tb in [false, true] {
                for aligned in [true, false] {
                    gemm_case_at(gpu, &mut rng, ta, tb, m, n, k, 1, false, aligned);
                }
            }
        }
    }
    gemm_case_at(gpu, &mut rng, false, false, 24, 36, 20, 3, true, true);
    gemm_case_at(gpu, &mut rng, true, true, 8, 100, 12, 4, false, true);
}

#[test]
fn gemm_tiles_match_cpu() {
    let mut g = gpu();
    g.set_subgroups(true);
    gemm_tile_suite(&mut g, 5);
    let had = g.uses_subgroups();
    g.set_subgroups(false);
    gemm_tile_suite(&mut g, 6);
    g.set_subgroups(had);
}

/// The GPU engine keeps op(A) packed between GEMMs with the same A (a convolution's weights);
/// every way of changing A in between must be seen by the next GEMM.
#[test]
fn gemm_sees_every_change_to_a_reused_operand() {
    let mut g = gpu();
    let mut rng = Rng::new(7);
    let (m, n, k) = (40, 36, 24);
    // tensor 0: A (m x k) then a spare m x k; 1: B; 2: C; 3: a k x k square.
    let init = vec![
        rng.vec(2 * m * k, -1.0, 1.0),
        rng.vec(k * n, -1.0, 1.0),
        rng.vec(8 * m * n, -1.0, 1.0),
        rng.vec(k * k, -1.0, 1.0),
    ];
    let gemm = |a: View, b: View, c: View, (m, n, k): (usize, usize, usize)| {
        Kernel::Blas(BlasKernel::Gemm(Gemm::single(
            false, false, m, n, k, 1.0, a, b, 0.0, c,
        )))
    };
    check_all("packed A reuse", &mut g, &init, &|ids| {
        let a = View::new(ids[0], 0, m * k);
        let spare = View::new(ids[0], m * k, m * k);
        let b = whole(ids[1], k * n);
        let c = |i: usize| View::new(ids[2], i * m * n, m * n);
        let sq = whole(ids[3], k * k);
        vec![
            gemm(a, b, c(0), (m, n, k)),
            gemm(a, b, c(1), (m, n, k)),
            // A changed by another kernel.
            Kernel::Blas(BlasKernel::Scale { alpha: -0.5, y: a }),
            gemm(a, b, c(2), (m, n, k)),
            // A's tensor written by a GEMM (elsewhere, then A itself).
            gemm(a, sq, spare, (m, k, k)),
            gemm(a, b, c(3), (m, n, k)),
            gemm(spare, sq, a, (m, k, k)),
            gemm(a, b, c(4), (m, n, k)),
            // A changed by im2col.
            Kernel::Conv(ConvKernel::Im2col(Im2col {
                im: View::new(ids[3], 0, 16),
                col: View::new(ids[0], 0, 16),
                batch: 1,
                im_stride: 16,
                col_stride: 16,
                channels: 1,
                im_shape: vec![4, 4],
                col_shape: vec![4, 4],
                kernel: vec![1, 1],
                pad: vec![0, 0],
                stride: vec![1, 1],
                dilation: vec![1, 1],
            })),
            gemm(a, b, c(5), (m, n, k)),
        ]
    });
}

#[test]
fn gemm_portable_path_matches_cpu() {
    let mut g = gpu();
    let had = g.uses_subgroups();
    g.set_subgroups(false);
    gemm_suite(&mut g, 2);
    g.set_subgroups(had);
}

#[test]
fn gemm_split_into_small_bindings_matches_cpu() {
    let mut g = gpu();
    g.set_max_binding_elems(4096);
    let mut rng = Rng::new(3);
    for ta in [false, true] {
        for tb in [false, true] {
            gemm_case(&mut g, &mut rng, ta, tb, 150, 130, 70, 1, false);
        }
    }
    gemm_case(&mut g, &mut rng, false, true, 20, 30, 10, 9, false);
    gemm_case(&mut g, &mut rng, true, false, 20, 30, 10, 9, true);
    g.set_max_binding_elems(usize::MAX);
}

#[test]
fn axpby_and_scale_match_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(4);
    for n in [1usize, 7, 33, 100, 1000] {
        let init = vec![rng.vec(n + 3, -1.0, 1.0), rng.vec(n + 1, -1.0, 1.0)];
        let (a, b, s) = (
            rng.uniform(-2.0, 2.0),
            rng.uniform(-2.0, 2.0),
            rng.uniform(-2.0, 2.0),
        );
        check_all(&format!("axpby/scale n {n}"), &mut g, &init, &|ids| {
            vec![
                Kernel::Blas(BlasKernel::Axpby {
                    alpha: a,
                    x: View::new(ids[0], 3, n),
                    beta: b,
                    y: View::new(ids[1], 1, n),
                }),
                Kernel::Blas(BlasKernel::Scale {
                    alpha: s,
                    y: View::new(ids[0], 0, n),
                }),
            ]
        });
    }
}

// ---- engine basics --------------------------------------------------------------------------

#[test]
fn fill_copy_upload_download_round_trip() {
    let mut g = gpu();
    let mut rng = Rng::new(5);
    let data = rng.vec(1001, -5.0, 5.0);
    let a = g.alloc(1001);
    let b = g.alloc(2002);
    assert_eq!(
        g.download(whole(b, 2002)),
        vec![0.0; 2002],
        "alloc zero-fills"
    );
    g.upload(whole(a, 1001), &data);
    g.copy(whole(a, 1001), View::new(b, 3, 1001));
    g.fill(View::new(b, 1004, 998), 2.5);
    g.fill(View::new(a, 1, 5), 0.0);
    // Same-tensor copies, overlapping and not.
    g.copy(View::new(b, 3, 10), View::new(b, 1500, 10));
    g.copy(View::new(b, 0, 100), View::new(b, 50, 100));
    let mut want_b = vec![0.0; 2002];
    want_b[3..1004].copy_from_slice(&data);
    want_b[1004..].fill(2.5);
    let tmp: Vec<f32> = want_b[3..13].to_vec();
    want_b[1500..1510].copy_from_slice(&tmp);
    let tmp: Vec<f32> = want_b[0..100].to_vec();
    want_b[50..150].copy_from_slice(&tmp);
    let mut want_a = data.clone();
    want_a[1..6].fill(0.0);
    g.sync().unwrap();
    assert_eq!(g.download(whole(a, 1001)), want_a);
    assert_eq!(g.download(whole(b, 2002)), want_b);
    // Uploads are ordered with recorded work.
    g.fill(whole(a, 1001), 1.0);
    g.upload(View::new(a, 10, 3), &[7.0, 8.0, 9.0]);
    g.fill(View::new(a, 11, 1), -1.0);
    let got = g.download(View::new(a, 9, 4));
    assert_eq!(got, vec![1.0, 7.0, -1.0, 9.0]);
    g.free(a);
    g.free(b);
}

#[test]
fn tensor_larger_than_one_binding_fill_copy_round_trip() {
    let mut g = gpu();
    // 36 Mi floats = 144 MiB, above lavapipe's 128 MiB binding limit.
    let n = 36 << 20;
    let a = g.alloc(n);
    let b = g.alloc(n);
    g.fill(whole(a, n), 1.5);
    g.fill(View::new(a, n - 10, 10), -2.0);
    g.copy(whole(a, n), whole(b, n));
    g.copy(View::new(b, 0, 1000), View::new(b, n - 2000, 1000));
    g.launch(&Kernel::Blas(BlasKernel::Scale {
        alpha: 2.0,
        y: whole(b, n),
    }))
    .unwrap();
    let got = g.download(whole(b, n));
    assert_eq!(got.len(), n);
    assert!(got[..n - 2000].iter().all(|&v| v == 3.0));
    assert!(got[n - 2000..n - 1000].iter().all(|&v| v == 3.0));
    assert!(got[n - 1000..n - 10].iter().all(|&v| v == 3.0));
    assert!(got[n - 10..].iter().all(|&v| v == -4.0));
    g.free(a);
    g.free(b);
}

// ---- elementwise ----------------------------------------------------------------------------

use caffe_rs::engine::kernels::elementwise::{
    ChannelDims, ChannelStage, ElementwiseKernel as Ew, NaryOp, StageOp, SumWeight, UnaryOp,
};

fn unary_ops() -> Vec<(UnaryOp, f32, f32)> {
    vec![
        (
            UnaryOp::Relu {
                negative_slope: 0.0,
            },
            -3.0,
            3.0,
        ),
        (
            UnaryOp::Relu {
                negative_slope: 0.1,
            },
            -3.0,
            3.0,
        ),
        (UnaryOp::Sigmoid, -6.0, 6.0),
        (UnaryOp::TanH, -4.0, 4.0),
        (UnaryOp::AbsVal, -3.0, 3.0),
        (UnaryOp::Bnll, -8.0, 8.0),
        (UnaryOp::Elu { alpha: 0.7 }, -3.0, 3.0),
        (
            UnaryOp::Power {
                power: 2.0,
                scale: 0.5,
                shift: 1.0,
            },
            -3.0,
            3.0,
        ),
        (
            UnaryOp::Power {
                power: 3.0,
                scale: 1.5,
                shift: 0.0,
            },
            -2.0,
            2.0,
        ),
        (
            UnaryOp::Power {
                power: 0.5,
                scale: 2.0,
                shift: 0.1,
            },
            0.1,
            3.0,
        ),
        (
            UnaryOp::Power {
                power: 1.0,
                scale: -1.5,
                shift: 0.25,
            },
            -3.0,
            3.0,
        ),
        (
            UnaryOp::Power {
                power: 0.0,
                scale: 1.0,
                shift: 2.0,
            },
            -3.0,
            3.0,
        ),
        (
            UnaryOp::Exp {
                inner_scale: 0.5,
                outer_scale: 2.0,
            },
            -3.0,
            3.0,
        ),
        (
            UnaryOp::Exp {
                inner_scale: 1.0,
                outer_scale: 1.0,
            },
            -3.0,
            3.0,
        ),
        (
            UnaryOp::Log {
                scale: 2.0,
                shift: 0.5,
                base_scale: 0.5,
            },
            0.1,
            5.0,
        ),
        (
            UnaryOp::Log {
                scale: 1.0,
                shift: 0.0,
                base_scale: 1.0,
            },
            0.1,
            5.0,
        ),
        (UnaryOp::Threshold { threshold: 0.2 }, -1.0, 1.0),
        (
            UnaryOp::Clip {
                min: -0.5,
                max: 0.7,
            },
            -1.0,
            1.0,
        ),
        (UnaryOp::Swish { beta: 1.3 }, -4.0, 4.0),
    ]
}

fn elementwise_suite(g: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    for (op, lo, hi) in unary_ops() {
        for n in [1usize, 7, 33, 100, 1000] {
            let x = rng.vec(n, lo, hi);
            let y = rng.vec(n, lo, hi);
            let dy = rng.vec(n, -1.0, 1.0);
            let what = format!("{op:?} n {n}");
            // Out of place forward + backward, then in place.
            check_all(
                &what,
                g,
                &[x.clone(), vec![0.0; n], dy.clone(), vec![0.0; n]],
                &|ids| {
                    vec![
                        Kernel::Elementwise(Ew::Unary {
                            op,
                            x: whole(ids[0], n),
                            y: whole(ids[1], n),
                        }),
                        Kernel::Elementwise(Ew::UnaryBackward {
                            op,
                            x: whole(ids[0], n),
                            y: whole(ids[1], n),
                            dy: whole(ids[2], n),
                            dx: whole(ids[3], n),
                        }),
                    ]
                },
            );
            check_all(
                &format!("{what} in place"),
                g,
                &[x.clone(), y.clone(), dy.clone()],
                &|ids| {
                    vec![
                        Kernel::Elementwise(Ew::Unary {
                            op,
                            x: whole(ids[0], n),
                            y: whole(ids[0], n),
                        }),
                        Kernel::Elementwise(Ew::UnaryBackward {
                            op,
                            x: whole(ids[0], n),
                            y: whole(ids[0], n),
                            dy: whole(ids[2], n),
                            dx: whole(ids[2], n),
                        }),
                    ]
                },
            );
        }
    }
    for n in [1usize, 33, 1000] {
        let xs: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, -2.0, 2.0)).collect();
        let mut tied = xs[0].clone();
        tied[0] = xs[1][0]; // a tie between x0 and x1
        let ops = [
            NaryOp::Sum {
                coeffs: vec![0.5, -1.0, 2.0],
            },
            NaryOp::Prod { stable: true },
            NaryOp::Prod { stable: false },
            NaryOp::Max,
        ];
        for op in ops {
            let init = vec![
                tied.clone(),
                xs[1].clone(),
                xs[2].clone(),
                vec![0.0; n],
                vec![0.0; n],
                rng.vec(n, -1.0, 1.0),
                vec![0.0; n],
                vec![0.0; n],
                vec![0.0; n],
            ];
            let opc = op.clone();
            check_all(&format!("nary {op:?} n {n}"), g, &init, &|ids| {
                let xs: Vec<View> = (0..3).map(|j| whole(ids[j], n)).collect();
                let mut ks = vec![Kernel::Elementwise(Ew::Nary {
                    op: opc.clone(),
                    xs: xs.clone(),
                    y: whole(ids[3], n),
                    argmax: Some(whole(ids[4], n)),
                })];
                for (index, dx) in [(0usize, 6usize), (1, 7), (2, 8)] {
                    ks.push(Kernel::Elementwise(Ew::NaryBackward {
                        op: opc.clone(),
                        index,
                        xs: xs.clone(),
                        y: whole(ids[3], n),
                        argmax: Some(whole(ids[4], n)),
                        dy: whole(ids[5], n),
                        dx: whole(ids[dx], n),
                    }));
                }
                ks
            });
        }
        // In place: y is x0.
        check_all(&format!("nary sum in place n {n}"), g, &xs, &|ids| {
            let xs: Vec<View> = (0..3).map(|j| whole(ids[j], n)).collect();
            vec![Kernel::Elementwise(Ew::Nary {
                op: NaryOp::Sum {
                    coeffs: vec![1.0, 1.0, 1.0],
                },
                xs,
                y: whole(ids[0], n),
                argmax: None,
            })]
        });
    }
    for (outer, channels, inner) in [
        (1usize, 1usize, 1usize),
        (2, 3, 7),
        (3, 5, 33),
        (1, 17, 100),
        (4, 2, 1),
        (2, 3, 8),
        (3, 2, 6),
        // Many channels of short rows: channel sums and Scale's backward with one invocation
        // per channel.
        (3, 70, 5),
        (3, 70, 8),
    ] {
        let d = ChannelDims::new(outer, channels, inner);
        let n = d.count();
        let init = vec![
            rng.vec(n, -2.0, 2.0),
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
            vec![0.0; n],
            rng.vec(n, -1.0, 1.0),
            vec![0.0; n],
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
            vec![0.0; n],
        ];
        check_all(&format!("channel ops {d:?}"), g, &init, &|ids| {
            let (x, s, b, y, dy, dx) = (
                whole(ids[0], n),
                whole(ids[1], channels),
                whole(ids[2], channels),
                whole(ids[3], n),
                whole(ids[4], n),
                whole(ids[5], n),
            );
            vec![
                Kernel::Elementwise(Ew::ChannelAffine {
                    dims: d,
                    x,
                    scale: Some(s),
                    bias: Some(b),
                    y,
                }),
                Kernel::Elementwise(Ew::ChannelAffine {
                    dims: d,
                    x,
                    scale: None,
                    bias: Some(b),
                    y: whole(ids[9], n),
                }),
                Kernel::Elementwise(Ew::ChannelAffine {
                    dims: d,
                    x: dy,
                    scale: Some(s),
                    bias: None,
                    y: dy,
                }),
                Kernel::Elementwise(Ew::PRelu {
                    dims: d,
                    x,
                    slope: s,
                    y,
                }),
                Kernel::Elementwise(Ew::PReluBackward {
                    dims: d,
                    x,
                    slope: s,
                    dy,
                    dx,
                }),
                Kernel::Elementwise(Ew::ChannelSum {
                    dims: d,
                    a: dy,
                    weight: SumWeight::One,
                    beta: 0.0,
                    y: whole(ids[6], channels),
                }),
                Kernel::Elementwise(Ew::ChannelSum {
                    dims: d,
                    a: dy,
                    weight: SumWeight::By(x),
                    beta: 0.5,
                    y: whole(ids[7], channels),
                }),
                Kernel::Elementwise(Ew::ChannelSum {
                    dims: d,
                    a: dy,
                    weight: SumWeight::ByNegPart(x),
                    beta: 1.0,
                    y: whole(ids[8], channels),
                }),
                Kernel::Elementwise(Ew::ChannelAffineBackward {
                    dims: d,
                    dy,
                    neuron_grad: None,
                    bias_grad: Some((whole(ids[6], channels), 1.0)),
                    scale_grad: Some((x, whole(ids[7], channels), 1.0)),
                    data_grad: Some((s, dy)),
                    norm_grad: None,
                }),
                Kernel::Elementwise(Ew::ChannelAffineBackward {
                    dims: d,
                    dy,
                    neuron_grad: None,
                    bias_grad: None,
                    scale_grad: Some((x, whole(ids[8], channels), 0.0)),
                    data_grad: None,
                    norm_grad: None,
                }),
            ]
        });
    }
    // Fused in-place runs: BatchNorm + Scale + ReLU patterns (one pass) and others (parts).
    for (outer, channels, inner) in [(2, 3, 5), (2, 4, 8), (3, 64, 49), (1, 8, 1024)] {
        let d = ChannelDims::new(outer, channels, inner);
        let n = d.count();
        let init = vec![
            rng.vec(n, -2.0, 2.0),
            vec![0.0; n],
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, 0.1, 2.0),
            vec![0.0; channels],
            rng.vec(channels, -2.0, 2.0),
            rng.vec(channels, -2.0, 2.0),
            vec![0.0; n],
        ];
        check_all(&format!("channel stages {d:?}"), g, &init, &|ids| {
            let (x, y, save) = (whole(ids[0], n), whole(ids[1], n), whole(ids[7], n));
            let c = |i: usize| whole(ids[i], channels);
            let normalize = ChannelStage {
                op: StageOp::Normalize {
                    eps: 1e-5,
                    eps_mode: caffe_rs::engine::kernels::norm::EpsMode::SqrtVarPlusEps,
                    mean: c(2),
                    var: c(3),
                    std: c(4),
                },
                save: None,
            };
            let affine = |scale, bias, kept| ChannelStage {
                op: StageOp::Affine { scale, bias },
                save: kept,
            };
            let relu = |negative_slope| ChannelStage {
                op: StageOp::Unary(UnaryOp::Relu { negative_slope }),
                save: None,
            };
            let sum = |coeffs, others| ChannelStage {
                op: StageOp::Sum { coeffs, others },
                save: None,
            };
            let sigmoid = ChannelStage {
                op: StageOp::Unary(UnaryOp::Sigmoid),
                save: None,
            };
            let run = |x, y, stages| {
                Kernel::Elementwise(Ew::ChannelStages {
                    dims: d,
                    x,
                    y,
                    stages,
                })
            };
            vec![
                run(
                    x,
                    y,
                    vec![normalize.clone(), affine(Some(c(5)), None, None), relu(0.0)],
                ),
                run(
                    x,
                    x,
                    vec![
                        normalize.clone(),
                        affine(Some(c(5)), Some(c(6)), Some(save)),
                        relu(0.1),
                    ],
                ),
                run(y, y, vec![affine(None, Some(c(6)), Some(save)), relu(0.2)]),
                run(y, y, vec![normalize.clone(), relu(0.0)]),
                run(x, y, vec![relu(0.0), sigmoid]),
                run(y, x, vec![sum(vec![1.0, 0.5], vec![save]), relu(0.0)]),
                run(x, x, vec![sum(vec![-1.0, 2.0], vec![y]), relu(0.1)]),
                run(
                    x,
                    save,
                    vec![sum(vec![1.0, 1.0, -1.0], vec![x, y]), relu(0.0)],
                ),
            ]
        });
    }
    for n in [1usize, 100, 5000, 9000] {
        let init = vec![rng.vec(n, -1.0, 1.0), vec![0.0; n]];
        check_all(&format!("dropout n {n}"), g, &init, &|ids| {
            vec![
                Kernel::Elementwise(Ew::Dropout {
                    seed: 1234,
                    ratio: 0.3,
                    scale: 1.0 / 0.7,
                    x: whole(ids[0], n),
                    y: whole(ids[1], n),
                }),
                Kernel::Elementwise(Ew::Dropout {
                    seed: 99,
                    ratio: 0.5,
                    scale: 2.0,
                    x: whole(ids[0], n),
                    y: whole(ids[0], n),
                }),
            ]
        });
    }
}

/// Scale's fused backward with one invocation per channel, on rows of up to 255 vec4s (more
/// than the binding limit of the split suite allows).
#[test]
fn scale_backward_of_many_short_rows_matches_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(14);
    for (outer, channels, inner) in [(2, 64, 400), (3, 80, 12), (1, 128, 1020)] {
        let d = ChannelDims::new(outer, channels, inner);
        let n = d.count();
        let init = vec![
            rng.vec(n, -2.0, 2.0),
            rng.vec(n, -2.0, 2.0),
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
            vec![0.0; n],
        ];
        check_all(&format!("scale backward {d:?}"), &mut g, &init, &|ids| {
            let (dy, x, dx) = (whole(ids[0], n), whole(ids[1], n), whole(ids[5], n));
            let c = |i: usize| whole(ids[i], channels);
            vec![
                Kernel::Elementwise(Ew::ChannelAffineBackward {
                    dims: d,
                    dy,
                    neuron_grad: None,
                    bias_grad: Some((c(3), 1.0)),
                    scale_grad: Some((x, c(4), 0.0)),
                    data_grad: Some((c(2), dx)),
                    norm_grad: None,
                }),
                Kernel::Elementwise(Ew::ChannelAffineBackward {
                    dims: d,
                    dy,
                    neuron_grad: None,
                    bias_grad: None,
                    scale_grad: Some((x, c(4), 1.0)),
                    data_grad: Some((c(2), dy)),
                    norm_grad: None,
                }),
            ]
        });
    }
}

/// JunctionBackward in each shape the net builds (a Split's sums or none, a neuron or none, up
/// to three Eltwise bottoms, an in-place Eltwise whose bottom diff is dy) and in those the GPU
/// runs as their parts (three sums or outs, a neuron other than ReLU).
fn junction_suite(g: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    let neurons = [
        None,
        Some(UnaryOp::Relu {
            negative_slope: 0.0,
        }),
        Some(UnaryOp::Relu {
            negative_slope: 0.1,
        }),
        Some(UnaryOp::TanH),
    ];
    let outs_of: [&[(f32, usize)]; 5] = [
        &[],
        &[(1.0, 6)],
        &[(0.5, 6), (-2.0, 7)],
        &[(1.0, 6), (0.25, 7), (1.0, 8)],
        // In place: the first bottom's diff is dy.
        &[(0.5, 5), (-2.0, 7)],
    ];
    for n in [1usize, 7, 1000, 5000] {
        for sums in [0usize, 2, 3] {
            for neuron in neurons {
                for outs in outs_of {
                    if sums == 0 && neuron.is_none() && outs.is_empty() {
                        continue;
                    }
                    let mut init: Vec<Vec<f32>> = (0..6).map(|_| rng.vec(n, -2.0, 2.0)).collect();
                    init.extend((0..3).map(|_| vec![0.0; n]));
                    let what = format!("junction n {n} sums {sums} {neuron:?} outs {outs:?}");
                    check_all(&what, g, &init, &|ids| {
                        let v = |j: usize| whole(ids[j], n);
                        vec![Kernel::Elementwise(Ew::JunctionBackward {
                            sums: (0..sums).map(v).collect(),
                            neuron_grad: neuron.map(|op| (op, v(3), v(4))),
                            dy: v(5),
                            outs: outs.iter().map(|&(c, j)| (c, v(j))).collect(),
                        })]
                    });
                }
            }
        }
    }
}

#[test]
fn elementwise_matches_cpu() {
    let mut g = gpu();
    elementwise_suite(&mut g, 10);
    junction_suite(&mut g, 10);
}

/// The same kernels with every element in its own invocation: the scalar twins of the vec4
/// kernels the suite above runs wherever the tensors are aligned.
#[test]
fn elementwise_scalar_path_matches_cpu() {
    let mut g = gpu();
    g.set_wide_pointwise(false);
    elementwise_suite(&mut g, 12);
    junction_suite(&mut g, 12);
    g.set_wide_pointwise(true);
}

#[test]
fn elementwise_split_into_small_bindings_matches_cpu() {
    let mut g = gpu();
    // Every kernel splits its work at unit boundaries; ChannelSum's unit is one outer slice
    // (channels * inner, up to 1700 elements here).
    g.set_max_binding_elems(2048);
    elementwise_suite(&mut g, 11);
    junction_suite(&mut g, 11);
    g.set_max_binding_elems(usize::MAX);
}

// ---- conv -----------------------------------------------------------------------------------

use caffe_rs::engine::kernels::conv::{ConvKernel, Im2col};

#[allow(clippy::too_many_arguments)]
fn im2col_geom(
    im: View,
    col: View,
    batch: usize,
    channels: usize,
    im_shape: &[usize],
    kernel: &[usize],
    pad: &[usize],
    stride: &[usize],
    dilation: &[usize],
) -> Im2col {
    let col_shape: Vec<usize> = (0..im_shape.len())
        .map(|a| (im_shape[a] + 2 * pad[a] - (dilation[a] * (kernel[a] - 1) + 1)) / stride[a] + 1)
        .collect();
    let im_len = channels * im_shape.iter().product::<usize>();
    let col_len = channels * kernel.iter().product::<usize>() * col_shape.iter().product::<usize>();
    Im2col {
        im,
        col,
        batch,
        im_stride: im_len + 1,
        col_stride: col_len + 2,
        channels,
        im_shape: im_shape.to_vec(),
        col_shape,
        kernel: kernel.to_vec(),
        pad: pad.to_vec(),
        stride: stride.to_vec(),
        dilation: dilation.to_vec(),
    }
}

fn conv_suite(g: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    type Case = (
        usize,
        usize,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
    );
    let cases: Vec<Case> = vec![
        (
            1,
            1,
            vec![5, 5],
            vec![3, 3],
            vec![0, 0],
            vec![1, 1],
            vec![1, 1],
        ),
        (
            2,
            3,
            vec![7, 6],
            vec![3, 2],
            vec![1, 0],
            vec![2, 1],
            vec![1, 1],
        ),
        (
            3,
            2,
            vec![9, 9],
            vec![3, 3],
            vec![2, 2],
            vec![1, 2],
            vec![2, 2],
        ),
        (1, 4, vec![11], vec![5], vec![2], vec![3], vec![1]),
        (
            2,
            2,
            vec![4, 5, 6],
            vec![2, 3, 2],
            vec![1, 1, 0],
            vec![1, 2, 2],
            vec![1, 1, 2],
        ),
        (
            1,
            3,
            vec![33, 20],
            vec![1, 1],
            vec![0, 0],
            vec![1, 1],
            vec![1, 1],
        ),
    ];
    for (batch, channels, ims, ks, pads, strides, dils) in cases {
        let probe = im2col_geom(
            View::new(TensorId(0), 0, 0),
            View::new(TensorId(0), 0, 0),
            batch,
            channels,
            &ims,
            &ks,
            &pads,
            &strides,
            &dils,
        );
        let im_total = (batch - 1) * probe.im_stride + probe.im_len() + 3;
        let col_total = (batch - 1) * probe.col_stride + probe.col_len() + 1;
        let init = vec![
            rng.vec(im_total, -1.0, 1.0),
            rng.vec(col_total, -1.0, 1.0),
            rng.vec(col_total, -1.0, 1.0),
            rng.vec(im_total, -1.0, 1.0),
        ];
        check_all(
            &format!("im2col/col2im {ims:?} k {ks:?}"),
            g,
            &init,
            &|ids| {
                let fwd = im2col_geom(
                    View::new(ids[0], 2, im_total - 2),
                    View::new(ids[1], 1, col_total - 1),
                    batch,
                    channels,
                    &ims,
                    &ks,
                    &pads,
                    &strides,
                    &dils,
                );
                let bwd = im2col_geom(
                    View::new(ids[3], 2, im_total - 2),
                    View::new(ids[2], 1, col_total - 1),
                    batch,
                    channels,
                    &ims,
                    &ks,
                    &pads,
                    &strides,
                    &dils,
                );
                vec![
                    Kernel::Conv(ConvKernel::Im2col(fwd)),
                    Kernel::Conv(ConvKernel::Col2im(bwd)),
                ]
            },
        );
    }
    // Images and columns back to back (as Convolution lays them out), views at every alignment:
    // the flat im2col path with vec4 stores and single elements around them.
    for (batch, channels, ims, ks, pads, strides) in [
        (
            3usize,
            2usize,
            [9usize, 7usize],
            [3usize, 2usize],
            [1usize, 0usize],
            [1usize, 2usize],
        ),
        (2, 2, [23, 23], [11, 11], [0, 0], [4, 4]),
        (1, 4, [6, 6], [5, 5], [2, 2], [1, 1]),
    ] {
        for off in 0..4 {
            let mut fwd = im2col_geom(
                View::new(TensorId(0), 0, 0),
                View::new(TensorId(0), 0, 0),
                batch,
                channels,
                &ims,
                &ks,
                &pads,
                &strides,
                &[1, 1],
            );
            fwd.im_stride = fwd.im_len();
            fwd.col_stride = fwd.col_len();
            let (im_total, col_total) =
                (batch * fwd.im_len() + off, batch * fwd.col_len() + off + 3);
            let init = vec![rng.vec(im_total, -1.0, 1.0), rng.vec(col_total, -1.0, 1.0)];
            check_all(
                &format!("dense im2col {ims:?} k {ks:?} s {strides:?} offset {off}"),
                g,
                &init,
                &|ids| {
                    let mut k = fwd.clone();
                    k.im = View::new(ids[0], off, batch * fwd.im_len());
                    k.col = View::new(ids[1], off, batch * fwd.col_len());
                    vec![Kernel::Conv(ConvKernel::Im2col(k))]
                },
            );
        }
    }
    for (outer, channels, inner, off) in [
        (2usize, 3usize, 7usize, 1usize),
        (3, 16, 33, 2),
        (2, 5, 61, 3),
    ] {
        let n = outer * channels * inner;
        let init = vec![
            rng.vec(n + off + 2, -1.0, 1.0),
            rng.vec(channels + 1, -1.0, 1.0),
        ];
        check_all(
            &format!("bias {outer}x{channels}x{inner} at offset {off}"),
            g,
            &init,
            &|ids| {
                vec![Kernel::Conv(ConvKernel::AddChannelBias {
                    y: View::new(ids[0], off, n),
                    bias: View::new(ids[1], 1, channels),
                    outer,
                    channels,
                    inner,
                })]
            },
        );
    }
    for (outer, channels, inner) in [(1usize, 1usize, 1usize), (2, 3, 7), (5, 4, 1), (3, 16, 33)] {
        let n = outer * channels * inner;
        let init = vec![
            rng.vec(n, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
            rng.vec(channels, -1.0, 1.0),
        ];
        check_all(
            &format!("bias/sum {outer}x{channels}x{inner}"),
            g,
            &init,
            &|ids| {
                vec![
                    Kernel::Conv(ConvKernel::AddChannelBias {
                        y: whole(ids[0], n),
                        bias: whole(ids[1], channels),
                        outer,
                        channels,
                        inner,
                    }),
                    Kernel::Conv(ConvKernel::ChannelSum {
                        x: whole(ids[0], n),
                        out: whole(ids[2], channels),
                        outer,
                        channels,
                        inner,
                        alpha: 0.5,
                        beta: 2.0,
                    }),
                ]
            },
        );
    }
    for (rows, width, m) in [(1usize, 1usize, 1usize), (10, 7, 13), (50, 33, 100)] {
        let mut idx: Vec<f32> = (0..m).map(|_| rng.below(rows + 2) as f32 - 0.5).collect();
        idx[0] = f32::NAN;
        let init = vec![
            idx,
            rng.vec(rows * width, -1.0, 1.0),
            vec![0.0; m * width],
            rng.vec(m * width, -1.0, 1.0),
            rng.vec(rows * width, -1.0, 1.0),
        ];
        check_all(
            &format!("embed rows {rows} width {width} m {m}"),
            g,
            &init,
            &|ids| {
                vec![
                    Kernel::Conv(ConvKernel::GatherRows {
                        indices: whole(ids[0], m),
                        weight: whole(ids[1], rows * width),
                        top: whole(ids[2], m * width),
                        rows,
                        width,
                    }),
                    Kernel::Conv(ConvKernel::ScatterAddRows {
                        indices: whole(ids[0], m),
                        top_diff: whole(ids[3], m * width),
                        weight_diff: whole(ids[4], rows * width),
                        rows,
                        width,
                    }),
                ]
            },
        );
    }
}

#[test]
fn conv_kernels_match_cpu() {
    let mut g = gpu();
    let had = g.uses_texture_reads();
    conv_suite(&mut g, 20);
    // Both ways of reading the images (storage buffer and texture copy).
    g.set_texture_reads(false);
    conv_suite(&mut g, 22);
    g.set_texture_reads(true);
    conv_suite(&mut g, 23);
    g.set_texture_reads(had);
}

#[test]
fn conv_kernels_split_into_small_bindings_match_cpu() {
    let mut g = gpu();
    g.set_max_binding_elems(4096);
    conv_suite(&mut g, 21);
    g.set_max_binding_elems(usize::MAX);
}

// ---- pool -----------------------------------------------------------------------------------

use caffe_rs::engine::kernels::pool::{PoolGeom, PoolKernel};

#[allow(clippy::too_many_arguments)]
fn pool_geom(
    num: usize,
    channels: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    extra: usize,
) -> PoolGeom {
    let out = |size: usize, k: usize, s: usize, p: usize| {
        let mut o = (size + 2 * p - k).div_ceil(s) + 1;
        if p > 0 && (o - 1) * s >= size + p {
            o -= 1;
        }
        o
    };
    let (ph, pw) = (out(h, k.0, s.0, p.0), out(w, k.1, s.1, p.1));
    PoolGeom {
        num,
        channels,
        height: h,
        width: w,
        pooled_h: ph,
        pooled_w: pw,
        kernel_h: k.0,
        kernel_w: k.1,
        stride_h: s.0,
        stride_w: s.1,
        pad_h: p.0,
        pad_w: p.1,
        top_num_stride: channels * ph * pw + extra,
    }
}

fn pool_suite(g: &mut GpuEngine, seed: u64) {
    pool_cases(
        g,
        seed,
        &[
            pool_geom(1, 1, 1, 1, (1, 1), (1, 1), (0, 0), 0),
            pool_geom(2, 3, 7, 7, (3, 3), (2, 2), (0, 0), 0),
            pool_geom(2, 2, 8, 9, (3, 2), (2, 1), (1, 1), 5),
            pool_geom(3, 4, 13, 11, (3, 3), (2, 2), (1, 0), 0),
            pool_geom(1, 5, 6, 6, (6, 6), (1, 1), (0, 0), 0),
            pool_geom(2, 3, 33, 20, (2, 2), (2, 2), (0, 0), 3),
            // GoogLeNet's inception pools and strides up to 4 across (4 rows of 4 outputs per
            // invocation; vertical strides below, equal to and above the window), and a stride
            // beyond (one output per invocation).
            pool_geom(2, 2, 14, 14, (3, 3), (1, 1), (1, 1), 0),
            pool_geom(1, 3, 9, 13, (2, 3), (1, 2), (1, 1), 0),
            pool_geom(1, 2, 6, 7, (4, 2), (1, 3), (2, 0), 0),
            pool_geom(1, 2, 15, 17, (3, 4), (3, 3), (1, 2), 2),
            pool_geom(1, 2, 19, 23, (2, 4), (4, 4), (1, 1), 0),
            pool_geom(1, 2, 19, 23, (3, 3), (5, 5), (0, 0), 0),
        ],
    );
}

fn pool_cases(g: &mut GpuEngine, seed: u64, geoms: &[PoolGeom]) {
    let mut rng = Rng::new(seed);
    for &geo in geoms {
        let (nb, nt) = (geo.bottom_len(), geo.top_len());
        // Rectified and coarse, as after a ReLU: windows tie, within rows and across them, and
        // Caffe's first maximum must win.
        let rectified: Vec<f32> = rng
            .vec(nb, -1.0, 1.0)
            .iter()
            .map(|v| (v * 2.0).round().max(0.0) / 2.0)
            .collect();
        let init = vec![
            rectified,
            rng.vec(nt, -1.0, 1.0),
            vec![0.0; nt],
            rng.vec(nt, -1.0, 1.0),
            rng.vec(nb, -1.0, 1.0),
            rng.vec(nb, -1.0, 1.0),
            rng.vec(nb, 0.1, 1.0),
            rng.vec(nt, -1.0, 1.0),
            rng.vec(nt, -1.0, 1.0),
            rng.vec(nb, -1.0, 1.0),
            vec![0.0; nt],
            vec![0.0; nt],
            rng.vec(nb, -1.0, 1.0),
            vec![0.0; nt],
            vec![0.0; nt],
        ];
        let seed = rng.next_u32() as u64 * 0x1_0000_0001 + 7;
        check_all(&format!("pool {geo:?}"), g, &init, &|ids| {
            let (b, t, m, dy, db, db2) = (
                whole(ids[0], nb),
                whole(ids[1], nt),
                whole(ids[2], nt),
                whole(ids[3], nt),
                whole(ids[4], nb),
                whole(ids[5], nb),
            );
            let (pos, t2, t3, db3) = (
                whole(ids[6], nb),
                whole(ids[7], nt),
                whole(ids[8], nt),
                whole(ids[9], nb),
            );
            vec![
                Kernel::Pool(PoolKernel::MaxForward {
                    g: geo,
                    bottom: b,
                    top: t,
                    mask: m,
                }),
                Kernel::Pool(PoolKernel::MaskBackward {
                    g: geo,
                    top_diff: dy,
                    mask: m,
                    bottom_diff: db,
                    accumulate: false,
                }),
                Kernel::Pool(PoolKernel::MaskBackward {
                    g: geo,
                    top_diff: dy,
                    mask: m,
                    bottom_diff: db2,
                    accumulate: true,
                }),
                Kernel::Pool(PoolKernel::AveForward {
                    g: geo,
                    bottom: b,
                    top: t2,
                }),
                Kernel::Pool(PoolKernel::AveBackward {
                    g: geo,
                    top_diff: dy,
                    bottom_diff: db2,
                    accumulate: true,
                }),
                Kernel::Pool(PoolKernel::StochasticTest {
                    g: geo,
                    bottom: pos,
                    top: t3,
                }),
                Kernel::Pool(PoolKernel::StochasticTestBackward {
                    g: geo,
                    bottom: pos,
                    top: t3,
                    top_diff: dy,
                    bottom_diff: db3,
                    accumulate: false,
                }),
                // TRAIN: positive inputs (Caffe's use) and mixed signs (the running sum may never
                // reach the threshold, then the last element wins).
                Kernel::Pool(PoolKernel::StochasticTrain {
                    g: geo,
                    bottom: pos,
                    top: whole(ids[10], nt),
                    mask: whole(ids[11], nt),
                    seed,
                }),
                Kernel::Pool(PoolKernel::MaskBackward {
                    g: geo,
                    top_diff: dy,
                    mask: whole(ids[11], nt),
                    bottom_diff: whole(ids[12], nb),
                    accumulate: true,
                }),
                Kernel::Pool(PoolKernel::StochasticTrain {
                    g: geo,
                    bottom: b,
                    top: whole(ids[13], nt),
                    mask: whole(ids[14], nt),
                    seed: seed ^ 0xdead_beef_0000_0000,
                }),
            ]
        });
    }
}

#[test]
fn pool_matches_cpu() {
    let mut g = gpu();
    pool_suite(&mut g, 30);
}

#[test]
fn pool_large_windows_match_cpu() {
    // Windows of more than 65535 elements (global pooling over 256x256) and of 34200 elements
    // with padding: the forward kernels walk them in several passes (lavapipe ends an
    // invocation's loops after 65535 iterations), STOCHASTIC backward uses precomputed sums.
    let mut g = gpu();
    pool_cases(
        &mut g,
        32,
        &[
            pool_geom(2, 2, 256, 256, (256, 256), (1, 1), (0, 0), 3),
            pool_geom(1, 2, 200, 190, (190, 180), (10, 10), (2, 3), 0),
        ],
    );
    // The same in bindings that hold only one image.
    g.set_max_binding_elems(2 * 256 * 256);
    pool_cases(
        &mut g,
        33,
        &[pool_geom(3, 2, 256, 256, (256, 256), (1, 1), (0, 0), 0)],
    );
    g.set_max_binding_elems(usize::MAX);
}

/// Max pooling with one output per invocation (the path the suite above takes only for strides
/// above 4).
#[test]
fn pool_scalar_path_matches_cpu() {
    let mut g = gpu();
    g.set_wide_pointwise(false);
    pool_suite(&mut g, 34);
    g.set_wide_pointwise(true);
}

#[test]
fn pool_split_into_small_bindings_matches_cpu() {
    let mut g = gpu();
    g.set_max_binding_elems(4096);
    pool_suite(&mut g, 31);
    g.set_max_binding_elems(usize::MAX);
}

// ---- softmax --------------------------------------------------------------------------------

use caffe_rs::engine::kernels::softmax::SoftmaxKernel;

#[test]
fn softmax_matches_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(40);
    // The last two have rows longer than one invocation may loop over on lavapipe (whose loops
    // stop after 65535 iterations): one workgroup per row.
    for (outer, channels, inner) in [
        (1usize, 1usize, 1usize),
        (2, 10, 1),
        (3, 7, 33),
        (64, 100, 1),
        (2, 3, 100),
        (1, 30000, 1),
        (2, 12000, 3),
    ] {
        let n = outer * channels * inner;
        let init = vec![
            rng.vec(n, -5.0, 5.0),
            vec![0.0; n],
            rng.vec(n, -1.0, 1.0),
            vec![0.0; n],
        ];
        check_all(
            &format!("softmax {outer}x{channels}x{inner}"),
            &mut g,
            &init,
            &|ids| {
                let (x, y, dy, dx) = (
                    whole(ids[0], n),
                    whole(ids[1], n),
                    whole(ids[2], n),
                    whole(ids[3], n),
                );
                vec![
                    Kernel::Softmax(SoftmaxKernel::Forward {
                        x,
                        y,
                        outer,
                        channels,
                        inner,
                    }),
                    Kernel::Softmax(SoftmaxKernel::Backward {
                        y,
                        dy,
                        dx,
                        outer,
                        channels,
                        inner,
                    }),
                    Kernel::Softmax(SoftmaxKernel::Forward {
                        x,
                        y: x,
                        outer,
                        channels,
                        inner,
                    }),
                ]
            },
        );
    }
}

/// Multinomial logistic, hinge and contrastive losses with their gradients, and ArgMax.
fn more_losses_suite(g: &mut GpuEngine, seed: u64, big: bool) {
    let mut rng = Rng::new(seed);
    // (70000, 3): reductions over several workgroups; (2, 40000): rows longer than the loop
    // budget of one invocation (one workgroup per row).
    for (outer, dim) in [
        (1usize, 1usize),
        (1, 2),
        (7, 10),
        (64, 100),
        (3, 333),
        (70000, 3),
        (2, 40000),
    ] {
        if !big && outer * dim > 10_000 {
            continue;
        }
        let n = outer * dim;
        let labels: Vec<f32> = (0..outer).map(|_| rng.below(dim) as f32).collect();
        let mut probs = rng.vec(n, 0.0, 1.0);
        probs[0] = 0.0; // hits the 1e-20 floor
        let sim: Vec<f32> = (0..outer).map(|_| rng.below(2) as f32).collect();
        let init = vec![
            probs,                       // 0 prob
            labels,                      // 1 label
            vec![rng.uniform(0.5, 2.0)], // 2 top_diff
            vec![0.0; 1],                // 3 loss
            vec![0.0; n],                // 4 dx
            rng.vec(n, -2.0, 2.0),       // 5 x
            vec![0.0; n],                // 6 margin L1
            vec![0.0; n],                // 7 margin L2
            vec![0.0; n],                // 8 dx L2
            rng.vec(n, -0.5, 0.5),       // 9 a
            rng.vec(n, -0.5, 0.5),       // 10 b
            sim,                         // 11 sim
            vec![0.0; n],                // 12 diff
            vec![0.0; outer],            // 13 dist_sq
            vec![0.0; n],                // 14 dx a
            vec![0.0; n],                // 15 dx b
            vec![0.0; 1],                // 16 loss L2
            vec![0.0; 1],                // 17 loss contrastive
            vec![0.0; n],                // 18 diff legacy
            vec![0.0; outer],            // 19 dist_sq legacy
            vec![0.0; n],                // 20 dx a legacy
            vec![0.0; 1],                // 21 loss legacy
        ];
        // About half of the dissimilar pairs lie inside the margin.
        let expected_d2 = dim as f32 / 6.0;
        check_all(&format!("losses {outer}x{dim}"), g, &init, &|ids| {
            let w = |i: usize, len: usize| whole(ids[i], len);
            let mut ks = vec![
                Kernel::Softmax(SoftmaxKernel::MultinomialLogistic {
                    prob: w(0, n),
                    label: w(1, outer),
                    loss: w(3, 1),
                    outer,
                    dim,
                }),
                Kernel::Softmax(SoftmaxKernel::MultinomialLogisticGrad {
                    prob: w(0, n),
                    label: w(1, outer),
                    top_diff: w(2, 1),
                    dx: w(4, n),
                    outer,
                    dim,
                }),
            ];
            for (l2, margin, loss, dx) in [(false, 6, 3, 4), (true, 7, 16, 8)] {
                ks.push(Kernel::Softmax(SoftmaxKernel::Hinge {
                    x: w(5, n),
                    label: w(1, outer),
                    margin: w(margin, n),
                    loss: w(loss, 1),
                    outer,
                    dim,
                    l2,
                }));
                ks.push(Kernel::Softmax(SoftmaxKernel::HingeGrad {
                    margin: w(margin, n),
                    label: w(1, outer),
                    top_diff: w(2, 1),
                    dx: w(dx, n),
                    outer,
                    dim,
                    l2,
                }));
            }
            for (legacy, diff, dist, loss, dxs) in [
                (false, 12, 13, 17, [(14, 1.0), (15, -1.0)]),
                (true, 18, 19, 21, [(20, 1.0), (20, -1.0)]),
            ] {
                let margin = if legacy {
                    expected_d2
                } else {
                    expected_d2.sqrt()
                };
                ks.push(Kernel::Softmax(SoftmaxKernel::Contrastive {
                    a: w(9, n),
                    b: w(10, n),
                    sim: w(11, outer),
                    diff: w(diff, n),
                    dist_sq: w(dist, outer),
                    loss: w(loss, 1),
                    outer,
                    channels: dim,
                    margin,
                    legacy,
                }));
                for (dx, sign) in dxs {
                    ks.push(Kernel::Softmax(SoftmaxKernel::ContrastiveGrad {
                        diff: w(diff, n),
                        dist_sq: w(dist, outer),
                        sim: w(11, outer),
                        top_diff: w(2, 1),
                        dx: w(dx, n),
                        outer,
                        channels: dim,
                        margin,
                        legacy,
                        sign,
                    }));
                }
            }
            ks
        });
    }
}

fn argmax_suite(g: &mut GpuEngine, seed: u64, big: bool) {
    use caffe_rs::engine::kernels::softmax::ArgMaxOut;
    let mut rng = Rng::new(seed);
    // (2, 300, 2) with top_k >= 109 and (1, 40000, 1) exceed the loop budget of one invocation
    // per position: one dispatch per pass, one workgroup per position.
    for (outer, channels, inner) in [
        (1usize, 1usize, 1usize),
        (2, 10, 1),
        (3, 7, 5),
        (4, 100, 1),
        (2, 3, 300),
        (2, 300, 2),
        (1, 40000, 1),
    ] {
        if !big && channels > 1000 {
            continue;
        }
        let n = outer * channels * inner;
        // Few distinct values: many ties, which order by decreasing index.
        let x: Vec<f32> = if channels > 1000 {
            rng.vec(n, -1.0, 1.0)
        } else {
            (0..n).map(|_| rng.below(5) as f32 - 2.0).collect()
        };
        let top_ks = if channels > 1000 {
            vec![1, 3]
        } else {
            vec![1, channels.div_ceil(2), channels]
        };
        for top_k in top_ks {
            let y = outer * top_k * inner;
            let init = vec![x.clone(), vec![0.0; y], vec![0.0; y], vec![0.0; 2 * y]];
            check_all(
                &format!("argmax {outer}x{channels}x{inner} top {top_k}"),
                g,
                &init,
                &|ids| {
                    let mut ks = Vec::new();
                    for (out, t, len) in [
                        (ArgMaxOut::Indices, 1, y),
                        (ArgMaxOut::Values, 2, y),
                        (ArgMaxOut::IndicesThenValues, 3, 2 * y),
                    ] {
                        if out == ArgMaxOut::IndicesThenValues && inner != 1 {
                            continue;
                        }
                        ks.push(Kernel::Softmax(SoftmaxKernel::ArgMax {
                            x: whole(ids[0], n),
                            y: whole(ids[t], len),
                            outer,
                            channels,
                            inner,
                            top_k,
                            out,
                        }));
                    }
                    ks
                },
            );
        }
    }
}

#[test]
fn hinge_contrastive_multinomial_match_cpu() {
    let mut g = gpu();
    more_losses_suite(&mut g, 41, true);
}

#[test]
fn hinge_contrastive_multinomial_split_into_small_bindings_match_cpu() {
    let mut g = gpu();
    g.set_max_binding_elems(1024);
    more_losses_suite(&mut g, 42, false);
    g.set_max_binding_elems(usize::MAX);
}

#[test]
fn argmax_matches_cpu() {
    let mut g = gpu();
    argmax_suite(&mut g, 43, true);
    g.set_max_binding_elems(1024);
    argmax_suite(&mut g, 44, false);
    g.set_max_binding_elems(usize::MAX);
}

// ---- transfer -------------------------------------------------------------------------------

use caffe_rs::engine::kernels::transfer::{ReduceOp, TransferKernel};

#[test]
fn transfer_matches_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(50);
    // Concat-like: copy a [2, 3, 5] block into a [2, 7, 5] tensor at channel 2; then add back.
    let cases: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = vec![
        (vec![2, 3, 5], vec![15, 5, 1], vec![35, 5, 1]),
        (vec![7], vec![1], vec![2]),
        (vec![], vec![], vec![]),
        (vec![3, 1, 4, 2], vec![8, 8, 2, 1], vec![1, 3, 6, 24]),
        (vec![100, 33], vec![33, 1], vec![1, 100]),
        // Long contiguous runs (buffer copies): a channel concat and a broadcast of one row.
        (vec![3, 4, 100], vec![400, 100, 1], vec![1000, 100, 1]),
        (vec![3, 300], vec![0, 1], vec![300, 1]),
    ];
    for (dims, ss, ds) in cases {
        let n = 4000;
        let init = vec![rng.vec(n, -1.0, 1.0), rng.vec(n, -1.0, 1.0)];
        check_all(&format!("strided {dims:?}"), &mut g, &init, &|ids| {
            vec![
                Kernel::Transfer(TransferKernel::Strided {
                    src: View::new(ids[0], 3, n - 3),
                    dst: View::new(ids[1], 10, n - 10),
                    dims: dims.clone(),
                    src_strides: ss.clone(),
                    dst_strides: ds.clone(),
                    add: false,
                }),
                Kernel::Transfer(TransferKernel::Strided {
                    src: View::new(ids[0], 0, n),
                    dst: View::new(ids[1], 1, n - 1),
                    dims: dims.clone(),
                    src_strides: ss.clone(),
                    dst_strides: ds.clone(),
                    add: true,
                }),
            ]
        });
    }
    // The last two take several passes (lavapipe ends an invocation's loops after 65535).
    for (outer, dim, inner) in [
        (1usize, 1usize, 1usize),
        (3, 7, 5),
        (10, 100, 1),
        (2, 1, 33),
        (1, 70000, 1),
        (2, 40000, 3),
    ] {
        for op in [ReduceOp::Sum, ReduceOp::Asum, ReduceOp::Sumsq] {
            let n = outer * dim * inner;
            let init = vec![
                rng.vec(n, -1.0, 1.0),
                vec![0.0; outer * inner],
                rng.vec(outer, -1.0, 1.0),
                vec![0.0; outer * dim],
            ];
            check_all(
                &format!("reduce {op:?} {outer}x{dim}x{inner}"),
                &mut g,
                &init,
                &|ids| {
                    vec![
                        Kernel::Transfer(TransferKernel::Reduce {
                            x: whole(ids[0], n),
                            y: whole(ids[1], outer * inner),
                            outer,
                            dim,
                            inner,
                            op,
                            coeff: 0.5,
                        }),
                        Kernel::Transfer(TransferKernel::ReduceGrad {
                            x: whole(ids[0], outer * dim),
                            dy: whole(ids[2], outer),
                            dx: whole(ids[3], outer * dim),
                            outer,
                            dim,
                            op,
                            coeff: -1.5,
                        }),
                    ]
                },
            );
        }
    }
}

// ---- norm -----------------------------------------------------------------------------------

use caffe_rs::engine::kernels::norm::{EpsMode, Lrn, LrnRegion, NormGrad, NormKernel};

fn norm_suite(g: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    for (outer, channels, inner) in [
        (1usize, 1usize, 1usize),
        (2, 3, 7),
        (4, 5, 33),
        (1, 17, 100),
        (8, 2, 1),
    ] {
        let d = ChannelDims::new(outer, channels, inner);
        let n = d.count();
        let c = channels;
        // 0 x, 1 mean, 2 var, 3 std, 4 y, 5 dy, 6 dx full, 7 dx frozen, 8 dx center, 9 y2 (center)
        let init = vec![
            rng.vec(n, -2.0, 3.0),
            vec![0.0; c],
            vec![0.0; c],
            vec![0.0; c],
            vec![0.0; n],
            rng.vec(n, -1.0, 1.0),
            vec![0.0; n],
            vec![0.0; n],
            vec![0.0; n],
            vec![0.0; n],
            rng.vec(c, 0.0, 5.0),
            rng.vec(c, 0.0, 5.0),
            vec![rng.uniform(0.0, 3.0).floor()],
        ];
        for mode in [EpsMode::SqrtVarPlusEps, EpsMode::SqrtVarThenEps] {
            check_all(&format!("norm {d:?} {mode:?}"), g, &init, &|ids| {
                let w = |i: usize, len: usize| whole(ids[i], len);
                vec![
                    Kernel::Norm(NormKernel::Moments {
                        dims: d,
                        x: w(0, n),
                        mean: w(1, c),
                        var: Some(w(2, c)),
                    }),
                    Kernel::Norm(NormKernel::Normalize {
                        dims: d,
                        eps: 1e-5,
                        eps_mode: mode,
                        x: w(0, n),
                        mean: w(1, c),
                        var: Some(w(2, c)),
                        std: Some(w(3, c)),
                        y: w(4, n),
                    }),
                    Kernel::Norm(NormKernel::NormalizeBackward {
                        dims: d,
                        grad: NormGrad::Full,
                        y: w(4, n),
                        dy: w(5, n),
                        std: Some(w(3, c)),
                        dx: w(6, n),
                    }),
                    Kernel::Norm(NormKernel::NormalizeBackward {
                        dims: d,
                        grad: NormGrad::Frozen,
                        y: w(4, n),
                        dy: w(5, n),
                        std: Some(w(3, c)),
                        dx: w(7, n),
                    }),
                    Kernel::Norm(NormKernel::Normalize {
                        dims: d,
                        eps: 0.0,
                        eps_mode: mode,
                        x: w(0, n),
                        mean: w(1, c),
                        var: None,
                        std: None,
                        y: w(9, n),
                    }),
                    Kernel::Norm(NormKernel::NormalizeBackward {
                        dims: d,
                        grad: NormGrad::CenterOnly,
                        y: w(9, n),
                        dy: w(5, n),
                        std: None,
                        dx: w(8, n),
                    }),
                    Kernel::Norm(NormKernel::StatsUpdate {
                        maf: 0.999,
                        correction: 1.5,
                        mean: w(1, c),
                        var: w(2, c),
                        sums: w(10, c),
                        sq_sums: w(11, c),
                        count: w(12, 1),
                    }),
                    Kernel::Norm(NormKernel::StoredStats {
                        sums: w(10, c),
                        sq_sums: w(11, c),
                        count: w(12, 1),
                        mean: w(1, c),
                        var: w(2, c),
                    }),
                ]
            });
        }
    }
    for region in [LrnRegion::AcrossChannels, LrnRegion::WithinChannel] {
        for (num, channels, height, width, size) in [
            (1usize, 1usize, 1usize, 1usize, 1usize),
            (2, 7, 5, 6, 5),
            (1, 3, 9, 4, 3),
            (3, 16, 3, 3, 5),
        ] {
            let l = Lrn {
                region,
                num,
                channels,
                height,
                width,
                size,
                alpha: 1e-2,
                beta: 0.75,
                k: 2.0,
            };
            let n = l.count();
            let init = vec![
                rng.vec(n, -3.0, 3.0),
                vec![0.0; n],
                vec![0.0; n],
                rng.vec(n, -1.0, 1.0),
                vec![0.0; n],
            ];
            check_all(&format!("lrn {l:?}"), g, &init, &|ids| {
                let w = |i: usize| whole(ids[i], n);
                vec![
                    Kernel::Norm(NormKernel::Lrn {
                        lrn: l,
                        x: w(0),
                        scale: w(1),
                        y: w(2),
                    }),
                    Kernel::Norm(NormKernel::LrnBackward {
                        lrn: l,
                        x: w(0),
                        y: w(2),
                        scale: w(1),
                        dy: w(3),
                        dx: w(4),
                    }),
                ]
            });
        }
    }
}

#[test]
fn channel_sums_past_loop_limit_match_cpu() {
    // 17M elements in one channel: more than 256 lanes * 65535 iterations, where lavapipe ends an
    // invocation's loops, so the per-channel sums (BatchNorm / MVN moments and gradient, PReLU's
    // slope gradient, bias gradients) run in several accumulating dispatches.
    let mut g = gpu();
    let mut rng = Rng::new(64);
    let d = ChannelDims::new(2, 1, 8_500_001);
    let n = d.count();
    // 0 x, 1 mean, 2 var, 3 std, 4 y, 5 dy, 6 dx, 7 sum(dy), 8 sum(dy * min(x, 0))
    let init = vec![
        rng.vec(n, -2.0, 3.0),
        vec![0.0],
        vec![0.0],
        vec![0.0],
        vec![0.0; n],
        rng.vec(n, -1.0, 1.0),
        vec![0.0; n],
        vec![0.0],
        vec![0.5],
    ];
    check_all_tol(
        "channel sums of 17M elements",
        &mut g,
        &init,
        &|ids| {
            let w = |i: usize, len: usize| whole(ids[i], len);
            vec![
                Kernel::Norm(NormKernel::Moments {
                    dims: d,
                    x: w(0, n),
                    mean: w(1, 1),
                    var: Some(w(2, 1)),
                }),
                Kernel::Norm(NormKernel::Normalize {
                    dims: d,
                    eps: 1e-5,
                    eps_mode: EpsMode::SqrtVarPlusEps,
                    x: w(0, n),
                    mean: w(1, 1),
                    var: Some(w(2, 1)),
                    std: Some(w(3, 1)),
                    y: w(4, n),
                }),
                Kernel::Norm(NormKernel::NormalizeBackward {
                    dims: d,
                    grad: NormGrad::Full,
                    y: w(4, n),
                    dy: w(5, n),
                    std: Some(w(3, 1)),
                    dx: w(6, n),
                }),
                Kernel::Elementwise(Ew::ChannelSum {
                    dims: d,
                    a: w(5, n),
                    weight: SumWeight::One,
                    beta: 0.0,
                    y: w(7, 1),
                }),
                Kernel::Elementwise(Ew::ChannelSum {
                    dims: d,
                    a: w(5, n),
                    weight: SumWeight::ByNegPart(w(0, n)),
                    beta: 1.0,
                    y: w(8, 1),
                }),
            ]
        },
        1e-3,
    );
}

#[test]
fn lrn_past_loop_limit_is_an_error() {
    // One invocation slides the across-channel window over all channels: with 40000 channels it
    // would loop past lavapipe's 65535 iterations, so the GPU engine refuses instead of returning
    // silently wrong values.
    let mut g = gpu();
    let l = Lrn {
        region: LrnRegion::AcrossChannels,
        num: 1,
        channels: 40_000,
        height: 1,
        width: 1,
        size: 5,
        alpha: 1e-2,
        beta: 0.75,
        k: 2.0,
    };
    let n = l.count();
    let ids: Vec<TensorId> = (0..3).map(|_| g.alloc(n)).collect();
    let err = g
        .launch(&Kernel::Norm(NormKernel::Lrn {
            lrn: l,
            x: whole(ids[0], n),
            scale: whole(ids[1], n),
            y: whole(ids[2], n),
        }))
        .unwrap_err();
    assert!(format!("{err:#}").contains("would loop"), "{err:#}");
    for id in ids {
        g.free(id);
    }
}

#[test]
fn norm_matches_cpu() {
    let mut g = gpu();
    norm_suite(&mut g, 60);
}

#[test]
fn norm_split_into_small_bindings_matches_cpu() {
    let mut g = gpu();
    g.set_max_binding_elems(2048);
    norm_suite(&mut g, 61);
    g.set_max_binding_elems(usize::MAX);
}

use caffe_rs::engine::kernels::softmax::Normalization;

#[test]
fn losses_match_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(70);
    // The last two need several workgroups per reduction (and per-class chunks).
    for (outer, channels, inner) in [
        (1usize, 2usize, 1usize),
        (7, 10, 1),
        (3, 5, 9),
        (64, 100, 1),
        (2000, 300, 1),
        (4, 5, 40000),
    ] {
        let n = outer * channels * inner;
        let m = outer * inner;
        let mut labels: Vec<f32> = (0..m).map(|_| rng.below(channels) as f32).collect();
        if m > 2 {
            labels[1] = 255.0; // ignored
        }
        let mut probs = rng.vec(n, 0.0, 1.0);
        probs[0] = 0.0; // hits log_min
        let info = rng.vec(channels * channels, 0.0, 1.0);
        for ignore in [None, Some(255)] {
            let lab = if ignore.is_none() {
                labels
                    .iter()
                    .map(|&v| if v == 255.0 { 0.0 } else { v })
                    .collect()
            } else {
                labels.clone()
            };
            for mode in [
                Normalization::Full,
                Normalization::Valid,
                Normalization::BatchSize,
                Normalization::None,
            ] {
                let init = vec![
                    probs.clone(),
                    lab.clone(),
                    info.clone(),
                    vec![0.0; 2],
                    vec![0.0; n],
                    vec![rng.uniform(0.5, 2.0)],
                    vec![0.0; 1 + channels],
                    rng.vec(n, -3.0, 3.0),
                    vec![0.0; n],
                    vec![0.0; 2],
                    vec![0.0; 1],
                    vec![0.0; 1],
                    vec![0.0; channels],
                ];
                // The CPU engine sums a loss in f32 in order (as Caffe's CPU code), the GPU by
                // trees: over 10^5 terms they differ by more than 1e-4.
                let tol = if outer * inner > 100_000 { 1e-3 } else { 1e-4 };
                check_all_tol(
                    &format!("losses {outer}x{channels}x{inner} {ignore:?} {mode:?}"),
                    &mut g,
                    &init,
                    &|ids| {
                        let w = |i: usize, len: usize| whole(ids[i], len);
                        let mut ks = Vec::new();
                        for (h, dx) in [(None, 4usize), (Some(w(2, channels * channels)), 8)] {
                            ks.push(Kernel::Softmax(SoftmaxKernel::CrossEntropy {
                                prob: w(0, n),
                                label: w(1, m),
                                infogain: h,
                                loss: View::new(ids[3], 0, 1),
                                norm: View::new(ids[10], 0, 1),
                                outer,
                                channels,
                                inner,
                                ignore_label: ignore,
                                mode,
                                log_min: 1e-20,
                            }));
                            ks.push(Kernel::Softmax(SoftmaxKernel::CrossEntropyGrad {
                                prob: w(0, n),
                                label: w(1, m),
                                infogain: h,
                                top_diff: w(5, 1),
                                norm: View::new(ids[10], 0, 1),
                                dx: w(dx, n),
                                outer,
                                channels,
                                inner,
                                ignore_label: ignore,
                            }));
                        }
                        ks.push(Kernel::Softmax(SoftmaxKernel::Accuracy {
                            x: w(0, n),
                            label: w(1, m),
                            acc: View::new(ids[6], 0, 1),
                            per_class: Some(View::new(ids[12], 0, channels)),
                            outer,
                            channels,
                            inner,
                            top_k: 1 + channels / 3,
                            ignore_label: ignore,
                        }));
                        ks.push(Kernel::Softmax(SoftmaxKernel::SigmoidCrossEntropy {
                            x: w(7, m),
                            target: w(0, m),
                            loss: View::new(ids[9], 0, 1),
                            norm: View::new(ids[11], 0, 1),
                            outer,
                            inner,
                            ignore_label: ignore,
                            mode,
                        }));
                        ks.push(Kernel::Softmax(SoftmaxKernel::SigmoidCrossEntropyGrad {
                            x: w(7, m),
                            target: w(0, m),
                            top_diff: w(5, 1),
                            norm: View::new(ids[11], 0, 1),
                            dx: View::new(ids[8], 0, m),
                            ignore_label: ignore,
                        }));
                        ks.push(Kernel::Softmax(SoftmaxKernel::Euclidean {
                            a: w(7, n),
                            b: w(0, n),
                            diff: w(4, n),
                            loss: View::new(ids[9], 0, 1),
                            outer,
                        }));
                        ks.push(Kernel::Softmax(SoftmaxKernel::ScaleByWeight {
                            x: w(7, n),
                            w: w(5, 1),
                            sign: -1.0,
                            divisor: 3.0,
                            y: w(7, n),
                        }));
                        ks
                    },
                    tol,
                );
            }
        }
    }
}

#[test]
fn row_gather_scatter_match_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(80);
    // 70000 rows take several passes of the scatter (lavapipe's loop limit).
    for (rows, row_len, other) in [
        (1usize, 1usize, 1usize),
        (5, 7, 9),
        (20, 33, 4),
        (70000, 2, 3),
    ] {
        let idx: Vec<f32> = (0..rows).map(|_| rng.below(other) as f32 + 0.25).collect();
        let init = vec![
            rng.vec(other * row_len, -1.0, 1.0),
            idx,
            rng.vec(rows * row_len, -1.0, 1.0),
            rng.vec(rows * row_len, -1.0, 1.0),
            rng.vec(other * row_len, -1.0, 1.0),
        ];
        check_all(
            &format!("rows {rows} len {row_len} other {other}"),
            &mut g,
            &init,
            &|ids| {
                vec![
                    Kernel::Transfer(TransferKernel::GatherRows {
                        src: whole(ids[0], other * row_len),
                        index: whole(ids[1], rows),
                        dst: whole(ids[3], rows * row_len),
                        rows,
                        row_len,
                        src_rows: other,
                    }),
                    Kernel::Transfer(TransferKernel::ScatterAddRows {
                        src: whole(ids[2], rows * row_len),
                        index: whole(ids[1], rows),
                        dst: whole(ids[4], other * row_len),
                        rows,
                        row_len,
                        dst_rows: other,
                    }),
                ]
            },
        );
    }
}

// ---- whole convolutions ---------------------------------------------------------------------

use caffe_rs::engine::kernels::conv::ConvGemm;

/// A convolution case: batch, channels, out channels, group, image shape, kernel, pad, stride,
/// dilation, bias, view offset, images the column scratch holds.
#[derive(Clone, Debug)]
struct ConvCase {
    batch: usize,
    channels: usize,
    out_channels: usize,
    group: usize,
    im: Vec<usize>,
    kernel: Vec<usize>,
    pad: Vec<usize>,
    stride: Vec<usize>,
    dilation: Vec<usize>,
    bias: bool,
    offset: usize,
    chunk: usize,
}

impl ConvCase {
    fn out_shape(&self) -> Vec<usize> {
        (0..self.im.len())
            .map(|a| {
                (self.im[a] + 2 * self.pad[a] - (self.dilation[a] * (self.kernel[a] - 1) + 1))
                    / self.stride[a]
                    + 1
            })
            .collect()
    }

    fn gemm(&self, ids: &[TensorId], which: usize) -> ConvGemm {
        let kprod: usize = self.kernel.iter().product();
        let col_shape = self.out_shape();
        let s: usize = col_shape.iter().product();
        let im_len = self.batch * self.channels * self.im.iter().product::<usize>();
        let out_len = self.batch * self.out_channels * s;
        let w_len = self.out_channels * self.channels / self.group * kprod;
        let col_len = self.chunk * self.channels * kprod * s;
        let off = self.offset;
        // Tensors: 0 x, 1 y, 2 w, 3 bias, 4 dy, 5 dx, 6 dw, 7 col scratch.
        let (im, out, weight) = match which {
            0 => (ids[0], ids[1], ids[2]),
            1 => (ids[5], ids[4], ids[2]),
            _ => (ids[0], ids[4], ids[6]),
        };
        ConvGemm {
            im: View::new(im, off, im_len),
            out: View::new(out, off, out_len),
            weight: View::new(weight, off, w_len),
            bias: (which == 0 && self.bias).then(|| View::new(ids[3], off, self.out_channels)),
            col: View::new(ids[7], 0, col_len),
            batch: self.batch,
            group: self.group,
            channels: self.channels,
            out_channels: self.out_channels,
            im_shape: self.im.clone(),
            col_shape,
            kernel: self.kernel.clone(),
            pad: self.pad.clone(),
            stride: self.stride.clone(),
            dilation: self.dilation.clone(),
            epilogue: Vec::new(),
            junction: None,
        }
    }

    /// Runs forward, data gradient and weight gradient on both engines and compares them.
    fn check(&self, g: &mut GpuEngine, rng: &mut Rng, tol: f32) {
        let kprod: usize = self.kernel.iter().product();
        let s: usize = self.out_shape().iter().product();
        let off = self.offset;
        let im_len = self.batch * self.channels * self.im.iter().product::<usize>() + off;
        let out_len = self.batch * self.out_channels * s + off;
        let w_len = self.out_channels * self.channels / self.group * kprod + off;
        let col_len = (self.chunk * self.channels * kprod * s).max(1);
        let init = vec![
            rng.vec(im_len, -1.0, 1.0),
            rng.vec(out_len, -1.0, 1.0),
            rng.vec(w_len, -1.0, 1.0),
            rng.vec(self.out_channels + off, -1.0, 1.0),
            rng.vec(out_len, -1.0, 1.0),
            rng.vec(im_len, -1.0, 1.0),
            rng.vec(w_len, -1.0, 1.0),
            vec![0.0; col_len],
        ];
        let (c, gp) = run_both(g, &init, &|ids| {
            vec![
                Kernel::Conv(ConvKernel::ConvForward(self.gemm(ids, 0))),
                Kernel::Conv(ConvKernel::ConvBackwardData(self.gemm(ids, 1))),
                Kernel::Conv(ConvKernel::ConvWeightGrad(self.gemm(ids, 2))),
            ]
        });
        for (i, what) in [(1, "forward"), (5, "data gradient"), (6, "weight gradient")] {
            assert_close(&format!("{what} of {self:?}"), &c[i], &gp[i], tol);
        }
        for i in [0, 2, 3, 4] {
            assert_eq!(c[i], gp[i], "input {i} changed: {self:?}");
        }
    }
}

/// A random convolution with `axes` spatial axes.
fn random_conv(rng: &mut Rng, axes: usize) -> ConvCase {
    let group = 1 + rng.below(3);
    let kernel: Vec<usize> = (0..axes).map(|_| 1 + rng.below(4)).collect();
    let stride: Vec<usize> = (0..axes).map(|_| 1 + rng.below(3)).collect();
    let pad: Vec<usize> = (0..axes).map(|_| rng.below(3)).collect();
    let dilation: Vec<usize> = (0..axes).map(|_| 1 + rng.below(2)).collect();
    let im = (0..axes)
        .map(|a| {
            let extent = dilation[a] * (kernel[a] - 1) + 1;
            extent.saturating_sub(2 * pad[a]).max(1) + rng.below(9)
        })
        .collect();
    let batch = 1 + rng.below(4);
    ConvCase {
        batch,
        channels: group * (1 + rng.below(5)),
        out_channels: group * (1 + rng.below(9)),
        group,
        im,
        kernel,
        pad,
        stride,
        dilation,
        bias: rng.below(2) == 0,
        offset: rng.below(4),
        chunk: 1 + rng.below(batch),
    }
}

fn conv2(
    (batch, channels, out_channels, group): (usize, usize, usize, usize),
    im: [usize; 2],
    kernel: [usize; 2],
    pad: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> ConvCase {
    ConvCase {
        batch,
        channels,
        out_channels,
        group,
        im: im.to_vec(),
        kernel: kernel.to_vec(),
        pad: pad.to_vec(),
        stride: stride.to_vec(),
        dilation: dilation.to_vec(),
        bias: true,
        offset: 0,
        chunk: 1,
    }
}

fn whole_conv_suite(g: &mut GpuEngine, seed: u64) {
    let mut rng = Rng::new(seed);
    let fixed = [
        // CaffeNet-like shapes (small batch): 11x11 stride 4, 5x5 groups, 3x3.
        conv2((2, 3, 96, 1), [35, 35], [11, 11], [0, 0], [4, 4], [1, 1]),
        conv2((3, 8, 16, 2), [13, 13], [5, 5], [2, 2], [1, 1], [1, 1]),
        conv2((2, 16, 12, 1), [7, 7], [3, 3], [1, 1], [1, 1], [1, 1]),
        // 1x1, 1x1 with stride 2, non-square kernel with unequal pads, dilation, wide images.
        conv2((2, 5, 7, 1), [6, 9], [1, 1], [0, 0], [1, 1], [1, 1]),
        conv2((2, 6, 4, 2), [9, 8], [1, 1], [0, 0], [2, 2], [1, 1]),
        conv2((2, 3, 5, 1), [8, 10], [3, 2], [2, 0], [1, 3], [1, 1]),
        conv2((1, 4, 6, 2), [12, 11], [3, 3], [2, 1], [1, 1], [2, 3]),
        conv2((1, 2, 3, 1), [3, 150], [2, 5], [1, 2], [1, 2], [1, 1]),
        // Output rows of 1, 2 and 3 positions (every run of 4 wraps).
        conv2((2, 3, 4, 1), [5, 3], [3, 3], [1, 1], [1, 1], [1, 1]),
        conv2((2, 3, 4, 1), [9, 3], [2, 2], [0, 0], [2, 1], [1, 1]),
        // Pads larger than the kernel extent (negative pads of the data gradient's convolution).
        conv2((1, 2, 3, 1), [4, 4], [1, 2], [2, 3], [1, 1], [1, 1]),
    ];
    for c in &fixed {
        c.check(g, &mut rng, 1e-4);
    }
    for i in 0..24 {
        let c = random_conv(&mut rng, [2, 2, 1, 3, 0][i % 5]);
        c.check(g, &mut rng, 1e-4);
    }
    // 16 and more input channels per group: data gradients as convolutions, per phase when
    // strided (phases no tap reaches, 1x1 stride 2, dilation, groups, more rows than the fused
    // kernels take).
    let wide = [
        conv2((2, 32, 8, 2), [9, 9], [3, 3], [1, 1], [1, 1], [1, 1]),
        conv2((2, 16, 6, 1), [11, 10], [3, 2], [1, 0], [2, 3], [1, 1]),
        conv2((2, 32, 8, 2), [13, 13], [3, 3], [2, 2], [2, 2], [2, 2]),
        conv2((1, 16, 4, 1), [9, 9], [1, 1], [0, 0], [2, 2], [1, 1]),
        conv2((2, 20, 5, 1), [12, 12], [5, 5], [2, 2], [3, 3], [1, 1]),
        conv2((1, 16, 3, 1), [10, 10], [2, 2], [0, 0], [4, 4], [1, 1]),
        conv2((1, 160, 8, 1), [9, 9], [3, 3], [1, 1], [2, 2], [1, 1]),
    ];
    for c in &wide {
        c.check(g, &mut rng, 1e-4);
    }
    for i in 0..8 {
        let mut c = random_conv(&mut rng, [2, 2, 1, 2][i % 4]);
        c.channels = c.group * (16 + rng.below(8));
        c.check(g, &mut rng, 1e-4);
    }
}

#[test]
fn whole_convolutions_match_cpu() {
    let mut g = gpu();
    whole_conv_suite(&mut g, 31);
    // More rows than the fused kernels take (B packed first), strided and not.
    let mut rng = Rng::new(36);
    for c in [
        conv2((2, 8, 136, 1), [9, 9], [3, 3], [1, 1], [1, 1], [1, 1]),
        conv2((2, 3, 140, 1), [19, 19], [5, 5], [0, 0], [2, 2], [1, 1]),
        conv2((2, 4, 132, 2), [10, 7], [2, 3], [1, 0], [1, 2], [2, 1]),
    ] {
        c.check(&mut g, &mut rng, 1e-4);
    }
    // Weight gradients in slices over (image, position): slices within an image (9216
    // positions), several images per slice with a tail of 1 position each (81), 1x1 kernels with
    // rows at whole texels and not (offset 3), the 64-column tile, groups, stride 2, slices of
    // 8 and 4 images.
    for (i, mut c) in [
        conv2((3, 4, 40, 1), [96, 96], [3, 3], [1, 1], [1, 1], [1, 1]),
        conv2((5, 6, 20, 2), [9, 9], [3, 3], [1, 1], [1, 1], [1, 1]),
        conv2((2, 16, 48, 1), [20, 20], [1, 1], [0, 0], [1, 1], [1, 1]),
        conv2((2, 16, 48, 1), [20, 20], [1, 1], [0, 0], [1, 1], [1, 1]),
        conv2((3, 3, 64, 1), [30, 30], [7, 7], [3, 3], [2, 2], [1, 1]),
        conv2((2, 40, 96, 2), [14, 14], [1, 1], [0, 0], [2, 2], [1, 1]),
        conv2((12, 1, 8, 1), [32, 32], [3, 3], [1, 1], [1, 1], [1, 1]),
    ]
    .into_iter()
    .enumerate()
    {
        c.offset = if i == 3 { 3 } else { 0 };
        // Sums of 27648 products: the orders of additions differ more.
        c.check(&mut g, &mut rng, if i == 0 { 1e-3 } else { 1e-4 });
    }
    // The portable micro-kernel.
    let had = g.uses_subgroups();
    g.set_subgroups(false);
    whole_conv_suite(&mut g, 32);
    g.set_subgroups(had);
}

#[test]
fn whole_convolutions_split_into_small_bindings_match_cpu() {
    let mut g = gpu();
    // 65536 elements per binding (the im2col fallback of data gradients with few channels needs
    // one image's columns in a binding): k blocks, image chunks and per-image position blocks.
    g.set_max_binding_elems(65536);
    whole_conv_suite(&mut g, 33);
    let mut rng = Rng::new(34);
    conv2((3, 16, 8, 1), [40, 40], [3, 3], [1, 1], [1, 1], [1, 1]).check(&mut g, &mut rng, 1e-4);
    // More rows than the fused kernels take: B packed in k blocks.
    conv2((2, 64, 160, 1), [12, 12], [3, 3], [1, 1], [1, 1], [1, 1]).check(&mut g, &mut rng, 1e-4);
    conv2((2, 6, 144, 2), [23, 23], [11, 11], [2, 2], [4, 4], [1, 1]).check(&mut g, &mut rng, 1e-4);
    g.set_max_binding_elems(usize::MAX);
}

#[test]
fn whole_convolutions_past_the_loop_limit_match_cpu() {
    let mut g = gpu();
    let mut rng = Rng::new(35);
    // Weight gradient over k = 2 * 200 * 200 = 80000 positions, forward over
    // k = 8200 * 9 = 73800 taps: more micro-kernel steps than lavapipe runs in one invocation.
    conv2((2, 2, 3, 1), [200, 200], [3, 3], [1, 1], [1, 1], [1, 1]).check(&mut g, &mut rng, 1e-3);
    conv2((1, 8200, 2, 1), [3, 3], [3, 3], [1, 1], [1, 1], [1, 1]).check(&mut g, &mut rng, 1e-3);
    // The same with the micro-kernels forming B (16 rows): the bias in the last k block.
    conv2((1, 8200, 16, 1), [3, 3], [3, 3], [1, 1], [1, 1], [1, 1]).check(&mut g, &mut rng, 1e-3);
}
