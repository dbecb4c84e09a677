//! softmax kernels.

#[derive(Clone, Debug)]
pub enum SoftmaxKernel {}
