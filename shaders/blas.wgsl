// BLAS family: GEMM (operand packing + a portable register-tiled micro-kernel; the subgroup
// micro-kernel is in blas_subgroup.wgsl), axpby and scale.
//
// Packed layouts (scratch buffers written by pack_a / pack_b, zero outside the matrix):
//   Ap[b][panel p][k][r]  = op(A_b)[32p + r, k]   (panels of 32 rows, r in 0..32)
//   Bp[b][panel q][k][c]  = op(B_b)[k, 64q + c]   (panels of 64 columns, c in 0..64)
// with k padded to kp (a multiple of 4), so a micro-kernel reads 4 consecutive rows of A or
// columns of B at one k as one texel. The packed buffers are copied into linear textures
// (see common.wgsl) that the micro-kernels read.

// Packing reads its source through a linear texture (a copy of the operand's window) and writes
// one packed texel per invocation. Grid: x = texels of one panel / 64, y = panel, z = batch entry.
@group(0) @binding(1) var pk_src: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> pk_dst: array<vec4<f32>>;

fn pk_ld(e: u32) -> f32 {
    let t = textureLoad(pk_src, tex_coord(e >> 2u), 0);
    let c = e & 3u;
    return select(select(t.x, t.y, c == 1u), select(t.z, t.w, c == 3u), c >= 2u);
}

// Element e of the source when `ok`, else 0.
fn pk_get(e: u32, ok: bool) -> f32 {
    if (ok) { return pk_ld(e); }
    return 0.0;
}

// params: 0 rows, 1 kc, 2 kp, 3 trans, 4 ld, 5 src shift, 6 src batch stride,
//         7 dst batch stride (texels), 8 panels
@compute @workgroup_size(64)
fn pack_a(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x * 64u + lid;
    let kp = pu(2u);
    if (t >= kp * 8u) { return; }
    let kk = t >> 3u;
    let r4 = t & 7u;
    let pnl = wid.y;
    let bb = wid.z;
    let base = pu(5u) + bb * pu(6u);
    let row = pnl * 32u + r4 * 4u;
    // Element (row + i, kk) sits at e0 + i * step.
    var e0 = base + row * pu(4u) + kk;
    var step = pu(4u);
    if (pu(3u) != 0u) {
        e0 = base + kk * pu(4u) + row;
        step = 1u;
    }
    let ok = kk < pu(1u);
    let rows = pu(0u);
    var v: vec4<f32>;
    if (step == 1u && (e0 & 3u) == 0u && ok && row + 3u < rows) {
        v = textureLoad(pk_src, tex_coord(e0 >> 2u), 0);
    } else {
        v = vec4<f32>(pk_get(e0, ok && row < rows), pk_get(e0 + step, ok && row + 1u < rows),
                      pk_get(e0 + 2u * step, ok && row + 2u < rows), pk_get(e0 + 3u * step, ok && row + 3u < rows));
    }
    pk_dst[bb * pu(7u) + (pnl * kp + kk) * 8u + r4] = v;
}

// params: 0 cols, 1 kc, 2 kp, 3 trans, 4 ld, 5 src shift, 6 src batch stride,
//         7 dst batch stride (texels), 8 panels
@compute @workgroup_size(64)
fn pack_b(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.x * 64u + lid;
    let kp = pu(2u);
    if (t >= kp * 16u) { return; }
    let kk = t >> 4u;
    let c4 = t & 15u;
    let pnl = wid.y;
    let bb = wid.z;
    let base = pu(5u) + bb * pu(6u);
    let col = pnl * 64u + c4 * 4u;
    // Element (kk, col + i) sits at e0 + i * step.
    var e0 = base + kk * pu(4u) + col;
    var step = 1u;
    if (pu(3u) != 0u) {
        e0 = base + col * pu(4u) + kk;
        step = pu(4u);
    }
    let ok = kk < pu(1u);
    let cols = pu(0u);
    var v: vec4<f32>;
    if (step == 1u && (e0 & 3u) == 0u && ok && col + 3u < cols) {
        v = textureLoad(pk_src, tex_coord(e0 >> 2u), 0);
    } else {
        v = vec4<f32>(pk_get(e0, ok && col < cols), pk_get(e0 + step, ok && col + 1u < cols),
                      pk_get(e0 + 2u * step, ok && col + 2u < cols), pk_get(e0 + 3u * step, ok && col + 3u < cols));
    }
    pk_dst[bb * pu(7u) + (pnl * kp + kk) * 16u + c4] = v;
}

@group(0) @binding(1) var t_ta: texture_2d<f32>;
@group(0) @binding(2) var t_tb: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> t_c: array<f32>;

fn t_store(ci: u32, col: u32, v: f32, beta: f32) {
    if (col < pu(1u)) {
        if (beta == 0.0) {
            t_c[ci + col] = v;
        } else {
            t_c[ci + col] = v + beta * t_c[ci + col];
        }
    }
}

// Portable GEMM micro-kernel (no subgroups): 32 invocations per workgroup compute a 32x64 block
// of C; invocation (l = column group 0..7, g = row group 0..3) keeps an 8x8 block in vec4
// registers and fetches its own packed A (2 texels) and B (2 texels) per k.
// params: as gemm_sg.
@compute @workgroup_size(32)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let q = wid.x;
    let p = wid.y;
    let bb = wid.z;
    let l = li % 8u;
    let g = li / 8u;
    let kp = pu(2u);
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
    var ai = bb * pu(6u) + p * kp * 8u + 2u * g;
    var bi = bb * pu(7u) + q * kp * 16u + 2u * l;
    for (var kk = 0u; kk < kp; kk++) {
        let a0 = textureLoad(t_ta, tex_coord(ai), 0);
        let a1 = textureLoad(t_ta, tex_coord(ai + 1u), 0);
        let b0 = textureLoad(t_tb, tex_coord(bi), 0);
        let b1 = textureLoad(t_tb, tex_coord(bi + 1u), 0);
        ai += 8u;
        bi += 16u;
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
    let alpha = pf(8u);
    let beta = pf(9u);
    let cb = pu(4u) + bb * pu(5u);
    if (row0 + 0u < pu(0u)) {
        let ci = cb + (row0 + 0u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc0_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc0_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc0_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc0_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc0_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc0_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc0_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc0_1.w, beta);
    }
    if (row0 + 1u < pu(0u)) {
        let ci = cb + (row0 + 1u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc1_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc1_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc1_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc1_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc1_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc1_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc1_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc1_1.w, beta);
    }
    if (row0 + 2u < pu(0u)) {
        let ci = cb + (row0 + 2u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc2_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc2_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc2_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc2_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc2_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc2_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc2_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc2_1.w, beta);
    }
    if (row0 + 3u < pu(0u)) {
        let ci = cb + (row0 + 3u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc3_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc3_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc3_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc3_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc3_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc3_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc3_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc3_1.w, beta);
    }
    if (row0 + 4u < pu(0u)) {
        let ci = cb + (row0 + 4u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc4_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc4_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc4_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc4_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc4_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc4_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc4_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc4_1.w, beta);
    }
    if (row0 + 5u < pu(0u)) {
        let ci = cb + (row0 + 5u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc5_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc5_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc5_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc5_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc5_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc5_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc5_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc5_1.w, beta);
    }
    if (row0 + 6u < pu(0u)) {
        let ci = cb + (row0 + 6u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc6_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc6_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc6_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc6_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc6_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc6_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc6_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc6_1.w, beta);
    }
    if (row0 + 7u < pu(0u)) {
        let ci = cb + (row0 + 7u) * pu(3u);
        t_store(ci, col0 + 0u, alpha * acc7_0.x, beta);
        t_store(ci, col0 + 1u, alpha * acc7_0.y, beta);
        t_store(ci, col0 + 2u, alpha * acc7_0.z, beta);
        t_store(ci, col0 + 3u, alpha * acc7_0.w, beta);
        t_store(ci, col0 + 4u, alpha * acc7_1.x, beta);
        t_store(ci, col0 + 5u, alpha * acc7_1.y, beta);
        t_store(ci, col0 + 6u, alpha * acc7_1.z, beta);
        t_store(ci, col0 + 7u, alpha * acc7_1.w, beta);
    }
}

@group(0) @binding(1) var<storage, read_write> v_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> v_y: array<f32>;

// y = alpha * x + beta * y. params: 0 n, 1 x shift, 2 y shift, 3 alpha, 4 beta
@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let yi = pu(2u) + i;
    v_y[yi] = pf(3u) * v_x[pu(1u) + i] + pf(4u) * v_y[yi];
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
