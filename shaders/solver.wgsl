// Solver family: one dispatch per parameter blob and step (see src/engine/kernels/solver.rs).
// update1/update2 words: 0 n, 1..4 shifts of bindings 1..4, 8 rule, 9 regularization (0 none,
// 1 L2, 2 L1), 10 decay, 11 scale, 12 rate, 13..16 rule constants.
// Rules: 0 SGD(m), 1 Nesterov(m), 2 AdaGrad(delta), 3 RMSProp(decay, delta), 4 AdaDelta(m, delta),
// 5 Adam(beta1, beta2, eps, correction).

@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> h0: array<f32>;
@group(0) @binding(4) var<storage, read_write> h1: array<f32>;

fn csign(x: f32) -> f32 {
    return select(0.0, 1.0, 0.0 < x) - select(0.0, 1.0, x < 0.0);
}

fn gradient(i: u32) -> f32 {
    let wi = w[pu(1u) + i];
    var grad = g[pu(2u) + i] * pf(11u);
    let reg = pu(9u);
    if (reg == 1u) { grad = grad + pf(10u) * wi; }
    if (reg == 2u) { grad = grad + pf(10u) * csign(wi); }
    return grad;
}

fn finish(i: u32, update: f32) {
    g[pu(2u) + i] = update;
    w[pu(1u) + i] = w[pu(1u) + i] - update;
}

@compute @workgroup_size(256)
fn update1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let grad = gradient(i);
    let rate = pf(12u);
    let a = pf(13u);
    let b = pf(14u);
    let k = pu(3u) + i;
    var update = 0.0;
    switch pu(8u) {
        case 0u: {
            h0[k] = rate * grad + a * h0[k];
            update = h0[k];
        }
        case 1u: {
            let previous = h0[k];
            h0[k] = rate * grad + a * h0[k];
            update = (1.0 + a) * h0[k] - a * previous;
        }
        case 2u: {
            h0[k] = h0[k] + grad * grad;
            update = rate * (grad / (sqrt(h0[k]) + a));
        }
        default: {
            h0[k] = (1.0 - a) * (grad * grad) + a * h0[k];
            update = rate * (grad / (sqrt(h0[k]) + b));
        }
    }
    finish(i, update);
}

@compute @workgroup_size(256)
fn update2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let grad = gradient(i);
    let rate = pf(12u);
    let a = pf(13u);
    let b = pf(14u);
    let k0 = pu(3u) + i;
    let k1 = pu(4u) + i;
    var update = 0.0;
    if (pu(8u) == 4u) {
        h0[k0] = (1.0 - a) * (grad * grad) + a * h0[k0];
        let s = grad * sqrt((h1[k1] + b) / (h0[k0] + b));
        h1[k1] = (1.0 - a) * (s * s) + a * h1[k1];
        update = rate * s;
    } else {
        h0[k0] = (1.0 - a) * grad + a * h0[k0];
        h1[k1] = (1.0 - b) * (grad * grad) + b * h1[k1];
        update = rate * pf(16u) * (h0[k0] / (sqrt(h1[k1]) + pf(15u)));
    }
    finish(i, update);
}

var<workgroup> partial: array<f32, 256>;

// out[0] = (word 8 ? out[0] : 0) + sum(x^2) over word 0 elements, in one workgroup.
@compute @workgroup_size(256)
fn sum_squares(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < pu(0u); i = i + 256u) {
        let v = w[pu(1u) + i];
        acc = acc + v * v;
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let o = pu(2u);
        g[o] = select(0.0, g[o], pu(8u) != 0u) + partial[0];
    }
}
