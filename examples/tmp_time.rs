use std::time::Instant;
use caffe_rs::engine::gpu::GpuEngine;
use caffe_rs::engine::kernels::conv::{ConvKernel, Im2col};
use caffe_rs::engine::kernels::elementwise::{ElementwiseKernel, UnaryOp};
use caffe_rs::engine::{Engine, Kernel, View};
fn time(e: &mut GpuEngine, k: &Kernel) -> f64 {
    e.launch(k).unwrap(); e.sync().unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 { let t = Instant::now(); e.launch(k).unwrap(); e.sync().unwrap(); best = best.min(t.elapsed().as_secs_f64()); }
    best * 1e3
}
fn main() {
    let mut e = GpuEngine::new(0).unwrap();
    let (b, c, h) = (10usize, 3usize, 227usize);
    let im = e.alloc(b * c * h * h);
    let col_len = 363 * 55 * 55;
    let col = e.alloc(b * col_len);
    let k = Kernel::Conv(ConvKernel::Im2col(Im2col { im: View::new(im, 0, b*c*h*h), col: View::new(col, 0, b*col_len), batch: b, im_stride: c*h*h, col_stride: col_len, channels: c, im_shape: vec![h, h], col_shape: vec![55, 55], kernel: vec![11, 11], pad: vec![0, 0], stride: vec![4, 4], dilation: vec![1, 1] }));
    e.set_texture_reads(false);
    println!("im2col conv1 x10 ssbo: {:.1} ms", time(&mut e, &k));
    e.set_texture_reads(true);
    println!("im2col conv1 x10 tex: {:.1} ms", time(&mut e, &k));
    let n = 4 << 20;
    let x = e.alloc(n);
    let r = Kernel::Elementwise(ElementwiseKernel::Unary { op: UnaryOp::Relu { negative_slope: 0.0 }, x: View::new(x, 0, n), y: View::new(x, 0, n) });
    println!("relu 4M in place: {:.1} ms", time(&mut e, &r));
}
