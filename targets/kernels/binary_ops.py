"""TE definitions of the bit-packed operators (target independent compute).

Every builder returns a ``tvm.tirx.PrimFunc`` (``te.create_prim_func``) whose parameters
are listed in its docstring, in order, with the output last. Geometry is 2-d; a Conv1d
is run as a 2-d conv with H = 1 and a 1-row kernel.

Binary-activation x int8-weight strategies (acc = sum of the weights whose input bit is 1):
  * ``bitserial``: weights as 8 two's-complement bit-planes packed like the input;
    acc = sum_{b<7} 2^b popcount(x & P_b) - 128 popcount(x & P_7).
  * ``masked``: unpack each input bit and add the int8 weight where it is 1 (a select-add,
    vectorized over output channels; LLVM turns it into masked vector adds).
Binary x binary (weights +-1, bit 1 = +1, restricted to the output channel's group by a mask M):
  * ``and`` ({0,1} x {-1,+1}): acc = 2 popcount(x & Wp) - popcount(x & M)
  * ``xnor`` ({-1,+1} x {-1,+1}): acc = 2 popcount(~(x ^ Wp) & M) - popcount(M) for
    in-bounds taps; zero-padded taps contribute 0 (ONNX pads a Sign map with 0, not -1).
Epilogues: ``pack``: bit_o = (sigma_o * acc >= t_o), packed along channels;
``float``: y = acc * scale_o (float32, NCHW or [N, O]).
"""
from __future__ import annotations

import dataclasses

import tvm
from tvm import te, tirx

from nrqc.targets.kernels.packing import WORD, n_words  # noqa: F401 (n_words: callers read it here)
from nrqc.targets.kernels.packing import vnni_padded_channels


@dataclasses.dataclass(frozen=True)
class ConvGeom:
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def ho(self) -> int:
        return (self.h + self.pad[0] + self.pad[2] - self.dilation[0] * (self.kh - 1) - 1) // self.stride[0] + 1

    @property
    def wo(self) -> int:
        return (self.w + self.pad[1] + self.pad[3] - self.dilation[1] * (self.kw - 1) - 1) // self.stride[1] + 1

    @property
    def cg(self) -> int:
        return self.c_in // self.groups

    @property
    def og(self) -> int:
        return self.c_out // self.groups

    @property
    def words_in(self) -> int:
        return n_words(self.c_in)

    @property
    def words_out(self) -> int:
        return n_words(self.c_out)


def _u32(v):
    return tirx.const(v, "uint32")


def _bit(word, b):
    """Bit b (an index expression) of a uint32 word, as uint32 0/1."""
    return (word >> b.astype("uint32")) & _u32(1)


def _clamp(i, hi):
    """Clamped index: every load is in bounds, so a Select (no branch) can guard padding."""
    return tirx.max(tirx.min(i, hi - 1), 0)


def _tap(g: ConvGeom, oh, ow, r, s):
    ih = oh * g.stride[0] + r * g.dilation[0] - g.pad[0]
    iw = ow * g.stride[1] + s * g.dilation[1] - g.pad[1]
    inb = tirx.all(ih >= 0, ih < g.h, iw >= 0, iw < g.w)
    return _clamp(ih, g.h), _clamp(iw, g.w), inb


def _popc(x):
    return tirx.popcount(x).astype("int32")


# ----------------------------------------------------------------------------- accumulators

def acc_int8_bitserial(g: ConvGeom, X, P):
    """X uint32 [N,H,W,Wi]; P uint32 [8, Co, kh, kw, Wi] (planes in full-channel space,
    zero outside the output channel's group)."""
    r = te.reduce_axis((0, g.kh), "r")
    s = te.reduce_axis((0, g.kw), "s")
    j = te.reduce_axis((0, g.words_in), "j")

    def f(n, oh, ow, o):
        ih, iw, inb = _tap(g, oh, ow, r, s)
        x = tirx.Select(inb, X[n, ih, iw, j], _u32(0))
        val = _popc(x & P[0, o, r, s, j])
        for b in range(1, 7):
            val = val + (_popc(x & P[b, o, r, s, j]) << b)
        val = val - (_popc(x & P[7, o, r, s, j]) << 7)
        return te.sum(val, axis=[r, s, j])

    return te.compute((g.n, g.ho, g.wo, g.c_out), f, name="acc")


def acc_int8_masked(g: ConvGeom, X, Wt):
    """X uint32 [N,H,W,Wi]; Wt int8 [kh, kw, Cg, Co] (group-local input channel)."""
    r = te.reduce_axis((0, g.kh), "r")
    s = te.reduce_axis((0, g.kw), "s")
    c = te.reduce_axis((0, g.cg), "c")

    def f(n, oh, ow, o):
        ih, iw, inb = _tap(g, oh, ow, r, s)
        ci = c if g.groups == 1 else (o // g.og) * g.cg + c  # no per-lane gather when ungrouped
        bit = _bit(X[n, ih, iw, ci // WORD], ci % WORD)
        on = tirx.all(inb, bit == _u32(1))
        return te.sum(tirx.Select(on, Wt[r, s, c, o].astype("int32"), 0), axis=[r, s, c])

    return te.compute((g.n, g.ho, g.wo, g.c_out), f, name="acc")


def vnni_dims(g: ConvGeom) -> tuple[int, int]:
    """(input channels rounded up to 4, output channels rounded up to 16)."""
    return vnni_padded_channels(g.c_in, g.c_out)


def acc_int8_vnni(g: ConvGeom, X, W4):
    """Unpack to u8 + int8 dot product (groups == 1). X uint32 [N,H,W,Wi];
    W4 int8 [kh, kw, C4/4, Co16, 4] (zero-padded). The unpacked, zero-padded u8 map U is a
    scratch stage (the schedule keeps only the rows one output row needs)."""
    c4, co16 = vnni_dims(g)
    hp, wp = g.h + g.pad[0] + g.pad[2], g.w + g.pad[1] + g.pad[3]

    def unpack_(i, y, x, c):
        yy, xx = y - g.pad[0], x - g.pad[1]
        cc = tirx.min(c, g.c_in - 1)
        inb = tirx.all(yy >= 0, yy < g.h, xx >= 0, xx < g.w, c < g.c_in)
        v = _bit(X[i, _clamp(yy, g.h), _clamp(xx, g.w), cc // WORD], cc % WORD).astype("uint8")
        return tirx.Select(inb, v, tirx.const(0, "uint8"))

    U = te.compute((g.n, hp, wp, c4), unpack_, name="unpacked")
    r = te.reduce_axis((0, g.kh), "r")
    s = te.reduce_axis((0, g.kw), "s")
    cq = te.reduce_axis((0, c4 // 4), "cq")
    ci = te.reduce_axis((0, 4), "ci")
    return te.compute(
        (g.n, g.ho, g.wo, co16),
        lambda i, oh, ow, o: te.sum(
            U[i, oh * g.stride[0] + r * g.dilation[0], ow * g.stride[1] + s * g.dilation[1], cq * 4 + ci].astype("int32")
            * W4[r, s, cq, o, ci].astype("int32"), axis=[r, s, cq, ci]),
        name="acc")


def acc_binary(g: ConvGeom, X, Wp, M, mode: str):
    """X uint32 [N,H,W,Wi]; Wp, group mask M uint32 [Co, kh, kw, Wi] / [Co, Wi]."""
    r = te.reduce_axis((0, g.kh), "r")
    s = te.reduce_axis((0, g.kw), "s")
    j = te.reduce_axis((0, g.words_in), "j")

    def f(n, oh, ow, o):
        ih, iw, inb = _tap(g, oh, ow, r, s)
        x = X[n, ih, iw, j]
        if mode == "and":
            v = (_popc(x & Wp[o, r, s, j]) << 1) - _popc(x & M[o, j])
        elif mode == "xnor":
            v = (_popc(~(x ^ Wp[o, r, s, j]) & M[o, j]) << 1) - _popc(M[o, j])
        else:
            raise ValueError(mode)
        return te.sum(tirx.Select(inb, v, 0), axis=[r, s, j])

    return te.compute((g.n, g.ho, g.wo, g.c_out), f, name="acc")


# ----------------------------------------------------------------------------- epilogues

def pack_bits(bits_fn, n, h, w, c, name="packed"):
    """uint32 [n,h,w,ceil(c/32)] from bits_fn(n,h,w,ch) -> bool (channels >= c are 0).
    Two stages: "bitval" (each channel's bit already shifted to its place, a vectorizable
    compare + select over channels) and the word = sum of its 32 disjoint bit values."""
    cw = n_words(c) * WORD

    def bv(i, y, x, ch):
        if c == cw:  # whole words: no tail guard, so channel loads stay contiguous vectors
            on = bits_fn(i, y, x, ch)
        else:
            on = tirx.all(ch < c, bits_fn(i, y, x, tirx.min(ch, c - 1)))
        return tirx.Select(on, _u32(1) << (ch % WORD).astype("uint32"), _u32(0))

    bitval = te.compute((n, h, w, cw), bv, name="bitval")
    b = te.reduce_axis((0, WORD), "b")
    return te.compute((n, h, w, n_words(c)), lambda i, y, x, j: te.sum(bitval[i, y, x, j * WORD + b], axis=b),
                      name=name)


def window_extreme(val, n, ho, wo, c, pool, use_max, dtype):
    """Per channel, the max (use_max(o) true) or min of `val` over each pool window.
    Pooling a thresholded map = thresholding the window's extreme: OR_i(a*v_i + k > T) is
    (a*max(v) + k > T) for a >= 0 and (a*min(v) + k > T) for a < 0, exactly, also in float
    (rounding is monotone). So a fused pool thresholds and packs once per pooled pixel.
    Window positions in the pool's padding are skipped (a window always has a real one)."""
    kernel, stride, pad = pool
    pho, pwo = pool_out(ho, wo, kernel, stride, pad)
    lo, hi = tvm.tirx.min_value(dtype), tvm.tirx.max_value(dtype)

    def f(i, y, x, o):
        mx = mn = None
        for r in range(kernel[0]):
            for s_ in range(kernel[1]):
                ih, iw = y * stride[0] + r - pad[0], x * stride[1] + s_ - pad[1]
                inb = tirx.all(ih >= 0, ih < ho, iw >= 0, iw < wo)
                v = val[i, _clamp(ih, ho), _clamp(iw, wo), o]
                vmax, vmin = tirx.Select(inb, v, lo), tirx.Select(inb, v, hi)
                mx = vmax if mx is None else tirx.max(mx, vmax)
                mn = vmin if mn is None else tirx.min(mn, vmin)
        return tirx.Select(use_max(o), mx, mn)

    return te.compute((n, pho, pwo, c), f, name="wext"), pho, pwo


def epilogue_pack(acc, sigma, t, g: ConvGeom):
    return pack_bits(lambda n, y, x, o: sigma[o] * acc[n, y, x, o] >= t[o], g.n, g.ho, g.wo, g.c_out)


def epilogue_float(acc, scale, g: ConvGeom):
    return te.compute((g.n, g.c_out, g.ho, g.wo), lambda n, o, y, x: acc[n, y, x, o].astype("float32") * scale[o],
                      name="y")


# ----------------------------------------------------------------------------- whole operators

def binary_conv(g: ConvGeom, weights: str, strategy: str, out: str, pool=None):
    """weights "int8" (strategy "bitserial" | "masked") or "binary" (strategy "and" | "xnor").
    out "pack": params (X, W..., sigma int32[Co], t int32[Co], Y uint32[N,Ho,Wo,Wo32]);
    out "float": params (X, W..., scale float32[Co], Y float32[N,Co,Ho,Wo])."""
    X = te.placeholder((g.n, g.h, g.w, g.words_in), "uint32", name="X")
    if weights == "int8" and strategy == "bitserial":
        Ws = [te.placeholder((8, g.c_out, g.kh, g.kw, g.words_in), "uint32", name="P")]
        acc = acc_int8_bitserial(g, X, *Ws)
    elif weights == "int8" and strategy == "masked":
        Ws = [te.placeholder((g.kh, g.kw, g.cg, g.c_out), "int8", name="Wt")]
        acc = acc_int8_masked(g, X, *Ws)
    elif weights == "int8" and strategy == "vnni":
        c4, co16 = vnni_dims(g)
        Ws = [te.placeholder((g.kh, g.kw, c4 // 4, co16, 4), "int8", name="W4")]
        acc = acc_int8_vnni(g, X, *Ws)
    elif weights == "binary":
        Ws = [te.placeholder((g.c_out, g.kh, g.kw, g.words_in), "uint32", name="Wp"),
              te.placeholder((g.c_out, g.words_in), "uint32", name="M")]
        acc = acc_binary(g, X, *Ws, mode=strategy)
    else:
        raise ValueError((weights, strategy))
    if out == "pack":
        sigma = te.placeholder((g.c_out,), "int32", name="sigma")
        t = te.placeholder((g.c_out,), "int32", name="t")
        if pool is not None:  # OR-pool fused: threshold the window's extreme, pack once
            wext, pho, pwo = window_extreme(acc, g.n, g.ho, g.wo, g.c_out, pool, lambda o: sigma[o] >= 0, "int32")
            y = pack_bits(lambda n, a, b, o: sigma[o] * wext[n, a, b, o] >= t[o], g.n, pho, pwo, g.c_out)
        else:
            y = epilogue_pack(acc, sigma, t, g)
        args = [X, *Ws, sigma, t, y]
    else:
        scale = te.placeholder((g.c_out,), "float32", name="scale")
        y = epilogue_float(acc, scale, g)
        args = [X, *Ws, scale, y]
    return describe(te.create_prim_func(args), "binary_conv", g=dataclasses.asdict(g), weights=weights,
                    strategy=strategy, out=out, pool=pool)


def float_conv_pack(g: ConvGeom, strict: bool = True, pool=None, src_shape=None, src_perm=None,
                    w_layout: str = "oihw"):
    """The first (float-input) layer: float conv, per-channel affine y*m + k, compare with
    T (Greater, or GreaterOrEqual when strict=False), packed. Params (X float32 NCHW,
    W float32 [Co, Cg, kh, kw], m, k, T float32 [Co], Y uint32 [N,Ho,Wo,Wo32]).
    src_shape: X's real shape when the model reshapes/unsqueezes its input into NCHW (the
    kernel reads through the reshape, so no copy of the input is made).
    src_perm: the model transposes its input (axes of a permute_dims) before the reshape:
    X is the untransposed tensor (src_shape is then the transposed view's shape) and the
    kernel reads through the transpose too (e.g. [1, frames, bands] read as bands-as-channels).
    w_layout "ihwo": W is [Cg, kh, kw, Co] (output channels contiguous: SIMD targets
    vectorize over them, and OIHW would make every weight vector a strided gather)."""
    nchw = (g.n, g.c_in, g.h, g.w)
    src_shape = tuple(src_shape) if src_shape is not None else nchw
    if src_perm is not None:
        src_perm = tuple(int(a) for a in src_perm)
        x_shape = [0] * len(src_shape)
        for d, a in enumerate(src_perm):
            x_shape[a] = src_shape[d]
        X = te.placeholder(tuple(x_shape), "float32", name="X")
    else:
        X = te.placeholder(src_shape, "float32", name="X")

    def x_at(n, c, y, x):
        if src_shape == nchw and src_perm is None:
            return X[n, c, y, x]
        flat = ((n * g.c_in + c) * g.h + y) * g.w + x
        idx = []
        for d in reversed(src_shape):
            idx.append(flat % d)
            flat = flat // d
        idx = list(reversed(idx))
        if src_shape == nchw:
            idx = [n, c, y, x]
        if src_perm is not None:
            src_idx = [None] * len(idx)
            for d, a in enumerate(src_perm):
                src_idx[a] = idx[d]
            idx = src_idx
        return X[tuple(idx)]

    x_strides = view_strides(nchw, src_shape, src_perm, [int(d) for d in X.shape])
    if w_layout == "ihwo":
        W = te.placeholder((g.cg, g.kh, g.kw, g.c_out), "float32", name="W")
        w_at = lambda o, c, r, s: W[c, r, s, o]  # noqa: E731
    else:
        W = te.placeholder((g.c_out, g.cg, g.kh, g.kw), "float32", name="W")
        w_at = lambda o, c, r, s: W[o, c, r, s]  # noqa: E731
    m = te.placeholder((g.c_out,), "float32", name="m")
    k = te.placeholder((g.c_out,), "float32", name="k")
    T = te.placeholder((g.c_out,), "float32", name="T")
    r = te.reduce_axis((0, g.kh), "r")
    s = te.reduce_axis((0, g.kw), "s")
    c = te.reduce_axis((0, g.cg), "c")

    # zero-padded input stage ("xpad"; the schedule keeps only the rows an output row reads)
    hp, wp = g.h + g.pad[0] + g.pad[2], g.w + g.pad[1] + g.pad[3]

    def pad_(n, ci, y, x):
        yy, xx = y - g.pad[0], x - g.pad[1]
        inb = tirx.all(yy >= 0, yy < g.h, xx >= 0, xx < g.w)
        return tirx.Select(inb, x_at(n, ci, _clamp(yy, g.h), _clamp(xx, g.w)), tirx.const(0.0, "float32"))

    xpad = te.compute((g.n, g.c_in, hp, wp), pad_, name="xpad")

    def conv(n, oh, ow, o):
        ih = oh * g.stride[0] + r * g.dilation[0]
        iw = ow * g.stride[1] + s * g.dilation[1]
        ci = c if g.groups == 1 else (o // g.og) * g.cg + c  # no per-lane gather when ungrouped
        return te.sum(xpad[n, ci, ih, iw] * w_at(o, c, r, s), axis=[c, r, s])

    y = te.compute((g.n, g.ho, g.wo, g.c_out), conv, name="conv")
    if strict:
        bits = lambda n, a, b, o: y[n, a, b, o] * m[o] + k[o] > T[o]  # noqa: E731
    else:
        bits = lambda n, a, b, o: y[n, a, b, o] * m[o] + k[o] >= T[o]  # noqa: E731
    if pool is not None:
        wext, pho, pwo = window_extreme(y, g.n, g.ho, g.wo, g.c_out, pool,
                                        lambda o: m[o] >= tirx.const(0.0, "float32"), "float32")
        if strict:
            pbits = lambda n, a, b, o: wext[n, a, b, o] * m[o] + k[o] > T[o]  # noqa: E731
        else:
            pbits = lambda n, a, b, o: wext[n, a, b, o] * m[o] + k[o] >= T[o]  # noqa: E731
        out = pack_bits(pbits, g.n, pho, pwo, g.c_out)
    else:
        out = pack_bits(bits, g.n, g.ho, g.wo, g.c_out)
    return describe(te.create_prim_func([X, W, m, k, T, out]), "float_conv_pack", g=dataclasses.asdict(g),
                    strict=strict, pool=pool, x_shape=[int(d) for d in X.shape], x_strides=x_strides,
                    w_layout=w_layout)


def view_strides(nchw, src_shape, src_perm, x_shape):
    """Element strides (n, c, y, x) of the NCHW view in X's memory, when the view (a reshape
    of X, or of X transposed by src_perm) is a strided view; None otherwise. Read by back
    ends that replace the kernel with their own code (the op description, `describe`)."""
    import numpy as np

    idx = np.arange(int(np.prod(x_shape)), dtype=np.int64).reshape(x_shape)
    if src_perm is not None:
        idx = np.transpose(idx, src_perm)
    view = idx.reshape(src_shape).reshape(nchw)
    strides = []
    for axis, size in enumerate(nchw):
        if size == 1:
            strides.append(0)
            continue
        step = np.diff(view, axis=axis)
        if not (step == step.flat[0]).all():
            return None
        strides.append(int(step.flat[0]))
    base = view - sum(np.arange(d).reshape([-1 if i == a else 1 for i in range(4)]) * st
                      for a, (d, st) in enumerate(zip(nchw, strides)))
    return strides if (base == 0).all() else None


OP_ATTR = "nrqc.op"  # what a kernel computes (op name + static parameters, JSON), see `describe`


def describe(func, op: str, **params):
    """Tag a kernel with what it computes, so a back end with a hand-written implementation of
    the same operator (the Cortex-M C kernels) can put its own in its place; the TIR body stays
    the definition everywhere else."""
    import json

    return func.with_attr(OP_ATTR, json.dumps({"op": op, **params}))


def op_of(func) -> dict | None:
    """The operator description a kernel was tagged with (`describe`), or None."""
    import json

    if func.attrs is None or OP_ATTR not in func.attrs:
        return None
    return json.loads(str(func.attrs[OP_ATTR]))


def pool_out(h, w, kernel, stride, pad):
    return ((h + pad[0] + pad[2] - kernel[0]) // stride[0] + 1, (w + pad[1] + pad[3] - kernel[1]) // stride[1] + 1)


NO_POOL = ((1, 1), (1, 1), (0, 0, 0, 0))


def pooled_output(g: ConvGeom, pool=None):
    """(window, stride, padding, rows, columns) of a conv's output with `pool` fused (a
    1x1 window of stride 1 and the conv's own output size without one)."""
    kernel, stride, pad = pool if pool is not None else NO_POOL
    rows, cols = pool_out(g.ho, g.wo, kernel, stride, pad) if pool is not None else (g.ho, g.wo)
    return kernel, stride, pad, rows, cols


def or_pool(n, h, w, c, kernel, stride, pad):
    """Max-pool of a packed {0,1} map = bitwise OR over the window (padding = 0 bits; a
    window always holds at least one real element). Params (X, Y) uint32."""
    X = te.placeholder((n, h, w, n_words(c)), "uint32", name="X")
    return te.create_prim_func([X, or_pool_stage(X, n, h, w, c, kernel, stride, pad)])


def or_pool_stage(X, n, h, w, c, kernel, stride, pad):
    ho, wo = pool_out(h, w, kernel, stride, pad)

    def f(i, y, x, j):
        v = _u32(0)
        for r in range(kernel[0]):
            for s in range(kernel[1]):
                ih, iw = y * stride[0] + r - pad[0], x * stride[1] + s - pad[1]
                inb = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
                v = v | tirx.Select(inb, X[i, _clamp(ih, h), _clamp(iw, w), j], _u32(0))
        return v

    return te.compute((n, ho, wo, n_words(c)), f, name="pooled")


def global_or(n, h, w, c):
    """Global max-pool of a packed map: OR over all positions. Params (X, Y uint32 [N,1,1,Wc])."""
    X = te.placeholder((n, h, w, n_words(c)), "uint32", name="X")
    bor = te.comm_reducer(lambda a, b: a | b, lambda dt: tirx.const(0, dt), name="bit_or")
    y = te.reduce_axis((0, h), "y")
    x = te.reduce_axis((0, w), "x")
    Y = te.compute((n, 1, 1, n_words(c)), lambda i, a, b, j: bor(X[i, y, x, j], axis=[y, x]), name="gor")
    return te.create_prim_func([X, Y])


def binary_dense(n, k, o, weights: str, signed_input: bool = False):
    """Dense layer on a packed binary vector X uint32 [N, 1, 1, ceil(K/32)].
    weights "float": W float32 [K, O] -> Y = sum_k x_k W[k, :] (select-add);
    weights "int8": W int8 [K, O], scale float32 [O] -> Y = scale * sum_k x_k W[k, :] (int32 acc).
    signed_input: x_k in {-1,+1} (bit 1 = +1). Y float32 [N, O]."""
    X = te.placeholder((n, 1, 1, n_words(k)), "uint32", name="X")
    kk = te.reduce_axis((0, k), "kk")
    if weights == "float":
        W = te.placeholder((k, o), "float32", name="W")
        zero = tirx.const(0.0, "float32")

        def f(i, j):
            on = _bit(X[i, 0, 0, kk // WORD], kk % WORD) == _u32(1)
            wv = W[kk, j]
            return te.sum(tirx.Select(on, wv, -wv if signed_input else zero), axis=kk)

        Y = te.compute((n, o), f, name="y")
        return te.create_prim_func([X, W, Y])
    W = te.placeholder((k, o), "int8", name="W")
    scale = te.placeholder((o,), "float32", name="scale")

    def g_(i, j):
        on = _bit(X[i, 0, 0, kk // WORD], kk % WORD) == _u32(1)
        wv = W[kk, j].astype("int32")
        return te.sum(tirx.Select(on, wv, -wv if signed_input else 0), axis=kk)

    acc = te.compute((n, o), g_, name="acc")
    Y = te.compute((n, o), lambda i, j: acc[i, j].astype("float32") * scale[j], name="y")
    return te.create_prim_func([X, W, scale, Y])


def binary_conv1x1_float(n, c, h, w, o, signed_input: bool = False):
    """A full-precision 1x1 conv (stride 1, no padding, one group) on a packed map:
    Y[n, o, y, x] = sum_c x_c W[o, c] with x_c in {0,1} ({-1,+1} when signed_input), a
    select-add per input bit, so the map is never unpacked to float.
    Params (X uint32 [N,H,W,ceil(C/32)], W float32 [O, C], Y float32 [N,O,H,W])."""
    X = te.placeholder((n, h, w, n_words(c)), "uint32", name="X")
    W = te.placeholder((o, c), "float32", name="W")
    kk = te.reduce_axis((0, c), "kk")
    zero = tirx.const(0.0, "float32")

    def f(i, j, y, x):
        on = _bit(X[i, y, x, kk // WORD], kk % WORD) == _u32(1)
        wv = W[j, kk]
        return te.sum(tirx.Select(on, wv, -wv if signed_input else zero), axis=kk)

    return describe(te.create_prim_func([X, W, te.compute((n, o, h, w), f, name="y")]), "binary_conv1x1_float",
                    n=n, c=c, h=h, w=w, o=o, signed_input=signed_input)


def unpack(n, c, h, w, signed: bool = False):
    """Packed map -> float32 NCHW ({0,1}, or {-1,+1} when signed). Params (X, Y)."""
    X = te.placeholder((n, h, w, n_words(c)), "uint32", name="X")

    def f(i, ch, y, x):
        bit = _bit(X[i, y, x, ch // WORD], ch % WORD).astype("float32")
        return bit * 2.0 - 1.0 if signed else bit

    return te.create_prim_func([X, te.compute((n, c, h, w), f, name="unpacked")])


def compact(func):
    """Move each scratch buffer to where it is used and shrink it to the region a loop
    iteration touches (the first steps of TVM's own TIR lowering), so the per-pixel
    accumulators of a scheduled kernel are a few registers, not a whole feature map, in
    the IR that the memory plan measures."""
    from tvm import s_tir

    seq = tvm.transform.Sequential([s_tir.transform.LowerInitBlock(),
                                    s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                                    s_tir.transform.ConvertBlocksToOpaque(),
                                    s_tir.transform.CompactBufferAllocation()])
    return seq(tvm.IRModule({"main": func}))["main"]


FALLBACK_ATTR = "nrqc.schedule_fallback"  # set by pixelwise.unscheduled when a kernel's schedule failed
# The unscheduled (TE) form of a hand-scheduled kernel: what `nrqc tune` searches over and
# a tuning record is keyed by (the scheduled, compacted form has unnamed opaque blocks that
# MetaSchedule cannot take). Kept as IR JSON text: TVMScript cannot print a PrimFunc attribute.
WORKLOAD_ATTR = "nrqc.workload"


HAND_WRITTEN_ATTR = "nrqc.hand_written"  # a kernel written in TIR directly: no TE form to tune


def drop_param(func, index: int):
    """The PrimFunc without parameter `index` (unused by its body): hand-written kernels'
    float epilogue has no threshold parameter."""
    params = [p for i, p in enumerate(func.params) if i != index]
    return tirx.PrimFunc(params, func.body, func.ret_type, func.attrs)


def hand_written(func):
    return func.with_attr(HAND_WRITTEN_ATTR, True)


def is_hand_written(func) -> bool:
    return func.attrs is not None and HAND_WRITTEN_ATTR in func.attrs


def with_workload(scheduled, workload):
    """`scheduled` remembering the unscheduled PrimFunc it was made from."""
    if workload.attrs is not None and WORKLOAD_ATTR in workload.attrs:
        workload = workload.without_attr(WORKLOAD_ATTR)
    if workload.attrs is not None and OP_ATTR in workload.attrs:  # tuning keys stay as they were
        workload = workload.without_attr(OP_ATTR)
    return scheduled.with_attr(WORKLOAD_ATTR, tvm.ir.save_json(workload))


def kernel_workload(func):
    """The unscheduled form of an nrqc kernel (None for other PrimFuncs)."""
    if func.attrs is None or WORKLOAD_ATTR not in func.attrs:
        return None
    return tvm.ir.load_json(str(func.attrs[WORKLOAD_ATTR]))


def as_kernel(func, name: str, target=None, notes: list | None = None):
    """Attributes a hand-made PrimFunc needs inside a Relax module (opaque: FuseTIR leaves it).
    A schedule that failed (the fallback attribute of pixelwise.unscheduled) becomes a line in `notes`."""
    reason = func.attrs.get(FALLBACK_ATTR) if func.attrs is not None else None
    if reason is not None:
        func = func.without_attr(FALLBACK_ATTR)
        if notes is not None:
            notes.append(f"kernel {name}: {reason}; it runs as unscheduled loops (slow)")
    if not is_hand_written(func):  # hand-written: final and compact as written (`nrqc tune` skips it)
        if kernel_workload(func) is None:  # built unscheduled (TE): its own workload
            func = with_workload(func, func)
        func = compact(func)
    if target is not None and str(target.tvm_target.get("kind")) == "c":
        if kernel_workload(func) is not None:  # never tuned: C kernels run on boards without a runner
            func = func.without_attr(WORKLOAD_ATTR)
        # block-free loops: later passes that re-schedule legalized kernels (the
        # Cortex-M memory pass) find no blocks to touch in a kernel that is already final
        from tvm import s_tir

        func = s_tir.transform.LowerOpaqueBlock()(tvm.IRModule({"main": func}))["main"]
        root = s_tir.SBlock([], [], [], "root", func.body)
        func = func.with_body(s_tir.SBlockRealize([], True, root))
    # tirx.is_scheduled: nrqc.targets.kernels.build already scheduled it (shipped rules skip it)
    return func.with_attrs({"global_symbol": name, "op_pattern": 8, "tirx.noalias": True, "tirx.is_scheduled": True})


def pack_map(n, c, h, w):
    """A float {0,1} / {-1,+1} NCHW map (computed in float by a layer nrqc could not
    convert) -> packed words (bit = value > 0). Params (X float32, Y uint32)."""
    X = te.placeholder((n, c, h, w), "float32", name="X")
    Y = pack_bits(lambda i, y, x, ch: X[i, ch, y, x] > tirx.const(0.0, "float32"), n, h, w, c)
    return te.create_prim_func([X, Y])
