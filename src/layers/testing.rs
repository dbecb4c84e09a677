//! Running one layer in isolation: for unit tests, property tests and gradient checks.
use anyhow::{Result, ensure};

use super::{Blob, Ctx, Layer};
use crate::engine::Engine;
use crate::proto::{LayerParameter, Phase};
use crate::rng::Rng;

/// One layer with concrete inputs.
#[derive(Clone, Debug)]
pub struct LayerCase {
    pub param: LayerParameter,
    pub phase: Phase,
    /// (shape, values) of each bottom.
    pub bottoms: Vec<(Vec<usize>, Vec<f32>)>,
    /// Parameter values; `None` runs the layer's fillers (seed 1701).
    pub params: Option<Vec<Vec<f32>>>,
}

#[derive(Clone, Debug, Default)]
pub struct LayerRun {
    pub tops: Vec<(Vec<usize>, Vec<f32>)>,
    pub params: Vec<(Vec<usize>, Vec<f32>)>,
    /// Empty when backward did not run.
    pub bottom_diffs: Vec<Vec<f32>>,
    pub param_diffs: Vec<Vec<f32>>,
}

fn blob(eng: &mut dyn Engine, shape: &[usize], values: Option<&[f32]>) -> Blob {
    let count: usize = shape.iter().product();
    let data = eng.alloc(count);
    let diff = eng.alloc(count);
    let b = Blob {
        shape: shape.to_vec(),
        data,
        diff,
    };
    if let Some(v) = values {
        eng.upload(b.data(), v);
    }
    b
}

/// Runs reshape + forward, and backward when `top_diffs` is given (one per top; loss tops usually
/// get `[1.0]`, their loss weight). `propagate_down` defaults to every bottom the layer accepts.
pub fn run_layer(
    eng: &mut dyn Engine,
    case: &LayerCase,
    top_diffs: Option<&[Vec<f32>]>,
    propagate_down: Option<&[bool]>,
) -> Result<LayerRun> {
    let mut param = case.param.clone();
    param.phase = Some(case.phase as i32);
    let mut layer: Box<dyn Layer> = super::create(&param)?;
    let bottom_shapes: Vec<Vec<usize>> = case.bottoms.iter().map(|(s, _)| s.clone()).collect();
    let shapes = layer.reshape(&bottom_shapes)?;
    let bottoms: Vec<Blob> = case
        .bottoms
        .iter()
        .map(|(s, v)| blob(eng, s, Some(v)))
        .collect();
    let tops: Vec<Blob> = shapes.tops.iter().map(|s| blob(eng, s, None)).collect();
    let mut rng = Rng::new(1701);
    let mut params = Vec::new();
    for (i, def) in shapes.params.iter().enumerate() {
        let values = match &case.params {
            Some(p) => {
                ensure!(
                    i < p.len(),
                    "case gives {} params, layer has {}",
                    p.len(),
                    shapes.params.len()
                );
                p[i].clone()
            }
            None => crate::net::filler::fill(&def.filler, &def.shape, &mut rng)?,
        };
        params.push(blob(eng, &def.shape, Some(&values)));
    }
    let mut cx = Ctx {
        eng,
        bottoms: &bottoms,
        tops: &tops,
        params: &params,
        phase: case.phase,
        rng: &mut rng,
        param_grads: &[],
    };
    layer.forward(&mut cx)?;
    let mut run = LayerRun::default();
    if let Some(diffs) = top_diffs {
        for (t, d) in tops.iter().zip(diffs) {
            cx.eng.upload(t.diff(), d);
        }
        let pd: Vec<bool> = match propagate_down {
            Some(p) => p.to_vec(),
            None => (0..bottoms.len())
                .map(|i| layer.can_propagate_down(i))
                .collect(),
        };
        layer.backward(&mut cx, &pd)?;
        run.bottom_diffs = bottoms.iter().map(|b| cx.eng.download(b.diff())).collect();
        run.param_diffs = params.iter().map(|b| cx.eng.download(b.diff())).collect();
    }
    run.tops = tops
        .iter()
        .map(|t| (t.shape.clone(), cx.eng.download(t.data())))
        .collect();
    run.params = params
        .iter()
        .map(|p| (p.shape.clone(), cx.eng.download(p.data())))
        .collect();
    // Gradient checks run a layer thousands of times on one engine.
    for b in bottoms.iter().chain(&tops).chain(&params) {
        cx.eng.free(b.data);
        cx.eng.free(b.diff);
    }
    Ok(run)
}

/// Caffe's GradientChecker: compares backward's gradients with central finite differences of the
/// objective sum_i r_i * top_i (r random but fixed) for every bottom in `check_bottoms` and every
/// parameter. `|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)`.
pub fn check_gradient(
    eng: &mut dyn Engine,
    case: &LayerCase,
    check_bottoms: &[usize],
    step: f32,
    threshold: f32,
) -> Result<()> {
    check_gradient_of(eng, case, check_bottoms, None, step, threshold)
}

/// [`check_gradient`] restricted to the parameters in `check_params` (`None`: all of them), for
/// layers whose stored blobs have no gradient (BatchNorm's statistics with `use_global_stats`).
pub fn check_gradient_of(
    eng: &mut dyn Engine,
    case: &LayerCase,
    check_bottoms: &[usize],
    check_params: Option<&[usize]>,
    step: f32,
    threshold: f32,
) -> Result<()> {
    let mut case = case.clone();
    let base = run_layer(eng, &case, None, None)?;
    if case.params.is_none() {
        case.params = Some(base.params.iter().map(|(_, v)| v.clone()).collect());
    }
    let mut rng = Rng::new(4242);
    let weights: Vec<Vec<f32>> = base
        .tops
        .iter()
        .map(|(_, v)| v.iter().map(|_| rng.uniform_range(-1.0, 1.0)).collect())
        .collect();
    let objective = |run: &LayerRun| -> f64 {
        run.tops
            .iter()
            .zip(&weights)
            .map(|((_, t), w)| {
                t.iter()
                    .zip(w)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            })
            .sum()
    };
    let pd: Vec<bool> = (0..case.bottoms.len())
        .map(|i| check_bottoms.contains(&i))
        .collect();
    let analytic = run_layer(eng, &case, Some(&weights), Some(&pd))?;
    let check = |what: String, a: f32, plus: f64, minus: f64| -> Result<()> {
        let numeric = ((plus - minus) / (2.0 * step as f64)) as f32;
        let scale = a.abs().max(numeric.abs()).max(1.0);
        ensure!(
            (a - numeric).abs() <= threshold * scale,
            "{what}: analytic {a} vs numeric {numeric}"
        );
        Ok(())
    };
    for &b in check_bottoms {
        for i in 0..case.bottoms[b].1.len() {
            let orig = case.bottoms[b].1[i];
            case.bottoms[b].1[i] = orig + step;
            let plus = objective(&run_layer(eng, &case, None, None)?);
            case.bottoms[b].1[i] = orig - step;
            let minus = objective(&run_layer(eng, &case, None, None)?);
            case.bottoms[b].1[i] = orig;
            check(
                format!("bottom {b} element {i}"),
                analytic.bottom_diffs[b][i],
                plus,
                minus,
            )?;
        }
    }
    let n_params = case.params.as_ref().map_or(0, |p| p.len());
    for p in 0..n_params {
        if check_params.is_some_and(|c| !c.contains(&p)) {
            continue;
        }
        let len = case.params.as_ref().map_or(0, |ps| ps[p].len());
        for i in 0..len {
            let set = |case: &mut LayerCase, v: f32| {
                if let Some(ps) = case.params.as_mut() {
                    ps[p][i] = v;
                }
            };
            let orig = case.params.as_ref().map_or(0.0, |ps| ps[p][i]);
            set(&mut case, orig + step);
            let plus = objective(&run_layer(eng, &case, None, None)?);
            set(&mut case, orig - step);
            let minus = objective(&run_layer(eng, &case, None, None)?);
            set(&mut case, orig);
            check(
                format!("param {p} element {i}"),
                analytic.param_diffs[p][i],
                plus,
                minus,
            )?;
        }
    }
    Ok(())
}
