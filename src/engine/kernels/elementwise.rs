//! elementwise kernels.

#[derive(Clone, Debug)]
pub enum ElementwiseKernel {}
