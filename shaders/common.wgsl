// Prepended to every shader family (see src/engine/gpu/mod.rs).
//
// Binding 0 of group 0 holds the dispatch's parameters as 64 32-bit words; storage bindings start at
// 1 and are all declared read_write in the bind group layout. A view bound at binding b starts
// `shift` elements into the binding (the offset is aligned down to the adapter's alignment).
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> P: array<vec4<u32>, 16>;

fn pu(i: u32) -> u32 {
    return P[i / 4u][i % 4u];
}

fn pi(i: u32) -> i32 {
    return bitcast<i32>(P[i / 4u][i % 4u]);
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(P[i / 4u][i % 4u]);
}

// Linear invocation index of a 1-D shader dispatched as a (possibly folded) 2-D grid.
fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// Linear float textures (rgba32float, TEX_W = 4096 texels per row): texel t holds floats 4t..4t+4.
fn tex_coord(t: u32) -> vec2<u32> {
    return vec2<u32>(t & 4095u, t >> 12u);
}

// n / d through f32 with an exact integer correction; valid for n < 2^24 (the host checks). On
// lavapipe a u32 division is 8 scalar divisions, a float multiply one SIMD instruction.
fn fdiv(n: u32, d: u32) -> u32 {
    var q = u32(f32(n) * (1.0 / f32(d)));
    q = select(q, q - 1u, q * d > n);
    q = select(q, q - 1u, q * d > n);
    q = select(q, q + 1u, (q + 1u) * d <= n);
    q = select(q, q + 1u, (q + 1u) * d <= n);
    return q;
}
