//! solver kernels.

#[derive(Clone, Debug)]
pub enum SolverKernel {}
