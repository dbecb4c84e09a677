// Normalisation family: per-channel reductions of [outer, channels, inner] tensors, BatchNorm's
// stored statistics, normalisation and its gradient, and LRN.

@group(0) @binding(1) var<storage, read_write> n1: array<f32>;
@group(0) @binding(2) var<storage, read_write> n2: array<f32>;
@group(0) @binding(3) var<storage, read_write> n3: array<f32>;
@group(0) @binding(4) var<storage, read_write> n4: array<f32>;
@group(0) @binding(5) var<storage, read_write> n5: array<f32>;
@group(0) @binding(6) var<storage, read_write> n6: array<f32>;

var<workgroup> nr_part: array<f32, 256>;

// out[c] (+)= sum over the rows of channel c of f: mode 0 a, 1 (a - m[c])^2, 2 a * b.
// n1 = a, n2 = b, n3 = m, n4 = out. words: 1..4 shifts, 8 inner, 9 channels, 10 outer rows in
// this chunk, 11 mode, 12 accumulate, 13 first channel, [14, 15) the range of the channel's
// (row, inner) elements this dispatch adds (lavapipe ends an invocation's loops after 65535
// iterations, so the host keeps it within 256 * 32768). One workgroup per channel.
@compute @workgroup_size(256)
fn chan_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = pu(13u) + wid.x + wid.y * 65535u;
    if (c >= pu(9u)) { return; }
    let inner = pu(8u);
    let total = min(pu(10u) * inner, pu(15u));
    let mode = pu(11u);
    var mc = 0.0;
    if (mode == 1u) { mc = n3[pu(3u) + c]; }
    var s = 0.0;
    for (var j = pu(14u) + lid; j < total; j += 256u) {
        let o = j / inner;
        let idx = (o * pu(9u) + c) * inner + (j - o * inner);
        let a = n1[pu(1u) + idx];
        if (mode == 0u) {
            s += a;
        } else if (mode == 1u) {
            let d = a - mc;
            s += d * d;
        } else {
            s += a * n2[pu(2u) + idx];
        }
    }
    nr_part[lid] = s;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) { nr_part[lid] += nr_part[lid + h]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let oi = pu(4u) + c;
        if (pu(12u) != 0u) { n4[oi] += nr_part[0]; } else { n4[oi] = nr_part[0]; }
    }
}

// Per-channel small ops (one invocation per channel). words: 0 channels, 1..6 shifts, 8.. op words
// std_of: n1 = var, n2 = std. 8 eps, 9 mode (0 sqrt(var + eps), 1 sqrt(var) + eps)
@compute @workgroup_size(64)
fn std_of(@builtin(global_invocation_id) g: vec3<u32>) {
    let c = g.x;
    if (c >= pu(0u)) { return; }
    let v = n1[pu(1u) + c];
    if (pu(9u) == 0u) { n2[pu(2u) + c] = sqrt(v + pf(8u)); } else { n2[pu(2u) + c] = sqrt(v) + pf(8u); }
}

// epilogue_table: n1 = table (4 floats per channel: mean, std, scale, bias), n2 mean, n3 std,
// n4 scale, n5 bias; word 8 which of them there are (bits 1 mean and std, 2 scale, 4 bias; the
// others read as 0, 1, 1, 0).
@compute @workgroup_size(64)
fn epilogue_table(@builtin(global_invocation_id) g: vec3<u32>) {
    let c = g.x;
    if (c >= pu(0u)) { return; }
    let have = pu(8u);
    var t = vec4<f32>(0.0, 1.0, 1.0, 0.0);
    if ((have & 1u) != 0u) { t.x = n2[pu(2u) + c]; t.y = n3[pu(3u) + c]; }
    if ((have & 2u) != 0u) { t.z = n4[pu(4u) + c]; }
    if ((have & 4u) != 0u) { t.w = n5[pu(5u) + c]; }
    let o = pu(1u) + 4u * c;
    n1[o] = t.x;
    n1[o + 1u] = t.y;
    n1[o + 2u] = t.z;
    n1[o + 3u] = t.w;
}

// stored_stats: n1 sums, n2 sq_sums, n3 count, n4 mean, n5 var
@compute @workgroup_size(64)
fn stored_stats(@builtin(global_invocation_id) g: vec3<u32>) {
    let c = g.x;
    if (c >= pu(0u)) { return; }
    let cnt = n3[pu(3u)];
    var f = 0.0;
    if (cnt != 0.0) { f = 1.0 / cnt; }
    n4[pu(4u) + c] = f * n1[pu(1u) + c];
    n5[pu(5u) + c] = f * n2[pu(2u) + c];
}

// stats_update: n1 mean, n2 var, n3 sums, n4 sq_sums, n5 count. words 8 maf, 9 correction,
// 10 channels
@compute @workgroup_size(64)
fn stats_update(@builtin(global_invocation_id) g: vec3<u32>) {
    let c = g.x;
    if (c >= pu(0u)) { return; }
    let maf = pf(8u);
    if (c == 0u) { n5[pu(5u)] = n5[pu(5u)] * maf + 1.0; }
    if (c >= pu(10u)) { return; }
    n3[pu(3u) + c] = n1[pu(1u) + c] + maf * n3[pu(3u) + c];
    n4[pu(4u) + c] = pf(9u) * n2[pu(2u) + c] + maf * n4[pu(4u) + c];
}

// Point-wise channel ops. words: 0 n, 1..6 shifts, 8 inner, 9 channels, 10 first element index,
// 11 mode, 12 1/m
fn chan(i: u32) -> u32 {
    return ((pu(10u) + i) / pu(8u)) % pu(9u);
}

// normalize: n1 x, n2 mean, n3 std, n4 y. mode 0: x - mean, 1: (x - mean) / std
@compute @workgroup_size(256)
fn normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let c = chan(i);
    var v = n1[pu(1u) + i] - n2[pu(2u) + c];
    if (pu(11u) == 1u) { v = v / n3[pu(3u) + c]; }
    n4[pu(4u) + i] = v;
}

// normalize_backward: n1 y, n2 dy, n3 std, n4 sum(dy), n5 sum(dy * y), n6 dx.
// mode 0 Full, 1 Frozen, 2 CenterOnly
@compute @workgroup_size(256)
fn normalize_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let c = chan(i);
    let d = n2[pu(2u) + i];
    let inv_m = pf(12u);
    var v: f32;
    switch pu(11u) {
        case 0u: {
            v = (d - inv_m * (n5[pu(5u) + c] * n1[pu(1u) + i] + n4[pu(4u) + c])) / n3[pu(3u) + c];
        }
        case 1u: { v = d / n3[pu(3u) + c]; }
        default: { v = d - n4[pu(4u) + c] * inv_m; }
    }
    n6[pu(6u) + i] = v;
}

// LRN. words: 0 threads, 1..5 shifts, 8 channels, 9 height, 10 width, 11 size, 12 alpha, 13 beta, 14 k

// Across channels: one invocation per (image, pixel), a running window sum over channels.
// n1 x, n2 scale, n3 y
@compute @workgroup_size(256)
fn lrn_across(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let cs = pu(8u);
    let s = pu(9u) * pu(10u);
    let n = i / s;
    let px = i - n * s;
    let base = n * cs * s + px;
    let size = pu(11u);
    let pre = (size - 1u) / 2u;
    let a = pf(12u) / f32(size);
    var acc = pf(14u);
    for (var p = 0u; p < size; p++) {
        if (p >= pre && p - pre < cs) {
            let v = n1[pu(1u) + base + (p - pre) * s];
            acc += a * (v * v);
        }
    }
    n2[pu(2u) + base] = acc;
    for (var c = 1u; c < cs; c++) {
        let hi = c + size - 1u;
        if (hi >= pre && hi - pre < cs) {
            let v = n1[pu(1u) + base + (hi - pre) * s];
            acc += a * (v * v);
        }
        if (c - 1u >= pre && c - 1u - pre < cs) {
            let v = n1[pu(1u) + base + (c - 1u - pre) * s];
            acc += -a * (v * v);
        }
        n2[pu(2u) + base + c * s] = acc;
    }
    for (var c = 0u; c < cs; c++) {
        let k = base + c * s;
        n3[pu(3u) + k] = pow(n2[pu(2u) + k], -pf(13u)) * n1[pu(1u) + k];
    }
}

// Window [lo, hi) of `size` centred on p, clipped to [0, len).
fn lwin(p: u32, size: u32, len: u32) -> vec2<u32> {
    let pre = (size - 1u) / 2u;
    var lo = 0u;
    if (p > pre) { lo = p - pre; }
    return vec2<u32>(lo, min(p + size - pre, len));
}

// Within channel: one invocation per element. n1 x, n2 scale, n3 y
@compute @workgroup_size(256)
fn lrn_within(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let h = pu(9u);
    let w = pu(10u);
    let s = h * w;
    let plane = i / s;
    let px = i - plane * s;
    let ph = px / w;
    let pw = px - ph * w;
    let size = pu(11u);
    let hr = lwin(ph, size, h);
    let wr = lwin(pw, size, w);
    var acc = 0.0;
    for (var hh = hr.x; hh < hr.y; hh++) {
        for (var ww = wr.x; ww < wr.y; ww++) {
            let v = n1[pu(1u) + plane * s + hh * w + ww];
            acc += v * v;
        }
    }
    let sc = acc / f32(size * size) * pf(12u) + pf(14u);
    n2[pu(2u) + i] = sc;
    n3[pu(3u) + i] = pow(sc, -pf(13u)) * n1[pu(1u) + i];
}

fn lrn_ratio(k: u32) -> f32 {
    return n4[pu(4u) + k] * n2[pu(2u) + k] / n3[pu(3u) + k];
}

// Across-channel backward, one invocation per (image, pixel). n1 x, n2 y, n3 scale, n4 dy, n5 dx
@compute @workgroup_size(256)
fn lrn_across_back(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let cs = pu(8u);
    let s = pu(9u) * pu(10u);
    let n = i / s;
    let px = i - n * s;
    let base = n * cs * s + px;
    let size = pu(11u);
    let beta = pf(13u);
    let coef = 2.0 * pf(12u) * beta / f32(size);
    let inv_pre = size - (size + 1u) / 2u;
    var accum = 0.0;
    for (var p = 0u; p + 1u < size; p++) {
        if (p >= inv_pre && p - inv_pre < cs) { accum += lrn_ratio(base + (p - inv_pre) * s); }
    }
    for (var c = 0u; c < cs; c++) {
        let hi = c + size - 1u;
        if (hi >= inv_pre && hi - inv_pre < cs) { accum += lrn_ratio(base + (hi - inv_pre) * s); }
        let k = base + c * s;
        let v = pow(n3[pu(3u) + k], -beta) * n4[pu(4u) + k];
        n5[pu(5u) + k] = v + -coef * (n1[pu(1u) + k] * accum);
        if (c >= inv_pre && c - inv_pre < cs) { accum -= lrn_ratio(base + (c - inv_pre) * s); }
    }
}

// Within-channel backward, one invocation per element. n1 x, n2 y, n3 scale, n4 dy, n5 dx
@compute @workgroup_size(256)
fn lrn_within_back(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let h = pu(9u);
    let w = pu(10u);
    let s = h * w;
    let plane = i / s;
    let px = i - plane * s;
    let ph = px / w;
    let pw = px - ph * w;
    let size = pu(11u);
    let beta = pf(13u);
    let coef = 2.0 * pf(12u) * beta / f32(size * size);
    let hr = lwin(ph, size, h);
    let wr = lwin(pw, size, w);
    var acc = 0.0;
    for (var hh = hr.x; hh < hr.y; hh++) {
        for (var ww = wr.x; ww < wr.y; ww++) {
            acc += lrn_ratio(plane * s + hh * w + ww);
        }
    }
    let v = pow(n3[pu(3u) + i], -beta) * n4[pu(4u) + i];
    n5[pu(5u) + i] = v - coef * n1[pu(1u) + i] * acc;
}
