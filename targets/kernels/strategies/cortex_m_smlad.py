"""Cortex-M DSP (ARMv7E-M) int8-input conv: SMLAD, two 16x16 multiply-accumulates per
instruction. The kernel is hand-written C (``nrqc_s8_conv_smlad`` in the Cortex-M back
end's nrqc_dsp.h, shipped with every Cortex-M library); this strategy's PrimFunc is one
call of it with the layer's constant shape (GCC specializes the always-inline C).

Per output pixel the receptive field is gathered once (the QuantizeLinear fused into the
load for a float source) into int16 pairs; per block of 4 output channels, one LDRD of 4
inputs and per channel one LDRD of 4 weights + 2 SMLAD: 13 instructions per 16 MACs.
Weights as int16 pairs [Co4/4, R4/4, 4, 2] (``smlad_weights``), receptive-field order
(ky, kx, c)."""
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
    # instructions: 13 per 16 MACs (LDRD + 4 x (LDRD + 2 SMLAD)) + the gather (~10 per
    # receptive-field element per pixel with the quantize fused, ~3 from int8)
    c = g.conv
    gather = (10 if g.src_dtype == "float32" else 3) / max(c.c_out, 1)
    return taps(c) * c.cg * (13 / 16 + gather)


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
    return [smlad_weights(wq), ic.s8_correction(g, wq)]


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
            *strides, int(out != "pack"), *win)


def build(g, out: str, target, pool=None, strict: bool = False):
    from tvm import tirx
    from tvm.script import tirx as T

    c = g.conv
    consts = call_consts(g, out, pool)
    args = [tirx.const(int(v), "uint32") if i == 1 else tirx.const(int(v), "int32") for i, v in enumerate(consts)]
    r4, co4 = (c.kh * c.kw * c.cg + 3) // 4 * 4, (c.c_out + 3) // 4 * 4
    w_shape = (co4 // 4, r4 // 4, 4, 2)
    src_shape, src_dtype, co = tuple(g.src_shape), g.src_dtype, c.c_out
    if out == "pack":
        ho, wo = (consts[-2], consts[-1])
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
