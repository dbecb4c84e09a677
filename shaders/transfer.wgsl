// Data movement and reductions.

@group(0) @binding(1) var<storage, read_write> t1: array<f32>;
@group(0) @binding(2) var<storage, read_write> t2: array<f32>;
@group(0) @binding(3) var<storage, read_write> t3: array<f32>;

// dst[sum idx_k * ds_k] (+)= src[sum idx_k * ss_k]: one invocation per multi-index.
// words: 0 count, 1 src shift, 2 dst shift, 3 d, 4 add, 8 + 3k: dim, src stride, dst stride
@compute @workgroup_size(256)
fn strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    var rest = i;
    var si = pu(1u);
    var di = pu(2u);
    let d = pu(3u);
    for (var t = 0u; t < d; t++) {
        let k = d - 1u - t;
        let n = pu(8u + 3u * k);
        let q = rest / n;
        let idx = rest - q * n;
        rest = q;
        si += idx * pu(9u + 3u * k);
        di += idx * pu(10u + 3u * k);
    }
    if (pu(4u) != 0u) {
        t2[di] += t1[si];
    } else {
        t2[di] = t1[si];
    }
}

fn red_f(op: u32, v: f32) -> f32 {
    if (op == 1u) { return abs(v); }
    if (op == 2u) { return v * v; }
    return v;
}

// y[o*inner + i] (+)= coeff * sum_d f(x[(o*dim + d)*inner + i]) over d in [word 12, + word 13)
// (adding to y when word 14 is set: long reductions take several passes, because lavapipe ends
// an invocation's loops after 65535 iterations).
// words: 0 positions, 1 x shift, 2 y shift, 8 dim, 9 inner, 10 op, 11 coeff
@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let dim = pu(8u);
    let inner = pu(9u);
    let o = i / inner;
    let base = pu(1u) + o * dim * inner + (i - o * inner);
    var s = 0.0;
    for (var d = pu(12u); d < pu(12u) + pu(13u); d++) {
        s += red_f(pu(10u), t1[base + d * inner]);
    }
    let prev = select(0.0, t2[pu(2u) + i], pu(14u) != 0u);
    t2[pu(2u) + i] = prev + s * pf(11u);
}

// dx[o*dim + d] = coeff * dy[o] * g(x): g = 1 (Sum), sign(x) (Asum), 2x (Sumsq).
// words: 0 count, 1 x shift, 2 dy shift, 3 dx shift, 8 dim, 9 op, 10 coeff
@compute @workgroup_size(256)
fn reduce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let o = i / pu(8u);
    let c = t2[pu(2u) + o] * pf(10u);
    let x = t1[pu(1u) + i];
    var g = 1.0;
    if (pu(9u) == 1u) { g = sign(x); }
    if (pu(9u) == 2u) { g = 2.0 * x; }
    t3[pu(3u) + i] = c * g;
}

// Truncated row index, -1 when outside [0, rows).
fn row_idx(v: f32, rows: u32) -> i32 {
    if (!(v > -1.0) || !(v < f32(rows))) { return -1; }
    return i32(v);
}

// dst[r, :] = src[index[r], :] (a zero row for an index outside the source).
// t1 src, t2 dst, t3 index. words: 0 count, 8 row_len, 9 src_rows
@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let len = pu(8u);
    let r = i / len;
    let k = i - r * len;
    let s = row_idx(t3[pu(3u) + r], pu(9u));
    var v = 0.0;
    if (s >= 0) { v = t1[pu(1u) + u32(s) * len + k]; }
    t2[pu(2u) + i] = v;
}

// dst[j, :] = sum of src rows r with index[r] == j (0 when none): one invocation per dst element,
// over the rows [word 11, + word 12), adding to dst when word 13 is set (several passes for many
// rows: lavapipe ends an invocation's loops after 65535 iterations).
// t1 src, t2 dst, t3 index. words: 0 count, 8 row_len, 9 dst_rows, 10 rows
@compute @workgroup_size(256)
fn scatter_add_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let len = pu(8u);
    let j = i / len;
    let k = i - j * len;
    var s = 0.0;
    for (var r = pu(11u); r < pu(11u) + pu(12u); r++) {
        if (row_idx(t3[pu(3u) + r], pu(9u)) == i32(j)) { s += t1[pu(1u) + r * len + k]; }
    }
    let prev = select(0.0, t2[pu(2u) + i], pu(13u) != 0u);
    t2[pu(2u) + i] = prev + s;
}
