// 2-D pooling (Caffe's window rules; see src/engine/kernels/pool.rs).
// words: 0 threads, 1..5 binding shifts, 8 channels, 9 height, 10 width, 11 pooled_h,
// 12 pooled_w, 13 kernel_h, 14 kernel_w, 15 stride_h, 16 stride_w, 17 pad_h, 18 pad_w,
// 19 top_num_stride, 20 accumulate, 21/22 seed (low/high word), 23 first plane of the dispatch.
// Forward kernels: one invocation per output; backward kernels: one per bottom element, summing
// over the windows that contain it.

// The window of max_forward as pipeline constants (0: read from the words), for small windows.
override KH: u32 = 0u;
override KW: u32 = 0u;

struct TopPos {
    plane: u32,
    ph: u32,
    pw: u32,
    top: u32,
}

fn top_pos(i: u32) -> TopPos {
    let pw_n = pu(12u);
    let ph_n = pu(11u);
    let pw = i % pw_n;
    let t = i / pw_n;
    let ph = t % ph_n;
    let plane = t / ph_n;
    let n = plane / pu(8u);
    let c = plane - n * pu(8u);
    return TopPos(plane, ph, pw, n * pu(19u) + (c * ph_n + ph) * pw_n + pw);
}

// Top index of (plane, ph, pw).
fn top_index(plane: u32, ph: u32, pw: u32) -> u32 {
    let n = plane / pu(8u);
    let c = plane - n * pu(8u);
    return n * pu(19u) + (c * pu(11u) + ph) * pu(12u) + pw;
}

// MAX window [start, end) along one axis, clipped to the image.
fn max_win(o: u32, stride: u32, pad: u32, k: u32, size: u32) -> vec2<i32> {
    let s = i32(o * stride) - i32(pad);
    let e = min(s + i32(k), i32(size));
    let sc = clamp(s, 0, i32(size));
    return vec2<i32>(sc, max(e, sc));
}

// AVE window: clipped [start, end) and the padded extent that divides.
fn ave_win(o: u32, stride: u32, pad: u32, k: u32, size: u32) -> vec3<i32> {
    let s = i32(o * stride) - i32(pad);
    let e = min(s + i32(k), i32(size + pad));
    let extent = e - s;
    let sc = clamp(s, 0, i32(size));
    let ec = min(e, i32(size));
    return vec3<i32>(sc, max(ec, sc), extent);
}

// STOCHASTIC window (no padding).
fn sto_win(o: u32, stride: u32, k: u32, size: u32) -> vec2<i32> {
    let s = min(o * stride, size);
    return vec2<i32>(i32(s), i32(min(s + k, size)));
}

