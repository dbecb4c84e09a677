// Memory primitives on lavapipe, for examples/kernel_lab.rs (see there).
@group(0) @binding(1) var<storage, read_write> s_f: array<f32>;
@group(0) @binding(1) var<storage, read_write> s_v: array<vec4<f32>>;
@group(0) @binding(2) var t_in: texture_2d<f32>;
@group(0) @binding(3) var t_out: texture_storage_2d<rgba32float, write>;

// one float per invocation (N invocations)
@compute @workgroup_size(256)
fn st_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    s_f[i] = f32(i);
}
// one vec4 per invocation (N/4 invocations)
@compute @workgroup_size(256)
fn st_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i * 4u >= pu(0u)) { return; }
    s_v[i] = vec4<f32>(f32(i));
}
// texture store of one texel per invocation (N/4 invocations)
@compute @workgroup_size(256)
fn st_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i * 4u >= pu(0u)) { return; }
    textureStore(t_out, tex_coord(i), vec4<f32>(f32(i)));
}
// texture load -> buffer vec4 (N/4 invocations)
@compute @workgroup_size(256)
fn tex_to_buf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i * 4u >= pu(0u)) { return; }
    s_v[i] = textureLoad(t_in, tex_coord(i), 0);
}
// texture load -> texture (N/4)
@compute @workgroup_size(256)
fn tex_to_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i * 4u >= pu(0u)) { return; }
    textureStore(t_out, tex_coord(i), textureLoad(t_in, tex_coord(i), 0));
}
// buffer load scalar -> store scalar (N)
@compute @workgroup_size(256)
fn buf_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    s_f[i + pu(0u)] = s_f[i];
}
// buffer vec4 load -> vec4 store (N/4)
@compute @workgroup_size(256)
fn buf_copy4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = gid(wid, nwg, lid);
    if (i * 4u >= pu(0u)) { return; }
    s_v[i + pu(0u) / 4u] = s_v[i];
}
