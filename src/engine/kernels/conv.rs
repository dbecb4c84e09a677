//! conv kernels.

#[derive(Clone, Debug)]
pub enum ConvKernel {}
