"""Models with an int8-input first layer for the pass tests, written with onnx.helper (node
names removed afterwards, as foreign writers do): x -> QuantizeLinear(s_in, zp) ->
DequantizeLinear -> Conv (int8 per-channel weights, bias) -> Greater(T) -> Cast [-> MaxPool
-> an int8 binary conv -> Greater -> Cast], or the conv output itself (no head). Thresholds
sit half-way between two accumulator levels, so onnxruntime's float conv cannot land on
the other side by rounding."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto

from tests import binary_models as bm


def int8_first_layer(path: Path, x_shape=(1, 1, 12, 13), c_out=13, k=3, *, stride=1, dilation=1, pad=1,
                     q_dtype="int8", zp=0, s_in=0.05, head=True, pool=False, next_conv=0, seed=0,
                     scale="channel") -> Path:
    g = bm.G(seed)
    rng = g.rng
    dims = len(x_shape) - 2
    c_in = x_shape[1]
    zdt = np.int8 if q_dtype == "int8" else np.uint8
    s, z = g.const(np.float32(s_in), "s_in"), g.const(zdt(zp), "z_in")
    xd = g.op("DequantizeLinear", [g.op("QuantizeLinear", ["x", s, z], "xq"), s, z], "xd")
    wq = rng.integers(-127, 128, (c_out, c_in) + (k,) * dims).astype(np.int8)
    s_w = (rng.uniform(0.002, 0.02, c_out) if scale == "channel" else np.full(c_out, 0.01)).astype(np.float32)
    w = g.op("DequantizeLinear", [g.const(wq, "wq"), g.const(s_w if scale == "channel" else s_w[0], "sw"),
                                  g.const(np.zeros(c_out, np.int8) if scale == "channel" else np.int8(0), "zw")],
             "w", **({"axis": 0} if scale == "channel" else {}))
    b = (rng.standard_normal(c_out) * 0.05).astype(np.float32)
    y = g.op("Conv", [xd, w, g.const(b, "b")], "conv", kernel_shape=[k] * dims, pads=[pad] * (2 * dims),
             strides=[stride] * dims, dilations=[dilation] * dims)
    if not head:
        return _save(g, x_shape, y, path)
    # thresholds at half-integer accumulator levels near the typical |acc| of the data
    acc_t = np.round(rng.normal(0, 15.0 * np.sqrt(c_in * k ** dims) * 20, c_out)) + 0.5
    t = (b.astype(np.float64) + acc_t * np.float64(np.float32(s_in)) * s_w.astype(np.float64)).astype(np.float32)
    x = g.op("Cast", [g.op("Greater", [y, g.const(t.reshape((-1,) + (1,) * dims), "t")], "cmp")], "bits",
             to=TensorProto.FLOAT)
    if pool:
        x = g.op("MaxPool", [x], "maxpool", kernel_shape=[2] * dims, strides=[2] * dims)
    if next_conv:
        x = bm.binary_conv(g, x, c_out, next_conv, dims=dims, p_in=0.4)
    return _save(g, x_shape, x, path)


def _save(g, x_shape, out, path: Path) -> Path:
    import onnxruntime as ort

    model = bm.save_untyped(g, x_shape, out)
    shape = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.zeros(x_shape, np.float32)})[0].shape
    named = bm.save(g, x_shape, out, shape, Path(str(path) + ".named.onnx"))
    return bm.renamed(named, path, names="empty")
