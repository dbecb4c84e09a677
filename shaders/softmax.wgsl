// Softmax / loss family. Loop budget: lavapipe (llvmpipe's gallivm) silently ends every loop of a
// shader invocation once the iterations of all its loops add up to 65535, so no invocation may
// loop over an unbounded extent: the host picks per-position kernels only while their loops stay
// within a budget (src/engine/gpu/softmax.rs), else workgroup-cooperative ones, and spreads
// reductions over several workgroups whose partial sums a second kernel combines.
//
// Softmax along `channels` of [outer, channels, inner]: one invocation per (outer, inner) position
// (`forward`, `backward`), or one workgroup per position for long channels (`*_wg`).
// words: 0 positions (wg kernels: positions * 256), 1..4 shifts, 8 channels, 9 inner

@group(0) @binding(1) var<storage, read_write> s1: array<f32>;
@group(0) @binding(2) var<storage, read_write> s2: array<f32>;
@group(0) @binding(3) var<storage, read_write> s3: array<f32>;

// s1 = x, s2 = y
@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let ch = pu(8u);
    let inner = pu(9u);
    let o = i / inner;
    let base = o * ch * inner + (i - o * inner);
    var m = s1[pu(1u) + base];
    for (var c = 1u; c < ch; c++) {
        m = max(m, s1[pu(1u) + base + c * inner]);
    }
    var s = 0.0;
    for (var c = 0u; c < ch; c++) {
        let v = exp(s1[pu(1u) + base + c * inner] - m);
        s2[pu(2u) + base + c * inner] = v;
        s += v;
    }
    for (var c = 0u; c < ch; c++) {
        s2[pu(2u) + base + c * inner] /= s;
    }
}

// s1 = y, s2 = dy, s3 = dx: dx = (dy - sum_c dy * y) * y
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let ch = pu(8u);
    let inner = pu(9u);
    let o = i / inner;
    let base = o * ch * inner + (i - o * inner);
    var s = 0.0;
    for (var c = 0u; c < ch; c++) {
        s += s1[pu(1u) + base + c * inner] * s2[pu(2u) + base + c * inner];
    }
    for (var c = 0u; c < ch; c++) {
        let k = base + c * inner;
        s3[pu(3u) + k] = (s2[pu(2u) + k] - s) * s1[pu(1u) + k];
    }
}

@group(0) @binding(4) var<storage, read_write> s4: array<f32>;
@group(0) @binding(5) var<storage, read_write> s5: array<f32>;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

fn reduce2(lid: u32) {
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) {
            red_a[lid] += red_a[lid + h];
            red_b[lid] += red_b[lid + h];
        }
        workgroupBarrier();
    }
}

fn reduce_max(lid: u32) {
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) {
            red_a[lid] = max(red_a[lid], red_a[lid + h]);
        }
        workgroupBarrier();
    }
}

// Linear workgroup index of a dispatch folded into two dimensions.
fn wg_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// s1 = x, s2 = y; one workgroup per position.
@compute @workgroup_size(256)
fn forward_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let pos = wg_index(wid, nwg);
    if (pos * 256u >= pu(0u)) { return; }
    let ch = pu(8u);
    let inner = pu(9u);
    let o = pos / inner;
    let base = o * ch * inner + (pos - o * inner);
    var m = s1[pu(1u) + base];
    for (var c = lid; c < ch; c += 256u) {
        m = max(m, s1[pu(1u) + base + c * inner]);
    }
    red_a[lid] = m;
    reduce_max(lid);
    m = red_a[0];
    workgroupBarrier();
    var s = 0.0;
    for (var c = lid; c < ch; c += 256u) {
        let v = exp(s1[pu(1u) + base + c * inner] - m);
        s2[pu(2u) + base + c * inner] = v;
        s += v;
    }
    red_a[lid] = s;
    red_b[lid] = 0.0;
    reduce2(lid);
    s = red_a[0];
    for (var c = lid; c < ch; c += 256u) {
        s2[pu(2u) + base + c * inner] /= s;
    }
}

// s1 = y, s2 = dy, s3 = dx; one workgroup per position.
@compute @workgroup_size(256)
fn backward_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let pos = wg_index(wid, nwg);
    if (pos * 256u >= pu(0u)) { return; }
    let ch = pu(8u);
    let inner = pu(9u);
    let o = pos / inner;
    let base = o * ch * inner + (pos - o * inner);
    var s = 0.0;
    for (var c = lid; c < ch; c += 256u) {
        s += s1[pu(1u) + base + c * inner] * s2[pu(2u) + base + c * inner];
    }
    red_a[lid] = s;
    red_b[lid] = 0.0;
    reduce2(lid);
    s = red_a[0];
    for (var c = lid; c < ch; c += 256u) {
        let k = base + c * inner;
        s3[pu(3u) + k] = (s2[pu(2u) + k] - s) * s1[pu(1u) + k];
    }
}

// ---- losses and metrics ---------------------------------------------------------------------
// A scalar result (loss, norm, accuracy) takes two kernels: the loss kernel runs word 0 (G)
// workgroups that each reduce their share of the positions into a partial (sum, count) pair,
// written to partials[2 g], partials[2 g + 1] (the kernel's last binding); `finish` adds the G
// pairs and writes the result. Labels are truncated like Caffe's static_cast<int>; a label
// outside [0, channels) that is not ignored contributes NaN to the loss.

// First position of workgroup `wid.x` and the stride of its loop.
fn share_start(wid: vec3<u32>, lid: u32) -> u32 {
    return wid.x * 256u + lid;
}

fn share_stride() -> u32 {
    return 256u * pu(0u);
}

// Writes the reduced (red_a[0], red_b[0]) of this workgroup to `partials` (binding b via its shift).
fn write_partial_s3(wid: vec3<u32>, lid: u32) {
    if (lid == 0u) {
        s3[pu(3u) + 2u * wid.x] = red_a[0];
        s3[pu(3u) + 2u * wid.x + 1u] = red_b[0];
    }
}

fn write_partial_s4(wid: vec3<u32>, lid: u32) {
    if (lid == 0u) {
        s4[pu(4u) + 2u * wid.x] = red_a[0];
        s4[pu(4u) + 2u * wid.x + 1u] = red_b[0];
    }
}

// words: 8 outer, 9 channels, 10 inner, 11 has ignore, 12 ignore label (i32), 13 mode
// (0 full, 1 valid, 2 batch, 3 none), 14 log_min, 15 has infogain
fn is_ignored(v: f32) -> bool {
    return pu(11u) != 0u && i32(v) == pi(12u);
}

fn normalizer(valid: f32) -> f32 {
    var n = 1.0;
    switch pu(13u) {
        case 0u: { n = f32(pu(8u) * pu(10u)); }
        case 1u: { n = valid; }
        case 2u: { n = f32(pu(8u)); }
        default: { n = 1.0; }
    }
    return max(n, 1.0);
}

// s1 prob, s2 label, s3 infogain (or prob), s4 partials (sum, valid)
@compute @workgroup_size(256)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = pu(9u);
    let inner = pu(10u);
    let positions = pu(8u) * inner;
    var sum = 0.0;
    var valid = 0.0;
    for (var q = share_start(wid, lid); q < positions; q += share_stride()) {
        let v = s2[pu(2u) + q];
        if (is_ignored(v)) { continue; }
        let o = q / inner;
        let j = q - o * inner;
        let base = pu(1u) + o * ch * inner + j;
        let c = i32(v);
        if (c < 0 || u32(c) >= ch) {
            sum += bitcast<f32>(0x7fc00000u);
        } else if (pu(15u) == 0u) {
            sum -= log(max(s1[base + u32(c) * inner], pf(14u)));
        } else {
            for (var k = 0u; k < ch; k++) {
                sum -= s3[pu(3u) + u32(c) * ch + k] * log(max(s1[base + k * inner], pf(14u)));
            }
        }
        valid += 1.0;
    }
    red_a[lid] = sum;
    red_b[lid] = valid;
    reduce2(lid);
    write_partial_s4(wid, lid);
}

// Adds the G = word 0 partial pairs of s1 and writes, by word 17: 0 a normalised loss
// (s2 = sum / n, s3 = n with n = normalizer(count), words 8.. as `cross_entropy`), 1 a ratio
// (s2 = sum / count, 0 without count), 2 a scaled sum (s2 = sum / word 18 / word 19, f32).
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var a = 0.0;
    var b = 0.0;
    for (var g = lid; g < pu(0u); g += 256u) {
        a += s1[pu(1u) + 2u * g];
        b += s1[pu(1u) + 2u * g + 1u];
    }
    red_a[lid] = a;
    red_b[lid] = b;
    reduce2(lid);
    if (lid == 0u) {
        let kind = pu(17u);
        if (kind == 0u) {
            let n = normalizer(red_b[0]);
            s2[pu(2u)] = red_a[0] / n;
            s3[pu(3u)] = n;
        } else if (kind == 1u) {
            var r = 0.0;
            if (red_b[0] > 0.0) { r = red_a[0] / red_b[0]; }
            s2[pu(2u)] = r;
        } else {
            s2[pu(2u)] = red_a[0] / pf(18u) / pf(19u);
        }
    }
}

@group(0) @binding(6) var<storage, read_write> s6: array<f32>;

// dx = (prob - onehot(label)) * top_diff / norm, one invocation per element (0 at ignored
// positions). s1 prob, s2 label, s3 unused (= prob), s4 top_diff, s5 norm, s6 dx.
@compute @workgroup_size(256)
fn cross_entropy_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let e = gid(wid, nwg, lid);
    if (e >= pu(0u)) { return; }
    let ch = pu(9u);
    let inner = pu(10u);
    let row = ch * inner;
    let o = e / row;
    let r = e - o * row;
    let k = r / inner;
    let j = r - k * inner;
    let v = s2[pu(2u) + o * inner + j];
    let c = i32(v);
    let bad = c < 0 || u32(c) >= ch;
    let hk = select(0.0, 1.0, i32(k) == c);
    var d = (s1[pu(1u) + e] - hk) * (s4[pu(4u)] / s5[pu(5u)]);
    if (bad) { d = bitcast<f32>(0x7fc00000u); }
    if (is_ignored(v)) { d = 0.0; }
    s6[pu(6u) + e] = d;
}

// dx[o,k,i] = (prob * sum_j H[l,j] - H[l,k]) * top_diff / norm, one invocation per position.
// s1 prob, s2 label, s3 infogain, s4 top_diff, s5 norm, s6 dx.
@compute @workgroup_size(256)
fn infogain_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    let ch = pu(9u);
    let inner = pu(10u);
    let o = q / inner;
    let j = q - o * inner;
    let base = o * ch * inner + j;
    let v = s2[pu(2u) + q];
    let scale = s4[pu(4u)] / s5[pu(5u)];
    let c = i32(v);
    let bad = c < 0 || u32(c) >= ch;
    if (is_ignored(v) || bad) {
        for (var k = 0u; k < ch; k++) {
            s6[pu(6u) + base + k * inner] = select(0.0, bitcast<f32>(0x7fc00000u), bad && !is_ignored(v));
        }
        return;
    }
    let cu = u32(c);
    var rowsum = 0.0;
    for (var k = 0u; k < ch; k++) { rowsum += s3[pu(3u) + cu * ch + k]; }
    for (var k = 0u; k < ch; k++) {
        let hk = s3[pu(3u) + cu * ch + k];
        s6[pu(6u) + base + k * inner] = (s1[pu(1u) + base + k * inner] * rowsum - hk) * scale;
    }
}

// Whether the score of class `cls` at position q is among the top_k (word 16), ties counting
// against: fewer than top_k + 1 scores reach it.
fn in_top_k(q: u32, cls: u32) -> bool {
    let ch = pu(9u);
    let inner = pu(10u);
    let o = q / inner;
    let j = q - o * inner;
    let base = pu(1u) + o * ch * inner + j;
    let truth = s1[base + min(cls, ch - 1u) * inner];
    var better = 0u;
    for (var k = 0u; k < ch; k++) {
        if (s1[base + k * inner] >= truth) { better += 1u; }
    }
    return better <= pu(16u);
}

// Accuracy partials (correct, count): s1 x, s2 label, s3 partials.
// words: 8 outer, 9 channels, 10 inner, 11/12 ignore, 16 top_k
@compute @workgroup_size(256)
fn accuracy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let positions = pu(8u) * pu(10u);
    var correct = 0.0;
    var count = 0.0;
    for (var q = share_start(wid, lid); q < positions; q += share_stride()) {
        let v = s2[pu(2u) + q];
        if (is_ignored(v)) { continue; }
        if (in_top_k(q, u32(max(i32(v), 0)))) { correct += 1.0; }
        count += 1.0;
    }
    red_a[lid] = correct;
    red_b[lid] = count;
    reduce2(lid);
    write_partial_s3(wid, lid);
}

// Per-class accuracy partials: one invocation per (class, chunk of word 18 positions), word 17
// chunks per class; (hits, count) to s3[2 t], s3[2 t + 1] with t = class * chunks + chunk.
// s1 x, s2 label, s3 partials.
@compute @workgroup_size(256)
fn accuracy_per_class(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let t = gid(wid, nwg, lid);
    if (t >= pu(0u)) { return; }
    let chunks = pu(17u);
    let cls = t / chunks;
    let start = (t - cls * chunks) * pu(18u);
    let end = min(start + pu(18u), pu(8u) * pu(10u));
    var hits = 0.0;
    var nums = 0.0;
    for (var q = start; q < end; q++) {
        let v = s2[pu(2u) + q];
        if (is_ignored(v) || i32(v) != i32(cls)) { continue; }
        if (in_top_k(q, cls)) { hits += 1.0; }
        nums += 1.0;
    }
    s3[pu(3u) + 2u * t] = hits;
    s3[pu(3u) + 2u * t + 1u] = nums;
}

// per_class[c] = hits / count over the word 17 chunks of class c (0 without count): one
// invocation per class. s1 partials, s2 per_class.
@compute @workgroup_size(256)
fn accuracy_per_class_finish(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let cls = gid(wid, nwg, lid);
    if (cls >= pu(0u)) { return; }
    let chunks = pu(17u);
    var hits = 0.0;
    var nums = 0.0;
    for (var k = 0u; k < chunks; k++) {
        hits += s1[pu(1u) + 2u * (cls * chunks + k)];
        nums += s1[pu(1u) + 2u * (cls * chunks + k) + 1u];
    }
    var r = 0.0;
    if (nums > 0.0) { r = hits / nums; }
    s2[pu(2u) + cls] = r;
}

// Sigmoid cross-entropy partials (sum, valid): s1 x, s2 target, s3 partials.
@compute @workgroup_size(256)
fn sigmoid_ce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = pu(8u) * pu(10u);
    var sum = 0.0;
    var valid = 0.0;
    for (var q = share_start(wid, lid); q < n; q += share_stride()) {
        let t = s2[pu(2u) + q];
        if (is_ignored(t)) { continue; }
        let x = s1[pu(1u) + q];
        let pos = select(0.0, 1.0, x >= 0.0);
        sum -= x * (t - pos) - log(1.0 + exp(x - 2.0 * x * pos));
        valid += 1.0;
    }
    red_a[lid] = sum;
    red_b[lid] = valid;
    reduce2(lid);
    write_partial_s3(wid, lid);
}

// Sigmoid cross-entropy gradient, one invocation per element: s1 x, s2 target, s4 top_diff,
// s5 norm, s6 dx (s3 unused = x).
@compute @workgroup_size(256)
fn sigmoid_ce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    let t = s2[pu(2u) + q];
    let x = s1[pu(1u) + q];
    var d = 0.0;
    if (!is_ignored(t)) { d = ((0.5 * tanh(0.5 * x) + 0.5) - t) * (s4[pu(4u)] / s5[pu(5u)]); }
    s6[pu(6u) + q] = d;
}

// y = (sign * w[0] / divisor) * x: s1 x, s2 w, s3 y. words 8 sign, 9 divisor
@compute @workgroup_size(256)
fn scale_by_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    s3[pu(3u) + q] = (pf(8u) * s2[pu(2u)] / pf(9u)) * s1[pu(1u) + q];
}

// Euclidean: diff = a - b and partial sums of diff^2. s1 a, s2 b, s3 diff, s4 partials.
// words 8 n
@compute @workgroup_size(256)
fn euclidean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var sum = 0.0;
    for (var q = share_start(wid, lid); q < pu(8u); q += share_stride()) {
        let d = s1[pu(1u) + q] - s2[pu(2u) + q];
        s3[pu(3u) + q] = d;
        sum += d * d;
    }
    red_a[lid] = sum;
    red_b[lid] = 0.0;
    reduce2(lid);
    write_partial_s4(wid, lid);
}

// ---- MultinomialLogistic, Hinge, Contrastive, ArgMax ----------------------------------------
// Per-element kernels run one invocation per element of a chunk of `outer` rows (word 0 the
// number of invocations); word 8 is always the whole `outer`, which the losses divide by.

const NAN_BITS: u32 = 0x7fc00000u;

// Whether label value `v` truncates to a class in [0, dim).
fn class_ok(v: f32, dim: u32) -> bool {
    let c = i32(v);
    return c >= 0 && u32(c) < dim;
}

// Partial sums of -log(max(prob[o, label[o]], 1e-20)) (the loss is their sum / outer).
// s1 prob, s2 label, s3 partials. words: 8 outer, 9 dim
@compute @workgroup_size(256)
fn multinomial_logistic(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let outer = pu(8u);
    let dim = pu(9u);
    var sum = 0.0;
    for (var o = share_start(wid, lid); o < outer; o += share_stride()) {
        let v = s2[pu(2u) + o];
        if (class_ok(v, dim)) {
            sum -= log(max(s1[pu(1u) + o * dim + u32(i32(v))], 1e-20));
        } else {
            sum += bitcast<f32>(NAN_BITS);
        }
    }
    red_a[lid] = sum;
    red_b[lid] = 0.0;
    reduce2(lid);
    write_partial_s3(wid, lid);
}

// dx = 0 except dx[o, label[o]] = (-top_diff / outer) / max(prob, 1e-20).
// s1 prob, s2 label, s3 top_diff, s4 dx. words: 8 outer, 9 dim
@compute @workgroup_size(256)
fn multinomial_logistic_grad(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    let dim = pu(9u);
    let o = q / dim;
    let k = q - o * dim;
    let v = s2[pu(2u) + o];
    var d = 0.0;
    if (!class_ok(v, dim)) {
        d = bitcast<f32>(NAN_BITS);
    } else if (u32(i32(v)) == k) {
        let scale = -s3[pu(3u)] / f32(max(pu(8u), 1u));
        d = scale / max(s1[pu(1u) + q], 1e-20);
    }
    s4[pu(4u) + q] = d;
}

// margin = max(0, 1 - t*x) (t = +1 at the label, -1 elsewhere) and partial sums of margin or
// margin^2 (the loss is their sum / outer). s1 x, s2 label, s3 margin, s4 partials.
// words: 8 outer, 9 dim, 10 l2
@compute @workgroup_size(256)
fn hinge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let dim = pu(9u);
    let n = pu(8u) * dim;
    let l2 = pu(10u) != 0u;
    var sum = 0.0;
    for (var q = share_start(wid, lid); q < n; q += share_stride()) {
        let o = q / dim;
        let k = q - o * dim;
        let v = s2[pu(2u) + o];
        let x = s1[pu(1u) + q];
        var m = max(1.0 + select(x, -x, i32(k) == i32(v)), 0.0);
        if (!class_ok(v, dim)) { m = bitcast<f32>(NAN_BITS); }
        s3[pu(3u) + q] = m;
        sum += select(m, m * m, l2);
    }
    red_a[lid] = sum;
    red_b[lid] = 0.0;
    reduce2(lid);
    write_partial_s4(wid, lid);
}

// dx = -t * sign(margin) * w / outer (L1) or -t * margin * (w * 2 / outer) (L2), w = top_diff.
// s1 margin, s2 label, s3 top_diff, s4 dx. words: 8 outer, 9 dim, 10 l2
@compute @workgroup_size(256)
fn hinge_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    let dim = pu(9u);
    let o = q / dim;
    let k = q - o * dim;
    let l2 = pu(10u) != 0u;
    let w = s3[pu(3u)];
    let outer = f32(max(pu(8u), 1u));
    let scale = select(w / outer, w * 2.0 / outer, l2);
    let v = s2[pu(2u) + o];
    let m = s1[pu(1u) + q];
    let t = select(m, -m, i32(k) == i32(v));
    var d = select(sign(t), t, l2) * scale;
    if (!class_ok(v, dim)) { d = bitcast<f32>(NAN_BITS); }
    s4[pu(4u) + q] = d;
}

// One invocation per row: diff = a - b, dist_sq = |diff|^2 (summed in order).
// s1 a, s2 b, s3 diff, s4 dist_sq. words: 8 outer, 9 channels
@compute @workgroup_size(256)
fn contrastive_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let r = gid(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let ch = pu(9u);
    var d2 = 0.0;
    for (var k = r * ch; k < (r + 1u) * ch; k++) {
        let d = s1[pu(1u) + k] - s2[pu(2u) + k];
        s3[pu(3u) + k] = d;
        d2 += d * d;
    }
    s4[pu(4u) + r] = d2;
}

// contrastive_rows with one workgroup per row (long rows). words: 0 rows * 256
@compute @workgroup_size(256)
fn contrastive_rows_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let r = wg_index(wid, nwg);
    if (r * 256u >= pu(0u)) { return; }
    let ch = pu(9u);
    var d2 = 0.0;
    for (var k = r * ch + lid; k < (r + 1u) * ch; k += 256u) {
        let d = s1[pu(1u) + k] - s2[pu(2u) + k];
        s3[pu(3u) + k] = d;
        d2 += d * d;
    }
    red_a[lid] = d2;
    red_b[lid] = 0.0;
    reduce2(lid);
    if (lid == 0u) { s4[pu(4u) + r] = red_a[0]; }
}

// Partial sums of term_o = dist_sq if sim != 0, else max(margin - dist_sq, 0) (legacy) or
// max(margin - sqrt(dist_sq), 0)^2; the loss is their sum / outer / 2.
// s1 dist_sq, s2 sim, s3 partials. words: 8 outer, 10 margin, 11 legacy
@compute @workgroup_size(256)
fn contrastive_loss(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let outer = pu(8u);
    let margin = pf(10u);
    let legacy = pu(11u) != 0u;
    var sum = 0.0;
    for (var r = share_start(wid, lid); r < outer; r += share_stride()) {
        let d2 = s1[pu(1u) + r];
        let d = max(margin - sqrt(d2), 0.0);
        let dissimilar = select(d * d, max(margin - d2, 0.0), legacy);
        sum += select(dissimilar, d2, i32(s2[pu(2u) + r]) != 0);
    }
    red_a[lid] = sum;
    red_b[lid] = 0.0;
    reduce2(lid);
    write_partial_s3(wid, lid);
}

// dx = coef_o * diff with alpha = sign * top_diff / outer: coef = alpha if similar, else (when
// m > 0) -alpha (legacy, m = margin - dist_sq) or -alpha * m / (d + 1e-4) (m = margin - d,
// d = sqrt(dist_sq)), else 0. s1 diff, s2 dist_sq, s3 sim, s4 top_diff, s5 dx.
// words: 8 outer, 9 channels, 10 margin, 11 legacy, 12 sign
@compute @workgroup_size(256)
fn contrastive_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    let r = q / pu(9u);
    let alpha = pf(12u) * s4[pu(4u)] / f32(max(pu(8u), 1u));
    var coef = alpha;
    if (i32(s3[pu(3u) + r]) == 0) {
        let d2 = s2[pu(2u) + r];
        let d = sqrt(d2);
        var m = pf(10u) - d;
        var beta = -alpha * m / (d + 1e-4);
        if (pu(11u) != 0u) {
            m = pf(10u) - d2;
            beta = -alpha;
        }
        coef = select(0.0, beta, m > 0.0);
    }
    s5[pu(5u) + q] = coef * s1[pu(1u) + q];
}

// The top_k largest along channels of [outer, channels, inner], one invocation per (outer, inner)
// position (while top_k * channels fits the loop budget), by top_k selection passes: pass j picks the largest (value, index) pair ordered after
// pass j-1's pick (larger values first, equal values by decreasing index, as Caffe's std::greater
// on pairs). s1 x, s2 y. words: 8 outer, 9 channels, 10 inner, 11 top_k, 12 output (0 indices,
// 1 values, 2 indices then values with inner == 1)
@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let q = gid(wid, nwg, lid);
    if (q >= pu(0u)) { return; }
    let ch = pu(9u);
    let inner = pu(10u);
    let top_k = pu(11u);
    let mode = pu(12u);
    let o = q / inner;
    let i = q - o * inner;
    let base = pu(1u) + o * ch * inner + i;
    var prev_v = 0.0;
    var prev_i = -1;
    for (var j = 0u; j < top_k; j++) {
        var best_v = 0.0;
        var best_i = -1;
        for (var c = 0u; c < ch; c++) {
            let v = s1[base + c * inner];
            let ci = i32(c);
            let after = prev_i < 0 || v < prev_v || (v == prev_v && ci < prev_i);
            let better = best_i < 0 || v > best_v || (v == best_v && ci > best_i);
            if (after && better) {
                best_v = v;
                best_i = ci;
            }
        }
        if (mode == 2u) {
            s2[pu(2u) + 2u * o * top_k + j] = f32(best_i);
            s2[pu(2u) + 2u * o * top_k + top_k + j] = best_v;
        } else {
            s2[pu(2u) + (o * top_k + j) * inner + i] = select(f32(best_i), best_v, mode == 1u);
        }
        prev_v = best_v;
        prev_i = best_i;
    }
}

// One selection pass (word 13 = j) of ArgMax with one workgroup per position, for long channels:
// the largest pair ordered after the previous pass's pick (its index kept in s3, one per
// position), reduced over the workgroup. s1 x, s2 y, s3 picks. words as `argmax`, 0 positions * 256
@compute @workgroup_size(256)
fn argmax_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let pos = wg_index(wid, nwg);
    if (pos * 256u >= pu(0u)) { return; }
    let ch = pu(9u);
    let inner = pu(10u);
    let top_k = pu(11u);
    let mode = pu(12u);
    let j = pu(13u);
    let o = pos / inner;
    let i = pos - o * inner;
    let base = pu(1u) + o * ch * inner + i;
    var prev_v = 0.0;
    var prev_i = -1;
    if (j > 0u) {
        prev_i = i32(s3[pu(3u) + pos]);
        prev_v = s1[base + u32(prev_i) * inner];
    }
    var best_v = 0.0;
    var best_i = -1;
    for (var c = lid; c < ch; c += 256u) {
        let v = s1[base + c * inner];
        let ci = i32(c);
        let after = prev_i < 0 || v < prev_v || (v == prev_v && ci < prev_i);
        let better = best_i < 0 || v > best_v || (v == best_v && ci > best_i);
        if (after && better) {
            best_v = v;
            best_i = ci;
        }
    }
    red_a[lid] = best_v;
    red_b[lid] = f32(best_i);
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) {
            let ov = red_a[lid + h];
            let oi = red_b[lid + h];
            let mv = red_a[lid];
            let mi = red_b[lid];
            if (oi >= 0.0 && (mi < 0.0 || ov > mv || (ov == mv && oi > mi))) {
                red_a[lid] = ov;
                red_b[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let v = red_a[0];
        let idx = red_b[0];
        if (mode == 2u) {
            s2[pu(2u) + 2u * o * top_k + j] = idx;
            s2[pu(2u) + 2u * o * top_k + top_k + j] = v;
        } else {
            s2[pu(2u) + (o * top_k + j) * inner + i] = select(idx, v, mode == 1u);
        }
        s3[pu(3u) + pos] = idx;
    }
}
