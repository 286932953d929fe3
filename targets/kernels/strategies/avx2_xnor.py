"""+-1 x +-1 XNOR-popcount on AVX2 with a ``vpshufb`` nibble popcount (Haswell, Zen 2: no
AVX-512 VPOPCNTDQ).

acc = 2 popcount(~(x ^ Wp) & M) - popcount(M) over the in-bounds taps (zero-padded taps
contribute 0: ONNX pads a Sign map with 0), as ``xnor_popcount``. Per output pixel, 8
output channels per ymm (one uint32 lane each) take, per (tap, input word), the input word
broadcast, ``(x ^ ~Wp) & M`` and the byte-wise popcount of that: the low and high
nibbles of every byte index a 16-entry table of bit counts (2 ``vpshufb``), added into
uint8 lanes (at most 8 per byte per step, so 31 steps fit a byte); then ``vpmaddubsw`` and
``vpmaddwd`` by ones sum each lane's 4 byte counts into int32 (once per 31 steps, instead
of a horizontal sum per word as LLVM's vector ctpop does).

Weights (``weight_args``): ~Wp [kh, kw, Wi, Cop] and the group mask M [Wi, Cop] with the
output channels contiguous (8 lanes per load), and popcount(M) per output channel, all
from the +-1 weights at compile time. A fused OR-pool (max over the window of a {-1,+1}
map) takes the window's extreme accumulator per channel before the threshold, as the TE
kernels do.
"""
from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.binary_ops import WORD, ConvGeom, drop_param
from nrqc.targets.kernels.strategies.avx2_lut import _in_map
from nrqc.targets.kernels.strategies.estimates import taps

NAME = "avx2_xnor"
WEIGHTS = "binary"
ENCODING = "pm1"  # the input encoding this strategy computes ({-1,+1}: XNOR)
LANES = 8  # uint32 output channels per ymm
BLOCK = 4  # ymm accumulators live per output pixel (32 output channels)
STEPS_PER_WIDEN = 31  # 31 x 8 (the most bits of a byte) < 256


def available(target) -> bool:
    # with VPOPCNTDQ a popcount is one instruction per 16 lanes (the TE xnor kernel gets it)
    return target is not None and target.caps.has("avx2") and not target.caps.has("avx512_vpopcntdq")


def supports(g) -> bool:
    return True


def cop(g: ConvGeom) -> int:
    return (g.c_out + LANES - 1) // LANES * LANES


def cost(g, target) -> float:
    """~8 vector ops (xor, and, shift, 2 and, 2 vpshufb, add) per (tap, input word, 8
    output channels), 3 vector ALU ops per cycle, plus the widening every 31 steps."""
    return taps(g) / LANES * g.words_in * 8 / 3


def weight_args(g, wq):
    wp, m = pk.binary_weights(wq, g.groups)  # [Co, kh, kw, Wi], [Co, Wi]
    c = cop(g)
    wn = np.zeros((c, g.kh, g.kw, g.words_in), np.uint32)
    wn[:g.c_out] = ~wp
    mk = np.zeros((c, g.words_in), np.uint32)
    mk[:g.c_out] = m
    popm = np.array([sum(bin(int(v)).count("1") for v in row) for row in mk], np.int32)
    return [np.ascontiguousarray(np.transpose(wn, (1, 2, 3, 0))), np.ascontiguousarray(mk.T), popm]


def build(g, out: str, target, pool=None, strict: bool = False):
    return bo.hand_written(xnor_conv(g, out, pool))


def xnor_conv(g: ConvGeom, out: str, pool=None):
    """Params: out "pack": (X, Wn, M, PM, sigma, t, Y uint32 [N, Ho', Wo', Wo32]) (pooled
    when pool); out "float": (X, Wn, M, PM, scale float32 [Co], Y float32 [N, Co, Ho, Wo])."""
    if out == "float" and pool is not None:
        raise ValueError("a pooled XNOR conv has a packed output")
    pk_, ps, pp, pho, pwo = bo.pooled_output(g, pool)
    N, H, Wd, Wi, Co, kh, kw = g.n, g.h, g.w, g.words_in, g.c_out, g.kh, g.kw
    sh, sw = g.stride
    dh, dw = g.dilation
    pt, pl = g.pad[0], g.pad[1]
    ho, wo, wout = g.ho, g.wo, pk.n_words(Co)
    cp = cop(g)
    nob = min(BLOCK, cp // LANES)  # vectors per channel block
    nblk = (cp // LANES + nob - 1) // nob
    cpb = nblk * nob * LANES  # channels padded to whole blocks (the loads clamp to cp)
    nsteps = kh * kw * Wi
    chunk = min(STEPS_PER_WIDEN, nsteps)
    nchunk = (nsteps + chunk - 1) // chunk
    nr, nc = pk_[0], pk_[1]
    lo, hi = -(2 ** 31), 2 ** 31 - 1
    pack = out == "pack"
    y_shape = (N, pho, pwo, wout) if pack else (N, Co, ho, wo)
    y_dtype = "uint32" if pack else "float32"

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((N, H, Wd, Wi), "uint32"), Wn: T.Buffer((kh, kw, Wi, cp), "uint32"),
               M: T.Buffer((Wi, cp), "uint32"), PM: T.Buffer((cp,), "int32"),
               E0: T.Buffer((Co,), "int32" if pack else "float32"), E1: T.Buffer((Co,), "int32"),
               Y: T.Buffer(y_shape, y_dtype)):
        T.func_attr({"tirx.noalias": True})
        a8 = T.alloc_buffer((nob * 32,), "uint8", scope="local")
        a32 = T.alloc_buffer((nob * LANES,), "int32", scope="local")
        mx = T.alloc_buffer((cpb,), "int32", scope="local")
        mn = T.alloc_buffer((cpb,), "int32", scope="local")
        nin = T.alloc_buffer((1,), "int32", scope="local")
        for n in range(N):
            for py in range(pho):
                for px in range(pwo):
                    for i in T.vectorized(cpb):
                        mx[i] = lo
                        mn[i] = hi
                    for rr in T.unroll(nr):
                        for ss in T.unroll(nc):
                            if _in_map(py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1], ho, wo):
                                # taps inside the map (each subtracts popcount(M) once)
                                nin[0] = 0
                                for tp in range(kh * kw):
                                    if _inside(py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1], tp // kw, tp % kw,
                                               sh, sw, dh, dw, pt, pl, H, Wd):
                                        nin[0] = nin[0] + 1
                                for ob in range(nblk):
                                    for i in T.vectorized(nob * LANES):
                                        a32[i] = 0
                                    for c in range(nchunk):
                                        for i in T.vectorized(nob * 32):
                                            a8[i] = T.uint8(0)
                                        for sc in range(T.min(chunk, nsteps - c * chunk)):
                                            if _inside(py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1],
                                                       (c * chunk + sc) // Wi // kw, (c * chunk + sc) // Wi % kw,
                                                       sh, sw, dh, dw, pt, pl, H, Wd):
                                                for b in T.unroll(nob):
                                                    a8[T.ramp(b * 32, 1, 32)] = a8.vload([b * 32], "uint8x32") + _popcount_bytes(
                                                        T.bitwise_and(T.bitwise_xor(
                                                            T.broadcast(X[n, ((py * ps[0] + rr - pp[0]) * sh
                                                                              + (c * chunk + sc) // Wi // kw * dh - pt),
                                                                          ((px * ps[1] + ss - pp[1]) * sw
                                                                           + (c * chunk + sc) // Wi % kw * dw - pl),
                                                                          (c * chunk + sc) % Wi], LANES),
                                                            Wn.vload([(c * chunk + sc) // Wi // kw, (c * chunk + sc) // Wi % kw,
                                                                      (c * chunk + sc) % Wi,
                                                                      T.min((ob * nob + b) * LANES, cp - LANES)], "uint32x8")),
                                                            M.vload([(c * chunk + sc) % Wi, T.min((ob * nob + b) * LANES, cp - LANES)],
                                                                    "uint32x8")))
                                        for b in T.unroll(nob):
                                            a32[T.ramp(b * LANES, 1, LANES)] = a32.vload([b * LANES], "int32x8") + _byte_sums(
                                                a8.vload([b * 32], "uint8x32"))
                                    for b in T.unroll(nob):
                                        for i in T.vectorized(LANES):
                                            mx[(ob * nob + b) * LANES + i] = T.max(
                                                mx[(ob * nob + b) * LANES + i],
                                                a32[b * LANES + i] * 2 - nin[0] * PM[T.min((ob * nob + b) * LANES + i, cp - 1)])
                                            mn[(ob * nob + b) * LANES + i] = T.min(
                                                mn[(ob * nob + b) * LANES + i],
                                                a32[b * LANES + i] * 2 - nin[0] * PM[T.min((ob * nob + b) * LANES + i, cp - 1)])
                    if pack:
                        for wd in range(wout):
                            Y[n, py, px, wd] = T.uint32(0)
                            for j in range(T.min(WORD, Co - wd * WORD)):
                                Y[n, py, px, wd] = T.bitwise_or(Y[n, py, px, wd], T.Select(
                                    E0[wd * WORD + j] * T.Select(E0[wd * WORD + j] >= 0, mx[wd * WORD + j], mn[wd * WORD + j])
                                    >= E1[wd * WORD + j], T.shift_left(T.uint32(1), T.Cast("uint32", j)), T.uint32(0)))
                    else:
                        for o in range(Co):
                            Y[n, o, py, px] = T.Cast("float32", mx[o]) * E0[o]

    if not pack:  # float epilogue: (X, Wn, M, PM, scale, Y) -- E1 is not a parameter
        kernel = drop_param(kernel, 5)
    return kernel


def _inside(oh, ow, r, s, sh, sw, dh, dw, pt, pl, H, Wd):
    return _in_map(oh * sh + r * dh - pt, ow * sw + s * dw - pl, H, Wd)


def _popcount_bytes(v):
    """uint8x32: the bit count of every byte of the 8 uint32 lanes (two vpshufb nibble lookups)."""
    nib = T.bitwise_and(T.ramp(T.int8(0), T.int8(1), 32), T.broadcast(T.int8(15), 32))
    table = T.broadcast(T.int8(0), 32)
    for k in range(4):  # byte i: the bit count of i % 16 (a constant vector once folded)
        table = table + T.bitwise_and(T.shift_right(nib, T.broadcast(T.int8(k), 32)), T.broadcast(T.int8(1), 32))
    low = T.bitwise_and(v, T.broadcast(T.uint32(0x0F0F0F0F), LANES))
    high = T.bitwise_and(T.shift_right(v, T.broadcast(T.uint32(4), LANES)), T.broadcast(T.uint32(0x0F0F0F0F), LANES))
    look = T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b")
    return T.reinterpret(T.call_llvm_pure_intrin(look, table, T.reinterpret(low, dtype="int8x32"), dtype="int8x32")
                         + T.call_llvm_pure_intrin(look, table, T.reinterpret(high, dtype="int8x32"), dtype="int8x32"),
                         dtype="uint8x32")


def _byte_sums(a8):
    """int32x8: each uint32 lane's 4 byte counts summed (vpmaddubsw + vpmaddwd by ones)."""
    ID = T.llvm_lookup_intrinsic_id
    pairs = T.call_llvm_pure_intrin(ID("llvm.x86.avx2.pmadd.ub.sw"), T.reinterpret(a8, dtype="int8x32"),
                                    T.broadcast(T.int8(1), 32), dtype="int16x16")
    return T.call_llvm_pure_intrin(ID("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16), dtype="int32x8")
