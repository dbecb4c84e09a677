//! Kernel descriptions shared by both engines, one family per file.
pub mod blas;
pub mod conv;
pub mod elementwise;
pub mod norm;
pub mod pool;
pub mod softmax;
pub mod solver;
pub mod transfer;

#[derive(Clone, Debug)]
pub enum Kernel {
    Blas(blas::BlasKernel),
    Conv(conv::ConvKernel),
    Elementwise(elementwise::ElementwiseKernel),
    Norm(norm::NormKernel),
    Pool(pool::PoolKernel),
    Softmax(softmax::SoftmaxKernel),
    Solver(solver::SolverKernel),
    Transfer(transfer::TransferKernel),
}
