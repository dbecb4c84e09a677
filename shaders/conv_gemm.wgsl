// Whole convolutions as GEMMs whose operands are packed straight from the images and the
// weights (implicit im2col, no column buffer; host side src/engine/gpu/conv_gemm.rs). The packed
// layouts are the GEMM's (blas.wgsl), which the micro-kernels read from linear textures:
//   A panels: texel (panel p, k, t) holds rows 4t..4t+3 of panel p of op(A) at k (w4 texels per k)
//   B panels: texel (panel q, k, t) holds columns 4t..4t+3 of panel q of op(B) at k (16 per k)
// Every packer reads a linear texture copy of its source (binding 1), an auxiliary texture
// (binding 2: the tap table of cg_taps, or the bias) and writes panels (binding 3), which the host then copies
// into the texture a micro-kernel reads. Elements outside the operands are written as 0.
//
// Image addressing, "phase layout": with strides sh, sw > 1 the images are first rearranged
// (cg_phase) so that element (c, ih, iw), ih = i * sh + rh, iw = j * sw + rw, sits at
//   c * cstride + (rh * sw + rw) * pplane + i * wr + j,
// which puts the elements a kernel tap reads for consecutive output positions of one output row
// next to each other whatever the stride; with stride 1 this is the image itself (wr = W,
// pplane = cstride = H * W). A run of 4 such elements is then read as 2 texels.
//
// Lavapipe runs both sides of every branch, so the packers have no data-dependent paths: the
// way runs are read is a pipeline constant (CG_MODE):
//   0 linear: wr == OW (stride 1 along w and "same" width, e.g. 3x3 pad 1): consecutive output
//     positions are consecutive in memory even across output rows; 16 columns = 5 texels;
//   1 two runs: OW >= 16 (cg_pack_cols) or >= 4 (cg_pack_colt): a unit of columns wraps to the
//     next output row at most once; the elements after the wrap come from a second run;
//   2 per element: one fetch per element (any geometry).
// CG_STRIDED: a stride above 1 (the phase layout's offsets need divisions).
//
// Loops run at most 5 iterations (lavapipe silently ends an invocation's loops after 65535).
//
// Image geometry words shared by cg_pack_cols and cg_pack_colt:
//   5 source element of image 0 (phase layout), 6 image stride, 7 cstride, 8 pplane, 9 wr,
//   10 OW (output positions per output row), 11 H, 12 W, 13 sh, 14 sw, 15 ph (i32), 16 pw (i32),
//   17 dh, 18 dw, 19 KW, 20 kprod, 21 destination entry stride (texels), 22 1 / kprod (f32),
//   23 1 / KW (f32), 24 1 / OW (f32), 25 KH, 26 S (positions per image), 27 1 / S' (f32),
//   28 1 / sh (f32), 29 1 / sw (f32)

@group(0) @binding(1) var cg_src: texture_2d<f32>;
@group(0) @binding(2) var cg_aux: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> cg_dst: array<vec4<f32>>;

override CG_MODE: u32 = 2u;
override CG_STRIDED: bool = true;
// cg_pack_kc: one fetch per element (else runs of 4 k).
override CG_KC_ELEM: bool = true;

// n / d given r = 1 / d (computed by the host), exact below 2^24.
fn cg_div(n: u32, d: u32, r: f32) -> u32 {
    var q = u32(f32(n) * r);
    q = select(q, q - 1u, q * d > n);
    q = select(q, q + 1u, (q + 1u) * d <= n);
    return q;
}

// floor(a / b) for b > 0 given r = 1 / b, |a| well below 2^24.
fn cg_floor_div(a: i32, b: i32, r: f32) -> i32 {
    var q = i32(floor(f32(a) * r));
    q = select(q, q - 1, q * b > a);
    q = select(q, q + 1, (q + 1) * b <= a);
    return q;
}

fn cg_texel(t: i32) -> vec4<f32> {
    return textureLoad(cg_src, tex_coord(u32(max(t, 0))), 0);
}

fn cg_pick(v: vec4<f32>, c: u32) -> f32 {
    return select(select(v.x, v.y, c == 1u), select(v.z, v.w, c == 3u), c >= 2u);
}

// Source element e (any value for e < 0; callers mask elements outside the images).
fn cg_elem(e: i32) -> f32 {
    return cg_pick(cg_texel(e >> 2u), u32(e) & 3u);
}

// Floats s..s+3 of the 8 floats (a, b), s in 0..3.
fn cg_shift4(a: vec4<f32>, b: vec4<f32>, s: u32) -> vec4<f32> {
    let lo = select(a, vec4<f32>(a.y, a.z, a.w, b.x), s == 1u);
    let hi = select(vec4<f32>(a.z, a.w, b.x, b.y), vec4<f32>(a.w, b.x, b.y, b.z), s == 3u);
    return select(lo, hi, s >= 2u);
}

// Source elements e..e+3 (2 texel fetches).
fn cg_run(e: i32) -> vec4<f32> {
    let t = e >> 2u;
    return cg_shift4(cg_texel(t), cg_texel(t + 1), u32(e) & 3u);
}

// A kernel tap (channel cc, kh, kw): the phase-layout offset of what it reads at output position
// (0, 0) (relative to the image's first element), and its row / column offsets
// uh = kh * dh - ph, uw = kw * dw - pw (input row = oh * sh + uh, column = ow * sw + uw).
struct CgTap {
    base: i32,
    uh: i32,
    uw: i32,
}

// Tap t = (kh, kw) of channel cc, from the tap table (the auxiliary texture, see cg_taps).
fn cg_tap(cc: u32, t: u32) -> CgTap {
    let v = vec3<i32>(textureLoad(cg_aux, tex_coord(t), 0).xyz);
    return CgTap(i32(cc * pu(7u)) + v.x, v.y, v.z);
}

// The tap table: texel t < kprod holds (base, uh, uw) of tap t = (t / KW, t % KW) of channel 0,
// as floats. words: the image geometry (5..29). Grid: x = ceil(kprod / 64).
@compute @workgroup_size(64)
fn cg_taps(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x * 64u + lid;
    if (t >= pu(20u)) { return; }
    let kh = t / pu(19u);
    let kw = t - kh * pu(19u);
    let uh = i32(kh * pu(17u)) - pi(15u);
    let uw = i32(kw * pu(18u)) - pi(16u);
    var base = uh * i32(pu(9u)) + uw;
    if (CG_STRIDED) {
        let sh = i32(pu(13u));
        let sw = i32(pu(14u));
        let qh = cg_floor_div(uh, sh, pf(28u));
        let qw = cg_floor_div(uw, sw, pf(29u));
        let phase = (uh - qh * sh) * sw + uw - qw * sw;
        base = phase * i32(pu(8u)) + qh * i32(pu(9u)) + qw;
    }
    cg_dst[t] = vec4<f32>(f32(base), f32(uh), f32(uw), 0.0);
}

// Whether the input row / column of output row oh / column ow under tap t is inside the image.
fn cg_row_in(t: CgTap, oh: u32) -> bool {
    let ih = i32(oh * pu(13u)) + t.uh;
    return ih >= 0 && ih < i32(pu(11u));
}

fn cg_col_in(t: CgTap, ow: u32) -> bool {
    let iw = i32(ow * pu(14u)) + t.uw;
    return iw >= 0 && iw < i32(pu(12u));
}

// Value under tap t (image at `img`, phase layout) at output position (oh, ow).
fn cg_at(img: i32, t: CgTap, oh: u32, ow: u32) -> f32 {
    let ok = cg_row_in(t, oh) && cg_col_in(t, ow);
    return select(0.0, cg_elem(img + t.base + i32(oh * pu(9u) + ow)), ok);
}

// Output positions (oh, ow) .. (oh, ow + 3), wrapped to the next output row past OW (OW >= 4:
// at most one wrap).
struct CgPos4 {
    oh: vec4<u32>,
    ow: vec4<u32>,
}

fn cg_pos4(oh: u32, ow: u32) -> CgPos4 {
    let own = vec4<u32>(pu(10u));
    let w = vec4<u32>(ow) + vec4<u32>(0u, 1u, 2u, 3u);
    let wrap = w >= own;
    return CgPos4(vec4<u32>(oh) + select(vec4<u32>(0u), vec4<u32>(1u), wrap),
                  select(w, w - own, wrap));
}

// Which of the positions p read inside the image under tap t.
fn cg_in4(t: CgTap, p: CgPos4) -> vec4<bool> {
    let ih = vec4<i32>(p.oh * pu(13u)) + vec4<i32>(t.uh);
    let iw = vec4<i32>(p.ow * pu(14u)) + vec4<i32>(t.uw);
    return (ih >= vec4<i32>(0)) & (ih < vec4<i32>(pi(11u))) & (iw >= vec4<i32>(0)) &
           (iw < vec4<i32>(pi(12u)));
}

const CG_IOTA = vec4<u32>(0u, 1u, 2u, 3u);

// B of the forward product: op(B) = the image's im2col columns, rows k = (c, kh, kw) of the
// block [k0, k0 + klen), columns = output positions. Rows from kd on are 0, except row `ones`
// (all 1: the bias, whose weights are A's column `ones`).
// words: 0 n (columns), 1 k0, 2 klen, 3 kd, 4 ones (or 0xffffffff), 5.. image geometry.
// Grid: x = ceil(klen / 16), y = panel, z = image. Invocation: k row 8 (j / 32) + j % 8, unit of
// 16 columns (4 texels) (j / 8) % 4 of the panel; the 8 lanes of a SIMD group share the columns.
@compute @workgroup_size(64)
fn cg_pack_cols(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * 64u + lid;
    let kk = (j >> 5u) * 8u + (j & 7u);
    let unit = (j >> 3u) & 3u;
    let klen = pu(2u);
    if (kk >= klen) { return; }
    let k = pu(1u) + kk;
    let kprod = pu(20u);
    let cc = cg_div(k, kprod, pf(22u));
    let tap = cg_tap(cc, k - cc * kprod);
    let real = k < pu(3u);
    let ones = vec4<bool>(k == pu(4u));
    let img = i32(pu(5u) + wid.z * pu(6u));
    let n = vec4<u32>(pu(0u));
    let own = pu(10u);
    let col0 = wid.y * 64u + unit * 16u;
    var oh = cg_div(col0, own, pf(24u));
    var ow = col0 - oh * own;
    let dst = wid.z * pu(21u) + (wid.y * klen + kk) * 16u + unit * 4u;
    if (CG_MODE == 2u) {
        var col = col0;
        for (var t = 0u; t < 4u; t++) {
            var v = vec4<f32>(0.0);
            for (var i = 0u; i < 4u; i++) {
                v[i] = select(0.0, cg_at(img, tap, oh, ow), real && col < pu(0u));
                col += 1u;
                ow += 1u;
                let wrap = ow == own;
                ow = select(ow, 0u, wrap);
                oh = select(oh, oh + 1u, wrap);
            }
            let c = vec4<u32>(col - 4u) + CG_IOTA;
            cg_dst[dst + t] = select(v, vec4<f32>(1.0), ones & (c < n));
        }
        return;
    }
    let oh0 = oh;
    let e1 = img + tap.base + i32(oh * pu(9u) + ow);
    let s1 = u32(e1) & 3u;
    var f: array<vec4<f32>, 5>;
    for (var i = 0; i < 5; i++) {
        f[i] = cg_texel((e1 >> 2u) + i);
    }
    // After a wrap: one output row further (wr) and OW positions back.
    let e2 = e1 + i32(pu(9u)) - i32(own);
    let s2 = u32(e2) & 3u;
    var g: array<vec4<f32>, 5>;
    if (CG_MODE == 1u) {
        for (var i = 0; i < 5; i++) {
            g[i] = cg_texel((e2 >> 2u) + i);
        }
    }
    for (var t = 0u; t < 4u; t++) {
        let p = cg_pos4(oh, ow);
        let c = vec4<u32>(col0 + 4u * t) + CG_IOTA;
        var v = cg_shift4(f[t], f[t + 1u], s1);
        if (CG_MODE == 1u) {
            v = select(v, cg_shift4(g[t], g[t + 1u], s2), p.oh != vec4<u32>(oh0));
        }
        v = select(vec4<f32>(0.0), v, cg_in4(tap, p) & (c < n) & vec4<bool>(real));
        cg_dst[dst + t] = select(v, vec4<f32>(1.0), ones & (c < n));
        ow += 4u;
        let wrap = ow >= own;
        ow = select(ow, ow - own, wrap);
        oh = select(oh, oh + 1u, wrap);
    }
}

// B of the weight gradient: op(B) = the transposed im2col columns, rows k = positions of the
// images, columns x = (c, kh, kw) < kd, over the block [k0, k0 + klen) (k counted from the
// first image of the source window; k0 a multiple of 8). The k space has 8-aligned runs:
//   CG_MODE 0 (linear, wr == OW): k = image * S' + position, S' = S rounded up to 8;
//   CG_MODE 1: k = (image * OH + oh) * OW' + ow, OW' = OW rounded up to 8;
// rows of positions past S or OW are 0.
// words: 0 kd, 1 k0, 2 klen, 3 OW', 4 k per image (S' or OH * OW'), 5.. image geometry,
//        30 1 / (k per image), 31 1 / OW' (f32)
// Grid: x = ceil(klen / 32), y = panel, z = 1. Invocation: texel column j % 16 of the panel (4 x)
// at rows 8 (j / 16) .. + 7, read as runs of 8 positions (3 texels) and transposed; the 8 lanes
// of a SIMD group share the positions.
@compute @workgroup_size(64)
fn cg_pack_colt(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * 64u + lid;
    let tc = j & 15u;
    let kq = (j >> 4u) * 8u;
    let klen = pu(2u);
    if (kq >= klen) { return; }
    let per = pu(4u);
    let own = pu(10u);
    let k = pu(1u) + kq;
    let b = cg_div(k, per, pf(30u));
    let r = k - b * per;
    let img = i32(pu(5u) + b * pu(6u));
    let kl0 = vec4<u32>(kq) + CG_IOTA;
    let kl1 = kl0 + vec4<u32>(4u);
    var oh0: vec4<u32>;
    var oh1: vec4<u32>;
    var ow0: vec4<u32>;
    var ow1: vec4<u32>;
    var live0: vec4<bool>;
    var live1: vec4<bool>;
    var off: u32;
    if (CG_MODE == 0u) {
        // Positions r..r+7 (consecutive in the source whatever the rows).
        let p0 = vec4<u32>(r) + CG_IOTA;
        let p1 = p0 + vec4<u32>(4u);
        oh0 = vec4<u32>(vec4<f32>(p0) * pf(24u));
        oh0 = select(oh0, oh0 - vec4<u32>(1u), oh0 * own > p0);
        oh0 = select(oh0, oh0 + vec4<u32>(1u), (oh0 + vec4<u32>(1u)) * own <= p0);
        oh1 = vec4<u32>(vec4<f32>(p1) * pf(24u));
        oh1 = select(oh1, oh1 - vec4<u32>(1u), oh1 * own > p1);
        oh1 = select(oh1, oh1 + vec4<u32>(1u), (oh1 + vec4<u32>(1u)) * own <= p1);
        ow0 = p0 - oh0 * own;
        ow1 = p1 - oh1 * own;
        let sn = vec4<u32>(pu(26u));
        live0 = p0 < sn;
        live1 = p1 < sn;
        off = r;
    } else {
        // One output row: (oh, ow..ow+7).
        let owp = pu(3u);
        let oh = cg_div(r, owp, pf(31u));
        let ow = r - oh * owp;
        oh0 = vec4<u32>(oh);
        oh1 = oh0;
        ow0 = vec4<u32>(ow) + CG_IOTA;
        ow1 = ow0 + vec4<u32>(4u);
        live0 = ow0 < vec4<u32>(own);
        live1 = ow1 < vec4<u32>(own);
        off = oh * pu(9u) + ow;
    }
    live0 = live0 & (kl0 < vec4<u32>(klen));
    live1 = live1 & (kl1 < vec4<u32>(klen));
    let ohs0 = vec4<i32>(oh0 * pu(13u));
    let ohs1 = vec4<i32>(oh1 * pu(13u));
    let ows0 = vec4<i32>(ow0 * pu(14u));
    let ows1 = vec4<i32>(ow1 * pu(14u));
    let hn = vec4<u32>(pu(11u));
    let wn = vec4<u32>(pu(12u));
    let kprod = pu(20u);
    let x0 = wid.y * 64u + tc * 4u;
    var cc = cg_div(x0, kprod, pf(22u));
    var tt = x0 - cc * kprod;
    let kd = pu(0u);
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        let tap = cg_tap(cc, tt);
        let e = img + tap.base + i32(off);
        let t = e >> 2u;
        let s = u32(e) & 3u;
        let f0 = cg_texel(t);
        let f1 = cg_texel(t + 1);
        let f2 = cg_texel(t + 2);
        let uh = vec4<i32>(tap.uh);
        let uw = vec4<i32>(tap.uw);
        let xok = vec4<bool>(x0 + i < kd);
        let m0 = (vec4<u32>(ohs0 + uh) < hn) & (vec4<u32>(ows0 + uw) < wn) & live0 & xok;
        let m1 = (vec4<u32>(ohs1 + uh) < hn) & (vec4<u32>(ows1 + uw) < wn) & live1 & xok;
        lo[i] = select(vec4<f32>(0.0), cg_shift4(f0, f1, s), m0);
        hi[i] = select(vec4<f32>(0.0), cg_shift4(f1, f2, s), m1);
        tt += 1u;
        let wrap = tt == kprod;
        tt = select(tt, 0u, wrap);
        cc = select(cc, cc + 1u, wrap);
    }
    let dst = (wid.y * klen + kq) * 16u + tc;
    cg_dst[dst] = vec4<f32>(lo[0].x, lo[1].x, lo[2].x, lo[3].x);
    if (kq + 1u < klen) { cg_dst[dst + 16u] = vec4<f32>(lo[0].y, lo[1].y, lo[2].y, lo[3].y); }
    if (kq + 2u < klen) { cg_dst[dst + 32u] = vec4<f32>(lo[0].z, lo[1].z, lo[2].z, lo[3].z); }
    if (kq + 3u < klen) { cg_dst[dst + 48u] = vec4<f32>(lo[0].w, lo[1].w, lo[2].w, lo[3].w); }
    if (kq + 4u < klen) { cg_dst[dst + 64u] = vec4<f32>(hi[0].x, hi[1].x, hi[2].x, hi[3].x); }
    if (kq + 5u < klen) { cg_dst[dst + 80u] = vec4<f32>(hi[0].y, hi[1].y, hi[2].y, hi[3].y); }
    if (kq + 6u < klen) { cg_dst[dst + 96u] = vec4<f32>(hi[0].z, hi[1].z, hi[2].z, hi[3].z); }
    if (kq + 7u < klen) { cg_dst[dst + 112u] = vec4<f32>(hi[0].w, hi[1].w, hi[2].w, hi[3].w); }
}

// A operands (weights, flipped transposed weights, output gradients): element (x, k) with
// k = k1 * D + k2, k1 = k0' * D1 + k1' sits at
// src + x * sx + k0' * s0 + k1' * s1 + (flip ? D - 1 - k2 : k2); it is 0 unless x < m, k < kreal
// and k2 < dvalid. Entry z (a group) reads from src + z * src stride.
// Runs (CG_KC_ELEM false) read 4 k at a time and need no flip and no group of 4 k (from k0, a
// multiple of 4 unless D exceeds every k) across a multiple of D.
// words: 0 m, 1 k0, 2 klen, 3 kreal, 4 src, 5 sx, 6 D, 7 s1, 8 flip, 9 w4 (texels per k),
//        10 dvalid, 11 src entry stride, 12 dst entry stride (texels), 13 1 / w4 (f32),
//        14 1 / D (f32), 15 D1, 16 s0, 17 1 / D1 (f32)
// Grid: x = ceil(ceil(klen / 4) * w4 / 64), y = panel, z = entry. Invocation: texel j % w4 at
// rows 4 (j / w4) .. + 3 (runs of 4 k, transposed).
// src + k0' * s0 + k1' * s1 for k1 = k0' * D1 + k1'.
fn cg_a_outer(k1: u32) -> u32 {
    let d1 = pu(15u);
    let q = cg_div(k1, d1, pf(17u));
    return q * pu(16u) + (k1 - q * d1) * pu(7u);
}

fn cg_a_elem(src: u32, x: u32, k: u32) -> f32 {
    let d = pu(6u);
    let k1 = cg_div(k, d, pf(14u));
    let k2 = k - k1 * d;
    let kk = select(k2, d - 1u - k2, pu(8u) != 0u);
    let ok = x < pu(0u) && k < pu(3u) && k2 < pu(10u);
    return select(0.0, cg_elem(i32(src + x * pu(5u) + cg_a_outer(k1) + kk)), ok);
}

@compute @workgroup_size(64)
fn cg_pack_kc(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * 64u + lid;
    let w4 = pu(9u);
    let q = cg_div(j, w4, pf(13u));
    let xt = j - q * w4;
    let kq = q * 4u;
    let klen = pu(2u);
    if (kq >= klen) { return; }
    let k = pu(1u) + kq;
    let x0 = (wid.y * w4 + xt) * 4u;
    let src = pu(4u) + wid.z * pu(11u);
    var r: array<vec4<f32>, 4>;
    if (CG_KC_ELEM) {
        for (var i = 0u; i < 4u; i++) {
            let x = x0 + i;
            r[i] = vec4<f32>(cg_a_elem(src, x, k), cg_a_elem(src, x, k + 1u),
                             cg_a_elem(src, x, k + 2u), cg_a_elem(src, x, k + 3u));
        }
    } else {
        let d = pu(6u);
        let k1 = cg_div(k, d, pf(14u));
        let k2 = k - k1 * d;
        let live = (vec4<u32>(k) + CG_IOTA < vec4<u32>(pu(3u))) &
                   (vec4<u32>(k2) + CG_IOTA < vec4<u32>(pu(10u))) &
                   (vec4<u32>(kq) + CG_IOTA < vec4<u32>(klen));
        let e = src + x0 * pu(5u) + cg_a_outer(k1) + k2;
        for (var i = 0u; i < 4u; i++) {
            let v = cg_run(i32(e + i * pu(5u)));
            r[i] = select(vec4<f32>(0.0), v, live & vec4<bool>(x0 + i < pu(0u)));
        }
    }
    let dst = wid.z * pu(12u) + (wid.y * klen + kq) * w4 + xt;
    cg_dst[dst] = vec4<f32>(r[0].x, r[1].x, r[2].x, r[3].x);
    if (kq + 1u < klen) { cg_dst[dst + w4] = vec4<f32>(r[0].y, r[1].y, r[2].y, r[3].y); }
    if (kq + 2u < klen) { cg_dst[dst + 2u * w4] = vec4<f32>(r[0].z, r[1].z, r[2].z, r[3].z); }
    if (kq + 3u < klen) { cg_dst[dst + 3u * w4] = vec4<f32>(r[0].w, r[1].w, r[2].w, r[3].w); }
}

// Writes row `row` (a k within the block) of the A panels packed by cg_pack_kc: the bias,
// bias[x] for x < m (entry z: bias + z * m), read from the auxiliary texture.
// words: 0 m, 1 row, 2 klen, 9 w4, 10 bias element, 12 dst entry stride (texels)
// Grid: x = ceil(w4 / 64), y = panel, z = entry.
@compute @workgroup_size(64)
fn cg_pack_bias(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let xt = wid.x * 64u + lid;
    let w4 = pu(9u);
    if (xt >= w4) { return; }
    let m = pu(0u);
    let x0 = (wid.y * w4 + xt) * 4u;
    let b = pu(10u) + wid.z * m + x0;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let t = textureLoad(cg_aux, tex_coord((b + i) >> 2u), 0);
        v[i] = select(0.0, cg_pick(t, (b + i) & 3u), x0 + i < m);
    }
    cg_dst[wid.z * pu(12u) + (wid.y * pu(2u) + pu(1u)) * w4 + xt] = v;
}

// Rearranges images (channels x H x W, read from the source texture) into the phase layout
// [image][c][rh][rw][i][j], j < wr (a multiple of 4; out-of-image elements 0), 4 elements per
// invocation.
// words: 0 texels to write, 1 source element of the first image, 2 source image stride, 3 plane
// (H * W), 4 H, 5 W, 6 sh, 7 sw, 8 hr, 9 wr / 4, 10 channels, 11 1 / (wr / 4), 12 1 / hr,
// 13 1 / sw, 14 1 / sh, 15 1 / channels (f32)
@compute @workgroup_size(256)
fn cg_phase(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = gid(wid, nwg, lid);
    if (t >= pu(0u)) { return; }
    let w4 = pu(9u);
    let t1 = cg_div(t, w4, pf(11u));
    let j4 = t - t1 * w4;
    let hr = pu(8u);
    let t2 = cg_div(t1, hr, pf(12u));
    let i = t1 - t2 * hr;
    let sw = pu(7u);
    let t3 = cg_div(t2, sw, pf(13u));
    let rw = t2 - t3 * sw;
    let sh = pu(6u);
    let t4 = cg_div(t3, sh, pf(14u));
    let rh = t3 - t4 * sh;
    let chans = pu(10u);
    let b = cg_div(t4, chans, pf(15u));
    let c = t4 - b * chans;
    let ih = i * sh + rh;
    let iw = j4 * 4u * sw + rw;
    let w = pu(5u);
    let e = pu(1u) + b * pu(2u) + c * pu(3u) + ih * w + iw;
    let okh = ih < pu(4u);
    var v = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        v[q] = select(0.0, cg_elem(i32(e + q * sw)), okh && iw + q * sw < w);
    }
    cg_dst[t] = v;
}
