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

from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import popcount_blocks as pb
from nrqc.targets.kernels.binary_ops import ConvGeom, drop_param
from nrqc.targets.kernels.popcount_blocks import count_taps_inside, inside, reset_extremes, write_pixel
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
    return pb.padded_channels(g, LANES)


def cost(g, target) -> float:
    """~8 vector ops (xor, and, shift, 2 and, 2 vpshufb, add) per (tap, input word, 8
    output channels), 3 vector ALU ops per cycle, plus the widening every 31 steps."""
    return taps(g) / LANES * g.words_in * 8 / 3


def weight_args(g, wq):
    return pb.xnor_weights(g, wq, cop(g))


def build(g, out: str, target, pool=None, strict: bool = False):
    return bo.hand_written(xnor_conv(g, out, pool))


def xnor_conv(g: ConvGeom, out: str, pool=None):
    """Params: out "pack": (X, Wn, M, PM, sigma, t, Y uint32 [N, Ho', Wo', Wo32]) (pooled
    when pool); out "float": (X, Wn, M, PM, scale float32 [Co], Y float32 [N, Co, Ho, Wo])."""
    if out == "float" and pool is not None:
        raise ValueError("a pooled XNOR conv has a packed output")
    (N, H, Wd, Wi, Co, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, wout, cp, nob, nblk, cpb, nsteps, chunk, nchunk,
     nr, nc, ps, pp, pho, pwo, pack, y_shape, y_dtype) = pb.plan(g, out, pool, LANES, BLOCK, STEPS_PER_WIDEN)

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
                    reset_extremes(mx, mn, cpb)
                    for rr in T.unroll(nr):
                        for ss in T.unroll(nc):
                            if _in_map(py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1], ho, wo):
                                nin[0] = 0
                                count_taps_inside(nin, py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1],
                                                  kh, kw, sh, sw, dh, dw, pt, pl, H, Wd)
                                for ob in range(nblk):
                                    for i in T.vectorized(nob * LANES):
                                        a32[i] = 0
                                    for c in range(nchunk):
                                        for i in T.vectorized(nob * 32):
                                            a8[i] = T.uint8(0)
                                        for sc in range(T.min(chunk, nsteps - c * chunk)):
                                            if inside(py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1],
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
                    write_pixel(Y, E0, E1, mx, mn, n, py, px, Co, wout, pack)

    if not pack:  # float epilogue: (X, Wn, M, PM, scale, Y) -- E1 is not a parameter
        kernel = drop_param(kernel, 5)
    return kernel


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
