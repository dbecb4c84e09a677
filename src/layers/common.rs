//! Helpers shared by layer files: axis handling, counts, scratch tensors and error wording.
use anyhow::{Result, bail};

use super::Layer;
use crate::engine::{Engine, TensorId, View};
use crate::proto::LayerParameter;

/// The error for a layer type Caffe has but caffe-rs does not run yet.
pub fn not_supported(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    bail!("layer type \"{}\" is not supported yet", param.r#type())
}

/// Caffe's Blob::CanonicalAxisIndex: negative axes count from the end.
pub fn canonical_axis(axis: i32, num_axes: usize) -> Result<usize> {
    let n = num_axes as i64;
    let a = axis as i64;
    if a < -n || a >= n {
        bail!("axis {axis} out of range for a {num_axes}-axis blob");
    }
    Ok(if a < 0 { (a + n) as usize } else { a as usize })
}

/// Product of `shape[start..end]` (1 for an empty range).
pub fn count(shape: &[usize], start: usize, end: usize) -> usize {
    shape[start.min(shape.len())..end.min(shape.len())]
        .iter()
        .product()
}

pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{} ({})", dims.join(" "), shape.iter().product::<usize>())
}

/// Checks the number of bottoms/tops a layer accepts.
pub fn check_count(what: &str, got: usize, min: usize, max: usize) -> Result<()> {
    if got < min || got > max {
        let expected = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        bail!("expects {expected} {what} blob(s), got {got}");
    }
    Ok(())
}

/// A tensor the layer keeps between calls (im2col buffer, pooling mask, ...), re-allocated only
/// when it must grow.
#[derive(Debug, Default)]
pub struct Scratch {
    tensor: Option<(TensorId, usize)>,
}

impl Scratch {
    /// A view of at least `len` elements (contents are unspecified after a re-allocation).
    pub fn get(&mut self, eng: &mut dyn Engine, len: usize) -> View {
        match self.tensor {
            Some((id, cap)) if cap >= len => View::new(id, 0, len),
            old => {
                if let Some((id, _)) = old {
                    eng.free(id);
                }
                let id = eng.alloc(len.max(1));
                self.tensor = Some((id, len.max(1)));
                View::new(id, 0, len)
            }
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
