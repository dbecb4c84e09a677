//! norm kernels.

#[derive(Clone, Debug)]
pub enum NormKernel {}
