#!/usr/bin/env python3
"""Generates the subgroup GEMM micro-kernels of shaders/blas_subgroup.wgsl (one line per FMA).

usage: gen_gemm_sg.py KERNEL... > shaders/blas_subgroup.wgsl   with KERNEL = TM,CL,A,B[,KU]
The engine uses `32,8,T,N 16,8,T,N 8,8,T,N 48,8,T,N,2 64,8,T,N,2` (operands packed in panels by
blas.wgsl), `32,8,T,I 16,8,T,I 8,8,T,I 48,8,T,I,2 64,8,T,I,2` (convolutions: B is the im2col
of an image read in place, see B=I below) and `32,8,J,U 32,4,J,U` (weight gradients, see
A=J below); the other layouts read operands in place and serve
experiments with examples/gemm_lab.rs. On lavapipe they are slower than packing first (panels are read as
contiguous streams): 20-50% for the kernel alone at 1024^3. Even for few rows (96x3025x1200,
convolution-like), B read in place at any alignment (T,M) lost to packing in the engine: the
kernel slowed by ~50% while packing B costs ~1/3 of the packed kernel's time.

Tile size: per-lane tiles of 32x8 or 64x8 elements (256 or 512 vec4 accumulators' worth of
spills) do best; bodies of more than ~1024 FMAs per loop iteration (64x64 with k by 4, 96x64 by
2, ...) run 30-50% slower, so the 48- and 64-row tiles step k by 2.

A workgroup is one subgroup of 8 lanes computing a TM x (8*CL) block of C. Lane l keeps a TM x CL
block (rows 0..TM-1, columns CL*l .. CL*l+CL-1) in vec4 registers. The TM values of A of each k
are fetched spread over the lanes and shared with subgroupBroadcast; each lane fetches the B
values of its own columns. Operands are read from linear float textures (texel t = floats
4t..4t+3, see common.wgsl), in one of these layouts, where r and c count from the first row /
column of the workgroup's panel p / q (`base` = texel of the first element of batch entry 0,
strides in texels):
  A=T  texel (k, r/4) = base + p * aps + k * lda + r/4   4 rows at one k (A^T row-major: aps = TM/4;
                                                         packed panels: lda = TM/4)
  A=N  texel (r, k/4) = base + p * aps + r * lda + k/4   4 k of one row (A row-major: aps = TM*lda)
  B=N  texel (k, c/4) = base + q * bps + k * ldb + c/4   4 columns at one k (B row-major: bps = TN/4;
                                                         packed panels: ldb = TN/4)
  B=T  texel (c, k/4) = base + q * bps + c * ldb + k/4   4 k of one column (B^T row-major)
  B=M  element (k, c) = base + q * bps + k * ldb + c     B row-major at any alignment (base, bps and
                                                         ldb in elements; 3 texels per 8 columns)
  B=I  implicit im2col (src/engine/gpu/conv_gemm.rs, shaders/conv_gemm.wgsl): row k = (channel
       c, kernel tap t), column = output position col; the element is source[image +
       c * cstride + tap base + col] (a linear layout of the images), masked with IM_MASK to the
       input row oh + uh and column ow + uw (col = oh * OW + ow) inside the image. Texture
       binding 5 holds the tap table (base, uh, uw) per tap. A lane reads its 8 columns as one
       run of 3 texels; extra words: 16 source element of image 0, 17 image stride, 18 cstride,
       19 OW, 20 H, 21 W, 22 taps (kprod), 23 first k, 24 1 / OW, 25 1 / kprod (f32). B costs
       per k about what 100 FMAs per lane do, against a packing pass that writes and copies
       all of B, so it pays for blocks of up to ~128 rows.
  A=J, B=U  (gemm_TMxTN_ju, convolution weight gradients): one slice z of k = (image, output
       position) of C_z = im2col(images) * dY^T, read in place: row r = (channel c, tap t) of
       A is source[image + c * cstride + tap base + position] (masked with IM_MASK as for B=I),
       column j of B is dY[image][j][position]. Slice z covers the positions [k0, k1) of the
       images [b0, b1). Each lane keeps the texel it last read of each of its rows and columns,
       so 4 k cost one texel per row or column (A_ALIGNED / B_ALIGNED: rows / columns start at
       whole texels, no shifts); k1 - k0 not a multiple of 4 ends with one masked step. C_z is
       stored as vec4 rows (ldc a multiple of 4) and blas.wgsl's wgrad_sum adds the slices into
       dW. Its words: 0 m, 1 n, 3 ldc, 4 c shift, 5 elements between slices (as below), and
       2 positions S, 6 source element of image 0, 7 image stride, 8 cstride, 9 dY element
       of image 0, 10 dY image stride, 11 slices per image, 12 positions per slice, 13 OW,
       14 H, 15 W, 16 taps (kprod), 17 1 / OW, 18 1 / kprod, 19 images per slice, 20 images.
k runs in steps of 4 then one at a time; rows and columns past the matrix read whatever is there
(their results are never stored), k never goes past the matrix.

params: 0 m, 1 n, 2 k, 3 ldc, 4 c shift, 5 c batch stride, 6 A base, 7 A batch stride,
        8 lda, 9 B base, 10 B batch stride, 11 ldb, 12 alpha, 13 beta, 14 aps, 15 bps
Pipeline constants: BETA0 (beta is 0: C is not read), C4 (C is stored as vec4 through binding 4:
ldc, n, the C shift and batch stride are multiples of 4), HAS_BIAS (A layout T: C += column kn
of the A panels, i.e. A's panels hold kn + 1 k and aps counts them), IM_MASK (B=I), C_MAP
(CL = 8: C column col = i * wr + j of a row is stored at i * rs + j * cs, words 26 wr, 27 rs,
28 cs, 29 1 / wr: the phases of a strided convolution's data gradient), EPI (the epilogue of
point-wise steps on C, words 30..32, bindings 6..8; see sg_epi). Bindings 5..8 are in every
kernel's layout.
"""
import sys

XYZW = "xyzw"


def gen(tm, cl, al, bl, ku=4):
    assert tm % 8 == 0 and cl % 4 == 0 and al in "TN" and bl in "NTMI"
    assert ku == 4 or (al == "T" and bl in "NMI")
    if bl in "MI":
        assert cl == 8
    if bl == "I":
        assert al == "T"
    tn = 8 * cl
    c4 = cl // 4
    name = f"gemm_{tm}x{tn}_{al.lower()}{bl.lower()}" + ("" if ku == 4 else f"_k{ku}")
    o = []
    w = o.append
    w(f"// {tm}x{tn} tile, lane tile {tm}x{cl}, A layout {al}, B layout {bl}.")
    w("@compute @workgroup_size(8)")
    w(f"fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {{")
    w("    let q = wid.x;")
    w("    let p = wid.y;")
    w("    let bb = wid.z;")
    w("    let kn = pu(2u);")
    w(f"    let k4 = kn - kn % {ku}u;")
    w("    let lda = pu(8u);")
    w("    let ldb = pu(11u);")
    for r in range(tm):
        for c in range(c4):
            w(f"    var acc{r}_{c} = vec4<f32>(0.0);")
    w("    let abase = pu(6u) + bb * pu(7u);")
    w("    let bbase = pu(9u) + bb * pu(10u);")
    if bl == "I":
        w(f"    let cols = sg_cols(q * {tn}u + {cl}u * l);")
        w(f"    let ibase = i32(pu(16u) + bb * pu(17u) + q * {tn}u + {cl}u * l);")
        w("    var cc = sg_div(pu(23u), pu(22u), pf(25u));")
        w("    var tt = pu(23u) - cc * pu(22u);")
    # ---- fetch address setup
    if al == "T":
        # lane l, fetch f of a 4-k step: texel t = 8f + l -> u = t / (tm/4), g = t % (tm/4)
        at = tm // 4
        nf = -(-(at * ku) // 8)
        for f in range(nf):
            t0 = 8 * f
            # u and g per lane: (t0 + l) / at, (t0 + l) % at; at is a multiple of 2
            w(f"    let au{f} = ({t0}u + l) / {at}u;")
            w(f"    var ai{f} = abase + p * pu(14u) + au{f} * lda + ({t0}u + l) % {at}u;")
    else:
        nf = tm // 8
        for f in range(nf):
            w(f"    var ai{f} = abase + p * pu(14u) + ({8 * f}u + l) * lda;")
    if bl == "N":
        w(f"    var bi = bbase + q * pu(15u) + {c4}u * l;")
    elif bl == "T":
        for j in range(cl):
            w(f"    var bi{j} = bbase + q * pu(15u) + ({cl}u * l + {j}u) * ldb;")
    elif bl == "M":
        w(f"    var be = bbase + q * pu(15u) + {cl}u * l;")

    def a_fetch(f, k1=False):
        if al == "T":
            return f"textureLoad(sg_ta, tex_coord(ai{f}), 0)"
        return f"textureLoad(sg_ta, tex_coord(ai{f}), 0)"

    def b_loads(u_list, ind):
        # emits b{u}_{c} vec4 (4 columns) for each u
        if bl == "N":
            for u in u_list:
                for c in range(c4):
                    off = f" + {c}u" if c else ""
                    src = f"bi{off}" if u == 0 else f"bi + ldb * {u}u{off}"
                    w(f"{ind}let b{u}_{c} = textureLoad(sg_tb, tex_coord({src}), 0);")
        elif bl == "T":
            if len(u_list) == 4:
                for j in range(cl):
                    w(f"{ind}let bt{j} = textureLoad(sg_tb, tex_coord(bi{j}), 0);")
                for u in u_list:
                    for c in range(c4):
                        comps = ", ".join(f"bt{4 * c + i}.{XYZW[u]}" for i in range(4))
                        w(f"{ind}let b{u}_{c} = vec4<f32>({comps});")
            else:
                # one k: component (kk & 3) of each column's texel
                for j in range(cl):
                    w(f"{ind}let bt{j} = pick(textureLoad(sg_tb, tex_coord(bi{j}), 0), kk & 3u);")
                for c in range(c4):
                    comps = ", ".join(f"bt{4 * c + i}" for i in range(4))
                    w(f"{ind}let b0_{c} = vec4<f32>({comps});")
        elif bl == "I":
            for u in u_list:
                # I_ALIGNED: one tap at base 0, k is the channel.
                w(f"{ind}var tp{u} = vec4<f32>(0.0);")
                w(f"{ind}if (!I_ALIGNED) {{ tp{u} = textureLoad(sg_tt, tex_coord(tt), 0); }}")
                w(f"{ind}let bi{u} = sg_im8(ibase + i32(cc * pu(18u)) + i32(tp{u}.x), tp{u}, cols);")
                w(f"{ind}let b{u}_0 = bi{u}.lo;")
                w(f"{ind}let b{u}_1 = bi{u}.hi;")
                w(f"{ind}if (I_ALIGNED) {{")
                w(f"{ind}    cc += 1u;")
                w(f"{ind}}} else {{")
                w(f"{ind}    tt += 1u;")
                w(f"{ind}    let tw{u} = tt == pu(22u);")
                w(f"{ind}    tt = select(tt, 0u, tw{u});")
                w(f"{ind}    cc = select(cc, cc + 1u, tw{u});")
                w(f"{ind}}}")
        else:  # M
            for u in u_list:
                e = "be" if u == 0 else f"be + ldb * {u}u"
                w(f"{ind}let e{u} = {e};")
                w(f"{ind}let t{u} = e{u} >> 2u;")
                w(f"{ind}let sh{u} = e{u} & 3u;")
                for i in range(3):
                    w(f"{ind}let f{u}_{i} = textureLoad(sg_tb, tex_coord(t{u} + {i}u), 0);")
                w(f"{ind}let b{u}_0 = shift4(f{u}_0, f{u}_1, sh{u});")
                w(f"{ind}let b{u}_1 = shift4(f{u}_1, f{u}_2, sh{u});")

    def fmas(ku, ind):
        # A values of (row r, step u): T layout: fetch t = u*(tm/4) + r/4, comp r%4, lane t%8
        for g in range(tm // 4):
            if al == "T":
                for u in range(ku):
                    t = u * (tm // 4) + g
                    w(f"{ind}let s{g}_{u} = subgroupBroadcast(a_{t // 8}, {t % 8}u);")
                for comp in range(4):
                    r = 4 * g + comp
                    for u in range(ku):
                        for c in range(c4):
                            w(f"{ind}acc{r}_{c} = fma(vec4<f32>(s{g}_{u}.{XYZW[comp]}), b{u}_{c}, acc{r}_{c});")
            else:
                for comp in range(4):
                    r = 4 * g + comp
                    w(f"{ind}let s{r} = subgroupBroadcast(a_{r // 8}, {r % 8}u);")
                    for u in range(ku):
                        for c in range(c4):
                            val = f"s{r}.{XYZW[u]}" if ku == 4 else f"s{r}"
                            w(f"{ind}acc{r}_{c} = fma(vec4<f32>({val}), b{u}_{c}, acc{r}_{c});")

    # ---- main loop: 4 k per step
    w("    var kk = 0u;")
    w(f"    for (; kk < k4; kk += {ku}u) {{")
    for f in range(nf):
        w(f"        let a_{f} = {a_fetch(f)};")
    b_loads(range(ku), "        ")
    fmas(ku, "        ")
    for f in range(nf):
        w(f"        ai{f} += {f'{ku}u * lda' if al == 'T' else '1u'};")
    if bl == "N":
        w(f"        bi += {ku}u * ldb;")
    elif bl == "T":
        for j in range(cl):
            w(f"        bi{j} += 1u;")
    elif bl == "M":
        w(f"        be += {ku}u * ldb;")
    w("    }")
    # ---- tail: one k at a time
    w("    for (; kk < kn; kk++) {")
    if al == "T":
        # tm/4 texels at this k; lane l fetches texel l (and l + 8, ...)
        for f in range(-(-(tm // 4) // 8)):
            w(f"        let a_{f} = textureLoad(sg_ta, tex_coord(abase + p * pu(14u) + kk * lda + {8 * f}u + l), 0);")
        # T layout with ku=1: s{g}_0 = broadcast(a_{g/8}, g%8)
        pass
    else:
        for f in range(nf):
            w(f"        let a_{f} = vec4<f32>(pick(textureLoad(sg_ta, tex_coord(ai{f}), 0), kk & 3u));")
    if bl == "N":
        for c in range(c4):
            off = f" + {c}u" if c else ""
            w(f"        let b0_{c} = textureLoad(sg_tb, tex_coord(bbase + q * pu(15u) + kk * ldb + {c4}u * l{off}), 0);")
    elif bl in "TI":
        b_loads([0], "        ")
    else:
        w(f"        let e0 = bbase + q * pu(15u) + kk * ldb + {cl}u * l;")
        w("        let t0 = e0 >> 2u;")
        w("        let sh0 = e0 & 3u;")
        for i in range(3):
            w(f"        let f0_{i} = textureLoad(sg_tb, tex_coord(t0 + {i}u), 0);")
        w("        let b0_0 = shift4(f0_0, f0_1, sh0);")
        w("        let b0_1 = shift4(f0_1, f0_2, sh0);")
    if al == "T":
        for g in range(tm // 4):
            w(f"        let s{g}_0 = subgroupBroadcast(a_{g // 8}, {g % 8}u);")
            for comp in range(4):
                r = 4 * g + comp
                for c in range(c4):
                    w(f"        acc{r}_{c} = fma(vec4<f32>(s{g}_0.{XYZW[comp]}), b0_{c}, acc{r}_{c});")
    else:
        for r in range(tm):
            w(f"        let s{r} = subgroupBroadcast(a_{r // 8}.x, {r % 8}u);")
            for c in range(c4):
                w(f"        acc{r}_{c} = fma(vec4<f32>(s{r}), b0_{c}, acc{r}_{c});")
        pass
    w("    }")
    if al == "T":
        # ---- bias: one more k (column kn of the A panels) times a row of ones
        w("    if (HAS_BIAS) {")
        for f in range(-(-(tm // 4) // 8)):
            w(f"        let a_{f} = textureLoad(sg_ta, tex_coord(abase + p * pu(14u) + kn * lda + {8 * f}u + l), 0);")
        for g in range(tm // 4):
            w(f"        let s{g}_0 = subgroupBroadcast(a_{g // 8}, {g % 8}u);")
            for comp in range(4):
                r = 4 * g + comp
                for c in range(c4):
                    w(f"        acc{r}_{c} = acc{r}_{c} + vec4<f32>(s{g}_0.{XYZW[comp]});")
        w("    }")
    # ---- epilogue
    w(f"    let row0 = p * {tm}u;")
    w(f"    let col0 = q * {tn}u + {cl}u * l;")
    w("    let cb = pu(4u) + bb * pu(5u);")
    w("    let m = pu(0u);")
    w("    let n = pu(1u);")
    w("    if (C4) {")
    for r in range(tm):
        w(f"        if (row0 + {r}u < m) {{")
        w(f"            let v = (cb + (row0 + {r}u) * pu(3u) + col0) >> 2u;")
        w(f"            let ep = sg_ep_row(row0 + {r}u);")
        for c in range(c4):
            off = f" + {c}u" if c else ""
            w(f"            if (col0{' + ' + str(4 * c) + 'u' if c else ''} < n) {{ sg_store4(v{off}, acc{r}_{c}, ep); }}")
        w("        }")
    w("    } else {")
    w("        let cm = sg_cmap(col0);")
    for r in range(tm):
        w(f"        if (row0 + {r}u < m) {{")
        w(f"            let ci = cb + (row0 + {r}u) * pu(3u);")
        w(f"            let ep = sg_ep_row(row0 + {r}u);")
        for c in range(c4):
            for comp in range(4):
                half = "lo" if c == 0 else "hi"
                w(f"            sg_store(ci, col0 + {4 * c + comp}u, cm.{half}.{XYZW[comp]}, acc{r}_{c}.{XYZW[comp]}, ep);")
        w("        }")
    w("    }")
    w("}")
    return "\n".join(o) + "\n"



def gen_wgrad(tm, cl):
    """A=J, B=U: one z slice of a convolution's weight gradient, C_z = im2col(images)_z * dY_z^T
    (rows (channel, kernel tap), columns output channels, k output positions), both operands
    read in place (see the module doc)."""
    assert tm % 8 == 0 and cl % 4 == 0
    tn = 8 * cl
    c4 = cl // 4
    nf = tm // 8
    name = f"gemm_{tm}x{tn}_ju"
    o = []
    w = o.append
    w(f"// {tm}x{tn} tile, lane tile {tm}x{cl}, A layout J, B layout U (a weight gradient's slice).")
    w("@compute @workgroup_size(8)")
    w(f"fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {{")
    w("    let q = wid.x;")
    w("    let p = wid.y;")
    w("    let z = wid.z;")
    w("    let m = pu(0u);")
    w("    let n = pu(1u);")
    w("    let sn = pu(2u);")
    w("    let cpi = pu(11u);")
    w("    let zi = z / cpi;")
    w("    let b0 = zi * pu(19u);")
    w("    let b1 = min(b0 + pu(19u), pu(20u));")
    w("    let k0 = (z - zi * cpi) * pu(12u);")
    w("    let k1 = min(k0 + pu(12u), sn);")
    w("    let hn = vec4<u32>(pu(14u));")
    w("    let wn = vec4<u32>(pu(15u));")
    w("    let own = vec4<i32>(i32(pu(13u)));")
    for r in range(tm):
        for c in range(c4):
            w(f"    var acc{r}_{c} = vec4<f32>(0.0);")
    # A rows fetched by this lane: 8f + l of the panel (clamped into the matrix)
    for f in range(nf):
        w(f"    let r{f} = min(p * {tm}u + {8 * f}u + l, m - 1u);")
        w(f"    let c{f} = sg_div(r{f}, pu(16u), pf(18u));")
        w(f"    let tp{f} = textureLoad(sg_tt, tex_coord(r{f} - c{f} * pu(16u)), 0);")
        w(f"    let ar{f} = i32(pu(6u) + c{f} * pu(8u)) + i32(tp{f}.x);")
        w(f"    let uh{f} = vec4<i32>(i32(tp{f}.y));")
        w(f"    let uw{f} = vec4<i32>(i32(tp{f}.z));")
    for j in range(cl):
        w(f"    let br{j} = pu(9u) + min(q * {tn}u + {cl}u * l + {j}u, n - 1u) * sn;")
    w("    for (var b = b0; b < b1; b++) {")
    ind = "        "
    for f in range(nf):
        w(f"{ind}let ea{f} = ar{f} + i32(b * pu(7u) + k0);")
        w(f"{ind}var ta{f} = ea{f} >> 2u;")
        w(f"{ind}let sa{f} = u32(ea{f}) & 3u;")
        w(f"{ind}var pa{f} = sg_texel_a(ta{f});")
    for j in range(cl):
        w(f"{ind}let eb{j} = br{j} + b * pu(10u) + k0;")
        w(f"{ind}var tb{j} = i32(eb{j} >> 2u);")
        w(f"{ind}let sb{j} = eb{j} & 3u;")
        w(f"{ind}var pb{j} = sg_texel(tb{j});")
    w(f"{ind}let pos = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u);")
    w(f"{ind}let oh_0 = sg_div4(pos, pu(13u), pf(17u));")
    w(f"{ind}var oh = vec4<i32>(oh_0);")
    w(f"{ind}var ow = vec4<i32>(pos - oh_0 * pu(13u));")
    w(f"{ind}var k = k0;")

    def body(ind, tail):
        if tail:
            w(f"{ind}let live = vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(k1);")
        for f in range(nf):
            w(f"{ind}ta{f} += 1;")
            w(f"{ind}var a_{f}: vec4<f32>;")
            w(f"{ind}if (A_ALIGNED) {{")
            w(f"{ind}    a_{f} = pa{f};")
            w(f"{ind}    pa{f} = sg_texel_a(ta{f});")
            w(f"{ind}}} else {{")
            w(f"{ind}    let na{f} = sg_texel_a(ta{f});")
            w(f"{ind}    a_{f} = shift4(pa{f}, na{f}, sa{f});")
            w(f"{ind}    pa{f} = na{f};")
            w(f"{ind}}}")
            w(f"{ind}if (IM_MASK) {{")
            w(f"{ind}    let in{f} = (vec4<u32>(oh + uh{f}) < hn) & (vec4<u32>(ow + uw{f}) < wn);")
            w(f"{ind}    a_{f} = select(vec4<f32>(0.0), a_{f}, in{f});")
            w(f"{ind}}}")
            if tail:
                w(f"{ind}a_{f} = select(vec4<f32>(0.0), a_{f}, live);")
        for j in range(cl):
            w(f"{ind}tb{j} += 1;")
            w(f"{ind}var v{j}: vec4<f32>;")
            w(f"{ind}if (B_ALIGNED) {{")
            w(f"{ind}    v{j} = pb{j};")
            w(f"{ind}    pb{j} = sg_texel(tb{j});")
            w(f"{ind}}} else {{")
            w(f"{ind}    let nb{j} = sg_texel(tb{j});")
            w(f"{ind}    v{j} = shift4(pb{j}, nb{j}, sb{j});")
            w(f"{ind}    pb{j} = nb{j};")
            w(f"{ind}}}")
            if tail:
                w(f"{ind}v{j} = select(vec4<f32>(0.0), v{j}, live);")
        for u in range(4):
            for c in range(c4):
                comps = ", ".join(f"v{4 * c + i}.{XYZW[u]}" for i in range(4))
                w(f"{ind}let b{u}_{c} = vec4<f32>({comps});")
        for r in range(tm):
            w(f"{ind}let s{r} = subgroupBroadcast(a_{r // 8}, {r % 8}u);")
            for u in range(4):
                for c in range(c4):
                    w(f"{ind}acc{r}_{c} = fma(vec4<f32>(s{r}.{XYZW[u]}), b{u}_{c}, acc{r}_{c});")
        if not tail:
            w(f"{ind}ow += vec4<i32>(4);")
            w(f"{ind}let wrap = ow >= own;")
            w(f"{ind}ow = select(ow, ow - own, wrap);")
            w(f"{ind}oh = select(oh, oh + vec4<i32>(1), wrap);")

    w(f"{ind}for (; k + 4u <= k1; k += 4u) {{")
    body(ind + "    ", False)
    w(f"{ind}}}")
    w(f"{ind}if (k < k1) {{")
    body(ind + "    ", True)
    w(f"{ind}}}")
    w("    }")
    w(f"    let row0 = p * {tm}u;")
    w(f"    let col0 = q * {tn}u + {cl}u * l;")
    w("    let cb = pu(4u) + z * pu(5u);")
    for r in range(tm):
        w(f"    if (row0 + {r}u < m) {{")
        w(f"        let v = (cb + (row0 + {r}u) * pu(3u) + col0) >> 2u;")
        for c in range(c4):
            off = f" + {c}u" if c else ""
            w(f"        if (col0 + {4 * c}u < n) {{ sg_c4[v{off}] = acc{r}_{c}; }}")
        w("    }")
    w("}")
    return "\n".join(o) + "\n"


COMMON = """// Subgroup GEMM micro-kernels, generated by `scripts/gen_gemm_sg.py {args}`
// (see there for the tile shapes, operand layouts and params). Compiled only when the device has
// SUBGROUP.
//
// Operands are read from linear float textures: lavapipe gathers texels but loads storage
// buffers lane by lane, and C rows of whole texels are stored as vec4 (about a third of the cost
// of scalar stores there).

@group(0) @binding(1) var sg_ta: texture_2d<f32>;
@group(0) @binding(2) var sg_tb: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> sg_c: array<f32>;
@group(0) @binding(4) var<storage, read_write> sg_c4: array<vec4<f32>>;

// Both set per pipeline, so that the unused store path is compiled out (lavapipe runs both sides
// of every branch).
override BETA0: bool = true;
override C4: bool = false;

// The epilogue: point-wise steps on each stored value (a convolution's in-place BatchNorm, Scale
// and ReLU layers), each in its own kernel's formula (elementwise.wgsl's channel_stages). EPI
// bits: 1 normalize, 2 scale, 4 bias, 8 save the normalized value, 16 ReLU. Row r's channel
// values (mean, std, scale, bias) are sg_ep[pu(30) + r]; the save of the value at C element e
// goes to sg_s element e - pu(4) + pu(31); word 32 is the ReLU's negative slope.
override EPI: u32 = 0u;
@group(0) @binding(6) var<storage, read_write> sg_ep: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> sg_s: array<f32>;
@group(0) @binding(8) var<storage, read_write> sg_s4: array<vec4<f32>>;

fn sg_ep_row(row: u32) -> vec4<f32> {
    if (EPI == 0u) {
        return vec4<f32>(0.0);
    }
    return sg_ep[pu(30u) + row];
}

// The epilogue of 4 values stored at C element 4t.
fn sg_epi4(t: u32, v: vec4<f32>, ep: vec4<f32>) -> vec4<f32> {
    var x = v;
    if ((EPI & 1u) != 0u) { x = (x - vec4<f32>(ep.x)) / vec4<f32>(ep.y); }
    if ((EPI & 8u) != 0u) { sg_s4[t - pu(4u) / 4u + pu(31u) / 4u] = x; }
    if ((EPI & 2u) != 0u) { x *= vec4<f32>(ep.z); }
    if ((EPI & 4u) != 0u) { x += vec4<f32>(ep.w); }
    if ((EPI & 16u) != 0u) {
        let a = pf(32u);
        x = max(x, vec4<f32>(0.0)) + a * min(x, vec4<f32>(0.0));
    }
    return x;
}

// The epilogue of the value stored at C element e.
fn sg_epi(e: u32, v: f32, ep: vec4<f32>) -> f32 {
    var x = v;
    if ((EPI & 1u) != 0u) { x = (x - ep.x) / ep.y; }
    if ((EPI & 8u) != 0u) { sg_s[e - pu(4u) + pu(31u)] = x; }
    if ((EPI & 2u) != 0u) { x *= ep.z; }
    if ((EPI & 4u) != 0u) { x += ep.w; }
    if ((EPI & 16u) != 0u) {
        let a = pf(32u);
        x = max(x, 0.0) + a * min(x, 0.0);
    }
    return x;
}

// C column col of a row starting at element ci sits at ci + off (off = col unless C_MAP).
fn sg_store(ci: u32, col: u32, off: u32, v: f32, ep: vec4<f32>) {
    if (col < pu(1u)) {
        var x: f32;
        if (BETA0) {
            x = pf(12u) * v;
        } else {
            x = pf(12u) * v + pf(13u) * sg_c[ci + off];
        }
        if (EPI != 0u) { x = sg_epi(ci + off, x, ep); }
        sg_c[ci + off] = x;
    }
}

// C columns as positions of a strided grid: column col = i * wr + j is stored at
// i * pu(27) + j * pu(28) (wr = pu(26), 1 / wr = pf(29)); scalar stores only.
override C_MAP: bool = false;

struct SgCMap {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// Offsets of a lane's 8 columns col0..col0+7 within a row of C.
fn sg_cmap(col0: u32) -> SgCMap {
    let c0 = vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u);
    let c1 = c0 + vec4<u32>(4u);
    if (!C_MAP) {
        return SgCMap(c0, c1);
    }
    let wr = vec4<u32>(pu(26u));
    let r = pf(29u);
    var i0 = vec4<u32>(vec4<f32>(c0) * r);
    i0 = select(i0, i0 - vec4<u32>(1u), i0 * wr > c0);
    i0 = select(i0, i0 + vec4<u32>(1u), (i0 + vec4<u32>(1u)) * wr <= c0);
    var i1 = vec4<u32>(vec4<f32>(c1) * r);
    i1 = select(i1, i1 - vec4<u32>(1u), i1 * wr > c1);
    i1 = select(i1, i1 + vec4<u32>(1u), (i1 + vec4<u32>(1u)) * wr <= c1);
    let rs = pu(27u);
    let cs = pu(28u);
    return SgCMap(i0 * rs + (c0 - i0 * wr) * cs, i1 * rs + (c1 - i1 * wr) * cs);
}

fn sg_store4(t: u32, v: vec4<f32>, ep: vec4<f32>) {
    var x: vec4<f32>;
    if (BETA0) {
        x = pf(12u) * v;
    } else {
        x = pf(12u) * v + pf(13u) * sg_c4[t];
    }
    if (EPI != 0u) { x = sg_epi4(t, x, ep); }
    sg_c4[t] = x;
}

// Component i (0..3, uniform) of v.
fn pick(v: vec4<f32>, i: u32) -> f32 {
    return select(select(v.x, v.y, i == 1u), select(v.z, v.w, i == 3u), i >= 2u);
}

// Floats s..s+3 of the 8 floats (a, b), s in 0..3 (uniform).
fn shift4(a: vec4<f32>, b: vec4<f32>, s: u32) -> vec4<f32> {
    let lo = select(a, vec4<f32>(a.y, a.z, a.w, b.x), s == 1u);
    let hi = select(vec4<f32>(a.z, a.w, b.x, b.y), vec4<f32>(a.w, b.x, b.y, b.z), s == 3u);
    return select(lo, hi, s >= 2u);
}

// ---- B layout I: op(B) = im2col of an image, read in place (see gen_gemm_sg.py).

// The tap table (conv_gemm.wgsl's cg_taps): texel t = (base, uh, uw) of kernel tap t.
@group(0) @binding(5) var sg_tt: texture_2d<f32>;

// The bias step: column kn of the A panels times a row of ones, added before the store.
override HAS_BIAS: bool = false;
// Layout I: mask reads outside the image (the identity layout of conv_gemm.wgsl).
override IM_MASK: bool = true;
// Layout I: one kernel tap at base 0 (k is the channel) and every element a lane reads first at
// a multiple of 4 (1x1 kernels without pad over aligned images and channels: no tap table, no
// shifts).
override I_ALIGNED: bool = false;

// Layouts J and U: every row of A / column of B starts at a multiple of 4 elements (no shifts).
override A_ALIGNED: bool = false;
override B_ALIGNED: bool = false;

// n / d given r = 1 / d, exact below 2^24.
fn sg_div(n: u32, d: u32, r: f32) -> u32 {
    var q = u32(f32(n) * r);
    q = select(q, q - 1u, q * d > n);
    q = select(q, q + 1u, (q + 1u) * d <= n);
    return q;
}

fn sg_div4(n: vec4<u32>, d: u32, r: f32) -> vec4<u32> {
    let dv = vec4<u32>(d);
    var q = vec4<u32>(vec4<f32>(n) * r);
    q = select(q, q - vec4<u32>(1u), q * dv > n);
    q = select(q, q + vec4<u32>(1u), (q + vec4<u32>(1u)) * dv <= n);
    return q;
}

// A lane's 8 columns (output positions col0..col0+7) for the masks: output row and column
// (rows of columns past n far outside, so that they read 0).
struct SgCols {
    oh0: vec4<i32>,
    oh1: vec4<i32>,
    ow0: vec4<i32>,
    ow1: vec4<i32>,
}

fn sg_cols(col0: u32) -> SgCols {
    let own = pu(19u);
    let c0 = vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u);
    let c1 = c0 + vec4<u32>(4u);
    let oh0 = sg_div4(c0, own, pf(24u));
    let oh1 = sg_div4(c1, own, pf(24u));
    let n = vec4<u32>(pu(1u));
    let far = vec4<i32>(-1048576);
    return SgCols(select(far, vec4<i32>(oh0), c0 < n), select(far, vec4<i32>(oh1), c1 < n),
                  vec4<i32>(c0 - oh0 * own), vec4<i32>(c1 - oh1 * own));
}

fn sg_texel(t: i32) -> vec4<f32> {
    return textureLoad(sg_tb, tex_coord(u32(max(t, 0))), 0);
}

fn sg_texel_a(t: i32) -> vec4<f32> {
    return textureLoad(sg_ta, tex_coord(u32(max(t, 0))), 0);
}

struct SgB8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// B at one k (tap tp; e = source element of the lane's first column) for the lane's 8 columns.
fn sg_im8(e: i32, tp: vec4<f32>, c: SgCols) -> SgB8 {
    let t = e >> 2u;
    var lo: vec4<f32>;
    var hi: vec4<f32>;
    if (I_ALIGNED) {
        lo = sg_texel(t);
        hi = sg_texel(t + 1);
    } else {
        let s = u32(e) & 3u;
        let f0 = sg_texel(t);
        let f1 = sg_texel(t + 1);
        let f2 = sg_texel(t + 2);
        lo = shift4(f0, f1, s);
        hi = shift4(f1, f2, s);
    }
    if (IM_MASK) {
        let uh = vec4<i32>(i32(tp.y));
        let uw = vec4<i32>(i32(tp.z));
        let hn = vec4<u32>(pu(20u));
        let wn = vec4<u32>(pu(21u));
        let m0 = (vec4<u32>(c.oh0 + uh) < hn) & (vec4<u32>(c.ow0 + uw) < wn);
        let m1 = (vec4<u32>(c.oh1 + uh) < hn) & (vec4<u32>(c.ow1 + uw) < wn);
        lo = select(vec4<f32>(0.0), lo, m0);
        hi = select(vec4<f32>(0.0), hi, m1);
    }
    return SgB8(lo, hi);
}
"""


if __name__ == "__main__":
    args = sys.argv[1:]
    out = [COMMON.replace("{args}", " ".join(args))]
    for spec in args:
        tm, cl, al, bl, *ku = spec.split(",")
        if al == "J":
            assert bl == "U" and not ku
            out.append("\n" + gen_wgrad(int(tm), int(cl)))
        else:
            out.append("\n" + gen(int(tm), int(cl), al, bl, int(ku[0]) if ku else 4))
    sys.stdout.write("".join(out))
