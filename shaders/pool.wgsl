// Pooling kernels on the words and helpers of pool_common.wgsl, over f32 bindings.
@group(0) @binding(1) var<storage, read_write> p1: array<f32>;
@group(0) @binding(2) var<storage, read_write> p2: array<f32>;
@group(0) @binding(3) var<storage, read_write> p3: array<f32>;
@group(0) @binding(4) var<storage, read_write> p4: array<f32>;

@compute @workgroup_size(256)
fn max_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let t = top_pos(i);
    let W = pu(10u);
    let hw = max_win(t.ph, pu(15u), pu(17u), pu(13u), pu(9u));
    let ww = max_win(t.pw, pu(16u), pu(18u), pu(14u), W);
    let base = pu(1u) + t.plane * pu(9u) * W;
    var best = -3.40282347e38;
    var idx = -1;
    if (KH > 0u) {
        // The window's positions in the same order, with constant trip counts (unrolled).
        let h0 = i32(t.ph * pu(15u)) - i32(pu(17u));
        let w0 = i32(t.pw * pu(16u)) - i32(pu(18u));
        for (var dh = 0u; dh < KH; dh++) {
            let h = h0 + i32(dh);
            for (var dw = 0u; dw < KW; dw++) {
                let w = w0 + i32(dw);
                if (h >= hw.x && h < hw.y && w >= ww.x && w < ww.y) {
                    let j = u32(h) * W + u32(w);
                    let v = p1[base + j];
                    if (v > best) {
                        best = v;
                        idx = i32(j);
                    }
                }
            }
        }
    } else {
        for (var h = hw.x; h < hw.y; h++) {
            for (var w = ww.x; w < ww.y; w++) {
                let j = u32(h) * W + u32(w);
                let v = p1[base + j];
                if (v > best) {
                    best = v;
                    idx = i32(j);
                }
            }
        }
    }
    p2[pu(2u) + t.top] = best;
    p3[pu(3u) + t.top] = f32(idx);
}

@compute @workgroup_size(256)
fn ave_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let t = top_pos(i);
    let W = pu(10u);
    let hw = ave_win(t.ph, pu(15u), pu(17u), pu(13u), pu(9u));
    let ww = ave_win(t.pw, pu(16u), pu(18u), pu(14u), W);
    let base = pu(1u) + t.plane * pu(9u) * W;
    var s = 0.0;
    for (var h = hw.x; h < hw.y; h++) {
        var row = 0.0;
        for (var w = ww.x; w < ww.y; w++) {
            row += p1[base + u32(h) * W + u32(w)];
        }
        s += row;
    }
    p2[pu(2u) + t.top] = s / f32(hw.z * ww.z);
}

@compute @workgroup_size(256)
fn sto_test_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let t = top_pos(i);
    let W = pu(10u);
    let hw = sto_win(t.ph, pu(15u), pu(13u), pu(9u));
    let ww = sto_win(t.pw, pu(16u), pu(14u), W);
    let base = pu(1u) + t.plane * pu(9u) * W;
    var s = 1.17549435e-38;
    var sq = 0.0;
    for (var h = hw.x; h < hw.y; h++) {
        for (var w = ww.x; w < ww.y; w++) {
            let v = p1[base + u32(h) * W + u32(w)];
            s += v;
            sq += v * v;
        }
    }
    p2[pu(2u) + t.top] = sq / s;
}

// ---- STOCHASTIC in TRAIN -------------------------------------------------------------------
// The uniform of output o of plane p is the CPU engine's `uniform_hash(seed, p * pooled + o)`
// (splitmix64 finalisation, top 24 bits), computed on (low, high) u32 pairs.

// Full 64-bit product of two u32 as (low, high).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return vec2<u32>((p00 & 0xffffu) | (mid << 16u),
                     a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}

// a * b modulo 2^64.
fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let p = mul_wide(a.x, b.x);
    return vec2<u32>(p.x, p.y + a.x * b.y + a.y * b.x);
}

// a >> s for 0 < s < 32.
fn shr64(a: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

fn uniform_hash(seed: vec2<u32>, counter: u32) -> f32 {
    var z = seed ^ mul64(vec2<u32>(counter, 0u), vec2<u32>(0x7F4A7C15u, 0x9E3779B9u));
    z = mul64(z ^ shr64(z, 30u), vec2<u32>(0x1CE4E5B9u, 0xBF58476Du));
    z = mul64(z ^ shr64(z, 27u), vec2<u32>(0x133111EBu, 0x94D049BBu));
    z = z ^ shr64(z, 31u);
    return f32(z.y >> 8u) * (1.0 / 16777216.0);
}

// Picks the first element of the unpadded window whose running sum reaches u * (window sum), the
// last one if none does (sums in the CPU engine's order: rows, then the running sum).
// p1 bottom, p2 top, p3 mask
@compute @workgroup_size(256)
fn sto_train_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let t = top_pos(i);
    let W = pu(10u);
    let hw = sto_win(t.ph, pu(15u), pu(13u), pu(9u));
    let ww = sto_win(t.pw, pu(16u), pu(14u), W);
    let base = pu(1u) + t.plane * pu(9u) * W;
    var sum = 0.0;
    for (var h = hw.x; h < hw.y; h++) {
        var row = 0.0;
        for (var w = ww.x; w < ww.y; w++) {
            row += p1[base + u32(h) * W + u32(w)];
        }
        sum += row;
    }
    let counter = (pu(23u) + t.plane) * (pu(11u) * pu(12u)) + t.ph * pu(12u) + t.pw;
    let threshold = uniform_hash(vec2<u32>(pu(21u), pu(22u)), counter) * sum;
    var value = 0.0;
    var idx = -1;
    var running = 0.0;
    var found = false;
    for (var h = hw.x; h < hw.y; h++) {
        for (var w = ww.x; w < ww.y; w++) {
            let j = u32(h) * W + u32(w);
            value = p1[base + j];
            running += value;
            idx = i32(j);
            if (running >= threshold) {
                found = true;
                break;
            }
        }
        if (found) { break; }
    }
    p2[pu(2u) + t.top] = value;
    p3[pu(3u) + t.top] = f32(idx);
}

// Range of pooled outputs along one axis whose window (start o*stride - pad, extent k) can
// contain position x.
fn out_range(x: u32, stride: u32, pad: u32, k: u32, pooled: u32) -> vec2<u32> {
    let xp = x + pad;
    var s = 0u;
    if (xp >= k) { s = (xp - k) / stride + 1u; }
    let e = min(xp / stride + 1u, pooled);
    return vec2<u32>(s, max(e, s));
}

fn write_bottom(idx: u32, v: f32) {
    if (pu(20u) != 0u) {
        p3[idx] += v;
    } else {
        p3[idx] = v;
    }
}

// bottom_diff[i] (+)= sum of top_diff over outputs whose mask is i. p1 top_diff, p2 mask, p3 bottom_diff
@compute @workgroup_size(256)
fn mask_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let W = pu(10u);
    let hwn = pu(9u) * W;
    let plane = i / hwn;
    let j = i - plane * hwn;
    let h = j / W;
    let w = j - h * W;
    // Masks of MAX (padded windows) and STOCHASTIC (unpadded) both lie in these ranges.
    let hr = out_range(h, pu(15u), pu(17u), pu(13u), pu(11u));
    let wr = out_range(w, pu(16u), pu(18u), pu(14u), pu(12u));
    let hr0 = out_range(h, pu(15u), 0u, pu(13u), pu(11u));
    let wr0 = out_range(w, pu(16u), 0u, pu(14u), pu(12u));
    var s = 0.0;
    for (var ph = min(hr.x, hr0.x); ph < max(hr.y, hr0.y); ph++) {
        for (var pw = min(wr.x, wr0.x); pw < max(wr.y, wr0.y); pw++) {
            let ti = top_index(plane, ph, pw);
            if (p2[pu(2u) + ti] == f32(j)) {
                s += p1[pu(1u) + ti];
            }
        }
    }
    write_bottom(pu(3u) + i, s);
}

// mask_backward for 8 consecutive bottom elements of a row per invocation (threads = planes *
// height * ceil(width / 8)): the outputs whose windows may hold any of them are visited once,
// each mask value and top gradient read once for the 8, in mask_backward's order.
@compute @workgroup_size(256)
fn mask_backward_row8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let W = pu(10u);
    let octets = (W + 7u) / 8u;
    let w0 = (i % octets) * 8u;
    let t = i / octets;
    let h = t % pu(9u);
    let plane = t / pu(9u);
    let w1 = min(w0 + 7u, W - 1u);
    let hr = out_range(h, pu(15u), pu(17u), pu(13u), pu(11u));
    let hr0 = out_range(h, pu(15u), 0u, pu(13u), pu(11u));
    // out_range is monotonic in its position: the first column's start, the last one's end.
    let ws = min(out_range(w0, pu(16u), pu(18u), pu(14u), pu(12u)).x,
                 out_range(w0, pu(16u), 0u, pu(14u), pu(12u)).x);
    let we = max(out_range(w1, pu(16u), pu(18u), pu(14u), pu(12u)).y,
                 out_range(w1, pu(16u), 0u, pu(14u), pu(12u)).y);
    let top0 = top_index(plane, 0u, 0u);
    let j0 = f32(h * W + w0);
    var s = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    let ja = vec4<f32>(j0, j0 + 1.0, j0 + 2.0, j0 + 3.0);
    let jb = ja + vec4<f32>(4.0);
    for (var ph = min(hr.x, hr0.x); ph < max(hr.y, hr0.y); ph++) {
        let row = top0 + ph * pu(12u);
        for (var pw = ws; pw < we; pw++) {
            let m = vec4<f32>(p2[pu(2u) + row + pw]);
            let d = vec4<f32>(p1[pu(1u) + row + pw]);
            // A window holds its mask's position: outputs whose window misses all 8 add nothing.
            s += select(vec4<f32>(0.0), d, m == ja);
            s2 += select(vec4<f32>(0.0), d, m == jb);
        }
    }
    let b = pu(3u) + (plane * pu(9u) + h) * W + w0;
    for (var k = 0u; k < 4u; k++) {
        if (w0 + k < W) { write_bottom(b + k, s[k]); }
        if (w0 + 4u + k < W) { write_bottom(b + 4u + k, s2[k]); }
    }
}

// p1 top_diff, p3 bottom_diff (p2 unused = top_diff)
@compute @workgroup_size(256)
fn ave_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let W = pu(10u);
    let hwn = pu(9u) * W;
    let plane = i / hwn;
    let j = i - plane * hwn;
    let h = j / W;
    let w = j - h * W;
    let hr = out_range(h, pu(15u), pu(17u), pu(13u), pu(11u));
    let wr = out_range(w, pu(16u), pu(18u), pu(14u), pu(12u));
    var s = 0.0;
    for (var ph = hr.x; ph < hr.y; ph++) {
        let hw = ave_win(ph, pu(15u), pu(17u), pu(13u), pu(9u));
        if (i32(h) < hw.x || i32(h) >= hw.y) { continue; }
        for (var pw = wr.x; pw < wr.y; pw++) {
            let ww = ave_win(pw, pu(16u), pu(18u), pu(14u), W);
            if (i32(w) < ww.x || i32(w) >= ww.y) { continue; }
            s += p1[pu(1u) + top_index(plane, ph, pw)] / f32(hw.z * ww.z);
        }
    }
    write_bottom(pu(3u) + i, s);
}

// ---- windows larger than one invocation's loop budget ------------------------------------------
// Lavapipe (llvmpipe's gallivm) silently ends an invocation's loops once they have run 65535
// iterations in total, so a window too large for that (e.g. global pooling over a 256x256 map) is
// walked by several dispatches ("passes"): pass [word 24, word 25) of the window's elements in
// row-major order, one invocation per output, the running state kept in p4 (8 words per output of
// the dispatch). Each pass continues exactly where the previous one stopped, so the arithmetic is
// the same sequence as in the one-pass kernels above (and in the CPU engine).
// Word 26 selects the kind: 0 MAX, 1 AVE, 2 STOCHASTIC TEST, 3 STOCHASTIC TRAIN (window sum),
// 4 STOCHASTIC TRAIN (pick; after all passes of kind 3), 5 STOCHASTIC window sum only (for
// `sto_test_backward_sums`, starting at FLT_MIN and adding row sums like the CPU engine).
// p1 bottom, p2 top, p3 mask (= top when unused), p4 state.
@compute @workgroup_size(256)
fn window_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let kind = pu(26u);
    let t = top_pos(i);
    let W = pu(10u);
    var hw: vec2<i32>;
    var ww: vec2<i32>;
    var div = 1.0;
    if (kind == 0u) {
        hw = max_win(t.ph, pu(15u), pu(17u), pu(13u), pu(9u));
        ww = max_win(t.pw, pu(16u), pu(18u), pu(14u), W);
    } else if (kind == 1u) {
        let h3 = ave_win(t.ph, pu(15u), pu(17u), pu(13u), pu(9u));
        let w3 = ave_win(t.pw, pu(16u), pu(18u), pu(14u), W);
        hw = h3.xy;
        ww = w3.xy;
        div = f32(h3.z * w3.z);
    } else {
        hw = sto_win(t.ph, pu(15u), pu(13u), pu(9u));
        ww = sto_win(t.pw, pu(16u), pu(14u), W);
    }
    let base = pu(1u) + t.plane * pu(9u) * W;
    let wlen = u32(ww.y - ww.x);
    let n = u32(hw.y - hw.x) * wlen;
    let k0 = pu(24u);
    let k1 = min(pu(25u), n);
    let s = pu(4u) + 8u * i;
    // State: a, b (running values of the kind), then for kind 4: c running, d value, e index,
    // f found.
    var a = p4[s];
    var b = p4[s + 1u];
    var c = p4[s + 2u];
    var d = p4[s + 3u];
    var e = p4[s + 4u];
    var f = p4[s + 5u];
    if (k0 == 0u) {
        if (kind == 0u) {
            a = -3.40282347e38;
            b = -1.0;
        } else if (kind == 2u || kind == 5u) {
            a = 1.17549435e-38;
            b = 0.0;
        } else if (kind == 4u) {
            c = 0.0;
            d = 0.0;
            e = -1.0;
            f = 0.0;
        } else {
            a = 0.0;
            b = 0.0;
        }
    }
    var threshold = 0.0;
    if (kind == 4u) {
        let counter = (pu(23u) + t.plane) * (pu(11u) * pu(12u)) + t.ph * pu(12u) + t.pw;
        threshold = uniform_hash(vec2<u32>(pu(21u), pu(22u)), counter) * a;
    }
    if (k0 < k1 && !(kind == 4u && f != 0.0)) {
        var dh = k0 / wlen;
        var dw = k0 - dh * wlen;
        for (var k = k0; k < k1; k++) {
            let j = (u32(hw.x) + dh) * W + u32(ww.x) + dw;
            let v = p1[base + j];
            dw += 1u;
            let row_end = dw == wlen;
            if (row_end) {
                dw = 0u;
                dh += 1u;
            }
            if (kind == 0u) {
                if (v > a) {
                    a = v;
                    b = f32(j);
                }
            } else if (kind == 2u) {
                a += v;
                b += v * v;
            } else if (kind == 4u) {
                c += v;
                d = v;
                e = f32(j);
                if (c >= threshold) {
                    f = 1.0;
                    break;
                }
            } else {
                // 1, 3, 5: row sums added to the total at each row's end.
                b += v;
                if (row_end) {
                    a += b;
                    b = 0.0;
                }
            }
        }
    }
    p4[s] = a;
    p4[s + 1u] = b;
    p4[s + 2u] = c;
    p4[s + 3u] = d;
    p4[s + 4u] = e;
    p4[s + 5u] = f;
    if (kind == 0u) {
        p2[pu(2u) + t.top] = a;
        p3[pu(3u) + t.top] = b;
    } else if (kind == 1u) {
        p2[pu(2u) + t.top] = a / div;
    } else if (kind == 2u) {
        p2[pu(2u) + t.top] = b / a;
    } else if (kind == 4u) {
        p2[pu(2u) + t.top] = d;
        p3[pu(3u) + t.top] = e;
    }
}

// STOCHASTIC TEST backward: bottom_diff (+)= sum over the windows containing the element of
// top_diff * (2 x - top) / window sum, the window sums precomputed by `window_pass` (kind 5) in
// p5 (8 words per output of the dispatch, plane-major), so an invocation loops only over those
// outputs. p1 top_diff, p2 top, p3 bottom_diff, p4 bottom, p5 sums
@group(0) @binding(5) var<storage, read_write> p5: array<f32>;

@compute @workgroup_size(256)
fn sto_test_backward_sums(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let W = pu(10u);
    let hwn = pu(9u) * W;
    let plane = i / hwn;
    let j = i - plane * hwn;
    let h = j / W;
    let w = j - h * W;
    let xv = p4[pu(4u) + plane * hwn + j];
    let hr = out_range(h, pu(15u), 0u, pu(13u), pu(11u));
    let wr = out_range(w, pu(16u), 0u, pu(14u), pu(12u));
    var s = 0.0;
    for (var ph = hr.x; ph < hr.y; ph++) {
        let hw = sto_win(ph, pu(15u), pu(13u), pu(9u));
        if (i32(h) < hw.x || i32(h) >= hw.y) { continue; }
        for (var pw = wr.x; pw < wr.y; pw++) {
            let ww = sto_win(pw, pu(16u), pu(14u), W);
            if (i32(w) < ww.x || i32(w) >= ww.y) { continue; }
            let ti = top_index(plane, ph, pw);
            let sum = p5[pu(5u) + 8u * ((plane * pu(11u) + ph) * pu(12u) + pw)];
            s += p1[pu(1u) + ti] * (2.0 * xv - p2[pu(2u) + ti]) / sum;
        }
    }
    write_bottom(pu(3u) + i, s);
}
