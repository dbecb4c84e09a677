//! The graph: NetState filtering, blob resolution, shared params and shapes. No GPU in here.
pub mod filler;
