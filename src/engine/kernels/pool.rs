//! pool kernels.

#[derive(Clone, Debug)]
pub enum PoolKernel {}
