//! caffe-rs: Caffe's formats, graph, layers and solvers in Rust.
pub mod format;
pub mod proto;
pub mod engine;
pub mod rng;
pub mod layers;
pub mod net;
pub mod tools;
pub mod solver;
pub mod data;
