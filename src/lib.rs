//! caffe-rs: Caffe's formats, graph, layers and solvers in Rust.
pub mod data;
pub mod engine;
pub mod format;
pub mod layers;
pub mod net;
pub mod proto;
pub mod rng;
pub mod solver;
pub mod tools;
