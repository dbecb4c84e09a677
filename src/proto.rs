//! The generated Caffe message types plus small conveniences shared by every module.
use std::sync::OnceLock;

pub mod caffe {
    include!(concat!(env!("OUT_DIR"), "/caffe.rs"));
}

pub use caffe::*;

const DESCRIPTOR_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/caffe_descriptor.bin"));

/// The descriptors of proto/caffe.proto, decoded once.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: OnceLock<prost_reflect::DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(DESCRIPTOR_BYTES)
            .expect("the descriptor set compiled by build.rs is valid")
    })
}

/// The descriptor of a message of the `caffe` package by its full name, e.g. "caffe.NetParameter".
pub fn message_descriptor(full_name: &str) -> prost_reflect::MessageDescriptor {
    descriptor_pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is not a message of proto/caffe.proto"))
}

impl BlobProto {
    /// The blob's shape: `shape.dim` when present, else the legacy (num, channels, height, width)
    /// when any of them is set, else 0 axes (Caffe writes a 0-axis blob with no shape at all).
    pub fn dims(&self) -> Vec<usize> {
        if let Some(shape) = &self.shape {
            return shape.dim.iter().map(|&d| d.max(0) as usize).collect();
        }
        if self.num.is_some()
            || self.channels.is_some()
            || self.height.is_some()
            || self.width.is_some()
        {
            return vec![
                self.num() as usize,
                self.channels() as usize,
                self.height() as usize,
                self.width() as usize,
            ];
        }
        vec![]
    }

    /// The blob's values as f32 (from `data`, or `double_data` when that is what the file holds).
    pub fn values_f32(&self) -> Vec<f32> {
        if self.data.is_empty() && !self.double_data.is_empty() {
            self.double_data.iter().map(|&v| v as f32).collect()
        } else {
            self.data.clone()
        }
    }

    pub fn from_shape_data(shape: &[usize], data: Vec<f32>) -> Self {
        BlobProto {
            shape: Some(BlobShape {
                dim: shape.iter().map(|&d| d as i64).collect(),
            }),
            data,
            ..Default::default()
        }
    }
}

/// Shape of a `BlobShape` as usize dims.
pub fn shape_dims(shape: &BlobShape) -> Vec<usize> {
    shape.dim.iter().map(|&d| d.max(0) as usize).collect()
}
