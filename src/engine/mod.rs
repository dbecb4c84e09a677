//! The interface both engines implement. Layers are written once against it: they allocate tensors,
//! move data in and out, and launch kernels; they never see wgpu or CPU loops.
//!
//! A kernel is a value of [`Kernel`]: one family enum per file in `kernels/`, so adding a layer means
//! adding variants to one family (and their implementations in each engine), nothing else.
pub mod cpu;
pub mod gpu;
pub mod kernels;

pub use kernels::Kernel;

/// Handle of a tensor (a flat f32 buffer) owned by an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

/// A contiguous window of a tensor, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub id: TensorId,
    pub offset: usize,
    pub len: usize,
}

impl View {
    pub fn new(id: TensorId, offset: usize, len: usize) -> Self {
        View { id, offset, len }
    }
    /// The sub-window `[start, start + len)` of this view.
    pub fn slice(&self, start: usize, len: usize) -> View {
        debug_assert!(start + len <= self.len, "view slice out of range");
        View {
            id: self.id,
            offset: self.offset + start,
            len,
        }
    }
}

pub trait Engine: Send {
    /// Human-readable device name ("CPU (2 threads)", "llvmpipe (LLVM 15.0.6, 256 bits)").
    fn name(&self) -> String;
    /// A new zero-filled tensor of `len` elements.
    fn alloc(&mut self, len: usize) -> TensorId;
    fn free(&mut self, id: TensorId);
    fn len(&self, id: TensorId) -> usize;
    /// Copy host values into the start of a view (`data.len() <= view.len`).
    fn upload(&mut self, dst: View, data: &[f32]);
    /// Read a view back to the host. Ends the current batch of recorded work.
    fn download(&mut self, src: View) -> Vec<f32>;
    fn fill(&mut self, dst: View, value: f32);
    /// `dst = src` (same length; may be in the same tensor when the ranges do not overlap).
    fn copy(&mut self, src: View, dst: View);
    /// `dst = src`, after which `src` holds unspecified values (it is about to be overwritten).
    /// An engine may exchange the two tensors' storage instead of copying when both views cover
    /// their whole tensors.
    fn move_values(&mut self, src: View, dst: View) {
        self.copy(src, dst)
    }
    fn launch(&mut self, kernel: &Kernel) -> anyhow::Result<()>;
    /// Submit recorded work and wait for it (a no-op for the CPU engine).
    fn sync(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Whether [`Engine::timestamp`] records device timestamps (a GPU engine whose adapter has
    /// timestamp queries). Without them, callers time sections on the host clock after
    /// [`Engine::sync`], which is exact for engines that run kernels as they are launched (CPU).
    fn has_timestamps(&self) -> bool {
        false
    }

    /// Records a device timestamp that is taken once every command recorded so far has run.
    /// Recording goes on in the same batch (nothing is submitted). A no-op without timestamps.
    fn timestamp(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Submits recorded work, waits for it, and returns the milliseconds between consecutive
    /// timestamps recorded since the previous call (`n - 1` values for `n` timestamps). Empty
    /// without timestamps.
    fn read_timestamps(&mut self) -> anyhow::Result<Vec<f64>> {
        self.sync()?;
        Ok(Vec::new())
    }
}

/// Whole-tensor view.
pub fn whole(eng: &dyn Engine, id: TensorId) -> View {
    View {
        id,
        offset: 0,
        len: eng.len(id),
    }
}
