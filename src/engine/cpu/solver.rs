use super::Memory;
use crate::engine::kernels::solver::SolverKernel;

pub fn run(kernel: &SolverKernel, _mem: &mut Memory) -> anyhow::Result<()> {
    match *kernel {}
}
