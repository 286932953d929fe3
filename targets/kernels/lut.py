"""Binary-activation x int8-weight convolution by table lookup (AVX-512 VBMI + VNNI).

A {0,1} input nibble (4 channels of one tap) selects one of 16 precomputed sums of the
corresponding 4 int8 weights, so one byte lookup does 4 multiply-accumulates. ``vpermb``
looks up 64 bytes at once in a 64-byte table holding the 16-entry tables of 4 consecutive
nibbles ("a quad": 16 channels of one tap); byte 4p + j of the index vector is
(j << 4 | nibble j of output pixel p), so the 4 bytes of dword lane p are pixel p's 4
partial sums, and ``vpdpbusd`` adds them to its int32 accumulator. A sum of 4 int8 weights
needs 10 bits: the tables come in two planes, lo = S & 127 and hi = S >> 7 (both fit s8),
accumulated as 1 * lo + 128 * hi. Per 256 MACs: 2 vpermb + 2 vpdpbusd, which Zen 4 issues
on different pipes (one each per cycle, measured), against 4 vpdpbusd for the
unpack-to-u8 strategy: up to 2x the VNNI rate. The tables (8 bytes per weight) are built
from the int8 weights at each call, one vpdpbusd per 16 entries, into a scratch that
lives only while the kernel runs: the stored weights stay 1 byte each.

Layout (groups == 1): a zmm accumulator holds 16 output pixels of one output channel.
With a fused OR-pool the pixels of a vector are 16 consecutive *pooled* columns at one
window offset ss, so the window's extreme is a lane-wise max of whole vectors. The input
of a step (one pooled output row) is first expanded into index dwords NIB [band, quads of
16 channels, P phases, columns / P] (P = pool stride x conv stride), so the index vector
for any (tap, window offset, 16 pooled columns) is one contiguous 64-byte load; zero
padding is a 0 nibble. Output channels go in blocks of 8 or 16 (the register block) over
the whole map, so only one block's tables exist at a time. A step's accumulators go to
ACC [pool rows, window columns, block channels, 16k] and the epilogue (extreme over the
window, sigma * acc >= t, pack) runs over pooled columns as vector lanes, one output
channel at a time: a masked OR sets its bit in the block's packed word.
"""
from __future__ import annotations

import dataclasses

from tvm.script import tirx as T

from nrqc.targets.kernels.binary_ops import ConvGeom, drop_param, pooled_output
from nrqc.targets.kernels.packing import LUT_QUAD as QUAD
from nrqc.targets.kernels.packing import WORD, n_words


@dataclasses.dataclass(frozen=True)
class LutPlan:
    nh: int    # quads of 16 input channels per tap
    cop: int   # output channels padded to the channel blocking
    no: int    # output channels per register block
    nb: int    # pixel vectors per register block
    nkb: int   # 16-lane blocks of pooled columns
    big_p: int  # column phases: pool stride x conv stride
    kn: int    # index dwords per phase row
    left: int  # index columns left of the padded input (pool padding x conv stride)


def lut_plan(g: ConvGeom, pool=None) -> LutPlan:
    pk, ps, pp, _, pwo = pooled_output(g, pool)
    nkb = (pwo + 15) // 16
    nvec = pk[1] * nkb  # accumulator vectors per output row and channel
    nb = 2 if nvec % 2 == 0 else 1
    no = 16 // nb
    big_p = ps[1] * g.stride[1]
    c0_max = (pk[1] - 1) * g.stride[1] + (g.kw - 1) * g.dilation[1]
    kn = nkb * 16 + c0_max // big_p + 1
    # channels padded to 16 whatever the blocking, so the tables (built before the rewrite
    # knows of a fused pool) fit the pooled kernel too
    return LutPlan(nh=(g.c_in + QUAD - 1) // QUAD, cop=(g.c_out + 15) // 16 * 16, no=no, nb=nb, nkb=nkb,
                   big_p=big_p, kn=kn, left=pp[1] * g.stride[1])


def lut_weight_shape(g: ConvGeom, p: LutPlan) -> tuple[int, ...]:
    return (g.kh * g.kw * p.nh, p.cop, QUAD)


def lut_conv(g: ConvGeom, out: str, pool=None):
    """Params as ``binary_ops.binary_conv`` with W int8 ``lut_weight_shape(g, lut_plan(g, pool))``:
    out "pack": (X, W, sigma, t, Y uint32 [N, Ho', Wo', Wo32]) (Ho', Wo' pooled when pool);
    out "float": (X, W, scale float32 [Co], Y float32 [N, Co, Ho, Wo])."""
    if g.groups != 1:
        raise ValueError("the LUT strategy needs groups == 1")
    if out == "float" and pool is not None:
        raise ValueError("a pooled LUT conv has a packed output")
    p = lut_plan(g, pool)
    pk, ps, pp, pho, pwo = pooled_output(g, pool)
    N, H, Wd, Wi, Co, kh, kw = g.n, g.h, g.w, g.words_in, g.c_out, g.kh, g.kw
    sh, sw = g.stride
    dh, dw = g.dilation
    pt, pl = g.pad[0], g.pad[1]
    ho, wo, wout = g.ho, g.wo, n_words(Co)
    nh, cop, no, nb, nkb, big_p, kn, left = p.nh, p.cop, p.no, p.nb, p.nkb, p.big_p, p.kn, p.left
    nr, nc = pk[0], pk[1]
    nvec = nc * nkb
    pw16 = nkb * 16
    band = (nr - 1) * sh + (kh - 1) * dh + 1
    nquad = kh * kw * nh
    lo, hi = -(2 ** 31), 2 ** 31 - 1
    pack = out == "pack"
    # without a pool window (one row, one column offset per pooled pixel) the epilogue reads
    # the accumulators in registers: no ACC map of a whole output row per call
    direct = pack and nr == 1 and nc == 1 and not any(pp)
    ws = lut_weight_shape(g, p)
    y_shape = (N, pho, pwo, wout) if pack else (N, Co, ho, wo)
    y_dtype = "uint32" if pack else "float32"

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((N, H, Wd, Wi), "uint32"), Wt: T.Buffer(ws, "int8"),
               E0: T.Buffer((Co,), "int32" if pack else "float32"), E1: T.Buffer((Co,), "int32"),
               Y: T.Buffer(y_shape, y_dtype)):
        T.func_attr({"tirx.noalias": True})
        TAB = T.alloc_buffer((2, nquad, no, 64), "int8")
        NIB = T.alloc_buffer((band, nh, big_p, kn), "uint32")
        acc = T.alloc_buffer((nb * no * 16,), "int32", scope="local")
        iv = T.alloc_buffer((nb * 16,), "uint32", scope="local")
        yw = T.alloc_buffer((pw16,), "uint32", scope="local")
        if not direct:
            ACC = T.alloc_buffer((nr, nc, no, pw16), "int32")
            mx = T.alloc_buffer((pw16,), "int32", scope="local")
            mn = T.alloc_buffer((pw16,), "int32", scope="local")
        # one block of `no` output channels at a time over the whole map, so only its
        # tables (and accumulators) exist; its bits are OR-ed into their packed word
        for oc in range(cop // no):
            # the tables, from the weights: entry n of table j is a vpdpbusd of nibble n's
            # bits (as 4 u8) with the 4 weights of group j; low 7 bits and the rest, 2 planes
            for q in range(nquad):
                for o in range(no):
                    for j in T.unroll(4):
                        sums = _nibble_sums(Wt, q, oc * no + o, j)
                        TAB[0, q, o, T.ramp(16 * j, 1, 16)] = T.Cast("int8x16", T.bitwise_and(sums, T.broadcast(127, 16)))
                        TAB[1, q, o, T.ramp(16 * j, 1, 16)] = T.Cast("int8x16", T.shift_right(sums, T.broadcast(7, 16)))
            for n in range(N):
                for py in range(pho):
                    # index dwords of the band of input rows this step reads (0 nibbles outside)
                    for u in range(band):
                        ih = (py * ps[0] - pp[0]) * sh + u - pt
                        for h in range(nh):
                            for ph in range(big_p):
                                for kk in T.vectorized(kn):
                                    NIB[u, h, ph, kk] = T.bitwise_or(T.uint32(0x30201000), _spread(T.Select(
                                        ih >= 0 and ih < H and kk * big_p + ph - left - pl >= 0
                                        and kk * big_p + ph - left - pl < Wd,
                                        T.shift_right(X[n, T.max(T.min(ih, H - 1), 0),
                                                        T.max(T.min(kk * big_p + ph - left - pl, Wd - 1), 0), h // 2],
                                                      T.Cast("uint32", 16 * (h % 2))),
                                        T.uint32(0))))
                    if direct:
                        for k in T.vectorized(pw16):
                            yw[k] = T.uint32(0)
                    for rr in range(nr):
                        oh = py * ps[0] + rr - pp[0]
                        if oh >= 0 and oh < ho:
                            for bp in range(nvec // nb):
                                for i in T.vectorized(nb * no * 16):
                                    acc[i] = 0
                                for r in range(kh):
                                    for s in range(kw):
                                        for h in range(nh):
                                            for b in T.unroll(nb):
                                                # vector v = (window column ss, block kb); its input
                                                # column offset c0 = ss*sw + s*dw (+ pool padding)
                                                iv[T.ramp(b * 16, 1, 16)] = NIB.vload(
                                                    [rr * sh + r * dh, h,
                                                     ((bp * nb + b) // nkb * sw + s * dw) % big_p,
                                                     (bp * nb + b) % nkb * 16 + ((bp * nb + b) // nkb * sw + s * dw) // big_p],
                                                    "uint32x16")
                                            for o in T.unroll(no):
                                                for b in T.unroll(nb):
                                                    acc[T.ramp((b * no + o) * 16, 1, 16)] = _lookup_add(
                                                        _lookup_add(acc.vload([(b * no + o) * 16], "int32x16"), 1,
                                                                    TAB.vload([0, (r * kw + s) * nh + h, o, 0], "int8x64"),
                                                                    iv.vload([b * 16], "uint32x16")),
                                                        128, TAB.vload([1, (r * kw + s) * nh + h, o, 0], "int8x64"),
                                                        iv.vload([b * 16], "uint32x16"))
                                if direct:
                                    # no pool: threshold the accumulators as they are and set
                                    # each channel's bit in its lanes' words (no ACC round trip)
                                    for o in T.unroll(no):
                                        for b in T.unroll(nb):
                                            for k in T.vectorized(16):
                                                yw[(bp * nb + b) * 16 + k] = T.bitwise_or(
                                                    yw[(bp * nb + b) * 16 + k], T.Select(
                                                        oc * no + o < Co and E0[T.min(oc * no + o, Co - 1)]
                                                        * acc[(b * no + o) * 16 + k] >= E1[T.min(oc * no + o, Co - 1)],
                                                        T.shift_left(T.uint32(1), T.Cast("uint32", (oc * no + o) % WORD)),
                                                        T.uint32(0)))
                                else:
                                    for o in T.unroll(no):
                                        for b in T.unroll(nb):
                                            ACC[rr, (bp * nb + b) // nkb, o,
                                                T.ramp((bp * nb + b) % nkb * 16, 1, 16)] = acc.vload([(b * no + o) * 16], "int32x16")
                    if direct:
                        for k in range(pwo):
                            Y[n, py, k, oc * no // WORD] = T.bitwise_or(
                                T.Select(oc * no % WORD == 0, T.uint32(0), Y[n, py, k, oc * no // WORD]), yw[k])
                    elif pack:
                        for k in T.vectorized(pw16):
                            yw[k] = T.uint32(0)
                        for o in range(no):
                            oi = T.min(oc * no + o, Co - 1)
                            for k in T.vectorized(pw16):
                                mx[k] = lo
                                mn[k] = hi
                            for rr in T.unroll(nr):
                                for ss in T.unroll(nc):
                                    for k in T.vectorized(pw16):
                                        mx[k] = T.Select(py * ps[0] + rr - pp[0] >= 0 and py * ps[0] + rr - pp[0] < ho
                                                         and k * ps[1] + ss - pp[1] >= 0 and k * ps[1] + ss - pp[1] < wo,
                                                         T.max(mx[k], ACC[rr, ss, o, k]), mx[k])
                                        mn[k] = T.Select(py * ps[0] + rr - pp[0] >= 0 and py * ps[0] + rr - pp[0] < ho
                                                         and k * ps[1] + ss - pp[1] >= 0 and k * ps[1] + ss - pp[1] < wo,
                                                         T.min(mn[k], ACC[rr, ss, o, k]), mn[k])
                            for k in T.vectorized(pw16):
                                yw[k] = T.bitwise_or(yw[k], T.Select(
                                    oc * no + o < Co and E0[oi] * T.Select(E0[oi] >= 0, mx[k], mn[k]) >= E1[oi],
                                    T.shift_left(T.uint32(1), T.Cast("uint32", (oc * no + o) % WORD)), T.uint32(0)))
                        # the first block of a word writes it, the others add their bits
                        for k in range(pwo):
                            Y[n, py, k, oc * no // WORD] = T.bitwise_or(
                                T.Select(oc * no % WORD == 0, T.uint32(0), Y[n, py, k, oc * no // WORD]), yw[k])
                    else:
                        for o in range(no):
                            if oc * no + o < Co:
                                oi = T.min(oc * no + o, Co - 1)
                                for x in T.vectorized(wo):
                                    Y[n, oi, py, x] = T.Cast("float32", ACC[0, 0, o, x]) * E0[oi]

    if not pack:  # float epilogue: (X, W, scale, Y) -- E1 is not a parameter
        kernel = drop_param(kernel, 3)
    return kernel


def _spread(x):
    """16-bit half-word -> its 4 nibbles in the 4 bytes of a dword (nibble j in byte j)."""
    return T.bitwise_or(T.bitwise_or(T.bitwise_and(x, T.uint32(0xF)), T.shift_left(T.bitwise_and(x, T.uint32(0xF0)), T.uint32(4))),
                        T.bitwise_or(T.shift_left(T.bitwise_and(x, T.uint32(0xF00)), T.uint32(8)),
                                     T.shift_left(T.bitwise_and(x, T.uint32(0xF000)), T.uint32(12))))


def _nibble_sums(Wt, q, o, j):
    """int32x16: lane n = sum of the weights Wt[q, o, 4j + k] for the bits k set in n."""
    lane = T.ramp(0, 1, 64)
    bits = T.Cast("int8x64", T.bitwise_and(T.shift_right(T.shift_right(lane, T.broadcast(2, 64)),
                                                         T.bitwise_and(lane, T.broadcast(3, 64))), T.broadcast(1, 64)))
    return T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), T.broadcast(0, 16), bits,
        T.reinterpret(T.broadcast(T.reinterpret(Wt.vload([q, o, 4 * j], "int8x4"), dtype="int32"), 16), dtype="int8x64"),
        dtype="int32x16")


def _lookup_add(acc, scale, table, index):
    """acc + scale * (the 4 table bytes vpermb looks up for each dword lane of index)."""
    ID = T.llvm_lookup_intrinsic_id
    return T.call_llvm_pure_intrin(
        ID("llvm.x86.avx512.vpdpbusd.512"), acc, T.broadcast(T.int8(scale if scale < 128 else scale - 256), 64),
        T.call_llvm_pure_intrin(ID("llvm.x86.avx512.permvar.qi.512"), table,
                                T.reinterpret(index, dtype="int8x64"), dtype="int8x64"),
        dtype="int32x16")
