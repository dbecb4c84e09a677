// The hot point-wise kernels of elementwise.wgsl and norm.wgsl on 4 consecutive elements per
// invocation (GpuEngine::dispatch_pointwise picks them when the element-wise operands are
// aligned): the same formulas and parameter words, except word 0 = elements / 4. Per-channel
// operands are read one float at a time (`chN`). OP is the op code or mode as a pipeline
// constant, so that lavapipe compiles one arm of each switch.

@group(0) @binding(1) var<storage, read_write> q1: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> q2: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> q3: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> q4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> q5: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> q6: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> q7: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> q8: array<vec4<f32>>;

override OP: u32 = 0u;
// 1 when the rows (of `inner` elements) hold whole vec4s: a vec4's elements share one channel.
override ROWS4: u32 = 0u;

// Index of vec4 `i` of the binding whose shift is word `w`.
fn at4(w: u32, i: u32) -> u32 {
    return pu(w) / 4u + i;
}

// The channels of the 4 elements of vec4 `i` (words 8 inner, 9 channels, 10 first element).
fn chans(i: u32) -> vec4<u32> {
    let first = pu(10u) + 4u * i;
    let inner = pu(8u);
    let channels = pu(9u);
    if (ROWS4 == 1u) {
        return vec4<u32>((first / inner) % channels);
    }
    return (vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u)) / inner % channels;
}

// The per-channel values of channels `c` from binding N (one function per binding: WGSL cannot
// pass a storage array to a function).
fn ch2(c: vec4<u32>) -> vec4<f32> {
    let j = vec4<u32>(pu(2u)) + c;
    if (ROWS4 == 1u) { return vec4<f32>(q2[j.x >> 2u][j.x & 3u]); }
    return vec4<f32>(q2[j.x >> 2u][j.x & 3u], q2[j.y >> 2u][j.y & 3u], q2[j.z >> 2u][j.z & 3u],
                     q2[j.w >> 2u][j.w & 3u]);
}

fn ch3(c: vec4<u32>) -> vec4<f32> {
    let j = vec4<u32>(pu(3u)) + c;
    if (ROWS4 == 1u) { return vec4<f32>(q3[j.x >> 2u][j.x & 3u]); }
    return vec4<f32>(q3[j.x >> 2u][j.x & 3u], q3[j.y >> 2u][j.y & 3u], q3[j.z >> 2u][j.z & 3u],
                     q3[j.w >> 2u][j.w & 3u]);
}

fn ch4(c: vec4<u32>) -> vec4<f32> {
    let j = vec4<u32>(pu(4u)) + c;
    if (ROWS4 == 1u) { return vec4<f32>(q4[j.x >> 2u][j.x & 3u]); }
    return vec4<f32>(q4[j.x >> 2u][j.x & 3u], q4[j.y >> 2u][j.y & 3u], q4[j.z >> 2u][j.z & 3u],
                     q4[j.w >> 2u][j.w & 3u]);
}

fn ch5(c: vec4<u32>) -> vec4<f32> {
    let j = vec4<u32>(pu(5u)) + c;
    if (ROWS4 == 1u) { return vec4<f32>(q5[j.x >> 2u][j.x & 3u]); }
    return vec4<f32>(q5[j.x >> 2u][j.x & 3u], q5[j.y >> 2u][j.y & 3u], q5[j.z >> 2u][j.z & 3u],
                     q5[j.w >> 2u][j.w & 3u]);
}

// axpby: q1 = x, q2 = y; y = alpha * x + beta * y, words 8 alpha, 9 beta
@compute @workgroup_size(256)
fn axpby4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let yi = at4(2u, i);
    q2[yi] = pf(8u) * q1[at4(1u, i)] + pf(9u) * q2[yi];
}

// unary: q1 = x, q2 = y
@compute @workgroup_size(256)
fn unary4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = q1[at4(1u, i)];
    q2[at4(2u, i)] = vec4<f32>(unary_f(OP, x.x), unary_f(OP, x.y), unary_f(OP, x.z),
                               unary_f(OP, x.w));
}

// unary_backward: q1 = x, q2 = y, q3 = dy, q4 = dx
@compute @workgroup_size(256)
fn unary_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = q1[at4(1u, i)];
    let y = q2[at4(2u, i)];
    let d = q3[at4(3u, i)];
    q4[at4(4u, i)] = vec4<f32>(unary_b(OP, x.x, y.x, d.x), unary_b(OP, x.y, y.y, d.y),
                               unary_b(OP, x.z, y.z, d.z), unary_b(OP, x.w, y.w, d.w));
}

// nary_step (OP = mode): q1 = x_j, q2 = y, q3 = argmax; words 9 coeff, 10 j
@compute @workgroup_size(256)
fn nary_step4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = q1[at4(1u, i)];
    let yi = at4(2u, i);
    let mi = at4(3u, i);
    let c = pf(9u);
    switch OP {
        case 0u: { q2[yi] = c * x; }
        case 1u: { q2[yi] += c * x; }
        case 2u: { q2[yi] *= x; }
        case 3u: { q2[yi] = x; q3[mi] = vec4<f32>(0.0); }
        case 4u: {
            let y = q2[yi];
            let take = !(y > x);
            q2[yi] = select(y, x, take);
            q3[mi] = select(q3[mi], vec4<f32>(f32(pu(10u))), take);
        }
        default: {
            let y = q2[yi];
            let take = x > y;
            q2[yi] = select(y, x, take);
            q3[mi] = select(q3[mi], vec4<f32>(f32(pu(10u))), take);
        }
    }
}

// nary_sum2: q1 = x_0, q2 = x_1, q3 = y; words 8 c_0, 9 c_1
@compute @workgroup_size(256)
fn nary_sum2_4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    q3[at4(3u, i)] = pf(8u) * q1[at4(1u, i)] + pf(9u) * q2[at4(2u, i)];
}

// junction_backward (OP = flags as word 8 of elementwise.wgsl's): q1, q2 the sums, q3 = x,
// q4 = dy, q5 and q6 the dx; words 9 negative slope, 10-11 coefficients
@compute @workgroup_size(256)
fn junction_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let di = at4(4u, i);
    var d: vec4<f32>;
    if ((OP & 1u) != 0u) { d = q1[at4(1u, i)] + q2[at4(2u, i)]; } else { d = q4[di]; }
    if ((OP & 2u) != 0u) {
        let x = q3[at4(3u, i)];
        let one = vec4<f32>(1.0);
        let zero = vec4<f32>(0.0);
        d = d * (select(zero, one, x > zero) + pf(9u) * select(zero, one, x <= zero));
    }
    if ((OP & 3u) != 0u) { q4[di] = d; }
    if ((OP & 4u) != 0u) { q5[at4(5u, i)] = d * pf(10u); }
    if ((OP & 8u) != 0u) { q6[at4(6u, i)] = d * pf(11u); }
}

// nary_back (OP = mode): q1 = a, q2 = b, q3 = c, q4 = dx; words 9 coeff, 10 index
@compute @workgroup_size(256)
fn nary_back4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let di = at4(4u, i);
    switch OP {
        case 0u: { q4[di] = q1[at4(1u, i)] * pf(9u); }
        case 1u: { q4[di] = (q1[at4(1u, i)] / q2[at4(2u, i)]) * q3[at4(3u, i)]; }
        case 2u: {
            q4[di] = select(vec4<f32>(0.0), q2[at4(2u, i)], q1[at4(1u, i)] == vec4<f32>(pf(10u)));
        }
        case 3u: { q4[di] = q1[at4(1u, i)]; }
        default: { q4[di] *= q1[at4(1u, i)]; }
    }
}

// channel_affine (OP = flags: bit 0 scale, bit 1 bias): q1 = x, q2 = y, q3 = scale, q4 = bias
@compute @workgroup_size(256)
fn channel_affine4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let c = chans(i);
    var v = q1[at4(1u, i)];
    if ((OP & 1u) != 0u) { v *= ch3(c); }
    if ((OP & 2u) != 0u) { v += ch4(c); }
    q2[at4(2u, i)] = v;
}

// channel_stages (OP = flags): q1 = v, q2 = mean or the sum's second input, q3 = std or its
// first, q4 = scale, q5 = bias, q6 = save; words 12 negative slope, 13-14 the sum's
// coefficients (see elementwise.wgsl)
@compute @workgroup_size(256)
fn channel_stages4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let c = chans(i);
    let vi = at4(1u, i);
    var v: vec4<f32>;
    if ((OP & 32u) != 0u) {
        v = pf(13u) * q3[at4(3u, i)] + pf(14u) * q2[at4(2u, i)];
    } else {
        v = q1[vi];
    }
    if ((OP & 1u) != 0u) { v = (v - ch2(c)) / ch3(c); }
    if ((OP & 8u) != 0u) { q6[at4(6u, i)] = v; }
    if ((OP & 2u) != 0u) { v *= ch4(c); }
    if ((OP & 4u) != 0u) { v += ch5(c); }
    if ((OP & 16u) != 0u) {
        let a = pf(12u);
        v = max(v, vec4<f32>(0.0)) + a * min(v, vec4<f32>(0.0));
    }
    q1[vi] = v;
}

// normalize (OP = mode: 0 x - mean, 1 (x - mean) / std): q1 = x, q2 = mean, q3 = std, q4 = y
@compute @workgroup_size(256)
fn normalize4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let c = chans(i);
    var v = q1[at4(1u, i)] - ch2(c);
    if (OP == 1u) { v = v / ch3(c); }
    q4[at4(4u, i)] = v;
}

// normalize_backward (OP = mode: 0 Full, 1 Frozen, 2 CenterOnly): q1 = y, q2 = dy, q3 = std,
// q4 = sum(dy), q5 = sum(dy * y), q6 = dx; word 12 = 1 / m
@compute @workgroup_size(256)
fn normalize_backward4(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let c = chans(i);
    let d = q2[at4(2u, i)];
    let inv_m = pf(12u);
    var v: vec4<f32>;
    switch OP {
        case 0u: { v = (d - inv_m * (ch5(c) * q1[at4(1u, i)] + ch4(c))) / ch3(c); }
        case 1u: { v = d / ch3(c); }
        default: { v = d - ch4(c) * inv_m; }
    }
    q6[at4(6u, i)] = v;
}

// channel_affine_backward (OP = parts: bit 0 bias sum, bit 1 scale sum, bit 2 dx, bit 3 a ReLU's
// backward first, bit 4 a frozen BatchNorm's last): one workgroup per channel, one pass over its
// rows: dy = dy * ((r > 0) + slope * (r <= 0)) with slope 0 (bit 3), bias_diff[c] = beta_b * bias_diff[c] +
// sum dy, scale_diff[c] = beta_s * scale_diff[c] + sum dy * x, dx = dy * scale[c], dx = dx /
// std[c] (bit 4).
// q1 = dy, q2 = x, q3 = scale, q4 = dx, q5 = bias_diff, q6 = scale_diff, q7 = r, q8 = std.
// words 8 inner / 4, 9 channels, 10 outer, 11 first channel, 12 beta_b, 13 beta_s, 14 slope,
// 15 / 16 the shifts of q7 / q8.
var<workgroup> ab_part: array<vec2<f32>, 256>;

// One channel's pass over its rows, vec4s start, start + step, ...: writes dx and returns its
// share of (sum dy, sum dy * x).
fn ab_rows(c: u32, start: u32, step: u32) -> vec2<f32> {
    let inner4 = pu(8u);
    var scale = 0.0;
    if ((OP & 4u) != 0u) {
        let j = pu(3u) + c;
        scale = q3[j >> 2u][j & 3u];
    }
    var sd = 1.0;
    if ((OP & 16u) != 0u) {
        let j = pu(16u) + c;
        sd = q8[j >> 2u][j & 3u];
    }
    let slope = pf(14u);
    var sb = vec4<f32>(0.0);
    var ss = vec4<f32>(0.0);
    let dy0 = pu(1u) / 4u;
    let x0 = pu(2u) / 4u;
    let dx0 = pu(4u) / 4u;
    let r0 = pu(15u) / 4u;
    for (var o = 0u; o < pu(10u); o++) {
        let row = (o * pu(9u) + c) * inner4;
        for (var k = start; k < inner4; k += step) {
            let idx = row + k;
            var d = q1[dy0 + idx];
            if ((OP & 8u) != 0u) {
                // unary_b's ReLU for a slope of 0 (factors 1 or 0), as a select: the compiler
                // may not fuse anything into the sums that the separate kernels round apart.
                d = select(d * slope, d, q7[r0 + idx] > vec4<f32>(0.0));
            }
            if ((OP & 1u) != 0u) { sb += d; }
            if ((OP & 2u) != 0u) { ss += d * q2[x0 + idx]; }
            if ((OP & 4u) != 0u) {
                let v = d * scale;
                if ((OP & 16u) != 0u) { q4[dx0 + idx] = v / sd; } else { q4[dx0 + idx] = v; }
            }
        }
    }
    return vec2<f32>((sb.x + sb.y) + (sb.z + sb.w), (ss.x + ss.y) + (ss.z + ss.w));
}

// Stores channel c's (sum dy, sum dy * x) with their betas.
fn ab_store(c: u32, sums: vec2<f32>) {
    if ((OP & 1u) != 0u) {
        let j = pu(5u) + c;
        let beta = pf(12u);
        if (beta == 0.0) { q5[j >> 2u][j & 3u] = sums.x; } else { q5[j >> 2u][j & 3u] = beta * q5[j >> 2u][j & 3u] + sums.x; }
    }
    if ((OP & 2u) != 0u) {
        let j = pu(6u) + c;
        let beta = pf(13u);
        if (beta == 0.0) { q6[j >> 2u][j & 3u] = sums.y; } else { q6[j >> 2u][j & 3u] = beta * q6[j >> 2u][j & 3u] + sums.y; }
    }
}

// channel_affine_backward4 with one invocation per channel, for many channels of short rows
// (no workgroup reduction): the same bindings, words and OP.
@compute @workgroup_size(64)
fn channel_affine_backward_rows4(@builtin(workgroup_id) wid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let c = pu(11u) + (wid.y * nwg.x + wid.x) * 64u + lid;
    if (c >= pu(9u)) { return; }
    ab_store(c, ab_rows(c, 0u, 1u));
}

@compute @workgroup_size(256)
fn channel_affine_backward4(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let c = pu(11u) + wid.x + wid.y * 65535u;
    if (c >= pu(9u)) { return; }
    ab_part[lid] = ab_rows(c, lid, 256u);
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) { ab_part[lid] += ab_part[lid + h]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        ab_store(c, ab_part[0]);
    }
}
