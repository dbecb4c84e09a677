// Convolution helpers: N-D im2col / col2im (one invocation per output element; grid z = image),
// Embed's row gather and scatter-add.
//
// im2col / col2im words: 0 elements per image (col_len or im_len), 1 im shift, 2 col shift, 3 d,
// 4 channels, 5 cols (prod out), 6 kprod, 7 plane (prod im), 8 im stride, 9 col stride,
// 12 + 6a..: axis a: im, out, kernel, pad, stride, dilation.

@group(0) @binding(1) var<storage, read_write> c_im: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_col: array<f32>;

fn ax(a: u32, f: u32) -> u32 {
    return pu(12u + 6u * a + f);
}

@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let cols = pu(5u);
    let row = i / cols;
    var pos = i - row * cols;
    let kprod = pu(6u);
    let c = row / kprod;
    var kpos = row - c * kprod;
    let d = pu(3u);
    // Walk the axes from the last (fastest) to the first.
    var im_idx = 0u;
    var im_mul = 1u;
    var inside = true;
    for (var t = 0u; t < d; t++) {
        let a = d - 1u - t;
        let o = pos % ax(a, 1u);
        pos = pos / ax(a, 1u);
        let k = kpos % ax(a, 2u);
        kpos = kpos / ax(a, 2u);
        let p = i32(o * ax(a, 4u) + k * ax(a, 5u)) - i32(ax(a, 3u));
        if (p < 0 || p >= i32(ax(a, 0u))) { inside = false; }
        im_idx += u32(max(p, 0)) * im_mul;
        im_mul *= ax(a, 0u);
    }
    var v = 0.0;
    if (inside) {
        v = c_im[pu(1u) + b * pu(8u) + c * pu(7u) + im_idx];
    }
    c_col[pu(2u) + b * pu(9u) + i] = v;
}

// im2col reading the images from a linear texture (binding 1) copied from the image window:
// lavapipe gathers texels far faster than it loads storage buffers.
@group(0) @binding(1) var c_tex: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> c_col2: array<f32>;

fn tex_elem(e: u32) -> f32 {
    let t = textureLoad(c_tex, tex_coord(e >> 2u), 0);
    let c = e & 3u;
    return select(select(t.x, t.y, c == 1u), select(t.z, t.w, c == 3u), c >= 2u);
}

@compute @workgroup_size(256)
fn im2col_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let cols = pu(5u);
    let row = i / cols;
    var pos = i - row * cols;
    let kprod = pu(6u);
    let c = row / kprod;
    var kpos = row - c * kprod;
    let d = pu(3u);
    // Walk the axes from the last (fastest) to the first.
    var im_idx = 0u;
    var im_mul = 1u;
    var inside = true;
    for (var t = 0u; t < d; t++) {
        let a = d - 1u - t;
        let o = pos % ax(a, 1u);
        pos = pos / ax(a, 1u);
        let k = kpos % ax(a, 2u);
        kpos = kpos / ax(a, 2u);
        let p = i32(o * ax(a, 4u) + k * ax(a, 5u)) - i32(ax(a, 3u));
        if (p < 0 || p >= i32(ax(a, 0u))) { inside = false; }
        im_idx += u32(max(p, 0)) * im_mul;
        im_mul *= ax(a, 0u);
    }
    var v = 0.0;
    if (inside) {
        v = tex_elem(pu(1u) + b * pu(8u) + c * pu(7u) + im_idx);
    }
    c_col2[pu(2u) + b * pu(9u) + i] = v;
}

@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let plane = pu(7u);
    let c = i / plane;
    let pix = i - c * plane;
    let d = pu(3u);
    let kprod = pu(6u);
    let cols = pu(5u);
    var s = 0.0;
    let cb = pu(2u) + b * pu(9u) + c * kprod * cols;
    for (var kp = 0u; kp < kprod; kp++) {
        var kr = kp;
        var pr = pix;
        var out_idx = 0u;
        var out_mul = 1u;
        var ok = true;
        for (var t = 0u; t < d; t++) {
            let a = d - 1u - t;
            let k = kr % ax(a, 2u);
            kr = kr / ax(a, 2u);
            let p = pr % ax(a, 0u);
            pr = pr / ax(a, 0u);
            let num = i32(p + ax(a, 3u)) - i32(k * ax(a, 5u));
            let st = i32(ax(a, 4u));
            if (num < 0 || num % st != 0) {
                ok = false;
            } else {
                let o = u32(num / st);
                if (o >= ax(a, 1u)) { ok = false; }
                out_idx += o * out_mul;
            }
            out_mul *= ax(a, 1u);
        }
        if (ok) {
            s += c_col[cb + kp * cols + out_idx];
        }
    }
    c_im[pu(1u) + b * pu(8u) + i] = s;
}

@group(0) @binding(1) var<storage, read_write> g_idx: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_a: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_b: array<f32>;

// Caffe's static_cast<int>(v) clamped into [0, rows).
fn row_of(v: f32, rows: u32) -> u32 {
    if (!(v >= 1.0)) { return 0u; }
    return min(u32(min(v, 4294967040.0)), rows - 1u);
}

// top[m, :] = weight[row(idx[m]), :]. words: 0 n, 1 idx shift, 2 weight shift, 3 top shift,
// 8 rows, 9 width
@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let width = pu(9u);
    let m = i / width;
    let j = i - m * width;
    let r = row_of(g_idx[pu(1u) + m], pu(8u));
    g_b[pu(3u) + i] = g_a[pu(2u) + r * width + j];
}

// weight_diff[row(idx[m]), j] += top_diff[m, j], serial over m, one invocation per column j.
// words: 0 width, 1 idx shift, 2 top_diff shift, 3 weight_diff shift, 8 rows, 9 count of m
@compute @workgroup_size(256)
fn scatter_add_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let j = gid(wid, nwg, lid);
    let width = pu(0u);
    if (j >= width) { return; }
    for (var m = 0u; m < pu(9u); m++) {
        let r = row_of(g_idx[pu(1u) + m], pu(8u));
        g_b[pu(3u) + r * width + j] += g_a[pu(2u) + m * width + j];
    }
}

// The same kernels with float-assisted division (every index below 2^24).
@compute @workgroup_size(256)
fn im2col_f(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let cols = pu(5u);
    let row = fdiv(i, cols);
    var pos = i - row * cols;
    let kprod = pu(6u);
    let c = fdiv(row, kprod);
    var kpos = row - c * kprod;
    let d = pu(3u);
    // Walk the axes from the last (fastest) to the first.
    var im_idx = 0u;
    var im_mul = 1u;
    var inside = true;
    for (var t = 0u; t < d; t++) {
        let a = d - 1u - t;
        let pq = fdiv(pos, ax(a, 1u));
        let o = pos - pq * ax(a, 1u);
        pos = pq;
        let kq = fdiv(kpos, ax(a, 2u));
        let k = kpos - kq * ax(a, 2u);
        kpos = kq;
        let p = i32(o * ax(a, 4u) + k * ax(a, 5u)) - i32(ax(a, 3u));
        if (p < 0 || p >= i32(ax(a, 0u))) { inside = false; }
        im_idx += u32(max(p, 0)) * im_mul;
        im_mul *= ax(a, 0u);
    }
    var v = 0.0;
    if (inside) {
        v = c_im[pu(1u) + b * pu(8u) + c * pu(7u) + im_idx];
    }
    c_col[pu(2u) + b * pu(9u) + i] = v;
}

@compute @workgroup_size(256)
fn im2col_tex_f(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let cols = pu(5u);
    let row = fdiv(i, cols);
    var pos = i - row * cols;
    let kprod = pu(6u);
    let c = fdiv(row, kprod);
    var kpos = row - c * kprod;
    let d = pu(3u);
    // Walk the axes from the last (fastest) to the first.
    var im_idx = 0u;
    var im_mul = 1u;
    var inside = true;
    for (var t = 0u; t < d; t++) {
        let a = d - 1u - t;
        let pq = fdiv(pos, ax(a, 1u));
        let o = pos - pq * ax(a, 1u);
        pos = pq;
        let kq = fdiv(kpos, ax(a, 2u));
        let k = kpos - kq * ax(a, 2u);
        kpos = kq;
        let p = i32(o * ax(a, 4u) + k * ax(a, 5u)) - i32(ax(a, 3u));
        if (p < 0 || p >= i32(ax(a, 0u))) { inside = false; }
        im_idx += u32(max(p, 0)) * im_mul;
        im_mul *= ax(a, 0u);
    }
    var v = 0.0;
    if (inside) {
        v = tex_elem(pu(1u) + b * pu(8u) + c * pu(7u) + im_idx);
    }
    c_col2[pu(2u) + b * pu(9u) + i] = v;
}

@compute @workgroup_size(256)
fn col2im_f(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let plane = pu(7u);
    let c = fdiv(i, plane);
    let pix = i - c * plane;
    let d = pu(3u);
    let kprod = pu(6u);
    let cols = pu(5u);
    var s = 0.0;
    let cb = pu(2u) + b * pu(9u) + c * kprod * cols;
    for (var kp = 0u; kp < kprod; kp++) {
        var kr = kp;
        var pr = pix;
        var out_idx = 0u;
        var out_mul = 1u;
        var ok = true;
        for (var t = 0u; t < d; t++) {
            let a = d - 1u - t;
            let kq = fdiv(kr, ax(a, 2u));
            let k = kr - kq * ax(a, 2u);
            kr = kq;
            let pq = fdiv(pr, ax(a, 0u));
            let p = pr - pq * ax(a, 0u);
            pr = pq;
            let num = i32(p + ax(a, 3u)) - i32(k * ax(a, 5u));
            let st = i32(ax(a, 4u));
            let nq = i32(fdiv(u32(max(num, 0)), u32(st)));
            if (num < 0 || num - nq * st != 0) {
                ok = false;
            } else {
                let o = u32(nq);
                if (o >= ax(a, 1u)) { ok = false; }
                out_idx += o * out_mul;
            }
            out_mul *= ax(a, 1u);
        }
        if (ok) {
            s += c_col[cb + kp * cols + out_idx];
        }
    }
    c_im[pu(1u) + b * pu(8u) + i] = s;
}


// 2-D im2col (the common case) without loops over axes: one invocation per column element,
// images read from the texture copy, float-assisted division. Same words as im2col.
@compute @workgroup_size(256)
fn im2col_2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let cols = pu(5u);
    let row = fdiv(i, cols);
    let pos = i - row * cols;
    let kprod = pu(6u);
    let c = fdiv(row, kprod);
    let kpos = row - c * kprod;
    // axis 0 = h (words 12..17), axis 1 = w (words 18..23)
    let ow_n = pu(19u);
    let oh = fdiv(pos, ow_n);
    let ow = pos - oh * ow_n;
    let kw_n = pu(20u);
    let kh = fdiv(kpos, kw_n);
    let kw = kpos - kh * kw_n;
    let h = i32(oh * pu(16u) + kh * pu(17u)) - i32(pu(15u));
    let w = i32(ow * pu(22u) + kw * pu(23u)) - i32(pu(21u));
    var v = 0.0;
    if (h >= 0 && h < i32(pu(12u)) && w >= 0 && w < i32(pu(18u))) {
        v = tex_elem(pu(1u) + b * pu(8u) + c * pu(7u) + u32(h) * pu(18u) + u32(w));
    }
    c_col2[pu(2u) + b * pu(9u) + i] = v;
}

// 2-D im2col over a flat range of column elements (images back to back, col stride = col len),
// 4 per invocation stored as one vec4 (a third of the cost of 4 scalar stores on lavapipe), images
// read from the texture copy. Words as im2col except: 0 texels (v4) or elements to write,
// 2 first texel (v4) or element of the binding to write, 3 flat index (from the first image of
// the window) of the first element written, 9 col len. Flat indices stay below 2^24.
@group(0) @binding(2) var<storage, read_write> c_col4: array<vec4<f32>>;

// n / d given r = 1 / d (computed by the host), exact below 2^24.
fn fdivr(n: u32, d: u32, r: f32) -> u32 {
    var q = u32(f32(n) * r);
    q = select(q, q - 1u, q * d > n);
    q = select(q, q + 1u, (q + 1u) * d <= n);
    return q;
}

// Position of a column element: image, channel, kernel offsets, output position.
struct ColPos {
    b: u32,
    c: u32,
    kh: u32,
    kw: u32,
    oh: u32,
    ow: u32,
    pos: u32,
}

// Words 24..28: 1 / col len, 1 / cols, 1 / kprod, 1 / out w, 1 / kernel w (f32).
fn col_pos(f: u32) -> ColPos {
    let col_len = pu(9u);
    let b = fdivr(f, col_len, pf(24u));
    let i = f - b * col_len;
    let cols = pu(5u);
    let row = fdivr(i, cols, pf(25u));
    let pos = i - row * cols;
    let kprod = pu(6u);
    let c = fdivr(row, kprod, pf(26u));
    let kpos = row - c * kprod;
    let ow_n = pu(19u);
    let oh = fdivr(pos, ow_n, pf(27u));
    let kw_n = pu(20u);
    let kh = fdivr(kpos, kw_n, pf(28u));
    return ColPos(b, c, kh, kpos - kh * kw_n, oh, pos - oh * ow_n, pos);
}

// The position of the next column element (a few selects instead of five divisions).
fn col_next(p: ColPos) -> ColPos {
    var q = p;
    q.ow = p.ow + 1u;
    q.pos = p.pos + 1u;
    let wrap_w = q.ow == pu(19u);
    q.oh = select(p.oh, p.oh + 1u, wrap_w);
    q.ow = select(q.ow, 0u, wrap_w);
    let wrap_p = q.pos == pu(5u);
    q.pos = select(q.pos, 0u, wrap_p);
    q.oh = select(q.oh, 0u, wrap_p);
    q.ow = select(q.ow, 0u, wrap_p);
    q.kw = select(p.kw, p.kw + 1u, wrap_p);
    let wrap_kw = q.kw == pu(20u);
    q.kw = select(q.kw, 0u, wrap_kw);
    q.kh = select(p.kh, p.kh + 1u, wrap_kw);
    let wrap_kh = q.kh == pu(14u);
    q.kh = select(q.kh, 0u, wrap_kh);
    q.c = select(p.c, p.c + 1u, wrap_kh);
    let wrap_c = q.c == pu(4u);
    q.c = select(q.c, 0u, wrap_c);
    q.b = select(p.b, p.b + 1u, wrap_c);
    return q;
}

fn col_value(p: ColPos) -> f32 {
    let h = i32(p.oh * pu(16u) + p.kh * pu(17u)) - i32(pu(15u));
    let w = i32(p.ow * pu(22u) + p.kw * pu(23u)) - i32(pu(21u));
    let inside = h >= 0 && h < i32(pu(12u)) && w >= 0 && w < i32(pu(18u));
    let e = pu(1u) + p.b * pu(8u) + p.c * pu(7u) + u32(max(h, 0)) * pu(18u) + u32(max(w, 0));
    return select(0.0, tex_elem(e), inside);
}

@compute @workgroup_size(256)
fn im2col_2d_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = gid(wid, nwg, lid);
    if (t >= pu(0u)) { return; }
    let p0 = col_pos(pu(3u) + 4u * t);
    let p1 = col_next(p0);
    let p2 = col_next(p1);
    let p3 = col_next(p2);
    c_col4[pu(2u) + t] = vec4<f32>(col_value(p0), col_value(p1), col_value(p2), col_value(p3));
}

@compute @workgroup_size(256)
fn im2col_2d_s(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    c_col2[pu(2u) + i] = col_value(col_pos(pu(3u) + i));
}

// 2-D col2im reading the columns from a texture copy (binding 1) and writing the images
// (binding 2): one invocation per image element, grid z = image. Words as col2im (1: im shift in
// its binding, 2: col shift in the texture); 24..29: 1 / stride h, 1 / stride w, 1 / image w,
// 1 / plane, 1 / dilation h, 1 / dilation w (f32).
//
// Image row h is read by output row oh through kernel row kh = (h + pad - oh * stride) / dilation
// when that is a whole number in [0, kernel): the loops run over the output rows (and columns)
// between the first and the last that can reach h, about kernel / stride of them.
fn col2im_range(p: u32, a: u32, rs: f32) -> vec2<i32> {
    // words of axis a: 12 + 6a: im, out, kernel, pad, stride, dilation
    let np = i32(p + pu(15u + 6u * a));
    let st = i32(pu(16u + 6u * a));
    let reach = i32((pu(14u + 6u * a) - 1u) * pu(17u + 6u * a));
    let hi = min(i32(fdivr(u32(np), u32(st), rs)), i32(pu(13u + 6u * a)) - 1);
    let lo_num = np - reach;
    var lo = 0;
    if (lo_num > 0) {
        lo = i32(fdivr(u32(lo_num + st - 1), u32(st), rs));
    }
    return vec2<i32>(lo, hi);
}

@compute @workgroup_size(256)
fn col2im_2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= pu(0u)) { return; }
    let b = wid.z;
    let plane = pu(7u);
    let c = fdivr(i, plane, pf(27u));
    let pix = i - c * plane;
    let im_w = pu(18u);
    let h = fdivr(pix, im_w, pf(26u));
    let w = pix - h * im_w;
    let kw_n = pu(20u);
    let cols = pu(5u);
    let ow_n = pu(19u);
    let cbase = pu(2u) + b * pu(9u) + c * pu(6u) * cols;
    let rh = col2im_range(h, 0u, pf(24u));
    let rw = col2im_range(w, 1u, pf(25u));
    let nh = i32(h + pu(15u));
    let nw = i32(w + pu(21u));
    var s = 0.0;
    for (var oh = rh.x; oh <= rh.y; oh++) {
        let th = u32(nh - oh * i32(pu(16u)));
        let kh = fdivr(th, pu(17u), pf(28u));
        let ok_h = kh * pu(17u) == th;
        for (var ow = rw.x; ow <= rw.y; ow++) {
            let tw = u32(nw - ow * i32(pu(22u)));
            let kw = fdivr(tw, pu(23u), pf(29u));
            let ok = ok_h && kw * pu(23u) == tw;
            let idx = cbase + (kh * kw_n + kw) * cols + u32(oh) * ow_n + u32(ow);
            s += select(0.0, tex_elem(idx), ok);
        }
    }
    c_col2[pu(1u) + b * pu(8u) + i] = s;
}

// out[c] = beta * out[c] + alpha * sum over o, i of x[o, c, i], x read from a texture copy
// (binding 1), out in binding 2. One workgroup per channel (x + 65535 y). words: 0 outer, 1 x shift
// in its texture, 2 out shift, 3 inner, 4 channels, 5 alpha, 6 beta, 7 first channel of the
// dispatch. BETA0: beta is 0 (out is not read).
override BETA0: bool = false;
var<workgroup> cs_sum: array<f32, 8>;

// One SIMD group of 8 invocations per channel: no barrier but the last (lavapipe runs bigger
// workgroups as coroutines that switch at every barrier).
@compute @workgroup_size(8)
fn channel_sum_tex(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let c = pu(7u) + wid.x + wid.y * 65535u;
    if (c >= pu(4u)) { return; }
    let inner = pu(3u);
    var s = 0.0;
    for (var o = 0u; o < pu(0u); o++) {
        let e0 = pu(1u) + (o * pu(4u) + c) * inner;
        let e1 = e0 + inner;
        for (var t = (e0 >> 2u) + lid; t * 4u < e1; t += 8u) {
            let v = textureLoad(c_tex, tex_coord(t), 0);
            let f = t * 4u;
            let m = vec4<bool>(f >= e0, f + 1u >= e0 && f + 1u < e1, f + 2u >= e0 && f + 2u < e1,
                               f + 3u >= e0 && f + 3u < e1);
            let u = select(vec4<f32>(0.0), v, m);
            s += (u.x + u.y) + (u.z + u.w);
        }
    }
    cs_sum[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        let total = ((cs_sum[0] + cs_sum[1]) + (cs_sum[2] + cs_sum[3])) +
                    ((cs_sum[4] + cs_sum[5]) + (cs_sum[6] + cs_sum[7]));
        let i = pu(2u) + c;
        if (BETA0) {
            c_col2[i] = pf(5u) * total;
        } else {
            c_col2[i] = pf(6u) * c_col2[i] + pf(5u) * total;
        }
    }
}

// y[o, c, i] += bias[c] over a flat range of y, y and bias read from texture copies (binding 1:
// y's window, binding 2: bias), 4 elements per invocation stored as vec4 (bias_v4, inner >= 4) or
// one (bias_s). words: 0 texels or elements to write, 1 y shift in its texture, 2 first texel /
// element of the binding (3) to write, 3 flat index of the first element written (from the
// window's start), 4 inner, 5 channels, 6 channel of the window's first element, 7 bias shift,
// 8 1 / inner, 9 1 / channels (f32). Flat indices stay below 2^24.
@group(0) @binding(1) var b_y: texture_2d<f32>;
@group(0) @binding(2) var b_bias: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> b_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_out4: array<vec4<f32>>;

fn b_elem(t: texture_2d<f32>, e: u32) -> f32 {
    let v = textureLoad(t, tex_coord(e >> 2u), 0);
    let c = e & 3u;
    return select(select(v.x, v.y, c == 1u), select(v.z, v.w, c == 3u), c >= 2u);
}

// (channel, index in its row) of flat element f.
fn bias_pos(f: u32) -> vec2<u32> {
    let inner = pu(4u);
    let rr = fdivr(f, inner, pf(8u));
    let r = rr + pu(6u);
    let channels = pu(5u);
    return vec2<u32>(r - fdivr(r, channels, pf(9u)) * channels, f - rr * inner);
}

@compute @workgroup_size(256)
fn bias_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = gid(wid, nwg, lid);
    if (t >= pu(0u)) { return; }
    let f = pu(3u) + 4u * t;
    // The window starts texel-aligned in its texture for this path.
    let y = textureLoad(b_y, tex_coord((pu(1u) + f) >> 2u), 0);
    // With inner >= 4 the 4 elements span at most two channels: the first element's and the
    // next one (the first element with index 0 in its row, if any, starts it).
    let p = bias_pos(f);
    let c1 = select(p.x + 1u, 0u, p.x + 1u == pu(5u));
    let b0 = b_elem(b_bias, pu(7u) + p.x);
    let b1 = b_elem(b_bias, pu(7u) + c1);
    let inner = pu(4u);
    let v = vec4<f32>(b0, select(b0, b1, p.y + 1u >= inner), select(b0, b1, p.y + 2u >= inner),
                      select(b0, b1, p.y + 3u >= inner));
    b_out4[pu(2u) + t] = y + v;
}

@compute @workgroup_size(256)
fn bias_s(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let f = pu(3u) + i;
    b_out[pu(2u) + i] = b_elem(b_y, pu(1u) + f) + b_elem(b_bias, pu(7u) + bias_pos(f).x);
}
