// Softmax along `channels` of [outer, channels, inner]: one invocation per (outer, inner) position.
// words: 0 positions, 1..4 shifts, 8 channels, 9 inner

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
