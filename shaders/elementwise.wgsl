// Element-wise family. Point-wise kernels share one parameter layout:
//   0 n (elements of this dispatch), 1..8 shifts of bindings 1..7, 8.. op-specific words.
// Unary op codes: 0 ReLU(a = slope), 1 Sigmoid, 2 TanH, 3 AbsVal, 4 BNLL, 5 ELU(a = alpha),
// 6 Power(a = power, b = scale, c = shift), 7 Exp(a = inner, b = outer), 8 Log(a = scale,
// b = shift, c = base_scale), 9 Threshold(a), 10 Clip(a = min, b = max), 11 Swish(a = beta).

@group(0) @binding(1) var<storage, read_write> e1: array<f32>;
@group(0) @binding(2) var<storage, read_write> e2: array<f32>;
@group(0) @binding(3) var<storage, read_write> e3: array<f32>;
@group(0) @binding(4) var<storage, read_write> e4: array<f32>;
@group(0) @binding(5) var<storage, read_write> e5: array<f32>;
@group(0) @binding(6) var<storage, read_write> e6: array<f32>;

// y = op(x): e1 = x, e2 = y; word 8 = op
@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(pu(8u), e1[pu(1u) + i]);
}

// dx = dy * op'(x, y): e1 = x, e2 = y, e3 = dy, e4 = dx
@compute @workgroup_size(256)
fn unary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(pu(8u), e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

// One step of an n-ary op: e1 = x_j, e2 = y, e3 = argmax. words: 8 mode, 9 coeff, 10 j
// mode 0: y = c * x; 1: y += c * x; 2: y *= x; 3: max first pair start (y = x, m = 0);
// 4: y, m = (x >= y ? (x, j) : (y, m)) (x_1 wins ties); 5: strictly greater wins.
@compute @workgroup_size(256)
fn nary_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = e1[pu(1u) + i];
    let yi = pu(2u) + i;
    let c = pf(9u);
    switch pu(8u) {
        case 0u: { e2[yi] = c * x; }
        case 1u: { e2[yi] += c * x; }
        case 2u: { e2[yi] *= x; }
        case 3u: { e2[yi] = x; e3[pu(3u) + i] = 0.0; }
        case 4u: {
            if (!(e2[yi] > x)) { e2[yi] = x; e3[pu(3u) + i] = f32(pu(10u)); }
        }
        default: {
            if (x > e2[yi]) { e2[yi] = x; e3[pu(3u) + i] = f32(pu(10u)); }
        }
    }
}

// The first two inputs of a weighted sum: e1 = x_0, e2 = x_1, e3 = y; words 8 c_0, 9 c_1.
@compute @workgroup_size(256)
fn nary_sum2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e3[pu(3u) + i] = pf(8u) * e1[pu(1u) + i] + pf(9u) * e2[pu(2u) + i];
}

// The backward around a sum junction (ElementwiseKernel::JunctionBackward). word 8 flags: 1 dy =
// e1 + e2 (a Split's two top diffs; else dy is read), 2 ReLU backward at x = e3, 4 dx e5,
// 8 dx e6; e4 = dy, written with flag 1 or 2; words 9 negative slope, 10-11 the coefficients of
// e5 and e6.
@compute @workgroup_size(256)
fn junction_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let flags = pu(8u);
    let di = pu(4u) + i;
    var d: f32;
    if ((flags & 1u) != 0u) { d = e1[pu(1u) + i] + e2[pu(2u) + i]; } else { d = e4[di]; }
    if ((flags & 2u) != 0u) {
        let x = e3[pu(3u) + i];
        d = d * (step(x > 0.0) + pf(9u) * step(x <= 0.0));
    }
    if ((flags & 3u) != 0u) { e4[di] = d; }
    if ((flags & 4u) != 0u) { e5[pu(5u) + i] = d * pf(10u); }
    if ((flags & 8u) != 0u) { e6[pu(6u) + i] = d * pf(11u); }
}

// Backward helpers: e1 = a, e2 = b, e3 = c, e4 = dx. word 8 mode:
// 0: dx = a * c9 (Sum: a = dy); 1: dx = (a / b) * c (Prod unstable: a = y, b = x_i, c = dy);
// 2: dx = (a == f(10) ? b : 0) (Max: a = argmax, b = dy); 3: dx = a (start a product);
// 4: dx *= a.
@compute @workgroup_size(256)
fn nary_back(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let di = pu(4u) + i;
    switch pu(8u) {
        case 0u: { e4[di] = e1[pu(1u) + i] * pf(9u); }
        case 1u: { e4[di] = (e1[pu(1u) + i] / e2[pu(2u) + i]) * e3[pu(3u) + i]; }
        case 2u: { e4[di] = select(0.0, e2[pu(2u) + i], e1[pu(1u) + i] == pf(10u)); }
        case 3u: { e4[di] = e1[pu(1u) + i]; }
        default: { e4[di] *= e1[pu(1u) + i]; }
    }
}

// Channel ops over rows of `inner` elements; the channel of global row r is r % channels.
// words: 8 inner, 9 channels, 10 first element index of this dispatch (global), 11 mode/flags
// channel_affine: e1 = x, e2 = y, e3 = scale, e4 = bias; flags bit 0 scale, bit 1 bias
@compute @workgroup_size(256)
fn channel_affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let ch = ((pu(10u) + i) / pu(8u)) % pu(9u);
    var v = e1[pu(1u) + i];
    let flags = pu(11u);
    if ((flags & 1u) != 0u) { v *= e3[pu(3u) + ch]; }
    if ((flags & 2u) != 0u) { v += e4[pu(4u) + ch]; }
    e2[pu(2u) + i] = v;
}

// channel_stages, the fused forward of Eltwise SUM or BatchNorm (stored statistics), Scale and
// ReLU (flags: 1 normalize, 2 scale, 4 bias, 8 save before the scale, 16 ReLU, 32 sum): e1 = v
// (read, unless summed, and written), e2 = mean (sum: the second input), e3 = std (sum: the
// first input), e4 = scale, e5 = bias, e6 = save; words 8 inner, 9 channels, 10 first element,
// 11 flags, 12 negative slope, 13 and 14 the sum's coefficients. Each step is its own kernel's
// formula.
@compute @workgroup_size(256)
fn channel_stages(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let ch = ((pu(10u) + i) / pu(8u)) % pu(9u);
    let flags = pu(11u);
    var v: f32;
    if ((flags & 32u) != 0u) {
        v = pf(13u) * e3[pu(3u) + i] + pf(14u) * e2[pu(2u) + i];
    } else {
        v = e1[pu(1u) + i];
    }
    if ((flags & 1u) != 0u) { v = (v - e2[pu(2u) + ch]) / e3[pu(3u) + ch]; }
    if ((flags & 8u) != 0u) { e6[pu(6u) + i] = v; }
    if ((flags & 2u) != 0u) { v *= e4[pu(4u) + ch]; }
    if ((flags & 4u) != 0u) { v += e5[pu(5u) + ch]; }
    if ((flags & 16u) != 0u) {
        let a = pf(12u);
        v = max(v, 0.0) + a * min(v, 0.0);
    }
    e1[pu(1u) + i] = v;
}

// prelu: e1 = x, e2 = y, e3 = slope
@compute @workgroup_size(256)
fn prelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let ch = ((pu(10u) + i) / pu(8u)) % pu(9u);
    let x = e1[pu(1u) + i];
    e2[pu(2u) + i] = max(x, 0.0) + e3[pu(3u) + ch] * min(x, 0.0);
}

// prelu_backward: e1 = x, e2 = dy, e3 = slope, e4 = dx
@compute @workgroup_size(256)
fn prelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let ch = ((pu(10u) + i) / pu(8u)) % pu(9u);
    let x = e1[pu(1u) + i];
    e4[pu(4u) + i] = e2[pu(2u) + i] * (step(x > 0.0) + e3[pu(3u) + ch] * step(x <= 0.0));
}

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// dropout: e1 = x, e2 = y. words: 8 hashed seed, 9 threshold, 10 first index, 11 scale
@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let keep = (pcg(pu(10u) + i + pu(8u)) >> 8u) >= pu(9u);
    e2[pu(2u) + i] = select(0.0, e1[pu(1u) + i] * pf(11u), keep);
}

// channel_sum: one workgroup per channel (z = channel within this dispatch).
// e1 = a, e2 = w (or a again), e3 = y. words: 8 inner, 9 channels, 10 outer, 11 weight mode
// (0 one, 1 by, 2 by negative part), 12 beta, 13 first channel, 14 alpha, [15, 16) the range of
// the channel's (row, inner) elements this dispatch adds (lavapipe ends an invocation's loops
// after 65535 iterations, so the host keeps it within 256 * 32768).
var<workgroup> cs_part: array<f32, 256>;

// One term of channel_sum at element idx (mode 0 a, 1 a * w, 2 a * min(w, 0)).
fn cs_term(mode: u32, idx: u32) -> f32 {
    let a = e1[pu(1u) + idx];
    if (mode == 0u) {
        return a;
    } else if (mode == 1u) {
        return a * e2[pu(2u) + idx];
    }
    return a * min(e2[pu(2u) + idx], 0.0);
}

@compute @workgroup_size(256)
fn channel_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = pu(13u) + wid.x + wid.y * 65535u;
    if (c >= pu(9u)) { return; }
    let inner = pu(8u);
    let m = min(pu(10u) * inner, pu(16u));
    let mode = pu(11u);
    var s = 0.0;
    if (inner >= 256u) {
        // Row by row (no division per element): the segment [word 15, m) of (row, inner)
        // indices; every lane steps through at most (m - word 15) / 256 + rows iterations.
        var o = pu(15u) / inner;
        var k0 = pu(15u) - o * inner;
        for (; o * inner < m; o++) {
            let row = (o * pu(9u) + c) * inner;
            let end = min(inner, m - o * inner);
            for (var k = k0 + lid; k < end; k += 256u) {
                s += cs_term(mode, row + k);
            }
            k0 = 0u;
        }
    } else {
        for (var j = pu(15u) + lid; j < m; j += 256u) {
            let o = j / inner;
            s += cs_term(mode, (o * pu(9u) + c) * inner + (j - o * inner));
        }
    }
    cs_part[lid] = s;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) { cs_part[lid] += cs_part[lid + h]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let beta = pf(12u);
        let yi = pu(3u) + c;
        let v = pf(14u) * cs_part[0];
        if (beta == 0.0) { e3[yi] = v; } else { e3[yi] = beta * e3[yi] + v; }
    }
}

// channel_sum_rows: channel_sum with one invocation per channel, for short rows (a workgroup per
// channel would leave most of its lanes idle and pay for its barriers). Same bindings and words;
// the segment words are unused (the host keeps rows and row length within lavapipe's loop limit).
@compute @workgroup_size(64)
fn channel_sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let c = pu(13u) + (wid.y * nwg.x + wid.x) * 64u + lid;
    if (c >= pu(9u)) { return; }
    let inner = pu(8u);
    let mode = pu(11u);
    var s = 0.0;
    for (var o = 0u; o < pu(10u); o++) {
        let row = (o * pu(9u) + c) * inner;
        for (var k = 0u; k < inner; k++) {
            s += cs_term(mode, row + k);
        }
    }
    let beta = pf(12u);
    let yi = pu(3u) + c;
    let v = pf(14u) * s;
    if (beta == 0.0) { e3[yi] = v; } else { e3[yi] = beta * e3[yi] + v; }
}

// One entry point per op so the op is a constant: lavapipe runs every arm of a switch it cannot
// resolve at compile time (masked SIMD), and the transcendental arms are expensive.
@compute @workgroup_size(256)
fn unary_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(0u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(0u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(1u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(1u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(2u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(2u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(3u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(3u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(4u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(4u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_5(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(5u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_5(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(5u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_6(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(6u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_6(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(6u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_7(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(7u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_7(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(7u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(8u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(8u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_9(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(9u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_9(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(9u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_10(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(10u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_10(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(10u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

@compute @workgroup_size(256)
fn unary_11(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e2[pu(2u) + i] = unary_f(11u, e1[pu(1u) + i]);
}

@compute @workgroup_size(256)
fn unary_backward_11(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    e4[pu(4u) + i] = unary_b(11u, e1[pu(1u) + i], e2[pu(2u) + i], e3[pu(3u) + i]);
}

