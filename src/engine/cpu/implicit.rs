//! Implicit-GEMM convolution forward (AVX-512): each output plane is computed in registers
//! straight from a padded copy of the image, with no im2col columns. A tile of R output channels
//! x V vectors of 16 output positions takes one fused multiply-add per kernel tap, in im2col's
//! order (channel, kernel row, kernel column), as the product over columns accumulates them.
//!
//! The 16 positions of a vector may lie on several output lines (an 8x8 plane has two lines per
//! vector). For every tap their inputs lie within 32 elements of the vector's first input, at
//! the same relative places (the [`LanePattern`]), so a vector of inputs is two loads and one
//! permutation. On small planes (LeNet's 8x8, GoogLeNet's 14x14 and 7x7 5x5 layers) forming
//! and reading back the columns cost as much as the product itself; here they cost nothing.
use super::conv::{OutPtr, forward_by_image};
use super::elementwise::PlaneEpilogue;
use super::has_avx512;
use crate::engine::kernels::conv::ConvGemm;

/// Padded images of a group up to this many floats (a quarter of a 1 MiB L2 cache): each tile
/// reads its taps' inputs from all of its group's channels.
const MAX_IMAGE: usize = 1 << 16;
/// Elements after a padded image, so that the last vector's two full loads stay inside.
const SLACK: usize = 32;

/// Where the 16 lanes of each output vector read their inputs: lane t of the vector that starts
/// at output position p reads `first + index[t]` past a tap's first input, with `index[t] < 32`.
pub(super) struct LanePattern {
    vectors: Vec<Lanes>,
    /// Output positions.
    len: usize,
    /// One past the furthest input read (relative to a tap's first input).
    reach: usize,
}

#[derive(Clone, Copy)]
struct Lanes {
    first: usize,
    index: [i32; 16],
    /// The lanes of the two loads that the vector uses, and of the store.
    loads: [u16; 2],
    store: u16,
}

impl LanePattern {
    /// The pattern of `lines` output lines of `width` positions, where position x of line y
    /// reads input `y * step + x * stride`; None if some vector's inputs span more than 32
    /// elements.
    pub(super) fn new(step: usize, width: usize, lines: usize, stride: usize) -> Option<Self> {
        let len = lines * width;
        let source = |pos: usize| (pos / width) * step + (pos % width) * stride;
        let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
        let vectors = (0..len)
            .step_by(16)
            .map(|at| {
                let used = (len - at).min(16);
                let first = source(at);
                let mut index = [0i32; 16];
                for (t, v) in index.iter_mut().enumerate().take(used) {
                    *v = i32::try_from(source(at + t).checked_sub(first)?).ok()?;
                }
                let span = index.iter().max().map_or(0, |&v| v as usize + 1);
                (span <= 32).then_some(Lanes {
                    first,
                    index,
                    loads: [lanes(span), lanes(span.saturating_sub(16))],
                    store: lanes(used),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let reach = if len == 0 { 0 } else { source(len - 1) + 1 };
        Some(LanePattern {
            vectors,
            len,
            reach,
        })
    }

    /// dst[p] = src[source(p)] for every output position p (im2col's row of one tap, whose
    /// first input `src` starts at).
    pub(super) fn copy(&self, dst: &mut [f32], src: &[f32]) {
        assert!(
            dst.len() == self.len && src.len() >= self.reach,
            "lane pattern: operands of the wrong length"
        );
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F; the lengths are checked above.
            return unsafe { x86::copy(self, dst, src) };
        }
        for (v, lanes) in self.vectors.iter().enumerate() {
            for (t, d) in dst[v * 16..].iter_mut().take(16).enumerate() {
                *d = src[lanes.first + lanes.index[t] as usize];
            }
        }
    }
}

/// The geometry of a convolution whose forward runs as an implicit GEMM.
pub(super) struct Implicit {
    batch: usize,
    channels: usize,
    out_channels: usize,
    group: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    /// Padded image height and width.
    hp: usize,
    wp: usize,
    /// Each kernel tap's first input relative to its group's first padded channel, in im2col's
    /// order within a group.
    taps: Vec<usize>,
    lanes: LanePattern,
    /// For a data gradient: the forward's (output channels per group, kernel height and
    /// width), whose weights this convolution takes flipped and transposed.
    adjoint: Option<(usize, usize, usize)>,
}

impl Implicit {
    /// `g`'s forward as an implicit GEMM, when it has two spatial axes and a kernel bigger than
    /// 1x1, a group's padded image is at most [`MAX_IMAGE`] floats, its output vectors have a
    /// [`LanePattern`], and the CPU has AVX-512F.
    pub(super) fn of(g: &ConvGemm) -> Option<Implicit> {
        let two_d = [
            &g.im_shape,
            &g.col_shape,
            &g.kernel,
            &g.stride,
            &g.pad,
            &g.dilation,
        ]
        .iter()
        .all(|v| v.len() == 2);
        if !two_d
            || g.is_1x1()
            || g.group == 0
            || !g.channels.is_multiple_of(g.group)
            || !g.out_channels.is_multiple_of(g.group)
            || g.stride.contains(&0)
            || g.dilation.contains(&0)
            || g.kernel.contains(&0)
            || !has_avx512()
        {
            return None;
        }
        let (h, w, ph, pw) = (g.im_shape[0], g.im_shape[1], g.pad[0], g.pad[1]);
        let (oh, ow) = (g.col_shape[0], g.col_shape[1]);
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        // Every tap's inputs lie inside the padded image (Caffe's output size ensures it).
        let inside = |out: usize, s: usize, k: usize, d: usize, padded: usize| {
            out == 0 || (out - 1) * s + (k - 1) * d < padded
        };
        if !inside(oh, g.stride[0], g.kernel[0], g.dilation[0], hp)
            || !inside(ow, g.stride[1], g.kernel[1], g.dilation[1], wp)
            || g.channels / g.group * hp * wp > MAX_IMAGE
        {
            return None;
        }
        let lanes = LanePattern::new(g.stride[0] * wp, ow, oh, g.stride[1])?;
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let taps = (0..g.channels / g.group)
            .flat_map(|c| {
                (0..kh).flat_map(move |i| {
                    (0..kw).map(move |j| (c * hp + i * g.dilation[0]) * wp + j * g.dilation[1])
                })
            })
            .collect();
        Some(Implicit {
            adjoint: None,
            batch: g.batch,
            channels: g.channels,
            out_channels: g.out_channels,
            group: g.group,
            h,
            w,
            ph,
            pw,
            hp,
            wp,
            taps,
            lanes,
        })
    }

    /// `g`'s data gradient as the forward of the transposed convolution (of the output gradient
    /// with the kernels flipped, channels and outputs swapped, padding `dilation * (kernel - 1) -
    /// pad`), when `g` has stride 1, its output is at least 4/5 of its image (the transposed
    /// convolution also multiplies the zeros around the output: LeNet's 8x8 conv2 output padded
    /// to 16x16 took 2.25 times the work and was slower than columns), and that forward
    /// qualifies for [`Implicit::of`].
    pub(super) fn of_adjoint(g: &ConvGemm) -> Option<Implicit> {
        let (image, output): (usize, usize) =
            (g.im_shape.iter().product(), g.col_shape.iter().product());
        if g.stride.iter().any(|&s| s != 1)
            || g.kernel.len() != g.pad.len()
            || 5 * output < 4 * image
        {
            return None;
        }
        let pad = (0..g.kernel.len())
            .map(|d| (g.dilation.get(d)? * (g.kernel[d].checked_sub(1)?)).checked_sub(g.pad[d]))
            .collect::<Option<Vec<_>>>()?;
        let transposed = ConvGemm {
            channels: g.out_channels,
            out_channels: g.channels,
            im_shape: g.col_shape.clone(),
            col_shape: g.im_shape.clone(),
            pad,
            ..g.clone()
        };
        let k = Implicit::of(&transposed)?;
        let og = g.out_channels.checked_div(g.group)?;
        Some(Implicit {
            adjoint: Some((og, g.kernel[0], g.kernel[1])),
            ..k
        })
    }

    /// The weights this convolution multiplies by: `weight` itself, or for a data gradient the
    /// forward's weights ([group][output][channel][kernel]) as [group][channel][output][flipped
    /// kernel].
    fn weights<'a>(&self, weight: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        let Some((og, kh, kw)) = self.adjoint else {
            return weight.into();
        };
        let (cg, taps) = (self.out_channels / self.group, kh * kw);
        let mut flipped = vec![0f32; self.group * og * cg * taps];
        for (g, group) in flipped.chunks_exact_mut(cg * og * taps).enumerate() {
            for (c, row) in group.chunks_exact_mut(og * taps).enumerate() {
                for (o, kernel) in row.chunks_exact_mut(taps).enumerate() {
                    let src = &weight[((g * og + o) * cg + c) * taps..][..taps];
                    for (v, &w) in kernel.iter_mut().zip(src.iter().rev()) {
                        *v = w;
                    }
                }
            }
        }
        flipped.into()
    }

    fn padded_len(&self) -> usize {
        self.channels * self.hp * self.wp + SLACK
    }

    /// One image with its padding (zeros), and zeros after it.
    fn pad(&self, image: &[f32], padded: &mut [f32]) {
        let (h, w, hp, wp) = (self.h, self.w, self.hp, self.wp);
        let body = self.channels * hp * wp;
        if (hp, wp) == (h, w) {
            padded[..body].copy_from_slice(&image[..body]);
            padded[body..].fill(0.0);
            return;
        }
        padded.fill(0.0);
        for (c, plane) in padded[..body].chunks_exact_mut(hp * wp).enumerate() {
            for y in 0..h {
                let row = &mut plane[(y + self.ph) * wp + self.pw..][..w];
                row.copy_from_slice(&image[(c * h + y) * w..][..w]);
            }
        }
    }
}

/// out = the convolution of every image of `input` with `weight`, then `epilogue` (bias and
/// steps) on each output plane. For a data gradient ([`Implicit::of_adjoint`]), `input` is the
/// output gradient, `weight` the forward's weights and `out` the data gradient.
pub(super) fn forward(
    k: &Implicit,
    input: &[f32],
    weight: &[f32],
    out: &mut [f32],
    epilogue: Option<&PlaneEpilogue>,
) {
    let in_len = k.channels * k.h * k.w;
    assert!(input.len() >= k.batch * in_len);
    assert!(weight.len() >= k.out_channels * k.taps.len());
    let weight = &*k.weights(weight);
    forward_by_image(
        (k.batch, k.out_channels, k.lanes.len),
        out,
        epilogue,
        (k.padded_len(), k.out_channels, rayon::current_num_threads()),
        |b, padded| k.pad(&input[b * in_len..][..in_len], padded),
        |padded, range, out| channels(k, padded, weight, range, out),
    );
}

/// Output channels `range` of one image (every position) from its padded copy.
fn channels(
    k: &Implicit,
    padded: &[f32],
    weight: &[f32],
    range: std::ops::Range<usize>,
    out: OutPtr,
) {
    assert!(padded.len() >= k.padded_len() && range.end <= k.out_channels);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: Implicit::of checked the CPU and that every tap's inputs lie inside the padded
    // image (with SLACK for the full loads); the assert keeps the rows within the output.
    unsafe {
        x86::channels(k, padded, weight, range, out.0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, padded, weight, range, out);
        unreachable!("Implicit::of needs AVX-512");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Implicit, LanePattern, Lanes};
    use crate::engine::cpu::tiles::{Rows, rows_1, rows_2, rows_3, rows_4, store};

    /// Loads lane set `l` relative to `src`: two loads (full ones where `full`, else under
    /// their masks) and their permutation.
    #[inline(always)]
    unsafe fn gather(l: &Lanes, index: __m512i, src: *const f32, full: bool) -> __m512 {
        // SAFETY: the caller's: full loads where 32 elements remain, else the masks.
        unsafe {
            let p = src.add(l.first);
            let (low, high) = if full {
                (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            } else {
                (
                    _mm512_maskz_loadu_ps(l.loads[0], p),
                    _mm512_maskz_loadu_ps(l.loads[1], p.add(16)),
                )
            };
            _mm512_permutex2var_ps(low, index, high)
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; `src` holds `p.reach` elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn copy(p: &LanePattern, dst: &mut [f32], src: &[f32]) {
        for (v, l) in p.vectors.iter().enumerate() {
            // SAFETY: full loads only where 32 elements remain in `src`; the store covers this
            // vector's lanes of `dst` (p.len elements).
            unsafe {
                let index = _mm512_loadu_si512(l.index.as_ptr().cast());
                let full = l.first + 32 <= src.len();
                let v512 = gather(l, index, src.as_ptr(), full);
                store(dst.as_mut_ptr().add(v * 16), l.store, v512);
            }
        }
    }

    /// B's rows of a tile of V vectors: row t gathers the inputs of tap t.
    struct Gathered<'a, const V: usize> {
        image: *const f32,
        taps: &'a [usize],
        lanes: &'a [Lanes; V],
        index: [__m512i; V],
    }

    impl<const V: usize> Rows<V> for Gathered<'_, V> {
        #[inline(always)]
        unsafe fn row(&self, t: usize) -> [__m512; V] {
            // SAFETY: the caller's: every tap's inputs lie inside the padded image and its
            // slack (Implicit::of).
            unsafe {
                let src = self.image.add(*self.taps.get_unchecked(t));
                std::array::from_fn(|j| gather(&self.lanes[j], self.index[j], src, true))
            }
        }

        fn stores(&self) -> [u16; V] {
            self.lanes.map(|l| l.store)
        }
    }

    /// Output channels `range` of one image.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `padded` holds the padded image and its slack, `weight` every
    /// channel's taps, `out` the image's output planes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn channels(
        k: &Implicit,
        padded: &[f32],
        weight: &[f32],
        range: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let (kd, plane, vectors) = (k.taps.len(), k.lanes.len, &k.lanes.vectors);
        let og = k.out_channels / k.group;
        let group_len = k.channels / k.group * k.hp * k.wp;
        let mut o = range.start;
        while o < range.end {
            let group = o / og;
            let end = range.end.min((group + 1) * og);
            // SAFETY: the caller's; the group's channels lie within the padded image.
            let image = unsafe { padded.as_ptr().add(group * group_len) };
            let mut v0 = 0;
            while v0 < vectors.len() {
                let v = (vectors.len() - v0).min(4);
                let lanes = &vectors[v0..v0 + v];
                // SAFETY: channels o..end of the weight and the output (vectors v0.. of each
                // plane); the lanes' inputs lie inside the padded image plus its slack.
                unsafe {
                    let (w, dst) = (weight.as_ptr().add(o * kd), out.add(o * plane + 16 * v0));
                    macro_rules! go {
                        ($rows:ident, $v:literal) => {{
                            let lanes: &[Lanes; $v] = lanes.try_into().expect("one per vector");
                            let src = Gathered {
                                image,
                                taps: &k.taps,
                                lanes,
                                index: lanes.map(|l| _mm512_loadu_si512(l.index.as_ptr().cast())),
                            };
                            $rows(&src, kd, w, kd, dst, plane, end - o)
                        }};
                    }
                    match v {
                        4 => go!(rows_4, 4),
                        3 => go!(rows_3, 3),
                        2 => go!(rows_2, 2),
                        _ => go!(rows_1, 1),
                    }
                }
                v0 += v;
            }
            o = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::elementwise::stage_operands;
    use crate::engine::{TensorId, View};
    use crate::rng::Rng;

    /// Per axis: (image, kernel, stride, pad, dilation).
    type Axis = (usize, usize, usize, usize, usize);

    /// A convolution's geometry.
    struct Case {
        batch: usize,
        channels: usize,
        outputs: usize,
        group: usize,
        axes: [Axis; 2],
    }

    /// (batch, channels, outputs, group) and the two axes.
    fn case(
        (batch, channels, outputs, group): (usize, usize, usize, usize),
        axes: [Axis; 2],
    ) -> Case {
        Case {
            batch,
            channels,
            outputs,
            group,
            axes,
        }
    }

    impl Case {
        fn out_shape(&self) -> [usize; 2] {
            self.axes
                .map(|(size, k, s, p, d)| (size + 2 * p - (d * (k - 1) + 1)) / s + 1)
        }

        fn gemm(&self) -> ConvGemm {
            let view = |id: u32| View::new(TensorId(id), 0, 0);
            ConvGemm {
                im: view(0),
                out: view(1),
                weight: view(2),
                bias: None,
                epilogue: Vec::new(),
                junction: None,
                col: view(3),
                batch: self.batch,
                group: self.group,
                channels: self.channels,
                out_channels: self.outputs,
                im_shape: self.axes.map(|a| a.0).to_vec(),
                col_shape: self.out_shape().to_vec(),
                kernel: self.axes.map(|a| a.1).to_vec(),
                stride: self.axes.map(|a| a.2).to_vec(),
                pad: self.axes.map(|a| a.3).to_vec(),
                dilation: self.axes.map(|a| a.4).to_vec(),
            }
        }

        fn input_len(&self) -> usize {
            self.batch * self.channels * self.axes[0].0 * self.axes[1].0
        }

        fn output_len(&self) -> usize {
            self.batch * self.outputs * self.out_shape().iter().product::<usize>()
        }

        fn weight_len(&self) -> usize {
            self.outputs * self.channels / self.group * self.axes[0].1 * self.axes[1].1
        }

        /// Calls `f(output, input, weight)` with the indices of every product the convolution
        /// sums (its definition), output by output.
        fn products(&self, mut f: impl FnMut(usize, usize, usize)) {
            let [(h, kh, sh, ph, dh), (w, kw, sw, pw, dw)] = self.axes;
            let [oh, ow] = self.out_shape();
            let (cg, og) = (self.channels / self.group, self.outputs / self.group);
            for b in 0..self.batch {
                for o in 0..self.outputs {
                    for (y, x) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
                        let out = ((b * self.outputs + o) * oh + y) * ow + x;
                        for i in 0..cg {
                            let c = o / og * cg + i;
                            for (ky, kx) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
                                let iy = (y * sh + ky * dh) as isize - ph as isize;
                                let ix = (x * sw + kx * dw) as isize - pw as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let input =
                                    ((b * self.channels + c) * h + iy as usize) * w + ix as usize;
                                f(out, input, ((o * cg + i) * kh + ky) * kw + kx);
                            }
                        }
                    }
                }
            }
        }
    }

    fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect()
    }

    /// Runs `f` on a pool of `threads` cores.
    fn on_cores<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(f)
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64], tolerance: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&got, &want)) in got.iter().zip(want).enumerate() {
            assert!(
                (got as f64 - want).abs() <= tolerance * (1.0 + want.abs()),
                "{what}: [{i}] = {got}, expected {want}"
            );
        }
    }

    /// Forward with a bias on `threads` cores against the definition.
    fn check_forward(case: &Case, threads: usize) {
        let g = case.gemm();
        let k = Implicit::of(&g).expect("the case runs as an implicit GEMM");
        let mut rng = Rng::new(7);
        let input = uniform(&mut rng, case.input_len());
        let weight = uniform(&mut rng, case.weight_len());
        let bias = uniform(&mut rng, case.outputs);
        let plane = case.out_shape().iter().product::<usize>();
        let mut want: Vec<f64> = (0..case.output_len())
            .map(|at| bias[at / plane % case.outputs] as f64)
            .collect();
        case.products(|o, i, w| want[o] += weight[w] as f64 * input[i] as f64);
        let mut out = vec![f32::NAN; want.len()];
        let dims = g.out_dims();
        let operands = stage_operands(dims, &[]).unwrap();
        let epilogue = PlaneEpilogue::new(dims, Some(&bias), &[], &operands, &mut [], &[]);
        on_cores(threads, || {
            forward(&k, &input, &weight, &mut out, Some(&epilogue))
        });
        let what = format!("{:?} x{} on {threads} cores", case.axes, case.channels);
        assert_close(&what, &out, &want, 1e-5);
    }

    /// The data gradient on `threads` cores against the definition: dx sums weight x dy over
    /// the outputs that read each input.
    fn check_data_gradient(case: &Case, threads: usize) {
        let k = Implicit::of_adjoint(&case.gemm()).expect("the gradient runs as an implicit GEMM");
        let mut rng = Rng::new(9);
        let dy = uniform(&mut rng, case.output_len());
        let weight = uniform(&mut rng, case.weight_len());
        let mut want = vec![0f64; case.input_len()];
        case.products(|o, i, w| want[i] += weight[w] as f64 * dy[o] as f64);
        let mut dx = vec![f32::NAN; want.len()];
        on_cores(threads, || forward(&k, &dy, &weight, &mut dx, None));
        // Sums of 1250 products in f32, which cancel: the error is the terms' scale's.
        let what = format!(
            "{:?} x{} gradient on {threads} cores",
            case.axes, case.channels
        );
        assert_close(&what, &dx, &want, 1e-4);
    }

    #[test]
    fn forward_equals_the_definition() {
        if !has_avx512() {
            return;
        }
        let cases = [
            // LeNet's conv2 (two 8-wide lines per vector) and conv1 (lines across vectors).
            case((3, 20, 50, 1), [(12, 5, 1, 0, 1); 2]),
            case((2, 1, 20, 1), [(28, 5, 1, 0, 1); 2]),
            // Groups, dilation, a 3x5 kernel, unequal padding, a 10x7 plane (a partial fifth
            // vector), 13 channels per group (tiles and a rest for 4 vectors and for 1).
            case((2, 4, 26, 2), [(10, 3, 1, 2, 2), (9, 5, 1, 1, 1)]),
            // Stride 2 within 16-wide lines; 2 and 3 vectors with their rests.
            case((2, 3, 9, 1), [(5, 3, 2, 1, 1), (31, 3, 2, 1, 1)]),
            case((1, 2, 15, 1), [(4, 2, 1, 0, 1), (9, 2, 1, 0, 1)]),
            case((1, 2, 16, 1), [(4, 2, 1, 0, 1), (13, 2, 1, 0, 1)]),
        ];
        for case in &cases {
            for threads in [1, 2, 3] {
                check_forward(case, threads);
            }
        }
    }

    #[test]
    fn data_gradient_equals_the_definition() {
        if !has_avx512() {
            return;
        }
        let cases = [
            // A 5x5 layer that keeps its size (GoogLeNet's): the gradient padded by 2.
            case((3, 20, 50, 1), [(12, 5, 1, 2, 1); 2]),
            // Groups, dilation, a 3x5 kernel and unequal padding.
            case((2, 4, 26, 2), [(10, 3, 1, 2, 2), (9, 5, 1, 2, 1)]),
        ];
        for case in &cases {
            for threads in [1, 2] {
                check_data_gradient(case, threads);
            }
        }
        let column_path = [
            // Padding beyond the kernel's reach (a negative padding for the transposed layer).
            case((1, 6, 5, 1), [(7, 3, 1, 3, 1), (7, 3, 1, 0, 1)]),
            // An output much smaller than its image (LeNet's conv2, 12x12 -> 8x8).
            case((1, 20, 50, 1), [(12, 5, 1, 0, 1); 2]),
            // Stride 2.
            case((1, 3, 4, 1), [(5, 3, 2, 1, 1), (31, 3, 2, 1, 1)]),
        ];
        for case in &column_path {
            assert!(
                Implicit::of_adjoint(&case.gemm()).is_none(),
                "{:?}",
                case.axes
            );
        }
    }

    #[test]
    fn only_patterns_within_two_loads_run() {
        let three = |axes| case((1, 3, 4, 1), axes);
        // Stride 4: 16 positions span 61 inputs.
        assert!(Implicit::of(&three([(40, 3, 4, 0, 1); 2]).gemm()).is_none());
        // Two 8-wide lines 34 inputs apart.
        assert!(Implicit::of(&three([(15, 3, 2, 1, 1); 2]).gemm()).is_none());
        // 1x1 needs no columns anyway; big images stay on the column path.
        assert!(Implicit::of(&three([(12, 1, 1, 0, 1); 2]).gemm()).is_none());
        assert!(Implicit::of(&three([(160, 3, 1, 1, 1); 2]).gemm()).is_none());
        if has_avx512() {
            assert!(Implicit::of(&three([(15, 3, 1, 1, 1); 2]).gemm()).is_some());
        }
    }

    #[test]
    fn lane_pattern_copies_every_position() {
        // (step, width, lines, stride)
        for (step, width, lines, stride) in
            [(12, 8, 8, 1), (28, 24, 24, 1), (33, 16, 3, 2), (9, 7, 5, 1)]
        {
            let p = LanePattern::new(step, width, lines, stride).unwrap();
            let reach = (lines - 1) * step + (width - 1) * stride + 1;
            let src: Vec<f32> = (0..reach).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; width * lines];
            p.copy(&mut dst, &src);
            for (pos, &v) in dst.iter().enumerate() {
                assert_eq!(v, ((pos / width) * step + (pos % width) * stride) as f32);
            }
        }
        assert!(LanePattern::new(40, 8, 2, 1).is_none());
    }
}
