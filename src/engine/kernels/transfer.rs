//! transfer kernels.

#[derive(Clone, Debug)]
pub enum TransferKernel {}
