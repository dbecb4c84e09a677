//! CPU mode: native Rust kernels (the `gemm` crate for products, rayon across cores).
mod blas;
mod conv;
mod direct;
mod elementwise;
mod implicit;
mod norm;
mod pool;
mod skinny;
mod softmax;
mod solver;
mod tiles;
mod transfer;
mod winograd;

use crate::engine::{Engine, Kernel, TensorId, View};
use elementwise::Io;

/// Runs `f` inlined into a copy of this function compiled for AVX-512 when the CPU has it, so
/// the plain loops in `f` use 16 lanes (the crate is built for baseline x86-64, whose vectors
/// have 4). The values do not change: Rust lets the compiler neither fuse a multiply and an add
/// nor reorder float operations, whatever the vector width.
#[inline(always)]
pub(super) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // Safety: the CPU has the feature the copy is compiled for.
            return unsafe { avx512(f) };
        }
    }
    f()
}

/// Whether the CPU has AVX-512F, which the hand-written kernels (direct and implicit
/// convolutions, register tiles) need.
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Host memory of the CPU engine: one Vec per tensor.
#[derive(Default)]
pub struct Memory {
    bufs: Vec<Vec<f32>>,
    free_ids: Vec<u32>,
    /// Buffers kept for reuse by `with_overwrite` (so in-place layers neither copy nor fault in
    /// fresh pages on every pass).
    spare: Vec<Vec<f32>>,
}

/// Buffers `Memory::spare` keeps at most.
const MAX_SPARE: usize = 2;

impl Memory {
    pub fn read(&self, v: View) -> &[f32] {
        &self.bufs[v.id.0 as usize][v.offset..v.offset + v.len]
    }

    pub fn write(&mut self, v: View) -> &mut [f32] {
        &mut self.bufs[v.id.0 as usize][v.offset..v.offset + v.len]
    }

    /// Like [`Memory::with`], for kernels that overwrite every element of their outputs without
    /// reading them. An output view covering its whole tensor that is also read as an input
    /// (in-place layers) is written to a spare buffer that then replaces the tensor's, while the
    /// inputs read the old one: no copy.
    pub fn with_overwrite<R>(
        &mut self,
        outs: &[View],
        ins: &[View],
        f: impl FnOnce(&mut [&mut [f32]], &[&[f32]]) -> R,
    ) -> R {
        let read = |o: &View| ins.iter().any(|i| i.id == o.id);
        let whole = |m: &Self, o: &View| o.offset == 0 && o.len == m.bufs[o.id.0 as usize].len();
        if !outs.iter().any(|o| read(o) && whole(self, o))
            || outs.iter().any(|o| read(o) && !whole(self, o))
        {
            return self.with(outs, ins, f);
        }
        // Buffers f writes, and the replaced buffers the inputs read.
        let mut taken: Vec<(u32, Vec<f32>)> = Vec::with_capacity(outs.len());
        let mut old: Vec<(u32, Vec<f32>)> = Vec::new();
        for o in outs {
            assert!(
                taken.iter().all(|(id, _)| *id != o.id.0),
                "kernel outputs must be in distinct tensors"
            );
            let cur = std::mem::take(&mut self.bufs[o.id.0 as usize]);
            if read(o) {
                let new = match self.spare.iter().position(|b| b.len() == cur.len()) {
                    Some(p) => self.spare.swap_remove(p),
                    None => vec![0.0; cur.len()],
                };
                taken.push((o.id.0, new));
                old.push((o.id.0, cur));
            } else {
                taken.push((o.id.0, cur));
            }
        }
        let result = {
            let in_slices: Vec<&[f32]> = ins
                .iter()
                .map(|i| {
                    let buf = match old.iter().find(|(id, _)| *id == i.id.0) {
                        Some((_, b)) => b,
                        None => &self.bufs[i.id.0 as usize],
                    };
                    &buf[i.offset..i.offset + i.len]
                })
                .collect();
            let mut out_slices: Vec<&mut [f32]> = taken
                .iter_mut()
                .zip(outs)
                .map(|((_, buf), o)| &mut buf[o.offset..o.offset + o.len])
                .collect();
            f(&mut out_slices, &in_slices)
        };
        for (id, buf) in taken {
            self.bufs[id as usize] = buf;
        }
        for (_, buf) in old {
            if self.spare.len() >= MAX_SPARE {
                self.spare.remove(0);
            }
            self.spare.push(buf);
        }
        result
    }

    /// Runs a point-wise kernel whose first output is computed element by element from its first
    /// input (`f` gets them as an [`Io`], then the other outputs and inputs). When the two are the
    /// same view (an in-place layer), `f` works in that memory: no copy, no second buffer.
    fn with_pointwise<R>(
        &mut self,
        outs: &[View],
        ins: &[View],
        f: impl FnOnce(Io, &mut [&mut [f32]], &[&[f32]]) -> R,
    ) -> R {
        let (out, last) = (outs[0], ins[0]);
        let others_apart = outs[1..].iter().chain(&ins[1..]).all(|v| v.id != out.id);
        if out == last && others_apart {
            self.with(outs, &ins[1..], |o, i| {
                let (first, rest) = o.split_at_mut(1);
                f(Io::InPlace(first[0]), rest, i)
            })
        } else {
            self.with_overwrite(outs, ins, |o, i| {
                let (first, rest) = o.split_at_mut(1);
                f(
                    Io::Apart {
                        out: first[0],
                        last: i[0],
                    },
                    rest,
                    &i[1..],
                )
            })
        }
    }

    /// Runs `f` with mutable slices for `outs` and shared slices for `ins`.
    /// Outputs must lie in distinct tensors; an input in the same tensor as an output is read from a
    /// copy taken before `f` runs, so in-place layers (top == bottom) see their original input.
    pub fn with<R>(
        &mut self,
        outs: &[View],
        ins: &[View],
        f: impl FnOnce(&mut [&mut [f32]], &[&[f32]]) -> R,
    ) -> R {
        let mut taken: Vec<(u32, Vec<f32>)> = Vec::with_capacity(outs.len());
        for o in outs {
            assert!(
                taken.iter().all(|(id, _)| *id != o.id.0),
                "kernel outputs must be in distinct tensors"
            );
            taken.push((o.id.0, std::mem::take(&mut self.bufs[o.id.0 as usize])));
        }
        let copies: Vec<Option<Vec<f32>>> = ins
            .iter()
            .map(|i| {
                taken
                    .iter()
                    .find(|(id, _)| *id == i.id.0)
                    .map(|(_, buf)| buf[i.offset..i.offset + i.len].to_vec())
            })
            .collect();
        let result = {
            let in_slices: Vec<&[f32]> = ins
                .iter()
                .zip(&copies)
                .map(|(i, c)| match c {
                    Some(c) => c.as_slice(),
                    None => &self.bufs[i.id.0 as usize][i.offset..i.offset + i.len],
                })
                .collect();
            let mut out_slices: Vec<&mut [f32]> = taken
                .iter_mut()
                .zip(outs)
                .map(|((_, buf), o)| &mut buf[o.offset..o.offset + o.len])
                .collect();
            f(&mut out_slices, &in_slices)
        };
        for (id, buf) in taken {
            self.bufs[id as usize] = buf;
        }
        result
    }
}

pub struct CpuEngine {
    mem: Memory,
    /// Whether convolutions may run by Winograd or directly (see [`conv::run_direct`]), not only
    /// by im2col + GEMM as Caffe. Off with CAFFE_RS_IM2COL_ONLY=1.
    fast_conv: bool,
}

impl Default for CpuEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuEngine {
    /// Every convolution through im2col + GEMM, as Caffe (what CAFFE_RS_IM2COL_ONLY=1 gives).
    pub fn im2col_only() -> Self {
        CpuEngine {
            fast_conv: false,
            ..CpuEngine::new()
        }
    }

    pub fn new() -> Self {
        CpuEngine {
            mem: Memory::default(),
            fast_conv: std::env::var_os("CAFFE_RS_IM2COL_ONLY").is_none_or(|v| v == "0"),
        }
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> String {
        format!("CPU ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&mut self, len: usize) -> TensorId {
        let buf = vec![0.0; len];
        if let Some(id) = self.mem.free_ids.pop() {
            self.mem.bufs[id as usize] = buf;
            TensorId(id)
        } else {
            self.mem.bufs.push(buf);
            TensorId((self.mem.bufs.len() - 1) as u32)
        }
    }

    fn free(&mut self, id: TensorId) {
        self.mem.bufs[id.0 as usize] = Vec::new();
        self.mem.free_ids.push(id.0);
    }

    fn len(&self, id: TensorId) -> usize {
        self.mem.bufs[id.0 as usize].len()
    }

    fn upload(&mut self, dst: View, data: &[f32]) {
        self.mem.write(dst)[..data.len()].copy_from_slice(data);
    }

    fn download(&mut self, src: View) -> Vec<f32> {
        self.mem.read(src).to_vec()
    }

    fn fill(&mut self, dst: View, value: f32) {
        self.mem.write(dst).fill(value);
    }

    fn copy(&mut self, src: View, dst: View) {
        assert_eq!(src.len, dst.len, "copy between views of different lengths");
        self.mem
            .with(&[dst], &[src], |o, i| o[0].copy_from_slice(i[0]));
    }

    fn move_values(&mut self, src: View, dst: View) {
        let bufs = &mut self.mem.bufs;
        let whole =
            |v: View, bufs: &[Vec<f32>]| v.offset == 0 && v.len == bufs[v.id.0 as usize].len();
        if src.id != dst.id && src.len == dst.len && whole(src, bufs) && whole(dst, bufs) {
            bufs.swap(src.id.0 as usize, dst.id.0 as usize);
        } else {
            self.copy(src, dst)
        }
    }

    fn launch(&mut self, kernel: &Kernel) -> anyhow::Result<()> {
        if let Kernel::Conv(k) = kernel
            && k.is_composite()
        {
            // Winograd where it applies (3x3), then the implicit GEMM (small images), then the
            // direct path (few channels): each is faster than the next where both apply.
            if self.fast_conv && conv::run_winograd(k, &mut self.mem)? {
                return Ok(());
            }
            if self.fast_conv && conv::run_implicit(k, &mut self.mem)? {
                return Ok(());
            }
            if self.fast_conv && conv::run_direct(k, &mut self.mem)? {
                return Ok(());
            }
            if conv::run_per_image(k, &mut self.mem)? {
                return Ok(());
            }
            // One image or a 1x1 convolution: im2col / col2im and products on all cores (and
            // the epilogue as a pass of its own).
            return crate::engine::kernels::conv::run_composed(self, k);
        }
        let mem = &mut self.mem;
        match kernel {
            Kernel::Blas(k) => blas::run(k, mem),
            Kernel::Conv(k) => conv::run(k, mem),
            Kernel::Elementwise(k) => elementwise::run(k, mem),
            Kernel::Norm(k) => norm::run(k, mem),
            Kernel::Pool(k) => pool::run(k, mem),
            Kernel::Softmax(k) => softmax::run(k, mem),
            Kernel::Solver(k) => solver::run(k, mem),
            Kernel::Transfer(k) => transfer::run(k, mem),
        }
    }
}
