//! Tile: repeats the bottom `tile_param.tiles` times along `tile_param.axis` (default 1), whole
//! blocks of the trailing axes at a time; backward sums the copies.
use anyhow::{Result, bail};

use super::common::{canonical_axis, check_count, count};
use super::{Ctx, Layer, Shapes};
use crate::engine::Kernel;
use crate::engine::kernels::transfer::{ReduceOp, TransferKernel};
use crate::proto::LayerParameter;

pub struct Tile {
    axis: i32,
    tiles: usize,
    outer: usize,
    inner: usize,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, 1)?;
    let p = param.tile_param.unwrap_or_default();
    let Some(tiles) = p.tiles else {
        bail!("tile_param.tiles (the number of tiles) must be specified")
    };
    if tiles <= 0 {
        bail!("tile_param.tiles must be positive, got {tiles}");
    }
    Ok(Box::new(Tile {
        axis: p.axis(),
        tiles: tiles as usize,
        outer: 0,
        inner: 0,
    }))
}

impl Layer for Tile {
    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 1, 1)?;
        let b = &bottoms[0];
        let a = canonical_axis(self.axis, b.len())?;
        self.outer = count(b, 0, a);
        self.inner = count(b, a, b.len());
        let mut top = b.clone();
        top[a] *= self.tiles;
        Ok(Shapes {
            tops: vec![top],
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        if self.outer * self.inner == 0 {
            return Ok(());
        }
        cx.eng.launch(&Kernel::Transfer(TransferKernel::Strided {
            src: cx.bottoms[0].data(),
            dst: cx.tops[0].data(),
            dims: vec![self.outer, self.tiles, self.inner],
            src_strides: vec![self.inner, 0, 1],
            dst_strides: vec![self.tiles * self.inner, self.inner, 1],
            add: false,
        }))
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        if !propagate_down.first().copied().unwrap_or(false) {
            return Ok(());
        }
        cx.eng.launch(&Kernel::Transfer(TransferKernel::Reduce {
            x: cx.tops[0].diff(),
            y: cx.bottoms[0].diff(),
            outer: self.outer,
            dim: self.tiles,
            inner: self.inner,
            op: ReduceOp::Sum,
            coeff: 1.0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, check_gradient, run_layer};
    use crate::proto::{Phase, TileParameter};
    use crate::rng::Rng;

    fn case(shape: &[usize], axis: Option<i32>, tiles: Option<i32>, seed: u64) -> LayerCase {
        let mut rng = Rng::new(seed);
        LayerCase {
            param: LayerParameter {
                r#type: Some("Tile".into()),
                top: vec!["t".into()],
                tile_param: Some(TileParameter { axis, tiles }),
                ..Default::default()
            },
            phase: Phase::Test,
            bottoms: vec![(
                shape.to_vec(),
                (0..shape.iter().product::<usize>())
                    .map(|_| rng.uniform_range(-1.0, 1.0))
                    .collect(),
            )],
            params: None,
        }
    }

    #[test]
    fn forward_hand_checked() {
        let mut c = case(&[2, 2], Some(1), Some(2), 1);
        c.bottoms[0].1 = vec![1.0, 2.0, 3.0, 4.0];
        let diff = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]];
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&diff), None).unwrap();
        assert_eq!(
            run.tops[0],
            (vec![2, 4], vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0])
        );
        assert_eq!(run.bottom_diffs[0], vec![4.0, 6.0, 12.0, 14.0]);
        assert!(
            run_layer(
                &mut CpuEngine::new(),
                &case(&[2], None, None, 1),
                None,
                None
            )
            .is_err()
        );
        assert!(
            run_layer(
                &mut CpuEngine::new(),
                &case(&[2, 2], None, Some(0), 1),
                None,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn gradients() {
        let mut eng = CpuEngine::new();
        check_gradient(
            &mut eng,
            &case(&[2, 3, 2], Some(0), Some(3), 2),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
        check_gradient(
            &mut eng,
            &case(&[2, 3, 2], Some(-1), Some(2), 3),
            &[0],
            1e-2,
            1e-2,
        )
        .unwrap();
    }
}
