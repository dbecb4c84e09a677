// Whole convolutions as GEMMs whose operands are packed straight from the images and the
// weights (implicit im2col, no column buffer; host side src/engine/gpu/conv_gemm.rs). The packed
// layouts are the GEMM's (blas.wgsl), which the micro-kernels read from linear textures:
//   A panels: texel (panel p, k, t) holds rows 4t..4t+3 of panel p of op(A) at k (w4 texels per k)
//   B panels: texel (panel q, k, t) holds columns 4t..4t+3 of panel q of op(B) at k (16 per k)
// Every packer reads a linear texture copy of its source (binding 1), an auxiliary texture
// (binding 2: the tap table of cg_taps, or the bias) and writes panels (binding 3), which the
// host then copies into the texture a micro-kernel reads. Elements outside the operands are 0.
//
// The images are read in one of two layouts, both "linear": the element a kernel tap reads for
// output position col = oh * OW + ow sits at (tap base) + col, so a run of consecutive output
// positions is a run of the source, read as whole texels and shifted.
//   identity (CG_MASK): the images themselves, for stride-1 convolutions whose output rows are as
//     wide as the input's (W == OW, e.g. 3x3 pad 1); reads outside the image are masked by the
//     tap's row and column offsets uh, uw (input row = oh + uh, column = ow + uw);
//   expanded (cg_expand, no masks): per channel, input row phase rh < sh and kernel column kw,
//     the rows the taps with that phase and column read, already shifted by the column, padding
//     written as zeros: E[c][rh][kw][i][ow] = X[c][(i + qmin) * sh + rh][ow * sw + kw * dw - pw].
//
// Lavapipe runs both sides of every branch, so there are no data-dependent paths.
// Loops run at most 5 iterations (lavapipe silently ends an invocation's loops after 65535).
//
// Image geometry words shared by the packers of image operands:
//   5 source element of image 0, 6 image stride, 7 channel stride, 8 OW, 9 H, 10 W, 11 kprod,
//   12 1 / kprod (f32), 13 1 / OW (f32)

@group(0) @binding(1) var cg_src: texture_2d<f32>;
@group(0) @binding(2) var cg_aux: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> cg_dst: array<vec4<f32>>;

// Identity layout: mask reads outside the image.
override CG_MASK: bool = true;
// cg_pack_kc: one fetch per element (else runs of 4 k); k2 mapped through the table in the
// auxiliary texture (a phase's taps, see cg_phase_taps).
override CG_KC_ELEM: bool = true;
override CG_KC_TABLE: bool = false;

const CG_IOTA = vec4<u32>(0u, 1u, 2u, 3u);

// n / d given r = 1 / d (computed by the host), exact below 2^24.
fn cg_div(n: u32, d: u32, r: f32) -> u32 {
    var q = u32(f32(n) * r);
    q = select(q, q - 1u, q * d > n);
    q = select(q, q + 1u, (q + 1u) * d <= n);
    return q;
}

fn cg_div4(n: vec4<u32>, d: u32, r: f32) -> vec4<u32> {
    let dv = vec4<u32>(d);
    var q = vec4<u32>(vec4<f32>(n) * r);
    q = select(q, q - vec4<u32>(1u), q * dv > n);
    q = select(q, q + vec4<u32>(1u), (q + vec4<u32>(1u)) * dv <= n);
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

// Kernel tap t (t = kh * KW + kw) of channel cc: where output position 0 reads (relative to the
// image), and (identity layout) its row and column offsets.
struct CgTap {
    base: i32,
    uh: i32,
    uw: i32,
}

fn cg_tap(cc: u32, t: u32) -> CgTap {
    let v = vec3<i32>(textureLoad(cg_aux, tex_coord(t), 0).xyz);
    return CgTap(i32(cc * pu(7u)) + v.x, v.y, v.z);
}

// The tap table: texel t < kprod holds (base, uh, uw) of tap t of channel 0, as floats.
// words: 0 KW, 1 dh, 2 dw, 3 ph (i32), 4 pw (i32), 5 W, 6 expanded, 7 sh, 8 P4 (elements per
// expanded plane), 9 qmin (i32), 10 OW, 11 kprod, 12 slots are kernel rows
// Grid: x = ceil(kprod / 64).
@compute @workgroup_size(64)
fn cg_taps(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x * 64u + lid;
    if (t >= pu(11u)) { return; }
    let kwn = pu(0u);
    let kh = t / kwn;
    let kw = t - kh * kwn;
    let uh = i32(kh * pu(1u)) - pi(3u);
    let uw = i32(kw * pu(2u)) - pi(4u);
    var base = uh * i32(pu(5u)) + uw;
    if (pu(6u) != 0u) {
        let sh = i32(pu(7u));
        var qh = uh / sh;
        qh = select(qh, qh - 1, qh * sh > uh);
        let rh = uh - qh * sh;
        base = (rh * i32(kwn) + i32(kw)) * i32(pu(8u)) + (qh - pi(9u)) * i32(pu(10u));
        if (pu(12u) != 0u) {
            base = i32((kh * kwn + kw) * pu(8u));
        }
    }
    cg_dst[t] = vec4<f32>(f32(base), f32(uh), f32(uw), 0.0);
}

// The expanded layout of images (channels x H x W, read from the source texture):
// E[image][c][slot][kw][i][ow] = X[c][i * sh + off(slot)][ow * sw + kw * dw - pw] (0 outside),
// kw < KW, i < R, ow < OW, where a row slot is either a kernel row kh (off = kh * dh - ph, R = OH:
// the im2col rows themselves, for kernels no taller than the stride) or an input row phase rh < sh
// shared by the kernel rows with (kh * dh - ph) mod sh = rh (off = qmin * sh + rh,
// R = OH + qmax - qmin). Each (image, c, slot, kw) plane of R * OW elements starts a multiple P4 of
// 4 elements after the previous one.
// words: 0 texels to write, 1 R * OW, 2 source element of the first image, 3 source image
// stride, 4 plane (H * W), 5 H, 6 W, 7 sh, 8 sw, 9 dw, 10 pw (i32), 11 qmin (i32), 12 KW,
// 13 first plane group (a multiple of the quads), 14 OW, 15 channels, 16 1 / OW, 17 P4 / 4,
// 18 1 / (P4 / 4), 19 quads (KW / 4 rounded up), 20 1 / quads, 21 slots, 22 1 / slots,
// 23 1 / channels, 24 slots are kernel rows, 25 dh, 26 ph (i32)
// One invocation writes texel t of the 4 planes of a plane group (image, c, slot, kernel columns
// kw0..kw0+3): the 4 positions of the texel, each read as a run over the 4 kernel columns
// (dilation 1: CG_KW_RUN) and transposed.
override CG_KW_RUN: bool = true;

@compute @workgroup_size(256)
fn cg_expand(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let j = gid(wid, nwg, lid);
    if (j >= pu(0u)) { return; }
    let per = pu(17u);
    let pgl = cg_div(j, per, pf(18u));
    let t = j - pgl * per;
    let pg = pgl + pu(13u);
    let quads = pu(19u);
    let pq = cg_div(pg, quads, pf(20u));
    let kw0 = (pg - pq * quads) * 4u;
    let slots = pu(21u);
    let ps = cg_div(pq, slots, pf(22u));
    let slot = pq - ps * slots;
    let chans = pu(15u);
    let b = cg_div(ps, chans, pf(23u));
    let c = ps - b * chans;
    let src = i32(pu(2u) + b * pu(3u) + c * pu(4u));
    let sh = pu(7u);
    var off = pi(11u) * i32(sh) + i32(slot);
    if (pu(24u) != 0u) {
        off = i32(slot * pu(25u)) - pi(26u);
    }
    let f = 4u * t;
    let own = pu(14u);
    var i = cg_div(f, own, pf(16u));
    var ow = f - i * own;
    let hn = i32(pu(5u));
    let wn = vec4<i32>(i32(pu(6u)));
    let sw = pu(8u);
    let kwn = pu(12u);
    let kws = vec4<u32>(kw0) + CG_IOTA;
    let kwok = kws < vec4<u32>(kwn);
    let uw = vec4<i32>(kws * pu(9u)) - vec4<i32>(pi(10u));
    // r[q] = the 4 kernel columns at the texel's position q.
    var r: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
        let ih = i32(i * sh) + off;
        let iw = vec4<i32>(i32(ow * sw)) + uw;
        let ok = vec4<bool>(f + q < pu(1u) && ih >= 0 && ih < hn) & kwok &
                 (iw >= vec4<i32>(0)) & (iw < wn);
        let e = src + ih * wn.x;
        var v: vec4<f32>;
        if (CG_KW_RUN) {
            v = cg_run(e + iw.x);
        } else {
            v = vec4<f32>(cg_elem(e + iw.x), cg_elem(e + iw.y), cg_elem(e + iw.z), cg_elem(e + iw.w));
        }
        r[q] = select(vec4<f32>(0.0), v, ok);
        ow += 1u;
        let wrap = ow == own;
        ow = select(ow, 0u, wrap);
        i = select(i, i + 1u, wrap);
    }
    let dst = ((pq - pu(13u) / quads) * kwn + kw0) * per + t;
    cg_dst[dst] = vec4<f32>(r[0].x, r[1].x, r[2].x, r[3].x);
    if (kw0 + 1u < kwn) { cg_dst[dst + per] = vec4<f32>(r[0].y, r[1].y, r[2].y, r[3].y); }
    if (kw0 + 2u < kwn) { cg_dst[dst + 2u * per] = vec4<f32>(r[0].z, r[1].z, r[2].z, r[3].z); }
    if (kw0 + 3u < kwn) { cg_dst[dst + 3u * per] = vec4<f32>(r[0].w, r[1].w, r[2].w, r[3].w); }
}

// B of the forward product (and of the data gradient): op(B) = the image's im2col columns, rows
// k = (c, kernel tap) of the block [k0, k0 + klen), columns = output positions. Rows from kd on
// are 0, except row `ones` (all 1: the bias, whose weights are A's column `ones`).
// words: 0 n (columns), 1 k0, 2 klen, 3 kd, 4 ones (or 0xffffffff), 5.. image geometry,
//        14 destination entry stride (texels)
// Grid: x = ceil(klen / 16), y = panel, z = image. Invocation: k row 8 (j / 32) + j % 8, unit of
// 16 columns (4 texels, 5 fetches) (j / 8) % 4 of the panel; the 8 lanes of a SIMD group share
// the columns. Identity layout: OW >= 4.
@compute @workgroup_size(64)
fn cg_pack_cols(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * 64u + lid;
    let kk = (j >> 5u) * 8u + (j & 7u);
    let unit = (j >> 3u) & 3u;
    let klen = pu(2u);
    if (kk >= klen) { return; }
    let k = pu(1u) + kk;
    let kprod = pu(11u);
    let cc = cg_div(k, kprod, pf(12u));
    let tap = cg_tap(cc, k - cc * kprod);
    let real = vec4<bool>(k < pu(3u));
    let ones = vec4<bool>(k == pu(4u));
    let n = vec4<u32>(pu(0u));
    let own = pu(8u);
    let col0 = wid.y * 64u + unit * 16u;
    var oh = cg_div(col0, own, pf(13u));
    var ow = col0 - oh * own;
    let e = i32(pu(5u) + wid.z * pu(6u)) + tap.base + i32(col0);
    let s = u32(e) & 3u;
    var f: array<vec4<f32>, 5>;
    for (var i = 0; i < 5; i++) {
        f[i] = cg_texel((e >> 2u) + i);
    }
    let hn = vec4<u32>(pu(9u));
    let wn = vec4<u32>(pu(10u));
    let dst = wid.z * pu(14u) + (wid.y * klen + kk) * 16u + unit * 4u;
    for (var t = 0u; t < 4u; t++) {
        let c = vec4<u32>(col0 + 4u * t) + CG_IOTA;
        var m = (c < n) & real;
        if (CG_MASK) {
            // Positions (oh, ow..ow+3), wrapped once to the next row past OW (OW >= 4).
            let w = vec4<u32>(ow) + CG_IOTA;
            let wrap = w >= vec4<u32>(own);
            let ohv = vec4<u32>(oh) + select(vec4<u32>(0u), vec4<u32>(1u), wrap);
            let owv = select(w, w - vec4<u32>(own), wrap);
            m = m & (vec4<u32>(vec4<i32>(ohv) + vec4<i32>(tap.uh)) < hn) &
                (vec4<u32>(vec4<i32>(owv) + vec4<i32>(tap.uw)) < wn);
            ow += 4u;
            let next = ow >= own;
            ow = select(ow, ow - own, next);
            oh = select(oh, oh + 1u, next);
        }
        let v = select(vec4<f32>(0.0), cg_shift4(f[t], f[t + 1u], s), m);
        cg_dst[dst + t] = select(v, vec4<f32>(1.0), ones & (c < n));
    }
}

// B of the weight gradient: op(B) = the transposed im2col columns, rows k = image * S' + position
// (S' = S rounded up to 8; rows of positions past S are 0) of the block [k0, k0 + klen) (k
// counted from the first image of the source window, k0 a multiple of 8), columns
// x = (c, kernel tap) < kd.
// words: 0 kd, 1 k0, 2 klen, 3 S, 4 S', 5.. image geometry, 14 1 / S' (f32)
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
    let sp = pu(4u);
    let k = pu(1u) + kq;
    let b = cg_div(k, sp, pf(14u));
    let pos = k - b * sp;
    let img = i32(pu(5u) + b * pu(6u)) + i32(pos);
    let p0 = vec4<u32>(pos) + CG_IOTA;
    let p1 = p0 + vec4<u32>(4u);
    let sn = vec4<u32>(pu(3u));
    let kl = vec4<u32>(klen);
    let live0 = (p0 < sn) & (vec4<u32>(kq) + CG_IOTA < kl);
    let live1 = (p1 < sn) & (vec4<u32>(kq + 4u) + CG_IOTA < kl);
    let own = pu(8u);
    let oh0 = vec4<i32>(cg_div4(p0, own, pf(13u)));
    let oh1 = vec4<i32>(cg_div4(p1, own, pf(13u)));
    let ow0 = vec4<i32>(p0) - oh0 * i32(own);
    let ow1 = vec4<i32>(p1) - oh1 * i32(own);
    let hn = vec4<u32>(pu(9u));
    let wn = vec4<u32>(pu(10u));
    let kprod = pu(11u);
    let x0 = wid.y * 64u + tc * 4u;
    var cc = cg_div(x0, kprod, pf(12u));
    var tt = x0 - cc * kprod;
    let kd = pu(0u);
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        let tap = cg_tap(cc, tt);
        let e = img + tap.base;
        let t = e >> 2u;
        let s = u32(e) & 3u;
        let f0 = cg_texel(t);
        let f1 = cg_texel(t + 1);
        let f2 = cg_texel(t + 2);
        let xok = vec4<bool>(x0 + i < kd);
        var m0 = live0 & xok;
        var m1 = live1 & xok;
        if (CG_MASK) {
            let uh = vec4<i32>(tap.uh);
            let uw = vec4<i32>(tap.uw);
            m0 = m0 & (vec4<u32>(oh0 + uh) < hn) & (vec4<u32>(ow0 + uw) < wn);
            m1 = m1 & (vec4<u32>(oh1 + uh) < hn) & (vec4<u32>(ow1 + uw) < wn);
        }
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
// k = k1 * D + k2 sits at src + x * sx + k1 * s1 + (flip ? D - 1 - k2 : k2); it is 0 unless
// x < m, k < kreal and k2 < dvalid. Entry z (a group) reads from src + z * src stride.
// Runs (CG_KC_ELEM false) read 4 k at a time and need no flip and no group of 4 k (from k0, a
// multiple of 4 unless D exceeds every k) across a multiple of D.
// words: 0 m, 1 k0, 2 klen, 3 kreal, 4 src, 5 sx, 6 D, 7 s1, 8 flip, 9 w4 (texels per k),
//        10 dvalid, 11 src entry stride, 12 dst entry stride (texels), 13 1 / w4 (f32),
//        14 1 / D (f32)
// Grid: x = ceil(ceil(klen / 4) * w4 / 64), y = panel, z = entry. Invocation: texel j % w4 at
// rows 4 (j / w4) .. + 3 (runs of 4 k, transposed).
fn cg_a_elem(src: u32, x: u32, k: u32) -> f32 {
    let d = pu(6u);
    let k1 = cg_div(k, d, pf(14u));
    let k2 = k - k1 * d;
    var kk = select(k2, d - 1u - k2, pu(8u) != 0u);
    if (CG_KC_TABLE) {
        kk = u32(textureLoad(cg_aux, tex_coord(min(k2, d - 1u)), 0).x);
    }
    let ok = x < pu(0u) && k < pu(3u) && k2 < pu(10u);
    return select(0.0, cg_elem(i32(src + x * pu(5u) + k1 * pu(7u) + kk)), ok);
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
        let e = src + x0 * pu(5u) + k1 * pu(7u) + k2;
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

// The taps of one phase of a strided convolution's data gradient: texel t' = j'h * njw + j'w
// holds the kernel tap (kh_top - j'h * step_h) * KW + (kw_top - j'w * step_w) as a float.
// words: 0 njw, 1 kh_top, 2 step_h, 3 kw_top, 4 step_w, 5 KW, 6 taps
// Grid: x = ceil(taps / 64).
@compute @workgroup_size(64)
fn cg_phase_taps(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let t = wid.x * 64u + lid;
    if (t >= pu(6u)) { return; }
    let jh = t / pu(0u);
    let jw = t - jh * pu(0u);
    let tap = (pu(1u) - jh * pu(2u)) * pu(5u) + pu(3u) - jw * pu(4u);
    cg_dst[t] = vec4<f32>(f32(tap), 0.0, 0.0, 0.0);
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
