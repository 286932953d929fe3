"""+-1 x +-1 popcount convs on aarch64 NEON (Cortex-A72, the Pi 4; also the A76): what
``neon_xnor`` ({-1,+1} maps) and ``neon_and`` ({0,1} maps) share.

Per output pixel, a block of output channels (4 uint32 lanes per q register, up to BLOCK
registers) takes, per (tap, input word), the input word broadcast (``dup v.4s``), one
``eor``/``and`` with the weight words of those channels, the byte-wise ``cnt`` and an
``add`` into uint8 lanes (at most 8 per byte per step, so 31 steps fit a byte); every 31
steps ``uaddlp`` twice widens each lane's 4 byte counts into int32 (instead of the
horizontal sum per word that LLVM makes of a scalar popcount). Several output channels per
register block, the input word read once per block.

  * XNOR ({-1,+1} map): acc = 2 popcount((x ^ ~Wp) & M) - popcount(M) per in-bounds tap;
  * AND ({0,1} map):    acc = popcount(x & Wp) - popcount(x & (M & ~Wp))
    (= 2 popcount(x & Wp) - popcount(x & M), two byte accumulators).

Zero-padded taps contribute 0 (ONNX pads a map with 0), so they are skipped. A fused
OR-pool takes the window's extreme accumulator per channel before the threshold, as the TE
kernels do. Weight layout (``weight_args``): [kh, kw, Wi, Cop] uint32 words with the output
channels contiguous (4 lanes per load), Cop = Co rounded up to 4 (padded channels are all
zero), then the XNOR mask M [Wi, Cop] and popcount(M) per channel.
"""
from __future__ import annotations

from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels import popcount_blocks as pb
from nrqc.targets.kernels.binary_ops import ConvGeom, drop_param
from nrqc.targets.kernels.popcount_blocks import count_taps_inside, inside, reset_extremes, write_pixel
from nrqc.targets.kernels.strategies.avx2_lut import _in_map
from nrqc.targets.kernels.strategies.estimates import taps

LANES = 4  # uint32 output channels per q register
BLOCK = 4  # q accumulators live per output pixel (16 output channels)
STEPS_PER_WIDEN = 31  # 31 x 8 (the most bits of a byte) < 256

# Estimated Cortex-A72 cycles per (tap visit, input word, 4 output channels), everything
# included (broadcast, eor/and, cnt, byte adds, widening, the per-step padding test,
# threshold and pack), measured (how: MEASURED_ON): XNOR 2,830,776 cycles / 331,776 steps,
# AND 1,605,750 / 165,888 (two counts per step). The generic TE kernels measured the same
# way: 39.8 (xnor) and 36.8 (and) per step (strategies/and_popcount.py).
CYCLES_PER_STEP = {"xnor": 8.53, "and": 9.68}

# How: `python bench/bench_neon_strategies.py --model pm1 --cpus cortex-a72`: a chain model
# (tests/binary_models.py, seed 0, 24x24) with one +-1 3x3 conv 64 -> 64 on a {0,1} map and
# two on Sign maps, compiled for arm_cpu with each kind of kernel forced, counted on the
# emulated board under -cpu cortex-a72; llvm-mca cycles of the executed blocks inside each
# kernel's symbols in model.so.
MEASURED_ON = "llvm-mca cycles (-mcpu=cortex-a72) of the kernels' own blocks, bench_neon_strategies.py --model pm1"


def available(target) -> bool:
    return target is not None and target.caps.isa == "aarch64" and target.caps.has("neon")


def supports(g) -> bool:
    return True


def cop(g: ConvGeom) -> int:
    return pb.padded_channels(g, LANES)


def cost(g, target, mode: str) -> float:
    return taps(g) / LANES * g.words_in * CYCLES_PER_STEP[mode]


def weight_args(g, wq, mode: str):
    if mode == "xnor":
        return pb.xnor_weights(g, wq, cop(g))
    wp, m = pk.binary_weights(wq, g.groups)  # [Co, kh, kw, Wi], [Co, Wi]
    return [pb.channels_last(wp, cop(g)), pb.channels_last(~wp & m[:, None, None, :], cop(g))]


def build(g, out: str, target, pool=None, strict: bool = False, mode: str = "xnor"):
    return bo.hand_written(popcount_conv(g, mode, out, pool))


def bind(mode: str):
    """(cost, weight_args, build) of the strategy computing `mode` ("xnor" or "and")."""
    return (lambda g, target: cost(g, target, mode), lambda g, wq: weight_args(g, wq, mode),
            lambda g, out, target, pool=None, strict=False: build(g, out, target, pool, strict, mode))


def _cnt(v):
    """uint8x16: the bit count of every byte of 4 uint32 lanes (NEON ``cnt v.16b``)."""
    return T.popcount(T.reinterpret(v, dtype="uint8x16"))


def _widen(a8):
    """int32x4: each uint32 lane's 4 byte counts summed (``uaddlp`` .16b -> .8h -> .4s)."""
    ID = T.llvm_lookup_intrinsic_id
    h = T.call_llvm_pure_intrin(ID("llvm.aarch64.neon.uaddlp.v8i16.v16i8"), a8, dtype="uint16x8")
    return T.reinterpret(T.call_llvm_pure_intrin(ID("llvm.aarch64.neon.uaddlp.v4i32.v8i16"), h, dtype="uint32x4"),
                         dtype="int32x4")


def popcount_conv(g: ConvGeom, mode: str, out: str, pool=None):
    """mode "xnor": params (X, Wn, M, PM, E..., Y); mode "and": (X, Wp, Wm, E..., Y).
    out "pack": E = (sigma, t), Y uint32 [N, Ho', Wo', Wo32] (pooled when pool); out
    "float": E = (scale float32 [Co],), Y float32 [N, Co, Ho, Wo]."""
    if out == "float" and pool is not None:
        raise ValueError("a pooled popcount conv has a packed output")
    xnor = mode == "xnor"
    (N, H, Wd, Wi, Co, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, wout, cp, nob, nblk, cpb, nsteps, chunk, nchunk,
     nr, nc, ps, pp, pho, pwo, pack, y_shape, y_dtype) = pb.plan(g, out, pool, LANES, BLOCK, STEPS_PER_WIDEN)
    # XNOR: W2 is the mask M [Wi, Cop], P the popcount(M) per channel; AND: W2 is the
    # minus-one words Wm [kh, kw, Wi, Cop] (P unused, a 1-element placeholder dropped below)
    w2_shape = (Wi, cp) if xnor else (kh, kw, Wi, cp)
    p_shape = (cp,) if xnor else (1,)

    def xword(X, n, py, px, rr, ss, step):
        return T.broadcast(X[n, (py * ps[0] + rr - pp[0]) * sh + step // Wi // kw * dh - pt,
                             (px * ps[1] + ss - pp[1]) * sw + step // Wi % kw * dw - pl, step % Wi], LANES)

    def wvec(Wb, step, blk):  # the weight words of 4 output channels (block `blk`) at a step
        return Wb.vload([step // Wi // kw, step // Wi % kw, step % Wi, T.min(blk * LANES, cp - LANES)], "uint32x4")

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((N, H, Wd, Wi), "uint32"), W1: T.Buffer((kh, kw, Wi, cp), "uint32"),
               W2: T.Buffer(w2_shape, "uint32"), P: T.Buffer(p_shape, "int32"),
               E0: T.Buffer((Co,), "int32" if pack else "float32"), E1: T.Buffer((Co,), "int32"),
               Y: T.Buffer(y_shape, y_dtype)):
        T.func_attr({"tirx.noalias": True})
        a8 = T.alloc_buffer((nob * 16,), "uint8", scope="local")
        b8 = T.alloc_buffer((nob * 16,), "uint8", scope="local")
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
                                if xnor:
                                    count_taps_inside(nin, py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1],
                                                      kh, kw, sh, sw, dh, dw, pt, pl, H, Wd)
                                for ob in range(nblk):
                                    for i in T.vectorized(nob * LANES):
                                        a32[i] = 0
                                    for c in range(nchunk):
                                        for i in T.vectorized(nob * 16):
                                            a8[i] = T.uint8(0)
                                            b8[i] = T.uint8(0)
                                        for sc in range(T.min(chunk, nsteps - c * chunk)):
                                            if inside(py * ps[0] + rr - pp[0], px * ps[1] + ss - pp[1],
                                                       (c * chunk + sc) // Wi // kw, (c * chunk + sc) // Wi % kw,
                                                       sh, sw, dh, dw, pt, pl, H, Wd):
                                                for b in T.unroll(nob):
                                                    if xnor:
                                                        a8[T.ramp(b * 16, 1, 16)] = a8.vload([b * 16], "uint8x16") + _cnt(
                                                            T.bitwise_and(T.bitwise_xor(
                                                                xword(X, n, py, px, rr, ss, c * chunk + sc),
                                                                wvec(W1, c * chunk + sc, ob * nob + b)),
                                                                W2.vload([(c * chunk + sc) % Wi,
                                                                          T.min((ob * nob + b) * LANES, cp - LANES)], "uint32x4")))
                                                    else:  # the counts under +1 weights and under -1 weights
                                                        a8[T.ramp(b * 16, 1, 16)] = a8.vload([b * 16], "uint8x16") + _cnt(T.bitwise_and(
                                                            xword(X, n, py, px, rr, ss, c * chunk + sc), wvec(W1, c * chunk + sc, ob * nob + b)))
                                                        b8[T.ramp(b * 16, 1, 16)] = b8.vload([b * 16], "uint8x16") + _cnt(T.bitwise_and(
                                                            xword(X, n, py, px, rr, ss, c * chunk + sc), wvec(W2, c * chunk + sc, ob * nob + b)))
                                        for b in T.unroll(nob):
                                            if xnor:
                                                a32[T.ramp(b * LANES, 1, LANES)] = a32.vload([b * LANES], "int32x4") + _widen(
                                                    a8.vload([b * 16], "uint8x16"))
                                            else:
                                                a32[T.ramp(b * LANES, 1, LANES)] = a32.vload([b * LANES], "int32x4") + _widen(
                                                    a8.vload([b * 16], "uint8x16")) - _widen(b8.vload([b * 16], "uint8x16"))
                                    for b in T.unroll(nob):
                                        for i in T.vectorized(LANES):
                                            if xnor:
                                                a32[b * LANES + i] = a32[b * LANES + i] * 2 - nin[0] * P[
                                                    T.min((ob * nob + b) * LANES + i, cp - 1)]
                                            mx[(ob * nob + b) * LANES + i] = T.max(mx[(ob * nob + b) * LANES + i],
                                                                                   a32[b * LANES + i])
                                            mn[(ob * nob + b) * LANES + i] = T.min(mn[(ob * nob + b) * LANES + i],
                                                                                   a32[b * LANES + i])
                    write_pixel(Y, E0, E1, mx, mn, n, py, px, Co, wout, pack)

    if not pack:  # float epilogue: E1 is not a parameter
        kernel = drop_param(kernel, 5)
    if not xnor:  # AND: no popcount(M) parameter
        kernel = drop_param(kernel, 3)
    return kernel
