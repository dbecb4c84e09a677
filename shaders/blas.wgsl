// BLAS family: GEMM (operand packing + a portable register-tiled micro-kernel; the subgroup
// micro-kernels are in blas_subgroup.wgsl), axpby and scale.
//
// Packed layouts (scratch buffers written by pack_xc / pack_kc, copied into linear textures that
// the micro-kernels read, see common.wgsl):
//   Ap[b][panel p][k][r] = op(A_b)[TM p + r, k]   (panels of TM rows)
//   Bp[b][panel q][k][c] = op(B_b)[k, TN q + c]   (panels of TN columns)
// k is not padded (the micro-kernels stop at k); rows and columns past the matrix are zero. So a
// micro-kernel reads 4 rows of A or 4 columns of B at one k as one texel, and a panel as one
// contiguous stream.

@group(0) @binding(1) var pk_src: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> pk_dst: array<vec4<f32>>;

// Every run of 4 source elements starts at a texel (shift, ld and batch stride multiples of 4).
override PK_ALIGNED: bool = false;

// Floats s..s+3 of the 8 floats (a, b), s in 0..3.
fn pk_shift4(a: vec4<f32>, b: vec4<f32>, s: u32) -> vec4<f32> {
    let lo = select(a, vec4<f32>(a.y, a.z, a.w, b.x), s == 1u);
    let hi = select(vec4<f32>(a.z, a.w, b.x, b.y), vec4<f32>(a.w, b.x, b.y, b.z), s == 3u);
    return select(lo, hi, s >= 2u);
}

// Source elements e..e+3 (the source is a linear texture copy of the operand's window).
fn pk_run(e: u32) -> vec4<f32> {
    let a = textureLoad(pk_src, tex_coord(e >> 2u), 0);
    if (PK_ALIGNED) {
        return a;
    }
    let b = textureLoad(pk_src, tex_coord((e >> 2u) + 1u), 0);
    return pk_shift4(a, b, e & 3u);
}

// Packing: one invocation writes 4 texels of a panel, (k0..k0+3, x0..x0+3), x = the panel's
// dimension (rows of op(A), columns of op(B)). Element (x, k) of batch entry b is at
// shift + b * stride + x * sx + k * sk of the source: pack_xc reads runs along x (sx = 1,
// sk = ld), pack_kc runs along k (sx = ld, sk = 1) and transposes them.
// params: 0 X (rows of op(A) or columns of op(B)), 1 K, 2 ld, 3 src shift, 4 src batch stride,
//         5 texels per k of a panel, 6 dst batch stride (texels)
// Grid: x = (4-k groups x texels per k) / 64, y = panel, z = batch entry.
struct PkPos {
    ok: bool,
    k0: u32,
    x0: u32,
    src: u32,
    dst: u32,
    w4: u32,
}

fn pk_pos(wid: vec3<u32>, lid: u32) -> PkPos {
    let j = wid.x * 64u + lid;
    let w4 = pu(5u);
    let kq = fdiv(j, w4);
    let g = j - kq * w4;
    let k0 = kq * 4u;
    let x0 = (wid.y * w4 + g) * 4u;
    let kn = pu(1u);
    let src = pu(3u) + wid.z * pu(4u);
    // texel (k, g) of panel wid.y: panels are kn * w4 texels.
    let dst = wid.z * pu(6u) + (wid.y * kn + k0) * w4 + g;
    return PkPos(k0 < kn, k0, x0, src, dst, w4);
}

fn pk_mask(x0: u32, v: vec4<f32>) -> vec4<f32> {
    let x = pu(0u);
    return select(vec4<f32>(0.0), v, vec4<bool>(x0 < x, x0 + 1u < x, x0 + 2u < x, x0 + 3u < x));
}

@compute @workgroup_size(64)
fn pack_xc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = pk_pos(wid, lid);
    if (!s.ok) { return; }
    let ld = pu(2u);
    let kn = pu(1u);
    let e = s.src + s.k0 * ld + s.x0;
    let r0 = pk_run(e);
    let r1 = pk_run(e + ld);
    let r2 = pk_run(e + 2u * ld);
    let r3 = pk_run(e + 3u * ld);
    pk_dst[s.dst] = pk_mask(s.x0, r0);
    if (s.k0 + 1u < kn) {
        pk_dst[s.dst + s.w4] = pk_mask(s.x0, r1);
    }
    if (s.k0 + 2u < kn) {
        pk_dst[s.dst + 2u * s.w4] = pk_mask(s.x0, r2);
    }
    if (s.k0 + 3u < kn) {
        pk_dst[s.dst + 3u * s.w4] = pk_mask(s.x0, r3);
    }
}

// pack_xc for panels whose texels per k are a multiple of 4: one invocation writes 4 texels along x
// at one k from 5 fetches (pack_xc takes 8 for 4 texels when the source is misaligned).
// Grid: x = (k x texels per k / 4) / 64.
@compute @workgroup_size(64)
fn pack_xc4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * 64u + lid;
    let w4 = pu(5u);
    let q = w4 >> 2u;
    let k = fdiv(j, q);
    let g = (j - k * q) * 4u;
    let kn = pu(1u);
    if (k >= kn) { return; }
    let x0 = (wid.y * w4 + g) * 4u;
    let e = pu(3u) + wid.z * pu(4u) + k * pu(2u) + x0;
    let t = e >> 2u;
    let f0 = textureLoad(pk_src, tex_coord(t), 0);
    let f1 = textureLoad(pk_src, tex_coord(t + 1u), 0);
    let f2 = textureLoad(pk_src, tex_coord(t + 2u), 0);
    let f3 = textureLoad(pk_src, tex_coord(t + 3u), 0);
    var v0 = f0;
    var v1 = f1;
    var v2 = f2;
    var v3 = f3;
    if (!PK_ALIGNED) {
        let f4 = textureLoad(pk_src, tex_coord(t + 4u), 0);
        let s = e & 3u;
        v0 = pk_shift4(f0, f1, s);
        v1 = pk_shift4(f1, f2, s);
        v2 = pk_shift4(f2, f3, s);
        v3 = pk_shift4(f3, f4, s);
    }
    let d = wid.z * pu(6u) + (wid.y * kn + k) * w4 + g;
    pk_dst[d] = pk_mask(x0, v0);
    pk_dst[d + 1u] = pk_mask(x0 + 4u, v1);
    pk_dst[d + 2u] = pk_mask(x0 + 8u, v2);
    pk_dst[d + 3u] = pk_mask(x0 + 12u, v3);
}

@compute @workgroup_size(64)
fn pack_kc(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = pk_pos(wid, lid);
    if (!s.ok) { return; }
    let ld = pu(2u);
    let kn = pu(1u);
    let r0 = pk_run(s.src + s.x0 * ld + s.k0);
    let r1 = pk_run(s.src + (s.x0 + 1u) * ld + s.k0);
    let r2 = pk_run(s.src + (s.x0 + 2u) * ld + s.k0);
    let r3 = pk_run(s.src + (s.x0 + 3u) * ld + s.k0);
    pk_dst[s.dst] = pk_mask(s.x0, vec4<f32>(r0.x, r1.x, r2.x, r3.x));
    if (s.k0 + 1u < kn) {
        pk_dst[s.dst + s.w4] = pk_mask(s.x0, vec4<f32>(r0.y, r1.y, r2.y, r3.y));
    }
    if (s.k0 + 2u < kn) {
        pk_dst[s.dst + 2u * s.w4] = pk_mask(s.x0, vec4<f32>(r0.z, r1.z, r2.z, r3.z));
    }
    if (s.k0 + 3u < kn) {
        pk_dst[s.dst + 3u * s.w4] = pk_mask(s.x0, vec4<f32>(r0.w, r1.w, r2.w, r3.w));
    }
}

@group(0) @binding(1) var t_ta: texture_2d<f32>;
@group(0) @binding(2) var t_tb: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> t_c: array<f32>;
@group(0) @binding(4) var<storage, read_write> t_c4: array<vec4<f32>>;

// Set per pipeline (see blas_subgroup.wgsl).
override BETA0: bool = true;
override C4: bool = false;

fn t_store(ci: u32, col: u32, v: f32) {
    if (col < pu(1u)) {
        if (BETA0) {
            t_c[ci + col] = pf(12u) * v;
        } else {
            t_c[ci + col] = pf(12u) * v + pf(13u) * t_c[ci + col];
        }
    }
}

fn t_store4(t: u32, v: vec4<f32>) {
    if (BETA0) {
        t_c4[t] = pf(12u) * v;
    } else {
        t_c4[t] = pf(12u) * v + pf(13u) * t_c4[t];
    }
}

// Portable GEMM micro-kernel (no subgroups): 32 invocations per workgroup compute a 32x64 block
// of C; invocation (l = column group 0..7, g = row group 0..3) keeps an 8x8 block in vec4
// registers and fetches its own packed A (2 texels) and B (2 texels) per k. Operands are packed
// panels (A: 32 rows = 8 texels per k, B: 64 columns = 16 texels per k); params and pipeline
// constants as the subgroup kernels (blas_subgroup.wgsl).
@compute @workgroup_size(32)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let q = wid.x;
    let p = wid.y;
    let bb = wid.z;
    let l = li % 8u;
    let g = li / 8u;
    let kn = pu(2u);
    var acc0_0 = vec4<f32>(0.0);
    var acc0_1 = vec4<f32>(0.0);
    var acc1_0 = vec4<f32>(0.0);
    var acc1_1 = vec4<f32>(0.0);
    var acc2_0 = vec4<f32>(0.0);
    var acc2_1 = vec4<f32>(0.0);
    var acc3_0 = vec4<f32>(0.0);
    var acc3_1 = vec4<f32>(0.0);
    var acc4_0 = vec4<f32>(0.0);
    var acc4_1 = vec4<f32>(0.0);
    var acc5_0 = vec4<f32>(0.0);
    var acc5_1 = vec4<f32>(0.0);
    var acc6_0 = vec4<f32>(0.0);
    var acc6_1 = vec4<f32>(0.0);
    var acc7_0 = vec4<f32>(0.0);
    var acc7_1 = vec4<f32>(0.0);
    var ai = pu(6u) + bb * pu(7u) + p * pu(14u) + 2u * g;
    var bi = pu(9u) + bb * pu(10u) + q * pu(15u) + 2u * l;
    let lda = pu(8u);
    let ldb = pu(11u);
    for (var kk = 0u; kk < kn; kk++) {
        let a0 = textureLoad(t_ta, tex_coord(ai), 0);
        let a1 = textureLoad(t_ta, tex_coord(ai + 1u), 0);
        let b0 = textureLoad(t_tb, tex_coord(bi), 0);
        let b1 = textureLoad(t_tb, tex_coord(bi + 1u), 0);
        ai += lda;
        bi += ldb;
        acc0_0 = fma(vec4<f32>(a0.x), b0, acc0_0);
        acc0_1 = fma(vec4<f32>(a0.x), b1, acc0_1);
        acc1_0 = fma(vec4<f32>(a0.y), b0, acc1_0);
        acc1_1 = fma(vec4<f32>(a0.y), b1, acc1_1);
        acc2_0 = fma(vec4<f32>(a0.z), b0, acc2_0);
        acc2_1 = fma(vec4<f32>(a0.z), b1, acc2_1);
        acc3_0 = fma(vec4<f32>(a0.w), b0, acc3_0);
        acc3_1 = fma(vec4<f32>(a0.w), b1, acc3_1);
        acc4_0 = fma(vec4<f32>(a1.x), b0, acc4_0);
        acc4_1 = fma(vec4<f32>(a1.x), b1, acc4_1);
        acc5_0 = fma(vec4<f32>(a1.y), b0, acc5_0);
        acc5_1 = fma(vec4<f32>(a1.y), b1, acc5_1);
        acc6_0 = fma(vec4<f32>(a1.z), b0, acc6_0);
        acc6_1 = fma(vec4<f32>(a1.z), b1, acc6_1);
        acc7_0 = fma(vec4<f32>(a1.w), b0, acc7_0);
        acc7_1 = fma(vec4<f32>(a1.w), b1, acc7_1);
    }
    let row0 = p * 32u + 8u * g;
    let col0 = q * 64u + 8u * l;
    let cb = pu(4u) + bb * pu(5u);
    let m = pu(0u);
    let n = pu(1u);
    if (C4) {
        if (row0 + 0u < m) {
            let v = (cb + (row0 + 0u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc0_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc0_1); }
        }
        if (row0 + 1u < m) {
            let v = (cb + (row0 + 1u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc1_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc1_1); }
        }
        if (row0 + 2u < m) {
            let v = (cb + (row0 + 2u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc2_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc2_1); }
        }
        if (row0 + 3u < m) {
            let v = (cb + (row0 + 3u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc3_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc3_1); }
        }
        if (row0 + 4u < m) {
            let v = (cb + (row0 + 4u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc4_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc4_1); }
        }
        if (row0 + 5u < m) {
            let v = (cb + (row0 + 5u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc5_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc5_1); }
        }
        if (row0 + 6u < m) {
            let v = (cb + (row0 + 6u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc6_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc6_1); }
        }
        if (row0 + 7u < m) {
            let v = (cb + (row0 + 7u) * pu(3u) + col0) >> 2u;
            if (col0 < n) { t_store4(v, acc7_0); }
            if (col0 + 4u < n) { t_store4(v + 1u, acc7_1); }
        }
    } else {
        if (row0 + 0u < m) {
            let ci = cb + (row0 + 0u) * pu(3u);
            t_store(ci, col0 + 0u, acc0_0.x);
            t_store(ci, col0 + 1u, acc0_0.y);
            t_store(ci, col0 + 2u, acc0_0.z);
            t_store(ci, col0 + 3u, acc0_0.w);
            t_store(ci, col0 + 4u, acc0_1.x);
            t_store(ci, col0 + 5u, acc0_1.y);
            t_store(ci, col0 + 6u, acc0_1.z);
            t_store(ci, col0 + 7u, acc0_1.w);
        }
        if (row0 + 1u < m) {
            let ci = cb + (row0 + 1u) * pu(3u);
            t_store(ci, col0 + 0u, acc1_0.x);
            t_store(ci, col0 + 1u, acc1_0.y);
            t_store(ci, col0 + 2u, acc1_0.z);
            t_store(ci, col0 + 3u, acc1_0.w);
            t_store(ci, col0 + 4u, acc1_1.x);
            t_store(ci, col0 + 5u, acc1_1.y);
            t_store(ci, col0 + 6u, acc1_1.z);
            t_store(ci, col0 + 7u, acc1_1.w);
        }
        if (row0 + 2u < m) {
            let ci = cb + (row0 + 2u) * pu(3u);
            t_store(ci, col0 + 0u, acc2_0.x);
            t_store(ci, col0 + 1u, acc2_0.y);
            t_store(ci, col0 + 2u, acc2_0.z);
            t_store(ci, col0 + 3u, acc2_0.w);
            t_store(ci, col0 + 4u, acc2_1.x);
            t_store(ci, col0 + 5u, acc2_1.y);
            t_store(ci, col0 + 6u, acc2_1.z);
            t_store(ci, col0 + 7u, acc2_1.w);
        }
        if (row0 + 3u < m) {
            let ci = cb + (row0 + 3u) * pu(3u);
            t_store(ci, col0 + 0u, acc3_0.x);
            t_store(ci, col0 + 1u, acc3_0.y);
            t_store(ci, col0 + 2u, acc3_0.z);
            t_store(ci, col0 + 3u, acc3_0.w);
            t_store(ci, col0 + 4u, acc3_1.x);
            t_store(ci, col0 + 5u, acc3_1.y);
            t_store(ci, col0 + 6u, acc3_1.z);
            t_store(ci, col0 + 7u, acc3_1.w);
        }
        if (row0 + 4u < m) {
            let ci = cb + (row0 + 4u) * pu(3u);
            t_store(ci, col0 + 0u, acc4_0.x);
            t_store(ci, col0 + 1u, acc4_0.y);
            t_store(ci, col0 + 2u, acc4_0.z);
            t_store(ci, col0 + 3u, acc4_0.w);
            t_store(ci, col0 + 4u, acc4_1.x);
            t_store(ci, col0 + 5u, acc4_1.y);
            t_store(ci, col0 + 6u, acc4_1.z);
            t_store(ci, col0 + 7u, acc4_1.w);
        }
        if (row0 + 5u < m) {
            let ci = cb + (row0 + 5u) * pu(3u);
            t_store(ci, col0 + 0u, acc5_0.x);
            t_store(ci, col0 + 1u, acc5_0.y);
            t_store(ci, col0 + 2u, acc5_0.z);
            t_store(ci, col0 + 3u, acc5_0.w);
            t_store(ci, col0 + 4u, acc5_1.x);
            t_store(ci, col0 + 5u, acc5_1.y);
            t_store(ci, col0 + 6u, acc5_1.z);
            t_store(ci, col0 + 7u, acc5_1.w);
        }
        if (row0 + 6u < m) {
            let ci = cb + (row0 + 6u) * pu(3u);
            t_store(ci, col0 + 0u, acc6_0.x);
            t_store(ci, col0 + 1u, acc6_0.y);
            t_store(ci, col0 + 2u, acc6_0.z);
            t_store(ci, col0 + 3u, acc6_0.w);
            t_store(ci, col0 + 4u, acc6_1.x);
            t_store(ci, col0 + 5u, acc6_1.y);
            t_store(ci, col0 + 6u, acc6_1.z);
            t_store(ci, col0 + 7u, acc6_1.w);
        }
        if (row0 + 7u < m) {
            let ci = cb + (row0 + 7u) * pu(3u);
            t_store(ci, col0 + 0u, acc7_0.x);
            t_store(ci, col0 + 1u, acc7_0.y);
            t_store(ci, col0 + 2u, acc7_0.z);
            t_store(ci, col0 + 3u, acc7_0.w);
            t_store(ci, col0 + 4u, acc7_1.x);
            t_store(ci, col0 + 5u, acc7_1.y);
            t_store(ci, col0 + 6u, acc7_1.z);
            t_store(ci, col0 + 7u, acc7_1.w);
        }
    }
}

@group(0) @binding(1) var<storage, read_write> v_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> v_y: array<f32>;

// y = alpha * x + beta * y. params: 0 n, 1 x shift, 2 y shift, 8 alpha, 9 beta
// (elementwise4.wgsl's axpby4 is its vec4 twin)
@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let yi = pu(2u) + i;
    v_y[yi] = pf(8u) * v_x[pu(1u) + i] + pf(9u) * v_y[yi];
}

// y = alpha * y. params: 0 n, 1 y shift, 2 alpha
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let yi = pu(1u) + i;
    v_x[yi] = pf(2u) * v_x[yi];
}

// y[oc * m + r] += the sum over z of x[z * zs + r * ldc + oc]: the slices of a weight gradient
// (gemm_*_ju in blas_subgroup.wgsl, rows r = (channel, kernel tap), columns oc) added, in order
// of z, into the weights' gradient. params: 0 m * n, 1 x shift, 2 y shift, 3 m, 4 ldc, 5 zs,
// 6 slices
@compute @workgroup_size(256)
fn wgrad_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let m = pu(3u);
    let oc = fdiv(i, m);
    var xi = pu(1u) + (i - oc * m) * pu(4u) + oc;
    var s = 0.0;
    for (var z = 0u; z < pu(6u); z++) {
        s += v_x[xi];
        xi += pu(5u);
    }
    let yi = pu(2u) + i;
    v_y[yi] = v_y[yi] + s;
}
