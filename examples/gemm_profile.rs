//! GEMM through the GPU engine, for profiling (`CAFFE_RS_GPU_PROFILE=1`):
//! `gemm_profile M N K [TA TB [REPS]]`.
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::kernels::blas::{BlasKernel, Gemm};
use caffe_rs::engine::{Engine, Kernel, View};

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, n, k) = (a[0], a[1], a[2]);
    let (ta, tb) = (
        a.get(3).is_some_and(|&v| v == 1),
        a.get(4).is_some_and(|&v| v == 1),
    );
    let reps = a.get(5).copied().unwrap_or(3);
    let mut e = GpuEngine::new(0).unwrap();
    let (x, y, z) = (e.alloc(m * k), e.alloc(k * n), e.alloc(m * n));
    e.upload(View::new(x, 0, m * k), &vec![0.5; m * k]);
    e.upload(View::new(y, 0, k * n), &vec![0.25; k * n]);
    let g = Kernel::Blas(BlasKernel::Gemm(Gemm::single(
        ta,
        tb,
        m,
        n,
        k,
        1.0,
        View::new(x, 0, m * k),
        View::new(y, 0, k * n),
        0.0,
        View::new(z, 0, m * n),
    )));
    for _ in 0..reps {
        e.launch(&g).unwrap();
        e.sync().unwrap();
    }
}
