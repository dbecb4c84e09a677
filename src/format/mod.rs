//! Bytes <-> messages. Nothing in here knows about engines or the graph.
pub mod caffemodel;
pub mod text;
pub mod transcode;
pub mod upgrade;
