//! Input: the net's entry points. `input_param.shape` gives one shape for every top or one per top;
//! the values are put into the tops from outside, so forward does nothing.
use anyhow::{Result, bail};

use super::common::check_count;
use super::{Ctx, Layer, Shapes};
use crate::proto::{LayerParameter, shape_dims};

pub struct Input {
    shapes: Vec<Vec<usize>>,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    let num_top = param.top.len();
    check_count("top", num_top, 1, usize::MAX)?;
    let given: Vec<Vec<usize>> = param
        .input_param
        .as_ref()
        .map(|p| p.shape.iter().map(shape_dims).collect())
        .unwrap_or_default();
    let shapes = match given.len() {
        0 => bail!("input_param.shape must be given, once or once per top ({num_top} tops)"),
        1 => vec![given[0].clone(); num_top],
        n if n == num_top => given,
        n => bail!(
            "input_param.shape must be given once or once per top: {num_top} tops vs {n} shapes"
        ),
    };
    Ok(Box::new(Input { shapes }))
}

impl Layer for Input {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 0, 0)?;
        Ok(Shapes {
            tops: self.shapes.clone(),
            params: vec![],
        })
    }

    fn forward(&mut self, _cx: &mut Ctx) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{BlobShape, InputParameter};

    fn shapes(tops: usize, given: &[&[i64]]) -> Result<Vec<Vec<usize>>> {
        let p = LayerParameter {
            r#type: Some("Input".into()),
            top: (0..tops).map(|i| format!("t{i}")).collect(),
            input_param: Some(InputParameter {
                shape: given
                    .iter()
                    .map(|d| BlobShape { dim: d.to_vec() })
                    .collect(),
            }),
            ..Default::default()
        };
        Ok(create(&p)?.reshape(&[])?.tops)
    }

    #[test]
    fn one_or_one_per_top() {
        assert_eq!(shapes(2, &[&[1, 2]]).unwrap(), vec![vec![1, 2], vec![1, 2]]);
        assert_eq!(
            shapes(2, &[&[1, 2], &[3]]).unwrap(),
            vec![vec![1, 2], vec![3]]
        );
        assert!(shapes(3, &[&[1], &[2]]).is_err());
        assert!(shapes(1, &[]).is_err());
    }
}
