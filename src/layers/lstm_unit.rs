//! LSTMUnit: not implemented yet.
use anyhow::Result;

use super::Layer;
use crate::proto::LayerParameter;

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    super::common::not_supported(param)
}
