"""Table lookup on AVX2 (``vpshufb``): {0,1} x int8 without AVX-512 (Haswell, Zen 2).

A nibble of input bits (4 channels of one tap) selects one of the 16 sums of the 4
matching int8 weights, so one byte lookup does 4 multiply-accumulates, as in the AVX-512
``lut`` strategy (kernels/lut.py), but with AVX2's in-lane 16-entry ``vpshufb``: one
instruction looks up 32 bytes in the same 16-byte table (repeated in both 128-bit lanes).

A sum S of 4 int8 weights needs 10 bits. The tables come in two byte planes, LO = S & 255
and HI = S >> 8, and every int16 lane of the accumulator is one output pixel: the index
vector A holds (nibble, 0x80) in the two bytes of pixel p's lane and B holds (0x80,
nibble) (vpshufb writes 0 for an index byte with bit 7 set), so

    vpshufb(LO, A) + vpshufb(HI, B) = (S & 255) + (S >> 8) * 256 = S   as int16, exactly,

with no unpack (and the two lookups fill different bytes of a lane: an OR adds them):
2 vpshufb + vpor + vpaddw per 16 pixels x 4 MACs of one output channel. The
index vectors of an input row are made once per row and shared by all output channels.
|S| <= 512, so the int16 accumulators take at most 63 steps (32256) before they are
widened into int32 (a step: one tap x one nibble).

Haswell issues vpshufb on port 5 only: 2 cycles per 64 MACs, 32 MAC/cycle, twice the
port-0 vpmaddubsw rate of ``avx2_maddubs``; Zen 2/3/4 have two shuffle pipes.

The tables (16 int16 sums per 4 weights, two planes, both 128-bit lanes: 16 bytes per
weight) are built from the stored int8 weights at each call into a scratch that lives
while the kernel runs (the stored weights stay 1 byte each, the AVX-512 ``lut`` layout).

Loop order: per (image, pooled output row) the index vectors of the input rows it reads,
then per block of ``no`` output channels and ``nb`` vectors of 16 pooled columns (8 int16
accumulators live), the steps; int32 results go to ACC [pool rows, window columns, Co,
16k], and the epilogue (window extreme, sigma * acc >= t, pack; or acc * scale) runs over
pooled columns as vector lanes, one output channel at a time. A fused OR-pool uses the
AVX-512 lut plan's column phases (kernels/lut.py): the index vector of any (tap, window
column, 16 pooled columns) is one contiguous load.
"""
from __future__ import annotations

import dataclasses

from tvm import tirx
from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import lut
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.binary_ops import WORD, ConvGeom, drop_param

NAME = "avx2_lut"
WEIGHTS = "int8"

# int16 accumulation steps before widening: 63 x 512 (the largest |sum of 4 int8|) < 2^15
STEPS_PER_WIDEN = 63
LIVE_ACCUMULATORS = 8  # of 16 ymm: + 2 x nb index vectors + 2 tables in the inner step


def available(target) -> bool:
    # where AVX-512 VBMI + VNNI exist, the ``lut`` strategy looks up 64 bytes per vpermb
    # (4x this): not offered there, so a compile does not build and time a sure loser
    return target is not None and target.caps.has("avx2") and not target.caps.has("avx512vbmi", "avx512_vnni")


def supports(g) -> bool:
    return g.groups == 1


def plan(g: ConvGeom, pool=None) -> lut.LutPlan:
    """The AVX-512 lut plan (16-lane blocks of pooled columns, column phases), with the
    output-channel block sized for 8 live int16 accumulators."""
    p = lut.lut_plan(g, pool)
    return dataclasses.replace(p, no=LIVE_ACCUMULATORS // p.nb)


def nibbles(g: ConvGeom) -> int:
    return (g.c_in + 3) // 4


def cost(g, target) -> float:
    """2 vpshufb per (16-pixel vector, output channel, tap x nibble), at the target's
    shuffle rate (``peak_lut_int8_macs_per_cycle``: 64 MACs per 2 shuffles), plus the
    epilogue (~20 vector ops per channel and 16 pixels) and the tables (~12 per entry row)."""
    p = plan(g)
    rate = (target.figure("peak_lut_int8_macs_per_cycle") if target is not None else None) or 32
    vectors = g.n * g.ho * p.nkb * p.cop
    steps = g.kh * g.kw * nibbles(g)
    return vectors * steps * 64 / rate + vectors * 20 / 16 + steps * p.cop * 12


def weight_args(g, wq):
    # the AVX-512 lut layout: per tap and quad of 16 input channels, 16 weights per output
    # channel, channel 4j + k in byte 4j + k (nibble j's weights are dword j)
    return [pk.lut_weights(wq, plan(g))]


def build(g, out: str, target, pool=None, strict: bool = False):
    return bo.hand_written(lut_conv(g, out, pool))


def lut_conv(g: ConvGeom, out: str, pool=None):
    """Params as ``binary_ops.binary_conv`` with W int8 [kh*kw*nh, Cop, 16] (``weight_args``):
    out "pack": (X, W, sigma, t, Y uint32 [N, Ho', Wo', Wo32]) (Ho', Wo' pooled when pool);
    out "float": (X, W, scale float32 [Co], Y float32 [N, Co, Ho, Wo])."""
    if g.groups != 1:
        raise ValueError("the AVX2 LUT strategy needs groups == 1")
    if out == "float" and pool is not None:
        raise ValueError("a pooled LUT conv has a packed output")
    p = plan(g, pool)
    pk_, ps, pp, pho, pwo = bo.pooled_output(g, pool)
    N, H, Wd, Co, kh, kw = g.n, g.h, g.w, g.c_out, g.kh, g.kw
    sh, sw = g.stride
    dh, dw = g.dilation
    pt, pl = g.pad[0], g.pad[1]
    ho, wo, wout = g.ho, g.wo, pk.n_words(Co)
    nh, cop, no, nb, nkb, big_p, kn, left = p.nh, p.cop, p.no, p.nb, p.nkb, p.big_p, p.kn, p.left
    nq = nibbles(g)
    nsteps = kh * kw * nq
    ntaps = kh * kw
    qchunk = min(STEPS_PER_WIDEN, nq)  # nibbles per int16 chunk
    nqc = (nq + qchunk - 1) // qchunk
    tpc = max(1, STEPS_PER_WIDEN // nq)  # whole taps per int16 chunk (1 when nq > 63)
    ntc = (ntaps + tpc - 1) // tpc
    nr, nc = pk_[0], pk_[1]
    nvec = nc * nkb
    pw16 = nkb * 16
    band = (nr - 1) * sh + (kh - 1) * dh + 1
    lo, hi = -(2 ** 31), 2 ** 31 - 1
    pack = out == "pack"
    ws = (kh * kw * nh, cop, pk.LUT_QUAD)
    y_shape = (N, pho, pwo, wout) if pack else (N, Co, ho, wo)
    y_dtype = "uint32" if pack else "float32"
    nacc = nb * no * 16

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((N, H, Wd, g.words_in), "uint32"), Wt: T.Buffer(ws, "int8"),
               E0: T.Buffer((Co,), "int32" if pack else "float32"), E1: T.Buffer((Co,), "int32"),
               Y: T.Buffer(y_shape, y_dtype)):
        T.func_attr({"tirx.noalias": True})
        TAB = T.alloc_buffer((2, nsteps, cop, 32), "int8")
        NIB = T.alloc_buffer((2, band, nq, big_p, kn), "uint16")
        ACC = T.alloc_buffer((nr, nc, cop, pw16), "int32")
        a16 = T.alloc_buffer((nacc,), "int16", scope="local")
        a32 = T.alloc_buffer((nacc,), "int32", scope="local")
        ix = T.alloc_buffer((2 * nb * 16,), "uint16", scope="local")  # index vectors A, B
        mx = T.alloc_buffer((pw16,), "int32", scope="local")
        mn = T.alloc_buffer((pw16,), "int32", scope="local")
        yw = T.alloc_buffer((pw16,), "uint32", scope="local")
        # the tables: entry e of step (tap, nibble q) for channel o is the sum of the
        # weights of the bits set in e; LO and HI bytes, repeated in both 128-bit lanes
        for st in range(nsteps):
            for o in range(cop):
                sums = _nibble_sums(Wt, (st // nq) * nh + st % nq // 4, o, st % nq % 4)
                for half in T.unroll(2):
                    TAB[0, st, o, T.ramp(16 * half, 1, 16)] = T.Cast("int8x16", sums)
                    TAB[1, st, o, T.ramp(16 * half, 1, 16)] = T.Cast("int8x16", T.shift_right(sums, T.broadcast(T.int16(8), 16)))
        for n in range(N):
            for py in range(pho):
                # index vectors of the band of input rows this step reads: A = (nibble, 0x80),
                # B = (0x80, nibble) per int16 lane (a 0 nibble outside the map: S = 0)
                for u in range(band):
                    ih = (py * ps[0] - pp[0]) * sh + u - pt
                    for q in range(nq):
                        for ph in range(big_p):
                            for kk in T.vectorized(kn):
                                NIB[0, u, q, ph, kk] = T.bitwise_or(T.uint16(0x8000), _nibble(
                                    X, n, ih, kk * big_p + ph - left - pl, q, H, Wd))
                                NIB[1, u, q, ph, kk] = T.bitwise_or(T.uint16(0x0080), T.shift_left(_nibble(
                                    X, n, ih, kk * big_p + ph - left - pl, q, H, Wd), T.uint16(8)))
                for oc in range(cop // no):
                    for rr in range(nr):
                        oh = py * ps[0] + rr - pp[0]
                        if oh >= 0 and oh < ho:
                            for bp in range(nvec // nb):
                                for i in T.vectorized(nacc):
                                    a32[i] = 0
                                # int16 chunks of whole taps (tpc taps x nq nibbles), or of
                                # qchunk nibbles of one tap when a tap has more than 63
                                for tc in range(ntc):
                                    for qc in range(nqc):
                                        for i in T.vectorized(nacc):
                                            a16[i] = T.int16(0)
                                        for tt in range(T.min(tpc, ntaps - tc * tpc)):
                                            for q in range(qc * qchunk, T.min(qc * qchunk + qchunk, nq)):
                                                for b in T.unroll(nb):
                                                    # vector v = (window column ss, block kb); its input
                                                    # column offset c0 = ss*sw + s*dw (+ pool padding)
                                                    for plane in T.unroll(2):
                                                        ix[T.ramp((plane * nb + b) * 16, 1, 16)] = NIB.vload(
                                                            [plane, rr * sh + (tc * tpc + tt) // kw * dh, q,
                                                             ((bp * nb + b) // nkb * sw + (tc * tpc + tt) % kw * dw) % big_p,
                                                             (bp * nb + b) % nkb * 16
                                                             + ((bp * nb + b) // nkb * sw + (tc * tpc + tt) % kw * dw) // big_p],
                                                            "uint16x16")
                                                for o in T.unroll(no):
                                                    for b in T.unroll(nb):
                                                        # the LO lookup fills the low byte of each lane and
                                                        # the HI one the high byte: OR is their sum
                                                        a16[T.ramp((b * no + o) * 16, 1, 16)] = (
                                                            a16.vload([(b * no + o) * 16], "int16x16") + T.bitwise_or(
                                                                _lookup(TAB.vload([0, (tc * tpc + tt) * nq + q, oc * no + o, 0],
                                                                                  "int8x32"), ix.vload([b * 16], "uint16x16")),
                                                                _lookup(TAB.vload([1, (tc * tpc + tt) * nq + q, oc * no + o, 0],
                                                                                  "int8x32"), ix.vload([(nb + b) * 16], "uint16x16"))))
                                        for i in T.vectorized(nacc):
                                            a32[i] = a32[i] + T.Cast("int32", a16[i])
                                for o in T.unroll(no):
                                    for b in T.unroll(nb):
                                        ACC[rr, (bp * nb + b) // nkb, oc * no + o,
                                            T.ramp((bp * nb + b) % nkb * 16, 1, 16)] = a32.vload([(b * no + o) * 16], "int32x16")
                if pack:
                    for wd in range(wout):
                        for k in T.vectorized(pw16):
                            yw[k] = T.uint32(0)
                        for j in range(T.min(WORD, Co - wd * WORD)):
                            for k in T.vectorized(pw16):
                                mx[k] = lo
                                mn[k] = hi
                            for rr in T.unroll(nr):
                                for ss in T.unroll(nc):
                                    for k in T.vectorized(pw16):
                                        # (rr, ss) of pooled column k's window inside the conv output
                                        mx[k] = T.Select(_in_map(py * ps[0] + rr - pp[0], k * ps[1] + ss - pp[1], ho, wo),
                                                         T.max(mx[k], ACC[rr, ss, wd * WORD + j, k]), mx[k])
                                        mn[k] = T.Select(_in_map(py * ps[0] + rr - pp[0], k * ps[1] + ss - pp[1], ho, wo),
                                                         T.min(mn[k], ACC[rr, ss, wd * WORD + j, k]), mn[k])
                            for k in T.vectorized(pw16):
                                yw[k] = T.bitwise_or(yw[k], T.Select(
                                    E0[wd * WORD + j] * T.Select(E0[wd * WORD + j] >= 0, mx[k], mn[k]) >= E1[wd * WORD + j],
                                    T.shift_left(T.uint32(1), T.Cast("uint32", j)), T.uint32(0)))
                        for k in range(pwo):
                            Y[n, py, k, wd] = yw[k]
                else:
                    for o in range(Co):
                        for x in T.vectorized(wo):
                            Y[n, o, py, x] = T.Cast("float32", ACC[0, 0, o, x]) * E0[o]

    if not pack:  # float epilogue: (X, W, scale, Y) -- E1 is not a parameter
        kernel = drop_param(kernel, 3)
    return kernel


def _in_map(y, x, h, w):
    return tirx.all(y >= 0, y < h, x >= 0, x < w)


def _nibble(X, n, ih, iw, q, H, Wd):
    """uint16: input channels 4q..4q+3 of pixel (ih, iw) as a nibble (0 outside the map)."""
    return T.Cast("uint16", T.Select(
        _in_map(ih, iw, H, Wd),
        T.bitwise_and(T.shift_right(X[n, T.max(T.min(ih, H - 1), 0), T.max(T.min(iw, Wd - 1), 0), q // 8],
                                    T.Cast("uint32", 4 * (q % 8))), T.uint32(15)),
        T.uint32(0)))


def _nibble_sums(Wt, quad, o, j):
    """int16x16: lane e = sum of the weights Wt[quad, o, 4j + k] for the bits k set in e."""
    lane = T.ramp(T.int16(0), T.int16(1), 16)
    total = T.broadcast(T.int16(0), 16)
    for k in range(4):
        total = total + T.Select(T.bitwise_and(T.shift_right(lane, T.broadcast(T.int16(k), 16)), T.broadcast(T.int16(1), 16))
                                 == T.broadcast(T.int16(1), 16),
                                 T.broadcast(T.Cast("int16", Wt[quad, o, 4 * j + k]), 16), T.broadcast(T.int16(0), 16))
    return total


def _lookup(table, index):
    """int16x16: vpshufb of the 32-byte table by the index bytes, read as 16 int16 lanes."""
    return T.reinterpret(T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b"), table,
                                                 T.reinterpret(index, dtype="int8x32"), dtype="int8x32"),
                         dtype="int16x16")
