"""Cortex-M DSP (ARMv7E-M) int8-input conv: SMLAD, two 16x16 multiply-accumulates per
instruction. The kernel is hand-written C (``nrqc_s8_conv_smlad`` in the Cortex-M back
end's nrqc_dsp.h, shipped with every Cortex-M library); this strategy's PrimFunc is one
call of it with the layer's constant shape (GCC specializes the always-inline C).

Per output pixel the receptive field is gathered once (the QuantizeLinear fused into the
load for a float source) into int16 pairs; per block of 4 output channels, one LDRD of 4
inputs and per channel one LDRD of 4 weights + 2 SMLAD: 13 instructions per 16 MACs.
Weights as int16 pairs [Co4/4, R4/4, 4, 2] (``smlad_weights``), receptive-field order
(ky, kx, c).

A 1-D conv with stride and dilation 1 (the VAD's first layer) stores its weights as int8
instead (``time_block_weights``: half the flash) and computes ``time_block(g)`` output pixels
per weight word: each word is sign-extended once (SXTB16, SXTB16 ROR 8) and feeds 2 x TB
SMLADs, (3 + 3 TB) / (4 TB) instructions per MAC (0.875 at TB 6; int8 weights without the
reuse would cost 1.31)."""
from __future__ import annotations

import numpy as np

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels.binary_ops import hand_written, pool_out, view_strides
from nrqc.targets.kernels.strategies.estimates import taps

NAME = "cortex_m_smlad"
C_FUNCTION = "nrqc_s8_conv_smlad"


def available(target) -> bool:
    return target is not None and target.caps.scalar and target.caps.has("dsp")


def supports(g) -> bool:
    c = g.conv
    return c.groups == 1 and c.c_out <= 4096 and c.kh * c.kw * c.cg <= 4096  # receptive field on the stack


def cost(g, target) -> float:
    # instructions: 13 per 16 MACs (LDRD + 4 x (LDRD + 2 SMLAD)), or (3 + 3 TB) / (4 TB) with
    # int8 weights time-blocked, + the gather (~10 per receptive-field element per pixel with
    # the quantize fused, ~3 from int8)
    c = g.conv
    gather = (10 if g.src_dtype == "float32" else 3) / max(c.c_out, 1)
    tb = time_block(g)
    return taps(c) * c.cg * ((3 + 3 * tb) / (4 * tb) if tb else 13 / 16) + taps(c) * c.cg * gather


# output pixels per weight word for int8 weights (nrqc_s8_conv1d_tb), the Cortex-M knob
# int8_conv.time_block (nrqc/cortex_m/knobs.py, default 6); 0: int16 pairs
TIME_BLOCK_MIN = 4  # below it the int16 pairs need fewer instructions (13/16 vs (3 + 3 TB) / (4 TB))


def knob_op(g) -> dict:
    """The layer as the Cortex-M knobs key it: the conv geometry only, so main and main_int8
    (same weights, stored once) always agree on the layout."""
    c = g.conv
    return {"op": "int8_conv", "g": {"n": c.n, "c_in": c.c_in, "h": c.h, "w": c.w, "c_out": c.c_out, "kh": c.kh,
                                     "kw": c.kw, "stride": list(c.stride), "pad": list(c.pad),
                                     "dilation": list(c.dilation), "groups": c.groups}}


def knobs(g) -> dict:
    """What the layer table records: the knob values this layer is built with and its key
    (`nrqc tune --target cortex-m4` searches them)."""
    from nrqc.cortex_m import knobs as cm_knobs

    op = knob_op(g)
    return {"knobs": cm_knobs.for_kernel(op), "knob_key": cm_knobs.key(op)}


def even_channels(c: int) -> int:
    """Channels per tap in the int8 layout: even, so every pixel's window is word aligned."""
    return (c + 1) // 2 * 2


def time_block(g) -> int:
    """Output pixels per weight word for geometry g: 0 (int16 pairs) unless g is a 1-D conv
    with stride and dilation 1 (consecutive windows one column apart) whose window offsets
    t * Cp * 2 (+ 24 within a loop step) bytes stay within LDRD's immediate (1020). The layout does not depend on a
    pool fused later (the kernel then runs one pixel at a time on the same int8 weights)."""
    c = g.conv
    tb = knobs(g)["knobs"]["time_block"]
    if not (tb and c.kh == 1 and c.h == 1 and c.stride[1] == 1 and c.dilation[1] == 1 and c.groups == 1):
        return 0
    tb = min(tb, 1 + 498 // even_channels(c.cg), 6)
    return tb if tb >= TIME_BLOCK_MIN else 0


def time_block_weights(wq: np.ndarray) -> np.ndarray:
    """int8 [Co, C, 1, kw] -> uint32 [Co, R16/4] as int32 over r = kx * Cp + c (Cp = C rounded
    up to even, zero past C and R = kw * Cp; R16: R rounded up to 16, the kernel's loop step
    of 4 words); each word's bytes are (w[r], w[r+2], w[r+1],
    w[r+3]): SXTB16 gives the int16 pair (w[r], w[r+1]), SXTB16 ROR 8 (w[r+2], w[r+3])."""
    co, c, kh, kw = wq.shape
    cp = even_channels(c)
    r4 = (kw * cp + 15) // 16 * 16
    w = np.zeros((co, kw, cp), np.int64)
    w[:, :, :c] = np.transpose(wq.astype(np.int64)[:, :, 0, :], (0, 2, 1))
    flat = np.zeros((co, r4), np.int64)
    flat[:, :kw * cp] = w.reshape(co, kw * cp)
    b = (flat.reshape(co, r4 // 4, 4) & 0xFF)[:, :, [0, 2, 1, 3]]
    words = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)
    return np.ascontiguousarray(words.astype(np.uint32).view(np.int32))


def smlad_weights(wq: np.ndarray) -> np.ndarray:
    """int8 [Co, C, kh, kw] -> int32 [Co4/4, R4/4, 4, 2]: word (b, i, k, j) = int16 pair
    (w[4b+k][4i+2j], w[4b+k][4i+2j+1]) over r = (ky * kw + kx) * C + c; zero past R and Co."""
    co, c, kh, kw = wq.shape
    r = kh * kw * c
    r4, co4 = (r + 3) // 4 * 4, (co + 3) // 4 * 4
    w = np.zeros((co4, r4), np.int64)
    w[:co, :r] = np.transpose(wq.astype(np.int64), (0, 2, 3, 1)).reshape(co, r)
    pairs = (w[:, 0::2] & 0xFFFF) | ((w[:, 1::2] & 0xFFFF) << 16)  # [Co4, R4/2]
    pairs = pairs.reshape(co4 // 4, 4, r4 // 4, 2)
    return np.ascontiguousarray(np.transpose(pairs, (0, 2, 1, 3))).astype(np.uint32).view(np.int32)


def weight_args(g, wq):
    return [time_block_weights(wq) if time_block(g) else smlad_weights(wq), ic.s8_correction(g, wq)]


def call_consts(g, out: str, pool=None) -> tuple:
    """The C function's arguments after its 7 pointers: source kind and quantization, shape,
    the NCHW view's strides in the source, epilogue kind, pool window (1x1: none)."""
    c = g.conv
    strides = view_strides((c.n, c.c_in, c.h, c.w), tuple(g.src_shape) if g.src_perm is None else
                           tuple(g.src_shape[a] for a in g.src_perm), g.src_perm, list(g.src_shape))
    if strides is None:
        raise ValueError("the int8 conv's source is not a strided view of its input")
    kind = {"float32": 0, "int8": 1, "uint8": 2}[g.src_dtype]
    if pool is not None:
        (pkh, pkw), (psh, psw), ppad = pool
        pho, pwo = pool_out(c.ho, c.wo, (pkh, pkw), (psh, psw), ppad)
        win = (pkh, pkw, psh, psw, ppad[0], ppad[1], pho, pwo)
    else:
        win = (1, 1, 1, 1, 0, 0, c.ho, c.wo)
    scale_bits = int(np.array([g.scale], np.float32).view(np.uint32)[0])  # exact: no decimal literal
    return (kind, scale_bits, int(g.zero_point), int(g.q_dtype == "uint8"), int(g.pad_s8), c.n,
            c.c_in, c.h, c.w, c.c_out, c.kh, c.kw, *c.stride, c.pad[0], c.pad[1], *c.dilation, c.ho, c.wo,
            *strides, int(out != "pack"), *win, time_block(g))


def build(g, out: str, target, pool=None, strict: bool = False):
    from tvm import tirx
    from tvm.script import tirx as T

    c = g.conv
    consts = call_consts(g, out, pool)
    args = [tirx.const(int(v), "uint32") if i == 1 else tirx.const(int(v), "int32") for i, v in enumerate(consts)]
    if time_block(g):
        w_shape = time_block_weights(np.zeros((c.c_out, c.cg, c.kh, c.kw), np.int8)).shape
    else:
        r4, co4 = (c.kh * c.kw * c.cg + 3) // 4 * 4, (c.c_out + 3) // 4 * 4
        w_shape = (co4 // 4, r4 // 4, 4, 2)
    src_shape, src_dtype, co = tuple(g.src_shape), g.src_dtype, c.c_out
    if out == "pack":
        ho, wo = (consts[-3], consts[-2])  # the pooled map (the last is the time block)
        y_shape = (c.n, ho, wo, (co + 31) // 32)

        @T.prim_func(s_tir=False)
        def kernel(X: T.Buffer(src_shape, src_dtype), W4: T.Buffer(w_shape, "int32"), Corr: T.Buffer((co,), "int32"),
                   S: T.Buffer((co,), "int32"), Th: T.Buffer((co,), "int32"), Y: T.Buffer(y_shape, "uint32")):
            T.evaluate(T.call_extern("int32", C_FUNCTION, X.data, W4.data, Corr.data, S.data, Th.data, 0, Y.data,
                                     *args))
    else:
        y_shape = (c.n, co, c.ho, c.wo)

        @T.prim_func(s_tir=False)
        def kernel(X: T.Buffer(src_shape, src_dtype), W4: T.Buffer(w_shape, "int32"), Corr: T.Buffer((co,), "int32"),
                   Sc: T.Buffer((co,), "float32"), Y: T.Buffer(y_shape, "float32")):
            T.evaluate(T.call_extern("int32", C_FUNCTION, X.data, W4.data, Corr.data, 0, 0, Sc.data, Y.data, *args))
    return hand_written(kernel)
