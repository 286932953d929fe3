"""TE definition of the int8-input convolution (the all-integer first layer): int8 (or
uint8) activations x int8 weights, int32 accumulator, epilogue threshold + pack (the same
packed layout the following binary layer reads) or int32 -> float.

Every strategy (``strategies/int8_*.py``) computes on the *s8 domain* of the input:

    x_s8 = q          for int8 q,      x_s8 = q - 128 for uint8 q (q ^ 0x80)
    pad_s8 = zp or zp - 128            (ONNX pads the dequantized map with 0.0, i.e. q = zp)

so with the padding written as pad_s8 the exact accumulator of the dequantized conv is

    acc = sum_taps (q - zp) * w = sum_taps x_s8 * w - pad_s8 * W_c,   W_c = sum of channel c's weights

and the per-channel constant ``corr_c = -pad_s8 * W_c`` (a strategy that offsets its
operand, e.g. VNNI's u8 = x_s8 + 128, folds that offset in too: ``corr_c = -(pad_s8 + 128) *
W_c``) is added in the epilogue. When the input arrives as float the model's QuantizeLinear
is fused into the load: q = saturate(round_half_even(x / s) + zp), in float32 as ONNX.

The kernel reads its source through the layout op the contract allows between the
DequantizeLinear and the Conv (an Unsqueeze/Reshape, a Transpose): no copy of the input.

Parameters of every built kernel, in order:
  out "pack":  (X, W..., corr int32[Co], sigma int32[Co], t int32[Co], Y uint32[N,Ho,Wo,ceil(Co/32)])
  out "float": (X, W..., corr int32[Co], scale float32[Co], Y float32[N,Co,Ho,Wo])
with bit = sigma * (acc_s + corr) >= t and y = float(acc_s + corr) * scale.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tvm import te, tirx

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels import quantize_reciprocal


@dataclasses.dataclass(frozen=True)
class Int8ConvGeom:
    """An int8-input conv: its geometry, where its input comes from and how it is quantized."""

    conv: bo.ConvGeom
    src_shape: tuple[int, ...]  # the tensor the kernel reads (before the layout op)
    src_perm: tuple[int, ...] | None = None  # a Transpose between the source and the conv input
    src_dtype: str = "float32"  # "float32" (quantize fused into the load), "int8" or "uint8"
    q_dtype: str = "int8"  # the QuantizeLinear's output type: "int8" or "uint8"
    scale: float = 1.0  # input scale s_in (float32 value)
    zero_point: int = 0
    full_range_weights: bool = False  # some weight is -128 (no |w| <= 127 trick possible)
    # a float source's x / scale as x * (1/scale) + one fma correction where that is exact for
    # this scale (quantize_reciprocal.py); strategies on cores with a fused multiply-add set it
    quantize_by_reciprocal: bool = False

    @property
    def pad_s8(self) -> int:
        return self.zero_point - (128 if self.q_dtype == "uint8" else 0)

    def with_source(self, src_dtype: str) -> "Int8ConvGeom":
        return dataclasses.replace(self, src_dtype=src_dtype)


# Largest sum of |w| over one output channel the kernels take: the u8 operand (<= 255) and
# the correction ((pad_s8 + 128) <= 383) times it stay well inside int32 (passes/binary_thresholds
# refuses a layer above it).
MAX_WEIGHT_SUM = (2 ** 31 - 1) // 512


def s8_correction(g: Int8ConvGeom, wq: np.ndarray, offset: int = 0) -> np.ndarray:
    """corr_c = -(pad_s8 + offset) * sum of channel c's weights (int32)."""
    w = wq.astype(np.int64).reshape(wq.shape[0], -1)
    if np.abs(w).sum(1).max(initial=0) > MAX_WEIGHT_SUM:
        raise ValueError(f"int8 conv: a channel's sum of |w| exceeds {MAX_WEIGHT_SUM} (int32 accumulator)")
    return (-(g.pad_s8 + offset) * w.sum(1)).astype(np.int32)


def _source_at(g: Int8ConvGeom, X):
    """x(n, c, y, x) of the conv's NCHW input read from X through the layout op (a reshape /
    unsqueeze of the flat order, after an optional transpose)."""
    c = g.conv
    nchw = (c.n, c.c_in, c.h, c.w)
    view = tuple(g.src_shape) if g.src_perm is None else tuple(g.src_shape[a] for a in g.src_perm)

    def at(n, ci, y, x):
        if view == nchw and g.src_perm is None:
            return X[n, ci, y, x]
        flat = ((n * c.c_in + ci) * c.h + y) * c.w + x
        idx = []
        for d in reversed(view):
            idx.append(flat % d)
            flat = flat // d
        idx = list(reversed(idx))
        if g.src_perm is not None:
            src = [None] * len(idx)
            for d, a in enumerate(g.src_perm):
                src[a] = idx[d]
            idx = src
        return X[tuple(idx)]

    return at


def quantized_s8(g: Int8ConvGeom, v):
    """The s8-domain value (int8) of one source element v."""
    if g.src_dtype == "float32":
        lo, hi = (-128, 127) if g.q_dtype == "int8" else (0, 255)
        zp = tirx.const(float(g.zero_point), "float32")
        code = quantize_reciprocal.rounded(v, g.scale, lo - g.zero_point, hi - g.zero_point) \
            if g.quantize_by_reciprocal else None
        if code is not None:  # already within the codes' range
            q = (code + zp).astype("int32")
        else:
            q = tirx.nearbyint(v / tirx.const(np.float32(g.scale), "float32")) + zp
            q = tirx.max(tirx.min(q, tirx.const(float(hi), "float32")), tirx.const(float(lo), "float32")).astype("int32")
        return (q - (128 if g.q_dtype == "uint8" else 0)).astype("int8")
    if g.src_dtype == "uint8":
        return (v.astype("int32") - 128).astype("int8")
    return v


def source_placeholder(g: Int8ConvGeom):
    return te.placeholder(tuple(g.src_shape), g.src_dtype, name="X")


def padded_s8(g: Int8ConvGeom, X, name: str, channels: int | None = None, offset: int = 0, dtype: str = "int8"):
    """The zero-point-padded s8 map [N, Hp, Wp, channels] (channels past C_in are 0; with
    `offset` 128 and dtype uint8 it is VNNI's u8 = x_s8 + 128). A scratch stage: the
    schedules keep only the rows (or the pixel window) they read."""
    c = g.conv
    at = _source_at(g, X)
    channels = channels or c.c_in
    hp, wp = c.h + c.pad[0] + c.pad[2], c.w + c.pad[1] + c.pad[3]

    def f(i, y, x, ch):
        yy, xx = y - c.pad[0], x - c.pad[1]
        inb = tirx.all(yy >= 0, yy < c.h, xx >= 0, xx < c.w)
        cc = tirx.min(ch, c.c_in - 1)
        v = quantized_s8(g, at(i, cc, bo._clamp(yy, c.h), bo._clamp(xx, c.w)))
        pad = tirx.const(g.pad_s8, "int8")
        val = tirx.Select(inb, v, pad)
        if offset:
            val = (val.astype("int32") + offset).astype(dtype)
        zero = tirx.const(0, dtype)
        return tirx.Select(ch < c.c_in, val, zero) if channels != c.c_in else val

    return te.compute((c.n, hp, wp, channels), f, name=name)


def acc_direct(g: Int8ConvGeom, X, Wt):
    """Generic accumulator: Wt int8 [kh, kw, Cg, Co]; xpad the s8 map, "acc" the int32 sum."""
    c = g.conv
    xpad = padded_s8(g, X, "xpad")
    r = te.reduce_axis((0, c.kh), "r")
    s = te.reduce_axis((0, c.kw), "s")
    k = te.reduce_axis((0, c.cg), "c")

    def f(n, oh, ow, o):
        ci = k if c.groups == 1 else (o // c.og) * c.cg + k
        v = xpad[n, oh * c.stride[0] + r * c.dilation[0], ow * c.stride[1] + s * c.dilation[1], ci]
        return te.sum(v.astype("int32") * Wt[r, s, k, o].astype("int32"), axis=[r, s, k])

    return te.compute((c.n, c.ho, c.wo, c.c_out), f, name="acc")


def acc_dot4(g: Int8ConvGeom, X, W4, offset: int, dtype: str):
    """Dot-product accumulator (groups 1): W4 int8 [kh, kw, C4/4, Co16, 4] (packing.vnni_weights),
    "unpacked" the padded map in `dtype` (+offset), 4 input channels per dot product, output
    channels padded to 16 (the VNNI/AVX2 16x4 intrinsics)."""
    c = g.conv
    c4, co16 = bo.vnni_dims(c)
    U = padded_s8(g, X, "unpacked", c4, offset, dtype)
    r = te.reduce_axis((0, c.kh), "r")
    s = te.reduce_axis((0, c.kw), "s")
    cq = te.reduce_axis((0, c4 // 4), "cq")
    ci = te.reduce_axis((0, 4), "ci")
    return te.compute(
        (c.n, c.ho, c.wo, co16),
        lambda i, oh, ow, o: te.sum(
            U[i, oh * c.stride[0] + r * c.dilation[0], ow * c.stride[1] + s * c.dilation[1], cq * 4 + ci].astype("int32")
            * W4[r, s, cq, o, ci].astype("int32"), axis=[r, s, cq, ci]),
        name="acc")


def row_taps(g: Int8ConvGeom) -> int | None:
    """K4, the reduction length of one kernel row when its taps go on the dot products'
    reduction axis (kw x C_in contiguous bytes of a padded row, rounded up to 4), for a layer
    whose input channels are not a multiple of 4 (the first layer: 1 channel x 3x3 taps
    would fill 1 byte of each 4-byte dot with the channel-padded layout, 3 of 4 with this
    one); None where the channel-padded layout wastes nothing or the row is not contiguous."""
    c = g.conv
    if c.groups != 1 or c.dilation[1] != 1 or c.c_in % 4 == 0:
        return None
    return (c.kw * c.c_in + 3) // 4 * 4


def row_tap_weights(wq: np.ndarray) -> np.ndarray:
    """int8 [Co, C, kh, kw] (groups 1) -> int8 [kh, K4/4, Co16, 4]: byte k of a kernel row
    is tap k // C, channel k % C (zero past kw x C and past Co)."""
    co, c, kh, kw = wq.shape
    k4 = (kw * c + 3) // 4 * 4
    co16 = (co + 15) // 16 * 16
    w = np.zeros((co16, kh, k4), np.int8)
    w[:co, :, :kw * c] = np.transpose(wq, (0, 2, 3, 1)).reshape(co, kh, kw * c)
    return np.ascontiguousarray(np.transpose(w.reshape(co16, kh, k4 // 4, 4), (1, 2, 0, 3)))


def acc_row4(g: Int8ConvGeom, X, W4, offset: int, dtype: str):
    """Dot-product accumulator with a kernel row's taps on the reduction axis (groups 1,
    dilation 1 across the row; `row_taps`): "unpacked" is the padded map with each row
    flattened, U[n, y, x * C + ci] (in `dtype`, +offset), so the kw x C bytes one output
    pixel reads from a row are contiguous and 4 of them make one dot product. W4 int8
    [kh, K4/4, Co16, 4] (`row_tap_weights`); output channels padded to 16 as acc_dot4."""
    c = g.conv
    k4 = row_taps(g)
    co16 = pk.vnni_padded_channels(c.c_in, c.c_out)[1]
    at = _source_at(g, X)
    hp, wp = c.h + c.pad[0] + c.pad[2], c.w + c.pad[1] + c.pad[3]
    # the last pixel's 4-byte groups may read past the padded row: those bytes meet zero weights
    flat = max(wp * c.c_in, (c.wo - 1) * c.stride[1] * c.c_in + k4)

    def unpack(i, y, j):
        x, ci = (j, 0) if c.c_in == 1 else (j // c.c_in, j % c.c_in)
        yy, xx = y - c.pad[0], x - c.pad[1]
        inb = tirx.all(yy >= 0, yy < c.h, xx >= 0, xx < c.w)
        v = quantized_s8(g, at(i, ci, bo._clamp(yy, c.h), bo._clamp(xx, c.w)))
        val = tirx.Select(inb, v, tirx.const(g.pad_s8, "int8"))
        return (val.astype("int32") + offset).astype(dtype) if offset else val

    U = te.compute((c.n, hp, flat), unpack, name="unpacked")
    r = te.reduce_axis((0, c.kh), "r")
    cq = te.reduce_axis((0, k4 // 4), "cq")
    ci = te.reduce_axis((0, 4), "ci")
    return te.compute(
        (c.n, c.ho, c.wo, co16),
        lambda i, oh, ow, o: te.sum(
            U[i, oh * c.stride[0] + r * c.dilation[0], ow * c.stride[1] * c.c_in + cq * 4 + ci].astype("int32")
            * W4[r, cq, o, ci].astype("int32"), axis=[r, cq, ci]),
        name="acc")


def int8_conv(g: Int8ConvGeom, acc_fn, weight_shapes, out: str, pool=None):
    """The whole kernel around an accumulator: `acc_fn(g, X, *W)` -> "acc" [N, Ho, Wo, >=Co]."""
    c = g.conv
    X = source_placeholder(g)
    Ws = [te.placeholder(shape, "int8", name=f"W{i}") for i, shape in enumerate(weight_shapes)]
    acc = acc_fn(g, X, *Ws)
    # A dot-product accumulator has the output channels padded (to 16): the epilogue reads
    # all of them, so the schedule's channel loop keeps whole 16-lane blocks (the bits of the
    # padding channels are 0: pack_bits below is told the padded count, which fills the same
    # words; the float epilogue names the last padding channel in a select whose two sides are
    # the same value).
    c_acc = int(acc.shape[3])
    corr = te.placeholder((c.c_out,), "int32", name="corr")

    def ch(o):
        return tirx.min(o, c.c_out - 1) if c_acc != c.c_out else o

    if out == "pack":
        sigma = te.placeholder((c.c_out,), "int32", name="sigma")
        t = te.placeholder((c.c_out,), "int32", name="t")
        src, h, w = acc, c.ho, c.wo
        if pool is not None:  # sigma * (acc + corr) is monotone in acc: pool the window's extreme
            src, h, w = bo.window_extreme(acc, c.n, c.ho, c.wo, c_acc, pool, lambda o: sigma[ch(o)] >= 0, "int32")

        def bit(n, a, b, o):
            on = sigma[ch(o)] * (src[n, a, b, o] + corr[ch(o)]) >= t[ch(o)]
            return tirx.all(o < c.c_out, on) if c_acc != c.c_out else on

        y = bo.pack_bits(bit, c.n, h, w, c_acc)
        return te.create_prim_func([X, *Ws, corr, sigma, t, y])
    scale = te.placeholder((c.c_out,), "float32", name="scale")

    def value(n, o, a, b):
        v = acc[n, a, b, o]
        if c_acc != c.c_out:  # the same value either way: a zero scale multiplies any finite sum by 0
            v = tirx.Select(scale[o] == tirx.const(0.0, "float32"), acc[n, a, b, c_acc - 1], v)
        return (v + corr[o]).astype("float32") * scale[o]

    y = te.compute((c.n, c.c_out, c.ho, c.wo), value, name="y")
    return te.create_prim_func([X, *Ws, corr, scale, y])


# ------------------------------------------------------------------ numpy reference


def ref_quantize(x: np.ndarray, scale: float, zero_point: int, q_dtype: str) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), float32 division."""
    info = np.iinfo(q_dtype)
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(q_dtype)


def ref_int8_conv_acc(q_nchw: np.ndarray, zero_point: int, wq: np.ndarray, g: bo.ConvGeom) -> np.ndarray:
    """The exact accumulator sum (q - zp) * w of the dequantized conv (padding = real 0)."""
    from nrqc.targets.kernels.packing import ref_conv_acc

    return ref_conv_acc(q_nchw.astype(np.int64) - zero_point, wq, g.stride, g.pad, g.dilation, g.groups)
