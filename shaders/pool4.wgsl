// Pooling kernels on the words and helpers of pool_common.wgsl that store vec4s (by element
// where unaligned): the bottom is read by element.
@group(0) @binding(1) var<storage, read_write> q1: array<f32>;
@group(0) @binding(2) var<storage, read_write> q2: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> q3: array<vec4<f32>>;

// The strides of max_forward_tile4 (SW at most 4).
override SH: u32 = 1u;
override SW: u32 = 1u;

// max_forward for 4 rows of 4 outputs per invocation (threads = planes * ceil(pooled_h / 4) *
// ceil(pooled_w / 4); KH, KW, SH, SW constants): each input row is read once for the 16 windows,
// and each row of 4 outputs and of their mask is one vec4 store where the row holds them whole
// and aligned (lavapipe turns every scalar store into a lane-by-lane one). A
// row's best within each window (the first of equals) joins the windows' bests in row order with
// the same strict comparison, so every window ends with max_forward's position.
@compute @workgroup_size(256)
fn max_forward_tile4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let quads = (pu(12u) + 3u) / 4u;
    let pw0 = (i % quads) * 4u;
    let t = i / quads;
    let strips = (pu(11u) + 3u) / 4u;
    let ph0 = (t % strips) * 4u;
    let plane = t / strips;
    let W = pu(10u);
    let base = pu(1u) + plane * pu(9u) * W;
    let c0 = i32(pw0 * SW) - i32(pu(18u));
    var lo: array<i32, 4>;
    var hi: array<i32, 4>;
    for (var k = 0u; k < 4u; k++) {
        let ww = max_win(pw0 + k, SW, pu(18u), KW, W);
        lo[k] = ww.x;
        hi[k] = ww.y;
    }
    var best: array<f32, 16>;
    var idx: array<i32, 16>;
    for (var j = 0u; j < 16u; j++) {
        best[j] = -3.40282347e38;
        idx[j] = -1;
    }
    // Input rows of the 4 output rows' windows, clipped to the image.
    let first = max_win(ph0, SH, pu(17u), KH, pu(9u)).x;
    let last = max_win(min(ph0 + 3u, pu(11u) - 1u), SH, pu(17u), KH, pu(9u)).y;
    var vals: array<f32, 28>;
    for (var h = first; h < last; h++) {
        // Rows between windows (vertical stride above the window) are in none.
        if (SH > KH && (u32(h) + pu(17u)) % SH >= KH) { continue; }
        let row = base + u32(h) * W;
        for (var dc = 0u; dc < 3u * SW + KW; dc++) {
            let w = c0 + i32(dc);
            if (w >= 0 && w < i32(W)) { vals[dc] = q1[row + u32(w)]; }
        }
        for (var k = 0u; k < 4u; k++) {
            var rb = -3.40282347e38;
            var ri = -1;
            for (var dw = 0u; dw < KW; dw++) {
                let w = c0 + i32(k * SW + dw);
                if (w >= lo[k] && w < hi[k]) {
                    let v = vals[k * SW + dw];
                    if (v > rb) {
                        rb = v;
                        ri = i32(u32(h) * W + u32(w));
                    }
                }
            }
            for (var j = 0u; j < 4u; j++) {
                // Output row ph0 + j's window holds rows [ph0 + j - pad, + KH) within the image.
                let top = i32((ph0 + j) * SH) - i32(pu(17u));
                if (h >= top && h < top + i32(KH) && ri >= 0 && rb > best[j * 4u + k]) {
                    best[j * 4u + k] = rb;
                    idx[j * 4u + k] = ri;
                }
            }
        }
    }
    for (var j = 0u; j < 4u; j++) {
        if (ph0 + j >= pu(11u)) { continue; }
        let top = top_index(plane, ph0 + j, pw0);
        let t = pu(2u) + top;
        let m = pu(3u) + top;
        let b = 4u * j;
        if (pw0 + 4u <= pu(12u) && (t & 3u) == 0u && (m & 3u) == 0u) {
            q2[t >> 2u] = vec4<f32>(best[b], best[b + 1u], best[b + 2u], best[b + 3u]);
            q3[m >> 2u] = vec4<f32>(f32(idx[b]), f32(idx[b + 1u]), f32(idx[b + 2u]),
                                    f32(idx[b + 3u]));
        } else {
            for (var k = 0u; k < 4u; k++) {
                if (pw0 + k < pu(12u)) {
                    q2[(t + k) >> 2u][(t + k) & 3u] = best[b + k];
                    q3[(m + k) >> 2u][(m + k) & 3u] = f32(idx[b + k]);
                }
            }
        }
    }
}

