use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::engine::{Engine, Kernel, View, whole};
use caffe_rs::engine::kernels::elementwise::*;
use caffe_rs::engine::kernels::norm::*;
#[test]
fn perf() {
    let mut e = CpuEngine::new();
    let n = 32 * 64 * 56 * 56;
    let a = e.alloc(n); let b = e.alloc(n); let c = e.alloc(n);
    let (x, y, d) = (whole(&e, a), whole(&e, b), whole(&e, c));
    let m = e.alloc(64); let v = e.alloc(64); let s = e.alloc(64);
    let (m, v, s) = (whole(&e, m), whole(&e, v), whole(&e, s));
    let dims = ChannelDims::new(32, 64, 56 * 56);
    let t = |name: &str, e: &mut CpuEngine, k: Kernel| { let t0 = std::time::Instant::now(); for _ in 0..3 { e.launch(&k).unwrap(); } eprintln!("{name}: {:.1} ms", t0.elapsed().as_secs_f64() * 1000.0 / 3.0); };
    t("relu", &mut e, Kernel::Elementwise(ElementwiseKernel::Unary { op: UnaryOp::Relu { negative_slope: 0.0 }, x, y }));
    t("relu_bwd", &mut e, Kernel::Elementwise(ElementwiseKernel::UnaryBackward { op: UnaryOp::Relu { negative_slope: 0.0 }, x, y, dy: y, dx: d }));
    t("sigmoid", &mut e, Kernel::Elementwise(ElementwiseKernel::Unary { op: UnaryOp::Sigmoid, x, y }));
    t("affine", &mut e, Kernel::Elementwise(ElementwiseKernel::ChannelAffine { dims, x, scale: Some(m), bias: Some(v), y }));
    t("chsum", &mut e, Kernel::Elementwise(ElementwiseKernel::ChannelSum { dims, a: x, weight: SumWeight::By(y), beta: 1.0, y: m }));
    t("moments", &mut e, Kernel::Norm(NormKernel::Moments { dims, x, mean: m, var: Some(v) }));
    e.fill(v, 1.0);
    t("normalize", &mut e, Kernel::Norm(NormKernel::Normalize { dims, eps: 1e-5, eps_mode: EpsMode::SqrtVarPlusEps, x, mean: m, var: Some(v), std: Some(s), y }));
    t("norm_bwd", &mut e, Kernel::Norm(NormKernel::NormalizeBackward { dims, grad: NormGrad::Full, y, dy: x, std: Some(s), dx: d }));
    t("eltwise_sum", &mut e, Kernel::Elementwise(ElementwiseKernel::Nary { op: NaryOp::Sum { coeffs: vec![1.0, 1.0] }, xs: vec![x, y], y: d, argmax: None }));
    t("dropout", &mut e, Kernel::Elementwise(ElementwiseKernel::Dropout { seed: 3, ratio: 0.5, scale: 2.0, x, y }));
    let lrn = Lrn { region: LrnRegion::AcrossChannels, num: 32, channels: 64, height: 56, width: 56, size: 5, alpha: 1e-4, beta: 0.75, k: 1.0 };
    t("lrn", &mut e, Kernel::Norm(NormKernel::Lrn { lrn, x, scale: y, y: d }));
    let _ = View::new(a, 0, 1);
}
