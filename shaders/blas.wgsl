// BLAS family: GEMM (operand packing + a portable register-tiled micro-kernel; the subgroup
// micro-kernel is in blas_subgroup.wgsl), axpby and scale.
//
// Packed layouts (scratch buffers written by pack_a / pack_b, zero outside the matrix):
//   Ap[b][panel p][k][r]  = op(A_b)[32p + r, k]   (panels of 32 rows, r in 0..32)
//   Bp[b][panel q][k][c]  = op(B_b)[k, 64q + c]   (panels of 64 columns, c in 0..64)
// so a micro-kernel reads 4 consecutive rows of A or columns of B at one k as one vec4.

@group(0) @binding(1) var<storage, read_write> pk_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> pk_dst: array<f32>;

// params: 0 rows, 1 kc, 2 kp, 3 trans, 4 ld, 5 src shift, 6 src batch stride, 7 dst batch stride,
//         8 panels, 9 total threads
@compute @workgroup_size(256)
fn pack_a(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(9u)) { return; }
    let r = i % 32u;
    let t = i / 32u;
    let kp = pu(2u);
    let kk = t % kp;
    let t2 = t / kp;
    let pnl = t2 % pu(8u);
    let bb = t2 / pu(8u);
    let row = pnl * 32u + r;
    var v = 0.0;
    if (row < pu(0u) && kk < pu(1u)) {
        var si = pu(5u) + bb * pu(6u);
        if (pu(3u) != 0u) { si += kk * pu(4u) + row; } else { si += row * pu(4u) + kk; }
        v = pk_src[si];
    }
    pk_dst[bb * pu(7u) + (pnl * kp + kk) * 32u + r] = v;
}

// params: 0 cols, 1 kc, 2 kp, 3 trans, 4 ld, 5 src shift, 6 src batch stride, 7 dst batch stride,
//         8 panels, 9 total threads
@compute @workgroup_size(256)
fn pack_b(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(9u)) { return; }
    let c = i % 64u;
    let t = i / 64u;
    let kp = pu(2u);
    let kk = t % kp;
    let t2 = t / kp;
    let pnl = t2 % pu(8u);
    let bb = t2 / pu(8u);
    let col = pnl * 64u + c;
    var v = 0.0;
    if (col < pu(0u) && kk < pu(1u)) {
        var si = pu(5u) + bb * pu(6u);
        if (pu(3u) != 0u) { si += col * pu(4u) + kk; } else { si += kk * pu(4u) + col; }
        v = pk_src[si];
    }
    pk_dst[bb * pu(7u) + (pnl * kp + kk) * 64u + c] = v;
}

@group(0) @binding(1) var<storage, read_write> t_ap: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> t_bp: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> t_c: array<f32>;

fn store_ct(ci: u32, col: u32, v: f32, beta: f32) {
    if (col < pu(1u)) {
        if (beta == 0.0) {
            t_c[ci + col] = v;
        } else {
            t_c[ci + col] = v + beta * t_c[ci + col];
        }
    }
}

// Portable GEMM micro-kernel (no subgroups): 32 invocations per workgroup compute a 32x64 block
// of C; invocation (l = column group 0..7, g = row group 0..3) keeps a 8x8 block in vec4
// registers and loads its own packed A (2 vec4) and B (2 vec4) values per k.
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
    var ai = pu(10u) + bb * pu(6u) + p * kp * 8u + g * 2u;
    var bi = pu(11u) + bb * pu(7u) + q * kp * 16u + 2u * l;
    for (var kk = 0u; kk < kp; kk++) {
        let a0 = t_ap[ai + 0u];
        let a1 = t_ap[ai + 1u];
        let b0 = t_bp[bi];
        let b1 = t_bp[bi + 1u];
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
    let row0 = p * 32u + g * 8u;
    let col0 = q * 64u + 8u * l;
    let alpha = pf(8u);
    let beta = pf(9u);
    let cb = pu(4u) + bb * pu(5u);
    {
        let row = row0 + 0u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc0_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc0_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc0_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc0_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc0_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc0_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc0_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc0_1.w, beta);
        }
    }
    {
        let row = row0 + 1u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc1_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc1_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc1_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc1_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc1_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc1_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc1_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc1_1.w, beta);
        }
    }
    {
        let row = row0 + 2u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc2_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc2_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc2_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc2_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc2_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc2_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc2_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc2_1.w, beta);
        }
    }
    {
        let row = row0 + 3u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc3_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc3_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc3_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc3_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc3_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc3_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc3_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc3_1.w, beta);
        }
    }
    {
        let row = row0 + 4u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc4_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc4_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc4_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc4_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc4_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc4_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc4_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc4_1.w, beta);
        }
    }
    {
        let row = row0 + 5u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc5_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc5_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc5_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc5_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc5_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc5_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc5_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc5_1.w, beta);
        }
    }
    {
        let row = row0 + 6u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc6_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc6_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc6_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc6_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc6_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc6_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc6_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc6_1.w, beta);
        }
    }
    {
        let row = row0 + 7u;
        if (row < pu(0u)) {
            let ci = cb + row * pu(3u);
            store_ct(ci, col0 + 0u, alpha * acc7_0.x, beta);
            store_ct(ci, col0 + 1u, alpha * acc7_0.y, beta);
            store_ct(ci, col0 + 2u, alpha * acc7_0.z, beta);
            store_ct(ci, col0 + 3u, alpha * acc7_0.w, beta);
            store_ct(ci, col0 + 4u, alpha * acc7_1.x, beta);
            store_ct(ci, col0 + 5u, alpha * acc7_1.y, beta);
            store_ct(ci, col0 + 6u, alpha * acc7_1.z, beta);
            store_ct(ci, col0 + 7u, alpha * acc7_1.w, beta);
        }
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
