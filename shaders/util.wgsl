// Engine utilities: fill with a value, copy inside one buffer.

@group(0) @binding(1) var<storage, read_write> u_a: array<f32>;
@group(0) @binding(2) var<storage, read_write> u_b: array<f32>;

// params: n, shift, value
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    u_a[pu(1u) + i] = pf(2u);
}

// params: n, src shift, dst shift
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    u_b[pu(2u) + i] = u_a[pu(1u) + i];
}
