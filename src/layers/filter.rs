//! Filter: the last bottom is a selector (one value per item, other axes 1); every other bottom
//! `i` is forwarded to top `i` keeping only the items whose selector is non-zero, in order. The
//! gradient of a kept item is its top diff, the others get 0; none flows to the selector.
//!
//! The kept count is data-dependent: `reshape` (a pure shape rule) gives each top the full first
//! dimension (as Caffe does on its first reshape), and `forward` reads the selector back to the
//! host, writes the kept items to the start of each top and records the real shapes, available
//! from [`Filter::forwarded_shapes`] once forward has run; the net should re-shape the tops (their
//! first dimension) to those before anything reads them.
use anyhow::{Result, bail};

use super::common::{Scratch, check_count, shape_str};
use super::{Ctx, Layer, Shapes};
use crate::engine::{Kernel, View};
use crate::engine::kernels::transfer::TransferKernel;
use crate::proto::LayerParameter;

pub struct Filter {
    num_tops: usize,
    bottoms: Vec<Vec<usize>>,
    /// Items kept by the last forward (their indices are in `index` as floats).
    kept: Option<usize>,
    index: Scratch,
}

pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    check_count("top", param.top.len(), 1, usize::MAX)?;
    Ok(Box::new(Filter {
        num_tops: param.top.len(),
        bottoms: vec![],
        kept: None,
        index: Scratch::default(),
    }))
}

impl Filter {
    /// The real top shapes after the last forward (first dimension = the number of items kept),
    /// or the shapes `reshape` gave before any forward.
    pub fn forwarded_shapes(&self) -> Vec<Vec<usize>> {
        self.bottoms[..self.num_tops]
            .iter()
            .map(|b| {
                let mut s = b.clone();
                if let Some(k) = self.kept {
                    s[0] = k;
                }
                s
            })
            .collect()
    }
}

impl Layer for Filter {
    fn forwarded_top_shapes(&self) -> Option<Vec<Vec<usize>>> {
        Some(self.forwarded_shapes())
    }

    fn reshape(&mut self, bottoms: &[Vec<usize>]) -> Result<Shapes> {
        check_count("bottom", bottoms.len(), 2, usize::MAX)?;
        if bottoms.len() != self.num_tops + 1 {
            bail!(
                "expects one more bottom (the selector, last) than tops: {} bottoms for {} tops",
                bottoms.len(),
                self.num_tops
            );
        }
        let sel = &bottoms[bottoms.len() - 1];
        if sel.is_empty() || sel[1..].iter().any(|&d| d != 1) {
            bail!(
                "the selector blob's dimensions must be singletons (1) except the first, got {}",
                shape_str(sel)
            );
        }
        for b in &bottoms[..self.num_tops] {
            if b.first() != Some(&sel[0]) {
                bail!(
                    "each bottom should have the same first dimension as the selector ({}), got {}",
                    sel[0],
                    shape_str(b)
                );
            }
        }
        self.bottoms = bottoms.to_vec();
        self.kept = None;
        Ok(Shapes {
            tops: self.bottoms[..self.num_tops].to_vec(),
            params: vec![],
        })
    }

    fn forward(&mut self, cx: &mut Ctx) -> Result<()> {
        // The one read-back of the pass: the selector decides the top shapes.
        let sel = cx.eng.download(cx.bottoms[self.num_tops].data());
        let index: Vec<f32> = sel
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, _)| i as f32)
            .collect();
        let n = sel.len();
        let view = self.index.get(cx.eng, n.max(1));
        cx.eng.upload(view, &index);
        for (b, t) in cx.bottoms.iter().zip(cx.tops) {
            let row_len = b.count().checked_div(n).unwrap_or(0);
            // The top still has the previous forward's shape, which may keep fewer items; its
            // tensor holds all n (reshape gave it the full first dimension).
            let dst = View::new(t.data, 0, index.len() * row_len);
            cx.eng
                .launch(&Kernel::Transfer(TransferKernel::GatherRows {
                    src: b.data(),
                    index: view,
                    dst,
                    rows: index.len(),
                    row_len,
                    src_rows: n,
                }))?;
        }
        self.kept = Some(index.len());
        Ok(())
    }

    fn backward(&mut self, cx: &mut Ctx, propagate_down: &[bool]) -> Result<()> {
        let kept = self.kept.unwrap_or(0);
        let n = self.bottoms.last().map_or(0, |s| s[0]);
        let view = self.index.get(cx.eng, n.max(1));
        for (i, (b, t)) in cx.bottoms.iter().zip(cx.tops).enumerate() {
            if !propagate_down.get(i).copied().unwrap_or(false) {
                continue;
            }
            let row_len = b.count().checked_div(n).unwrap_or(0);
            cx.eng
                .launch(&Kernel::Transfer(TransferKernel::ScatterAddRows {
                    src: t.diff(),
                    index: view,
                    dst: b.diff(),
                    rows: kept,
                    row_len,
                    dst_rows: n,
                }))?;
        }
        Ok(())
    }

    fn can_propagate_down(&self, bottom: usize) -> bool {
        bottom < self.num_tops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::engine::cpu::CpuEngine;
    use crate::layers::testing::{LayerCase, run_layer};
    use crate::proto::Phase;

    fn case(sel: Vec<f32>) -> LayerCase {
        let n = sel.len();
        LayerCase {
            param: LayerParameter {
                r#type: Some("Filter".into()),
                top: vec!["a_f".into(), "b_f".into()],
                ..Default::default()
            },
            phase: Phase::Train,
            bottoms: vec![
                (vec![n, 2], (0..2 * n).map(|v| v as f32).collect()),
                (vec![n], (0..n).map(|v| 10.0 * v as f32).collect()),
                (vec![n, 1], sel),
            ],
            params: None,
        }
    }

    #[test]
    fn keeps_selected_items() {
        let c = case(vec![0.0, 1.0, 0.0, 0.5]);
        let diffs = vec![
            vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
            vec![5.0, 6.0, 0.0, 0.0],
        ];
        let run = run_layer(&mut CpuEngine::new(), &c, Some(&diffs), None).unwrap();
        assert_eq!(run.tops[0].1[..4], [2.0, 3.0, 6.0, 7.0]);
        assert_eq!(run.tops[1].1[..2], [10.0, 30.0]);
        assert_eq!(
            run.bottom_diffs[0],
            vec![0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0]
        );
        assert_eq!(run.bottom_diffs[1], vec![0.0, 5.0, 0.0, 6.0]);
        assert!(run.bottom_diffs[2].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn forwarded_shapes() {
        let c = case(vec![1.0, 0.0, 1.0]);
        let mut layer = Filter {
            num_tops: 2,
            bottoms: vec![],
            kept: None,
            index: Scratch::default(),
        };
        let shapes = layer
            .reshape(&c.bottoms.iter().map(|b| b.0.clone()).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(shapes.tops, vec![vec![3, 2], vec![3]]);
        assert_eq!(layer.forwarded_shapes(), shapes.tops);
        let mut eng = CpuEngine::new();
        let blobs: Vec<crate::layers::Blob> = c
            .bottoms
            .iter()
            .chain([(vec![3, 2], vec![]), (vec![3], vec![])].iter())
            .map(|(s, v)| {
                let n = s.iter().product();
                let b = crate::layers::Blob {
                    shape: s.clone(),
                    data: eng.alloc(n),
                    diff: eng.alloc(n),
                };
                eng.upload(b.data(), v);
                b
            })
            .collect();
        let mut rng = crate::rng::Rng::new(1);
        let mut cx = Ctx {
            eng: &mut eng,
            bottoms: &blobs[..3],
            tops: &blobs[3..],
            params: &[],
            phase: Phase::Test,
            rng: &mut rng,
            param_grads: &[],
        };
        layer.forward(&mut cx).unwrap();
        assert_eq!(layer.forwarded_shapes(), vec![vec![2, 2], vec![2]]);
        // nothing selected
        cx.eng.upload(blobs[2].data(), &[0.0, 0.0, 0.0]);
        layer.forward(&mut cx).unwrap();
        assert_eq!(layer.forwarded_shapes(), vec![vec![0, 2], vec![0]]);
        layer.backward(&mut cx, &[true, true, false]).unwrap();
        assert!(cx.eng.download(blobs[0].diff()).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn shape_errors() {
        let mut c = case(vec![1.0, 0.0]);
        c.bottoms[2].0 = vec![1, 2];
        assert!(run_layer(&mut CpuEngine::new(), &c, None, None).is_err());
        let mut c = case(vec![1.0, 0.0]);
        c.bottoms[1] = (vec![3], vec![0.0; 3]);
        assert!(run_layer(&mut CpuEngine::new(), &c, None, None).is_err());
    }
}
