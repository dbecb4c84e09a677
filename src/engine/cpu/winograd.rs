//! Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks"): each 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A for the 4x4 input tile d,
//! so a 3x3 convolution costs 16 products per 4 outputs instead of 36. The 16 element-wise
//! products over channels are 16 GEMMs, (out channels x in channels) x (in channels x tiles).
//!
//! Layouts (per chunk of images, `n` tiles in all): transformed input V is [in channel][16][n],
//! transformed weights U are [16][out channel][in channel of the group], products P are
//! [out channel][16][n], so both transforms work on whole rows of one channel.
use rayon::prelude::*;

use super::elementwise::PlaneEpilogue;
use super::wide;
use crate::engine::kernels::conv::Winograd;

/// Floats of V and P per chunk of images: a chunk's working set stays in the last-level cache
/// range and the buffers stay small for big batches.
const BUDGET: usize = 1 << 21;
/// Tiles per chunk beyond which a chunk takes no more images: the products are long enough, and
/// smaller chunks keep V and P closer to the cores (ResNet's 56x56 32-channel layers, one image
/// per chunk instead of two: backward about 10% faster).
const ENOUGH_TILES: usize = 512;

/// Multiply-adds of a chunk's 16 products from which the cores share each chunk even when there
/// are chunks enough for every core: the synchronisations then cost little, and whole chunks per
/// core would need twice the cache (GoogLeNet's 28x28 and 56x56 3x3 layers got slower).
const SHARED_CHUNK_MACS: usize = 1 << 26;

/// How a call divides its images.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Images per chunk (transforms, then the 16 products, then the output transform).
    chunk: usize,
    /// Images per core when each core runs whole chunks alone. Otherwise the cores share each
    /// step of one chunk at a time, and every step ends in a synchronisation: ResNet's 56x56
    /// layers have ten chunks of one image, 30 synchronisations of well under 100 us of work each.
    per_core: Option<usize>,
}

impl Plan {
    /// The plan for `per_image` floats of V and P per image within `budget`, on `cores` cores:
    /// chunks of at most `budget` floats (all cores' chunks together) and about [`ENOUGH_TILES`]
    /// tiles; whole chunks per core once there are at least as many chunks as cores, unless the
    /// chunks are big.
    fn new(k: &Winograd, per_image: usize, budget: usize, cores: usize) -> Self {
        let (th, tw) = tiles(k);
        let chunk = ENOUGH_TILES
            .div_ceil((th * tw).max(1))
            .min(budget / per_image)
            .clamp(1, k.batch.max(1));
        let chunk_macs = 16 * k.out_channels * (k.in_channels / k.groups.max(1)) * chunk * th * tw;
        if cores > 1 && k.batch.div_ceil(chunk) >= cores && chunk_macs < SHARED_CHUNK_MACS {
            let per = k.batch.div_ceil(cores);
            // The cores' chunks share the budget.
            let fits = (budget / cores / per_image).max(1);
            Plan {
                chunk: chunk.min(per).min(fits),
                per_core: Some(per),
            }
        } else {
            Plan {
                chunk,
                per_core: None,
            }
        }
    }

    /// The chunks `(first image, images)` of the images `first..first + images`.
    fn chunks(&self, first: usize, images: usize) -> impl Iterator<Item = (usize, usize)> {
        let chunk = self.chunk;
        (first..first + images)
            .step_by(chunk)
            .map(move |f| (f, chunk.min(first + images - f)))
    }
}

/// Output tiles along each axis.
fn tiles(k: &Winograd) -> (usize, usize) {
    (k.out_shape[0].div_ceil(2), k.out_shape[1].div_ceil(2))
}

/// Grows each buffer to at least its length (contents unspecified).
fn reserve<const N: usize>(bufs: [(&mut Vec<f32>, usize); N]) {
    for (buf, len) in bufs {
        if buf.len() < len {
            *buf = vec![0f32; len];
        }
    }
}

/// Runs `f` on this thread's scratch buffers.
fn with_scratch<R>(f: impl FnOnce(&mut [Vec<f32>; 3]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        // Re-entered on this thread (a nested parallel call): fresh buffers.
        Err(_) => f(&mut Default::default()),
    })
}

thread_local! {
    /// Scratch kept between calls: fresh multi-megabyte buffers would each cost a page fault per
    /// 4 KiB on every call. Forward: U, V, P; weight gradient: M, V, E.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 3]> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// `f(i)` for i in 0..n, on all cores when `parallel`.
fn for_each_index(n: usize, parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if parallel {
        (0..n).into_par_iter().for_each(f);
    } else {
        (0..n).for_each(f);
    }
}

/// `f(i, chunk i)` for the chunks of `len` elements of `data`, on all cores when `parallel`.
fn for_each_chunk(
    data: &mut [f32],
    len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if parallel {
        data.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// out = conv(input, K) for every image, as [`Winograd`] describes.
/// `epilogue` runs on each output plane as soon as it is transformed.
pub fn forward(
    k: &Winograd,
    input: &[f32],
    weight: &[f32],
    out: &mut [f32],
    epilogue: Option<&PlaneEpilogue>,
) {
    forward_planned(
        k,
        input,
        weight,
        out,
        epilogue,
        BUDGET,
        rayon::current_num_threads(),
    );
}

fn forward_planned(
    k: &Winograd,
    input: &[f32],
    weight: &[f32],
    out: &mut [f32],
    epilogue: Option<&PlaneEpilogue>,
    budget: usize,
    cores: usize,
) {
    let (ci, co, g) = (k.in_channels, k.out_channels, k.groups);
    let cig = ci / g;
    let (th, tw) = tiles(k);
    let per_image = 16 * (ci + co) * th * tw;
    if per_image == 0 || k.batch == 0 {
        out.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let plan = Plan::new(k, per_image, budget, cores);
    let out_len = co * k.out_shape[0] * k.out_shape[1];
    let (v_len, p_len) = (
        16 * ci * th * tw * plan.chunk,
        16 * co * th * tw * plan.chunk,
    );
    with_scratch(|[u, v, p]| {
        // Every element used is written before it is read: no zeroing needed.
        let u_len = 16 * u_plane(co, cig);
        if u.len() < u_len {
            *u = vec![0f32; u_len];
        }
        transform_weights(k, weight, u);
        let u = &u[..];
        match plan.per_core {
            None => {
                reserve([(v, v_len), (p, p_len)]);
                for (first, images) in plan.chunks(0, k.batch) {
                    let out = &mut out[first * out_len..][..images * out_len];
                    let chunk = Chunk { first, images };
                    chunk.forward(k, input, out, u, v, p, epilogue, true);
                }
            }
            Some(per) => out[..k.batch * out_len]
                .par_chunks_mut(per * out_len)
                .enumerate()
                .for_each(|(j, outs)| {
                    with_scratch(|[_, v, p]| {
                        reserve([(v, v_len), (p, p_len)]);
                        for (first, images) in plan.chunks(j * per, outs.len() / out_len) {
                            let out = &mut outs[(first - j * per) * out_len..][..images * out_len];
                            let chunk = Chunk { first, images };
                            chunk.forward(k, input, out, u, v, p, epilogue, false);
                        }
                    })
                }),
        }
    });
}

/// The images `first..first + images` of a call.
#[derive(Clone, Copy)]
struct Chunk {
    first: usize,
    images: usize,
}

impl Chunk {
    /// The forward of this chunk into `out` (its images' outputs) with transformed weights `u`
    /// and scratch `v`, `p`; every step on all cores when `parallel`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        self,
        k: &Winograd,
        input: &[f32],
        out: &mut [f32],
        u: &[f32],
        v: &mut [f32],
        p: &mut [f32],
        epilogue: Option<&PlaneEpilogue>,
        parallel: bool,
    ) {
        let (ci, co, g) = (k.in_channels, k.out_channels, k.groups);
        let (cig, cog) = (ci / g, co / g);
        let (th, tw) = tiles(k);
        let Chunk { first, images } = self;
        let n = images * th * tw;
        let v = &mut v[..16 * ci * n];
        let p = &mut p[..16 * co * n];
        let in_plane = k.in_shape[0] * k.in_shape[1];
        self.transform_planes(
            input,
            in_plane,
            th * tw,
            v,
            parallel,
            |plane, rows, tile| transform_input_plane(k, plane, rows, n, tile),
        );
        // The 16 * groups products write disjoint rows of P: one product per task, each on one
        // core (splitting every product over the cores costs a synchronisation per product).
        let (p_addr, u_addr, v_addr) = (
            p.as_mut_ptr() as usize,
            u.as_ptr() as usize,
            v.as_ptr() as usize,
        );
        for_each_index(16 * g, parallel, |job| {
            let (xi, grp) = (job / g, job % g);
            // P[grp's out channels][xi][..] = U[xi][grp's out channels][..] * V[grp's in channels][xi][..]
            // SAFETY: the rows (grp's out channels, xi) of P belong to this job alone; U and V
            // are only read, and all three outlive the loop.
            unsafe {
                gemm::gemm(
                    cog,
                    n,
                    cig,
                    (p_addr as *mut f32).add((grp * cog * 16 + xi) * n),
                    1,
                    (16 * n) as isize,
                    false,
                    (u_addr as *const f32).add(xi * u_plane(co, cig) + grp * cog * cig),
                    1,
                    cig as isize,
                    (v_addr as *const f32).add((grp * cig * 16 + xi) * n),
                    1,
                    (16 * n) as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        let plane_len = k.out_shape[0] * k.out_shape[1];
        let p = &*p;
        // Output planes in order (image, channel); P rows are (channel, xi, image's tiles).
        for_each_chunk(out, plane_len, parallel, |i, plane| {
            let (b, c) = (i / co, i % co);
            let rows = &p[c * 16 * n..][..16 * n];
            transform_output_plane(k, rows, n, b * th * tw, plane);
            if let Some(epilogue) = epilogue {
                // SAFETY: each plane of the output is visited once.
                wide(|| unsafe { epilogue.apply(first * co + i, plane) });
            }
        });
    }

    /// Transforms every plane of this chunk's images in `src` (planes of `plane` elements, as
    /// many channels as `rows` has row blocks) into `rows` ([channel][16][n]): each plane goes
    /// through `transform(plane, channel rows, first tile)`, image b's tiles from b * `tiles`.
    fn transform_planes(
        self,
        src: &[f32],
        plane: usize,
        tiles: usize,
        rows: &mut [f32],
        parallel: bool,
        transform: impl Fn(&[f32], &mut [f32], usize) + Sync + Send,
    ) {
        let n = self.images * tiles;
        let image_len = rows.len() / (16 * n).max(1) * plane;
        for_each_chunk(rows, 16 * n, parallel, |c, rows| {
            for b in 0..self.images {
                let src = &src[(self.first + b) * image_len + c * plane..][..plane];
                transform(src, rows, b * tiles);
            }
        });
    }

    /// Adds this chunk's tile sums to M ([16][out channel][in channel of the group]; overwrites
    /// when not `accumulate`), with scratch `v`, `e`; every step on all cores when `parallel`.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad(
        self,
        k: &Winograd,
        input: &[f32],
        out_diff: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        e: &mut [f32],
        accumulate: bool,
        parallel: bool,
    ) {
        let (ci, co, g) = (k.in_channels, k.out_channels, k.groups);
        let (cig, cog) = (ci / g, co / g);
        let (th, tw) = tiles(k);
        let n = self.images * th * tw;
        let v = &mut v[..16 * ci * n];
        let e = &mut e[..16 * co * n];
        let (in_plane, out_plane) = (
            k.in_shape[0] * k.in_shape[1],
            k.out_shape[0] * k.out_shape[1],
        );
        self.transform_planes(
            input,
            in_plane,
            th * tw,
            v,
            parallel,
            |plane, rows, tile| transform_input_plane(k, plane, rows, n, tile),
        );
        self.transform_planes(
            out_diff,
            out_plane,
            th * tw,
            e,
            parallel,
            |plane, rows, tile| transform_grad_plane(k, plane, rows, n, tile),
        );
        let (m_addr, e_addr, v_addr) = (
            m.as_mut_ptr() as usize,
            e.as_ptr() as usize,
            v.as_ptr() as usize,
        );
        for_each_index(16 * g, parallel, |job| {
            let (xi, grp) = (job / g, job % g);
            // M[xi][grp's o][i] (+)= sum over tiles t of E[o][xi][t] * V[grp's i][xi][t],
            // as its transpose (unit strides where the GEMM kernels want them).
            // SAFETY: the entries (xi, grp's out channels) of M belong to this job alone; E
            // and V are only read, and all three outlive the loop.
            unsafe {
                gemm::gemm(
                    cig,
                    cog,
                    n,
                    (m_addr as *mut f32).add((xi * co + grp * cog) * cig),
                    cig as isize,
                    1,
                    accumulate,
                    (v_addr as *const f32).add((grp * cig * 16 + xi) * n),
                    1,
                    (16 * n) as isize,
                    (e_addr as *const f32).add((grp * cog * 16 + xi) * n),
                    (16 * n) as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    }
}

/// weight_diff += the weight gradient of the forward convolution `k` (not adjoint): for each
/// (out channel o, in channel i), G^T [sum over tiles of (A^T-adjoint of the output-gradient tile)
/// . (B^T d B)] G, the adjoint of the forward's U -> Y map, so 16 products per 2x2 output-gradient
/// tile instead of 36. The sums over tiles are 16 GEMMs (out channels x tiles) x (tiles x in
/// channels) per group, accumulated in M [16][out channel][in channel of the group] over chunks
/// of images (one M per core when each core takes whole chunks, summed at the end).
pub fn weight_grad(k: &Winograd, input: &[f32], out_diff: &[f32], weight_diff: &mut [f32]) {
    weight_grad_planned(
        k,
        input,
        out_diff,
        weight_diff,
        BUDGET,
        rayon::current_num_threads(),
    )
}

fn weight_grad_planned(
    k: &Winograd,
    input: &[f32],
    out_diff: &[f32],
    weight_diff: &mut [f32],
    budget: usize,
    cores: usize,
) {
    let (ci, co, g) = (k.in_channels, k.out_channels, k.groups);
    let cig = ci / g;
    let (th, tw) = tiles(k);
    let per_image = 16 * (ci + co) * th * tw;
    if per_image == 0 || k.batch == 0 || cig == 0 {
        return;
    }
    let plan = Plan::new(k, per_image, budget, cores);
    let (v_len, e_len) = (
        16 * ci * th * tw * plan.chunk,
        16 * co * th * tw * plan.chunk,
    );
    let m_len = 16 * co * cig;
    let slabs = plan.per_core.map_or(1, |per| k.batch.div_ceil(per));
    with_scratch(|[m, v, e]| {
        reserve([(m, slabs * m_len)]);
        let m = &mut m[..slabs * m_len];
        match plan.per_core {
            None => {
                reserve([(v, v_len), (e, e_len)]);
                for (i, (first, images)) in plan.chunks(0, k.batch).enumerate() {
                    let chunk = Chunk { first, images };
                    chunk.weight_grad(k, input, out_diff, m, v, e, i > 0, true);
                }
            }
            Some(per) => m.par_chunks_mut(m_len).enumerate().for_each(|(j, m)| {
                with_scratch(|[_, v, e]| {
                    reserve([(v, v_len), (e, e_len)]);
                    let images = per.min(k.batch - j * per);
                    for (i, (first, images)) in plan.chunks(j * per, images).enumerate() {
                        let chunk = Chunk { first, images };
                        chunk.weight_grad(k, input, out_diff, m, v, e, i > 0, false);
                    }
                })
            }),
        }
        // dK(o, i) += G^T M(o, i) G, in the weight layout [o][i][3][3], M summed over the slabs;
        // 16 consecutive kernels j at a time (lane l: kernel j0 + l), which vectorises.
        let m = &*m;
        const LANES: usize = 16;
        weight_diff[..co * cig * 9]
            .par_chunks_mut(9 * LANES)
            .enumerate()
            .for_each(|(block, dk)| {
                let (j0, lanes) = (block * LANES, dk.len() / 9);
                let mut mt = [[0f32; LANES]; 16];
                for (xi, row) in mt.iter_mut().enumerate() {
                    let at = xi * co * cig + j0;
                    row[..lanes].copy_from_slice(&m[at..][..lanes]);
                    for s in 1..slabs {
                        let slab = &m[s * m_len + at..][..lanes];
                        row.iter_mut().zip(slab).for_each(|(v, x)| *v += x);
                    }
                }
                // s = G^T M (3x4), then dK = s G (3x3), per lane.
                let mut s = [[[0f32; LANES]; 4]; 3];
                for c in 0..4 {
                    for l in 0..LANES {
                        let (m0, m1, m2, m3) =
                            (mt[c][l], mt[4 + c][l], mt[8 + c][l], mt[12 + c][l]);
                        s[0][c][l] = m0 + 0.5 * (m1 + m2);
                        s[1][c][l] = 0.5 * (m1 - m2);
                        s[2][c][l] = 0.5 * (m1 + m2) + m3;
                    }
                }
                let mut sums = [[0f32; LANES]; 9];
                for (r, row) in s.iter().enumerate() {
                    for l in 0..LANES {
                        sums[r * 3][l] = row[0][l] + 0.5 * (row[1][l] + row[2][l]);
                        sums[r * 3 + 1][l] = 0.5 * (row[1][l] - row[2][l]);
                        sums[r * 3 + 2][l] = 0.5 * (row[1][l] + row[2][l]) + row[3][l];
                    }
                }
                for (l, dk) in dk.chunks_exact_mut(9).enumerate() {
                    for (t, d) in dk.iter_mut().enumerate() {
                        *d += sums[t][l];
                    }
                }
            });
    });
}

/// Up to 16 consecutive 2x2 output tiles of one row of tiles: their first tile in the rows
/// (`tile`, `count` of them) and the output elements they cover (`width` from element `at` of
/// the plane, and as many one row below when `second`).
#[derive(Clone, Copy)]
struct TileRun {
    tile: usize,
    count: usize,
    at: usize,
    width: usize,
    second: bool,
}

impl TileRun {
    /// The lanes of a vector from element `from` of one of the run's output rows that lie
    /// within its `width`.
    #[cfg(target_arch = "x86_64")]
    fn lanes(&self, from: usize) -> u16 {
        ((1u32 << self.width.saturating_sub(from).min(16)) - 1) as u16
    }

    /// Panics unless the run lies inside P rows of `rows` elements (`n` tiles per row) and a
    /// plane of `plane` elements (rows of `ow`).
    #[cfg(target_arch = "x86_64")]
    fn check(&self, rows: usize, n: usize, plane: usize, ow: usize) {
        assert!(
            (1..=16).contains(&self.count) && self.width <= 2 * self.count,
            "winograd: 1 to 16 tiles per run"
        );
        assert!(
            15 * n + self.tile + self.count <= rows,
            "winograd: P rows too short"
        );
        let end = self.at + if self.second { ow } else { 0 } + self.width;
        assert!(end <= plane, "winograd: plane too short");
    }
}

/// The output tiles of a plane whose first tile is `first`, in runs of 16 along each row.
fn output_tile_runs(k: &Winograd, first: usize) -> impl Iterator<Item = TileRun> {
    let (oh, ow) = (k.out_shape[0], k.out_shape[1]);
    let (th, tw) = tiles(k);
    (0..th).flat_map(move |ty| {
        (0..tw).step_by(16).map(move |tx| {
            let count = (tw - tx).min(16);
            TileRun {
                tile: first + ty * tw + tx,
                count,
                at: 2 * ty * ow + 2 * tx,
                width: (ow - 2 * tx).min(2 * count),
                second: 2 * ty + 1 < oh,
            }
        })
    })
}

/// E rows of one output-gradient plane: rows[xi * n + first_tile + tile] = (A e A^T)[xi] for its
/// 2x2 tile e (zero beyond the plane), with A = [[1, 0], [1, 1], [1, -1], [0, -1]].
fn transform_grad_plane(k: &Winograd, plane: &[f32], rows: &mut [f32], n: usize, first: usize) {
    let (oh, ow) = (k.out_shape[0], k.out_shape[1]);
    let (th, tw) = tiles(k);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for run in output_tile_runs(k, first) {
            // SAFETY: avx512f is present; x86::grad_tiles checks its bounds.
            unsafe { x86::grad_tiles(plane, ow, rows, n, run) };
        }
        return;
    }
    for ty in 0..th {
        for tx in 0..tw {
            let at = |dy: usize, dx: usize| {
                let (y, x) = (2 * ty + dy, 2 * tx + dx);
                if y < oh && x < ow {
                    plane[y * ow + x]
                } else {
                    0.0
                }
            };
            let e = [[at(0, 0), at(0, 1)], [at(1, 0), at(1, 1)]];
            // t = A e (4x2), then E = t A^T (4x4).
            let t = [
                e[0],
                [e[0][0] + e[1][0], e[0][1] + e[1][1]],
                [e[0][0] - e[1][0], e[0][1] - e[1][1]],
                [-e[1][0], -e[1][1]],
            ];
            let tile = first + ty * tw + tx;
            for (r, tr) in t.iter().enumerate() {
                let vals = [tr[0], tr[0] + tr[1], tr[0] - tr[1], -tr[1]];
                for (c, &value) in vals.iter().enumerate() {
                    rows[(r * 4 + c) * n + tile] = value;
                }
            }
        }
    }
}

/// Floats between the planes U[xi] of the transformed weights: a plane and a line, so that the
/// 16 planes of one (o, i) do not share a cache set (planes of 256 x 256 channels are 256 KiB).
fn u_plane(co: usize, cig: usize) -> usize {
    co * cig + 16
}

/// U[xi][o][i] = (G K(o, i) G^T)[xi] with G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
/// (planes [`u_plane`] apart): each product reads its U rows contiguously (the GEMM packs
/// strided rows slower: 84 against 102 GFLOP/s on one core for 256 x 256 channels).
fn transform_weights(k: &Winograd, weight: &[f32], u: &mut [f32]) {
    let (co, g) = (k.out_channels, k.groups);
    let (cig, cog) = (k.in_channels / g, co / g);
    let plane = u_plane(co, cig);
    assert!(u.len() >= 16 * plane, "winograd: U too short");
    let u_addr = u.as_mut_ptr() as usize;
    // Blocks of 16 input channels: each plane then gets whole lines.
    const BLOCK: usize = 16;
    (0..co).into_par_iter().for_each(|o| {
        for i0 in (0..cig).step_by(BLOCK) {
            let count = BLOCK.min(cig - i0);
            let mut block = [[0f32; BLOCK]; 16];
            for (b, i) in (i0..i0 + count).enumerate() {
                let mut kernel = [0f32; 9];
                if k.adjoint {
                    // weight is [in channels][out channels / group][3][3]: K(o, i) = rot180(weight[i'][o']).
                    let (grp, o_local) = (o / cog, o % cog);
                    let src = &weight[((grp * cig + i) * cog + o_local) * 9..][..9];
                    for (d, s) in kernel.iter_mut().zip(src.iter().rev()) {
                        *d = *s;
                    }
                } else {
                    kernel.copy_from_slice(&weight[(o * cig + i) * 9..][..9]);
                }
                // s = G K (4x3), then U = s G^T (4x4).
                let mut s = [[0f32; 3]; 4];
                for c in 0..3 {
                    let (g0, g1, g2) = (kernel[c], kernel[3 + c], kernel[6 + c]);
                    s[0][c] = g0;
                    s[1][c] = 0.5 * (g0 + g1 + g2);
                    s[2][c] = 0.5 * (g0 - g1 + g2);
                    s[3][c] = g2;
                }
                for (r, row) in s.iter().enumerate() {
                    let t = [
                        row[0],
                        0.5 * (row[0] + row[1] + row[2]),
                        0.5 * (row[0] - row[1] + row[2]),
                        row[2],
                    ];
                    for (c, &value) in t.iter().enumerate() {
                        block[r * 4 + c][b] = value;
                    }
                }
            }
            for (xi, values) in block.iter().enumerate() {
                let at = xi * plane + o * cig + i0;
                // SAFETY: the entries (xi, o, i0..i0 + count) lie inside U (asserted above),
                // and only the task of output channel o writes the entries (.., o, ..).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        values.as_ptr(),
                        (u_addr as *mut f32).add(at),
                        count,
                    )
                };
            }
        }
    });
}

/// V rows of one channel of one image: rows[xi * n + first_tile + tile] = (B^T d B)[xi] with
/// B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
fn transform_input_plane(k: &Winograd, plane: &[f32], rows: &mut [f32], n: usize, first: usize) {
    let (h, w) = (k.in_shape[0] as isize, k.in_shape[1] as isize);
    let (ph, pw) = (k.pad[0] as isize, k.pad[1] as isize);
    let (th, tw) = tiles(k);
    let at = |y: isize, x: isize| -> f32 {
        if y >= 0 && y < h && x >= 0 && x < w {
            plane[(y * w + x) as usize]
        } else {
            0.0
        }
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for ty in 0..th {
            for tx in (0..tw).step_by(16) {
                let count = (tw - tx).min(16);
                let tile = first + ty * tw + tx;
                let corner = (2 * ty as isize - ph, 2 * tx as isize - pw);
                // SAFETY: avx512f is present; x86::input_tiles checks its bounds.
                unsafe { x86::input_tiles(plane, (h, w), corner, rows, n, tile, count) };
            }
        }
        return;
    }
    for ty in 0..th {
        let y0 = 2 * ty as isize - ph;
        let rows_inside = y0 >= 0 && y0 + 4 <= h;
        for tx in 0..tw {
            let x0 = 2 * tx as isize - pw;
            let mut d = [[0f32; 4]; 4];
            if rows_inside && x0 >= 0 && x0 + 4 <= w {
                for (r, dr) in d.iter_mut().enumerate() {
                    let start = ((y0 + r as isize) * w + x0) as usize;
                    dr.copy_from_slice(&plane[start..start + 4]);
                }
            } else {
                for (r, dr) in d.iter_mut().enumerate() {
                    for (c, v) in dr.iter_mut().enumerate() {
                        *v = at(y0 + r as isize, x0 + c as isize);
                    }
                }
            }
            // t = B^T d, then V = t B.
            let mut t = [[0f32; 4]; 4];
            for c in 0..4 {
                t[0][c] = d[0][c] - d[2][c];
                t[1][c] = d[1][c] + d[2][c];
                t[2][c] = d[2][c] - d[1][c];
                t[3][c] = d[1][c] - d[3][c];
            }
            let tile = first + ty * tw + tx;
            for (r, tr) in t.iter().enumerate() {
                let vals = [tr[0] - tr[2], tr[1] + tr[2], tr[2] - tr[1], tr[1] - tr[3]];
                for (c, &value) in vals.iter().enumerate() {
                    rows[(r * 4 + c) * n + tile] = value;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::TileRun;

    /// The even and the odd elements of the 32 floats (a, b): a stride-2 row split in two.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn split(a: __m512, b: __m512) -> [__m512; 2] {
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        [
            _mm512_permutex2var_ps(a, evens, b),
            _mm512_permutex2var_ps(a, odds, b),
        ]
    }

    /// Stores v[r][c] as V / E row r * 4 + c of `count` tiles from tile `tile` (rows of `n`).
    #[target_feature(enable = "avx512f")]
    fn store_rows(rows: &mut [f32], n: usize, tile: usize, count: usize, v: [[__m512; 4]; 4]) {
        assert!(
            15 * n + tile + count <= rows.len(),
            "winograd: rows too short"
        );
        let mask = ((1u32 << count) - 1) as __mmask16;
        let out = rows.as_mut_ptr();
        for (r, vr) in v.into_iter().enumerate() {
            for (c, x) in vr.into_iter().enumerate() {
                // SAFETY: within rows under the mask (checked above).
                unsafe { _mm512_mask_storeu_ps(out.add((r * 4 + c) * n + tile), mask, x) };
            }
        }
    }

    /// transform_input_plane's V of `count` (at most 16) consecutive tiles of a row of tiles:
    /// tile j reads the 4x4 window at (y0 + r, x0 + 2 j + c) of the h x w plane, zero outside
    /// it (masked loads). Lane j of each vector is tile j, so every V row takes one store, and
    /// each value is the scalar path's sum, bit for bit.
    #[target_feature(enable = "avx512f")]
    pub(super) fn input_tiles(
        plane: &[f32],
        (h, w): (isize, isize),
        (y0, x0): (isize, isize),
        rows: &mut [f32],
        n: usize,
        tile: usize,
        count: usize,
    ) {
        assert!((1..=16).contains(&count), "input_tiles: 1 to 16 tiles");
        assert!(
            h * w <= plane.len() as isize,
            "input_tiles: plane too short"
        );
        assert!(
            15 * n + tile + count <= rows.len(),
            "input_tiles: rows too short"
        );
        // The tiles read columns x0 .. x0 + 2 count + 2 of each row.
        let end = (x0 + 2 * count as isize + 2).min(w);
        // Lanes of a load from column x of a row that lie inside the plane and the run.
        // Macros, not closures: closures here were not always inlined (a call per load).
        macro_rules! load {
            ($y:expr, $x:expr) => {{
                let (y, x): (isize, isize) = ($y, $x);
                let (first, last) = ((-x).clamp(0, 16), (end - x).clamp(0, 16));
                let mask = (((1u32 << last) - 1) & !((1u32 << first) - 1)) as __mmask16;
                if y < 0 || y >= h || mask == 0 {
                    _mm512_setzero_ps()
                } else {
                    // SAFETY: the mask keeps the lanes inside row y of the plane (checked
                    // above); the others are not accessed.
                    unsafe {
                        _mm512_maskz_loadu_ps(mask, plane.as_ptr().wrapping_offset(y * w + x))
                    }
                }
            }};
        }
        let mut d = [[_mm512_setzero_ps(); 4]; 4];
        for (r, dr) in d.iter_mut().enumerate() {
            let y = y0 + r as isize;
            let (a, b) = (load!(y, x0), load!(y, x0 + 16));
            let (c, e) = (load!(y, x0 + 2), load!(y, x0 + 18));
            let ([even0, odd0], [even2, odd2]) = (split(a, b), split(c, e));
            *dr = [even0, odd0, even2, odd2];
        }
        let t: [[__m512; 4]; 4] = [
            std::array::from_fn(|c| _mm512_sub_ps(d[0][c], d[2][c])),
            std::array::from_fn(|c| _mm512_add_ps(d[1][c], d[2][c])),
            std::array::from_fn(|c| _mm512_sub_ps(d[2][c], d[1][c])),
            std::array::from_fn(|c| _mm512_sub_ps(d[1][c], d[3][c])),
        ];
        let v = t.map(|tr| {
            [
                _mm512_sub_ps(tr[0], tr[2]),
                _mm512_add_ps(tr[1], tr[2]),
                _mm512_sub_ps(tr[2], tr[1]),
                _mm512_sub_ps(tr[1], tr[3]),
            ]
        });
        store_rows(rows, n, tile, count, v);
    }

    /// transform_grad_plane's E rows of `count` (at most 16) consecutive tiles: tile j reads
    /// the output gradient at `at + 2 j + dx` and (when `second`) one plane row below, the
    /// first `width` elements of each row (zero past them). Lane j of each vector is tile j,
    /// and each value is the scalar path's, bit for bit.
    #[target_feature(enable = "avx512f")]
    pub(super) fn grad_tiles(plane: &[f32], ow: usize, rows: &mut [f32], n: usize, run: TileRun) {
        let TileRun { at, second, .. } = run;
        run.check(rows.len(), n, plane.len(), ow);
        let lanes = |from: usize| run.lanes(from);
        // SAFETY: the loads stay below the checked end under their masks.
        let load = |p: usize, from: usize| match lanes(from) {
            0 => _mm512_setzero_ps(),
            mask => unsafe { _mm512_maskz_loadu_ps(mask, plane.as_ptr().add(p + from)) },
        };
        let e: [[__m512; 2]; 2] = std::array::from_fn(|dy| {
            if dy == 1 && !second {
                return [_mm512_setzero_ps(); 2];
            }
            let p = at + dy * ow;
            let (a, b) = (load(p, 0), load(p, 16));
            split(a, b)
        });
        // -x as the scalar path negates: the sign bit flipped (also for zeros).
        let sign = _mm512_set1_epi32(i32::MIN);
        let neg = |x: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign));
        let t: [[__m512; 2]; 4] = [
            e[0],
            std::array::from_fn(|c| _mm512_add_ps(e[0][c], e[1][c])),
            std::array::from_fn(|c| _mm512_sub_ps(e[0][c], e[1][c])),
            std::array::from_fn(|c| neg(e[1][c])),
        ];
        let v = t.map(|tr| {
            [
                tr[0],
                _mm512_add_ps(tr[0], tr[1]),
                _mm512_sub_ps(tr[0], tr[1]),
                neg(tr[1]),
            ]
        });
        store_rows(rows, n, run.tile, run.count, v);
    }

    /// transform_output_plane's 2x2 outputs of `count` (at most 16) consecutive tiles from
    /// tile `tile` of the P rows: the first output row's `width` elements from plane element
    /// `at`, the second's (when `second`) one plane row below. Lane j of each vector is tile j,
    /// and each value is the scalar path's sum, bit for bit.
    #[target_feature(enable = "avx512f")]
    pub(super) fn output_tiles(rows: &[f32], n: usize, plane: &mut [f32], ow: usize, run: TileRun) {
        let TileRun {
            tile,
            count,
            at,
            second,
            ..
        } = run;
        run.check(rows.len(), n, plane.len(), ow);
        let tiles = ((1u32 << count) - 1) as __mmask16;
        // SAFETY: the loads stay below 15 n + tile + count under their mask (checked above).
        let m = |r: usize, c: usize| unsafe {
            _mm512_maskz_loadu_ps(tiles, rows.as_ptr().add((r * 4 + c) * n + tile))
        };
        let m: [[__m512; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|c| m(r, c)));
        let r: [[__m512; 4]; 2] = [
            std::array::from_fn(|c| _mm512_add_ps(_mm512_add_ps(m[0][c], m[1][c]), m[2][c])),
            std::array::from_fn(|c| _mm512_sub_ps(_mm512_sub_ps(m[1][c], m[2][c]), m[3][c])),
        ];
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let lanes = |from: usize| run.lanes(from);
        let out = plane.as_mut_ptr();
        for (dy, rr) in r.iter().enumerate().take(if second { 2 } else { 1 }) {
            let even = _mm512_add_ps(_mm512_add_ps(rr[0], rr[1]), rr[2]);
            let odd = _mm512_sub_ps(_mm512_sub_ps(rr[1], rr[2]), rr[3]);
            let row = at + dy * ow;
            // SAFETY: the stores stay inside the run (checked above) under their masks.
            unsafe {
                _mm512_mask_storeu_ps(
                    out.add(row),
                    lanes(0),
                    _mm512_permutex2var_ps(even, low, odd),
                );
                if run.width > 16 {
                    _mm512_mask_storeu_ps(
                        out.add(row + 16),
                        lanes(16),
                        _mm512_permutex2var_ps(even, high, odd),
                    );
                }
            }
        }
    }
}

/// One output plane from the P rows of its channel: each 2x2 tile is A^T M A with
/// A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], clipped to the plane.
fn transform_output_plane(k: &Winograd, rows: &[f32], n: usize, first: usize, plane: &mut [f32]) {
    let (oh, ow) = (k.out_shape[0], k.out_shape[1]);
    let (th, tw) = tiles(k);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        for run in output_tile_runs(k, first) {
            // SAFETY: avx512f is present; x86::output_tiles checks its bounds.
            unsafe { x86::output_tiles(rows, n, plane, ow, run) };
        }
        return;
    }
    for ty in 0..th {
        for tx in 0..tw {
            let tile = first + ty * tw + tx;
            let m = |r: usize, c: usize| rows[(r * 4 + c) * n + tile];
            // r = A^T M (2x4), then Y = r A (2x2).
            let r: [[f32; 4]; 2] = [
                std::array::from_fn(|c| m(0, c) + m(1, c) + m(2, c)),
                std::array::from_fn(|c| m(1, c) - m(2, c) - m(3, c)),
            ];
            for (dy, rr) in r.iter().enumerate() {
                let y = 2 * ty + dy;
                if y >= oh {
                    break;
                }
                let x = 2 * tx;
                plane[y * ow + x] = rr[0] + rr[1] + rr[2];
                if x + 1 < ow {
                    plane[y * ow + x + 1] = rr[1] - rr[2] - rr[3];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TensorId;
    use crate::engine::View;
    use crate::rng::Rng;

    /// (budget, cores) pairs that give every kind of plan for `k`: one chunk shared by the cores,
    /// several chunks shared, whole chunks per core (of one image, of two, more cores than
    /// chunks of two).
    fn plans(k: &Winograd) -> [(usize, usize); 6] {
        let (th, tw) = tiles(k);
        let per_image = 16 * (k.in_channels + k.out_channels) * th * tw;
        [
            (BUDGET, 1),
            (BUDGET, 2),
            (1, 1),
            (1, 2),
            (2 * per_image, 2),
            (2 * per_image, 3),
        ]
    }

    /// Direct convolution (or its adjoint) by the definition.
    fn direct(k: &Winograd, input: &[f32], weight: &[f32]) -> Vec<f32> {
        let (ci, co, g) = (k.in_channels, k.out_channels, k.groups);
        let (cig, cog) = (ci / g, co / g);
        let ([h, w], [oh, ow]) = (k.in_shape, k.out_shape);
        let mut out = vec![0f32; k.batch * co * oh * ow];
        for b in 0..k.batch {
            for o in 0..co {
                let grp = o / cog;
                for y in 0..oh {
                    for x in 0..ow {
                        let mut acc = 0f64;
                        for i in 0..cig {
                            let c = grp * cig + i;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (
                                        (y + ky) as isize - k.pad[0] as isize,
                                        (x + kx) as isize - k.pad[1] as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let wv = if k.adjoint {
                                        weight[((grp * cig + i) * cog + o % cog) * 9 + 8
                                            - (ky * 3 + kx)]
                                    } else {
                                        weight[(o * cig + i) * 9 + ky * 3 + kx]
                                    };
                                    let xv =
                                        input[((b * ci + c) * h + iy as usize) * w + ix as usize];
                                    acc += wv as f64 * xv as f64;
                                }
                            }
                        }
                        out[((b * co + o) * oh + y) * ow + x] = acc as f32;
                    }
                }
            }
        }
        out
    }

    /// The weight gradient by the definition: dK[o][i][ky][kx] = sum of dy[o](y, x) * x[i](y + ky - pad, x + kx - pad).
    fn direct_weight_grad(k: &Winograd, input: &[f32], dy: &[f32]) -> Vec<f32> {
        let (ci, co, g) = (k.in_channels, k.out_channels, k.groups);
        let (cig, cog) = (ci / g, co / g);
        let ([h, w], [oh, ow]) = (k.in_shape, k.out_shape);
        let mut dk = vec![0f32; co * cig * 9];
        for o in 0..co {
            for i in 0..cig {
                let c = (o / cog) * cig + i;
                for t in 0..9 {
                    let (ky, kx) = (t / 3, t % 3);
                    let mut acc = 0f64;
                    for b in 0..k.batch {
                        for y in 0..oh {
                            for x in 0..ow {
                                let (iy, ix) = (
                                    (y + ky) as isize - k.pad[0] as isize,
                                    (x + kx) as isize - k.pad[1] as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                acc += dy[((b * co + o) * oh + y) * ow + x] as f64
                                    * input[((b * ci + c) * h + iy as usize) * w + ix as usize]
                                        as f64;
                            }
                        }
                    }
                    dk[(o * cig + i) * 9 + t] = acc as f32;
                }
            }
        }
        dk
    }

    /// The geometry of test case `case` (groups, channels, sizes and pads varying with it), or
    /// none when the padded image is smaller than the kernel.
    fn random_geometry(case: usize, batch: usize, adjoint: bool) -> Option<Winograd> {
        let view = View::new(TensorId(0), 0, 0);
        let groups = 1 + case % 3;
        let (ci, co) = (groups * (1 + case % 4), groups * (1 + (case / 3) % 5));
        // Every fifth case has rows of 16 and more tiles inside the plane (the vector path).
        let w = if case % 5 == 4 {
            33 + (case * 7) % 40
        } else {
            1 + (case * 7) % 11
        };
        let h = 1 + case % 9;
        let pad = [case % 3, (case / 2) % 3];
        (h + 2 * pad[0] >= 3 && w + 2 * pad[1] >= 3).then(|| Winograd {
            input: view,
            weight: view,
            output: view,
            batch,
            in_channels: ci,
            out_channels: co,
            groups,
            in_shape: [h, w],
            out_shape: [h + 2 * pad[0] - 2, w + 2 * pad[1] - 2],
            pad,
            adjoint,
        })
    }

    #[test]
    fn weight_grad_matches_definition() {
        let mut rng = Rng::new(11);
        for case in 0..40 {
            let Some(k) = random_geometry(case, 1 + case % 5, false) else {
                continue;
            };
            let (ci, co, groups) = (k.in_channels, k.out_channels, k.groups);
            let [h, w] = k.in_shape;
            let [oh, ow] = k.out_shape;
            let input: Vec<f32> = (0..k.batch * ci * h * w)
                .map(|_| rng.gaussian() as f32)
                .collect();
            let dy: Vec<f32> = (0..k.batch * co * oh * ow)
                .map(|_| rng.gaussian() as f32)
                .collect();
            let start: Vec<f32> = (0..co * ci / groups * 9)
                .map(|_| rng.gaussian() as f32)
                .collect();
            let want = direct_weight_grad(&k, &input, &dy);
            // A budget of one image per chunk also exercises the accumulation over chunks, and
            // more cores the chunks per core.
            for (budget, cores) in plans(&k) {
                let mut got = start.clone();
                weight_grad_planned(&k, &input, &dy, &mut got, budget, cores);
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    let b = b + start[j];
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "case {case} budget {budget} cores {cores} {k:?}: element {j}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_direct_convolution() {
        let mut rng = Rng::new(7);
        for case in 0..40 {
            let Some(k) = random_geometry(case, 1 + case % 5, case % 2 == 1) else {
                continue;
            };
            let (ci, co, groups) = (k.in_channels, k.out_channels, k.groups);
            let [h, w] = k.in_shape;
            let input: Vec<f32> = (0..k.batch * ci * h * w)
                .map(|_| rng.gaussian() as f32)
                .collect();
            let weight: Vec<f32> = (0..co * ci / groups * 9)
                .map(|_| rng.gaussian() as f32)
                .collect();
            let want = direct(&k, &input, &weight);
            for (budget, cores) in plans(&k) {
                let mut got = vec![f32::NAN; want.len()];
                forward_planned(&k, &input, &weight, &mut got, None, budget, cores);
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "case {case} budget {budget} cores {cores} {k:?}: element {j}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
