//! The graph: NetState filtering, blob resolution, shared params and shapes (no engine in
//! `state`/`builder`), and the runnable `Net` that adds tensors from an engine.
pub mod builder;
pub mod filler;
pub mod runtime;
pub mod state;
pub mod weights;

pub use builder::{NetGraph, Strictness};
pub use runtime::Net;
