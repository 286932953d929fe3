"""Binary-activation x int8-weight convolution on Intel AMX (``tdpbusd`` tiles).

The "unpack to u8 + int8 dot product" strategy at matrix-unit width: a 16x64 u8 tile of
{0,1} activations times a 64x16 int8 weight tile accumulates 16 output pixels x 16 output
channels in one instruction (16,384 MACs), against 64 for a zmm ``vpdpbusd``.

Layout (groups == 1): per step (one pooled output row, or one output row without a
pool) the band of input rows its output rows read is unpacked from the packed words into
a u8 scratch U [band, Wp, C4] (zero padding included, so padded taps are 0 bits exactly).
The A tile of a tap group for 16 consecutive output pixels is a strided tile load from U
(row stride = stride_w x C4 bytes: stride and dilation need no im2col); the B tile is the
group's weights packed [K/4, Co16, 4] (``packing.amx_weights``). The step's int32
accumulators land in a small scratch ACC [pool rows, Wo16, Co16]; the
epilogue (fused OR-pool: the window's per-channel extreme, threshold, pack) reads them
there, so no accumulator map larger than a pool window's rows ever exists.

Tiles are statically numbered (the tile register is an immediate): bm x bn accumulator
tiles, bm activation tiles, bn weight tiles (<= 8). The kernel asks the OS for the AMX
tile state once per call (``arch_prctl(ARCH_REQ_XCOMP_PERM)``, Linux) and fails with a
clear error where it is refused.
"""
from __future__ import annotations

import dataclasses

from tvm.script import tirx as T

from nrqc.targets.kernels.binary_ops import NO_POOL, ConvGeom, drop_param, pool_out
from nrqc.targets.kernels.packing import WORD, n_words

ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, SYS_ARCH_PRCTL = 0x1023, 18, 158


@dataclasses.dataclass(frozen=True)
class AmxPlan:
    c4: int   # input channels padded (to 4, or to 64 above 64)
    cc: int   # K bytes per tile (<= 64)
    nq: int   # channel chunks per tap group
    m: int    # horizontal taps merged into one tile row (stride 1: they are adjacent in U)
    kwg: int  # tap groups along the kernel width
    cop: int  # output channels padded to the N blocking
    wo16: int
    bm: int   # activation tiles (16-pixel blocks) per step
    bn: int   # weight tiles (16-channel blocks) per step
    wpa: int  # columns of the unpacked scratch (covers the last tile's rows)


def amx_plan(g: ConvGeom) -> AmxPlan:
    c4 = (g.c_in + 3) // 4 * 4 if g.c_in <= 64 else (g.c_in + 63) // 64 * 64
    # a tdpbusd costs the same at K = 32 as at K = 64: with stride and dilation 1 the
    # channels of m adjacent taps are contiguous in U, so m taps fill one 64-byte row
    # (taps past the kernel width get zero weights)
    m = 64 // c4 if g.stride[1] == 1 and g.dilation[1] == 1 and g.kw > 1 and c4 < 64 and 64 % c4 == 0 else 1
    kwg = (g.kw + m - 1) // m
    cc = c4 * m if m > 1 else min(c4, 64)
    mb = (g.wo + 15) // 16
    nt = (g.c_out + 15) // 16
    bm = 2 if mb % 2 == 0 else 1
    if bm == 2:
        bn = 2 if nt % 2 == 0 else 1
    else:
        bn = 3 if nt % 3 == 0 else 2 if nt % 2 == 0 else 1
    wo16 = mb * 16
    wpa = max((wo16 - 1) * g.stride[1] + (kwg * m - 1) * g.dilation[1] + 1, g.w + g.pad[1] + g.pad[3])
    return AmxPlan(c4, cc, max(1, c4 // cc), m, kwg, nt * 16, wo16, bm, bn, wpa)


def amx_weight_shape(g: ConvGeom, p: AmxPlan) -> tuple[int, ...]:
    return (g.kh, p.kwg, p.nq, p.cc // 4, p.cop, 4)


def amx_conv(g: ConvGeom, out: str, pool=None):
    """Params as ``binary_ops.binary_conv`` with W int8 ``amx_weight_shape(g, amx_plan(g))``:
    out "pack": (X, W, sigma, t, Y uint32 [N, Ho', Wo', Wo32]) (Ho', Wo' pooled when pool);
    out "float": (X, W, scale float32 [Co], Y float32 [N, Co, Ho, Wo])."""
    if g.groups != 1:
        raise ValueError("the AMX strategy needs groups == 1")
    p = amx_plan(g)
    (pk, ps, pp) = pool if pool is not None else NO_POOL
    if out == "float" and pool is not None:
        raise ValueError("a pooled AMX conv has a packed output")
    pho, pwo = pool_out(g.ho, g.wo, pk, ps, pp) if out == "pack" else (g.ho, g.wo)
    N, H, Wd, Wi, Co, kh = g.n, g.h, g.w, g.words_in, g.c_out, g.kh
    sh, sw = g.stride
    dh, dw = g.dilation
    pt, pl = g.pad[0], g.pad[1]
    c4, cc, nq, m, kwg, cop, wo16, bm, bn, wpa = (p.c4, p.cc, p.nq, p.m, p.kwg, p.cop, p.wo16, p.bm, p.bn, p.wpa)
    ho, wo, wout = g.ho, g.wo, n_words(Co)
    nr = pk[0]
    band = (nr - 1) * sh + (kh - 1) * dh + 1  # input rows of one step
    cbits = min(c4, Wi * WORD)  # channels present in the packed words (tail bits are 0)
    ncx = bm * bn
    n_tiles = ncx + bm + bn
    mpairs, npairs = wo16 // 16 // bm, cop // 16 // bn
    a_stride, b_stride, c_stride = sw * c4, cop * 4, cop * 4
    # each tile's whole footprint (elements), so TVM's buffer analyses see every byte a tile
    # load or store touches (an address_of alone looks like one element: the ACC scratch was
    # shrunk to the rows the epilogue reads and the tile stores overran it)
    a_ext, b_ext, c_ext = 15 * a_stride + cc, (cc // 4 - 1) * cop * 4 + 64, 15 * cop + 16
    lo = -(2 ** 31)
    hi = 2 ** 31 - 1
    ID = T.llvm_lookup_intrinsic_id
    pack = out == "pack"
    ws = amx_weight_shape(g, p)
    y_shape = (N, pho, pwo, wout) if pack else (N, Co, ho, wo)
    y_dtype = "uint32" if pack else "float32"
    e_shape = (Co,)

    # Python-level constants only: the tile numbers and shapes are immediates
    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((N, H, Wd, Wi), "uint32"), Wt: T.Buffer(ws, "int8"),
               E0: T.Buffer(e_shape, "int32" if pack else "float32"), E1: T.Buffer(e_shape, "int32"),
               Y: T.Buffer(y_shape, y_dtype)):
        T.func_attr({"tirx.noalias": True})
        cfg = T.alloc_buffer((64,), "uint8", scope="local")
        U = T.alloc_buffer((band, wpa, c4), "uint8")
        ACC = T.alloc_buffer((nr, wo16, cop), "int32")
        mx = T.alloc_buffer((WORD,), "int32", scope="local")
        mn = T.alloc_buffer((WORD,), "int32", scope="local")
        bv = T.alloc_buffer((WORD,), "uint32", scope="local")
        assert T.call_extern("int64", "syscall", T.int64(SYS_ARCH_PRCTL), T.int64(ARCH_REQ_XCOMP_PERM),
                             T.int64(XFEATURE_XTILEDATA)) == T.int64(0), \
            "nrqc AMX kernel: the OS refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)"
        for i in range(64):
            cfg[i] = T.uint8(0)
        cfg[0] = T.uint8(1)  # palette 1
        for tt in T.unroll(n_tiles):
            # accumulators 16 x 64 B, activations 16 x cc B, weights cc/4 x 64 B
            cfg[16 + 2 * tt] = T.Cast("uint8", T.if_then_else(tt < ncx, 64, T.if_then_else(tt < ncx + bm, cc, 64)))
            cfg[48 + tt] = T.Cast("uint8", T.if_then_else(tt < ncx + bm, 16, cc // 4))
        T.evaluate(T.call_llvm_intrin("void", ID("llvm.x86.ldtilecfg"), T.address_of(cfg[0])))
        for n in range(N):
            for py in range(pho):
                # the input rows this step's output rows read, unpacked to u8 once
                for u in range(band):
                    ih = (py * ps[0] - pp[0]) * sh + u - pt
                    if ih >= 0 and ih < H:
                        for xw in range(pl):
                            for c in T.vectorized(c4):
                                U[u, xw, c] = T.uint8(0)
                        for xi in range(Wd):
                            for c in T.vectorized(c4):
                                U[u, pl + xi, c] = T.Select(
                                    c < cbits and (X[n, ih, xi, T.min(c, cbits - 1) // WORD]
                                                   & T.shift_left(T.uint32(1), T.Cast("uint32", c % WORD))) != T.uint32(0),
                                    T.uint8(1), T.uint8(0))
                        for xw in range(wpa - pl - Wd):
                            for c in T.vectorized(c4):
                                U[u, pl + Wd + xw, c] = T.uint8(0)
                    else:
                        for xw in range(wpa):
                            for c in T.vectorized(c4):
                                U[u, xw, c] = T.uint8(0)
                for rr in range(nr):
                    oh = py * ps[0] + rr - pp[0]
                    if oh >= 0 and oh < ho:
                        for mp in range(mpairs):
                            for np_ in range(npairs):
                                for ci in T.unroll(ncx):
                                    T.evaluate(T.call_llvm_intrin("void", ID("llvm.x86.tilezero"), T.Cast("int8", ci)))
                                for r in range(kh):
                                    for s in range(kwg):
                                        for q in range(nq):
                                            for a in T.unroll(bm):
                                                T.evaluate(T.call_llvm_intrin(
                                                    "void", ID("llvm.x86.tileloadd64"), T.Cast("int8", ncx + a),
                                                    U.access_ptr("r", offset=((rr * sh + r * dh) * wpa + (mp * bm + a) * 16 * sw + s * m * dw) * c4 + q * cc,
                                                                 extent=a_ext),
                                                    T.int64(a_stride)))
                                            for b in T.unroll(bn):
                                                T.evaluate(T.call_llvm_intrin(
                                                    "void", ID("llvm.x86.tileloadd64"), T.Cast("int8", ncx + bm + b),
                                                    Wt.access_ptr("r", offset=(((r * kwg + s) * nq + q) * (cc // 4) * cop + (np_ * bn + b) * 16) * 4,
                                                                  extent=b_ext),
                                                    T.int64(b_stride)))
                                            for a in T.unroll(bm):
                                                for b in T.unroll(bn):
                                                    T.evaluate(T.call_llvm_intrin(
                                                        "void", ID("llvm.x86.tdpbusd"), T.Cast("int8", a * bn + b),
                                                        T.Cast("int8", ncx + a), T.Cast("int8", ncx + bm + b)))
                                for a in T.unroll(bm):
                                    for b in T.unroll(bn):
                                        T.evaluate(T.call_llvm_intrin(
                                            "void", ID("llvm.x86.tilestored64"), T.Cast("int8", a * bn + b),
                                            ACC.access_ptr("w", offset=(rr * wo16 + (mp * bm + a) * 16) * cop + (np_ * bn + b) * 16, extent=c_ext),
                                            T.int64(c_stride)))
                if pack:
                    for px in range(pwo):
                        for j in range(wout):
                            for b in T.vectorized(WORD):
                                mx[b] = lo
                                mn[b] = hi
                            for rr in T.unroll(nr):
                                for ss in T.unroll(pk[1]):
                                    oh = py * ps[0] + rr - pp[0]
                                    ow = px * ps[1] + ss - pp[1]
                                    for b in T.vectorized(WORD):
                                        if oh >= 0 and oh < ho and ow >= 0 and ow < wo:
                                            mx[b] = T.max(mx[b], ACC[rr, T.max(T.min(ow, wo - 1), 0), T.min(j * WORD + b, cop - 1)])
                                            mn[b] = T.min(mn[b], ACC[rr, T.max(T.min(ow, wo - 1), 0), T.min(j * WORD + b, cop - 1)])
                            for b in T.vectorized(WORD):
                                bv[b] = T.Select(
                                    j * WORD + b < Co
                                    and E0[T.min(j * WORD + b, Co - 1)] * T.Select(E0[T.min(j * WORD + b, Co - 1)] >= 0, mx[b], mn[b])
                                    >= E1[T.min(j * WORD + b, Co - 1)],
                                    T.shift_left(T.uint32(1), T.Cast("uint32", b)), T.uint32(0))
                            Y[n, py, px, j] = T.call_llvm_pure_intrin(
                                "uint32", ID("llvm.vector.reduce.or"), bv.vload([0], "uint32x32"))
                else:
                    for o in range(Co):
                        for x in range(wo):
                            Y[n, o, py, x] = T.Cast("float32", ACC[0, x, o]) * E0[o]
        T.evaluate(T.call_llvm_intrin("void", ID("llvm.x86.tilerelease")))

    if not pack:  # float epilogue: (X, W, scale, Y) -- E1 is not a parameter
        kernel = drop_param(kernel, 3)
    return kernel

