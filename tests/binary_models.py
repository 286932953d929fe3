"""BAM-contract ONNX models built with onnx.helper for the binary-pass tests and the benchmark.

Every variant of docs/bam-onnx-contract.md can be produced: Greater / GreaterOrEqual / Sign
activations, thresholds as initializers or folded from a conv bias / BatchNormalization
(negative scales included), int8 weights as DequantizeLinear(int8) (per-tensor or
per-channel) or QuantizeLinear->DequantizeLinear of float weights, +-1 weights with a scale,
Conv1d/Conv2d with stride/dilation/padding/groups, MatMul and Gemm (transB 0 or 1) heads,
Less/LessOrEqual and bare Sign(y) activations, MaxPool and GlobalMaxPool/ReduceMax.

Thresholds are chosen analytically so that the binary maps are roughly 15-50 % ones, and
for integer-accumulator layers they sit half-way between two representable accumulator
values, so float rounding in onnxruntime cannot flip a comparison.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class G:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c"):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op_type, inputs, base=None, **attrs):
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _half_threshold(acc_mean, acc_std, z):
    """Integer-accumulator threshold at a half-integer near mean + z*std."""
    return np.floor(acc_mean + z * acc_std) + 0.5


def binary_conv(g: G, x, c_in, c_out, k=3, *, dims=2, stride=1, dilation=1, pad=None, groups=1, p_in=0.3,
                z=1.0, act="greater", weights="int8", scale="channel", fold="threshold", neg_channels=0,
                input_sign=False):
    """A conv layer whose input is a binary map, followed by its binary activation.

    weights: "int8" (DequantizeLinear of int8), "qdq" (float through Q->DQ), "binary" (+-s).
    fold: "threshold" (Greater(y, T) with T initializer), "bias" (conv bias, Greater(y, 0)),
          "bn" (BatchNormalization then Greater(y, 0); `neg_channels` channels get gamma < 0).
    act: "greater" (Greater(y, T)), "greaterequal", "less" (Less(T, y), the same map as
         Greater), "lessequal" (LessOrEqual(T, y)), "less_below" (Less(y, T): 1 below the
         threshold), "sign" (Sign(y - T): +-1 maps), "sign_bare" (Sign(y), with fold "bias"/"bn"),
         or one of PM1_AFFINE_FORMS (+-1 maps written as 2*Cast(Greater(y, T)) - 1) / NOT_PM1_FORMS.
    """
    rng = g.rng
    ks = [k] * dims
    pad = (k // 2) * dilation if pad is None else pad
    cg = c_in // groups
    wshape = (c_out, cg, *ks)
    fan = cg * k ** dims
    if weights == "binary":
        wq = rng.choice([-1, 1], size=wshape).astype(np.int8)
    else:
        wq = rng.integers(-127, 128, size=wshape).astype(np.int8)
    s = (rng.uniform(0.002, 0.02, size=c_out) if scale == "channel" else np.full(c_out, 0.01)).astype(np.float32)
    if weights == "int8":
        w = g.op("DequantizeLinear", [g.const(wq, "wq"), g.const(s if scale == "channel" else np.float32(s[0]), "ws"),
                                      g.const(np.zeros(c_out, np.int8) if scale == "channel" else np.int8(0), "wz")],
                 "w_deq", **({"axis": 0} if scale == "channel" else {}))
    elif weights == "qdq":
        wf = (wq.astype(np.float32) * s.reshape(-1, *[1] * (dims + 1))).astype(np.float32)
        sc, zp = g.const(s, "ws"), g.const(np.zeros(c_out, np.int8), "wz")
        w = g.op("DequantizeLinear", [g.op("QuantizeLinear", [g.const(wf, "wf"), sc, zp], "wquant", axis=0), sc, zp],
                 "w_deq", axis=0)
    else:  # binary +-1 weights with a per-channel scale stored as float
        w = g.const((wq.astype(np.float32) * s.reshape(-1, *[1] * (dims + 1))).astype(np.float32), "wbin")
    # accumulator statistics for the threshold (input mean p_in, or +-1 inputs)
    wsum = wq.reshape(c_out, -1).astype(np.float64)
    if input_sign:
        mean, std = np.zeros(c_out), np.sqrt((wsum ** 2).sum(1))
    else:
        mean, std = p_in * wsum.sum(1), np.sqrt(p_in * (1 - p_in) * (wsum ** 2).sum(1))
    if weights == "binary" and input_sign:
        # XNOR sums have the parity of the fan-in: thresholds at parity-safe half-odd values
        t_acc = np.floor(mean + z * std) + 0.5
    else:
        t_acc = _half_threshold(mean, std, z)
    t_acc = t_acc.astype(np.float64)
    t_val = (t_acc * s).astype(np.float32)  # threshold on y = s * acc
    attrs = dict(kernel_shape=ks, strides=[stride] * dims, dilations=[dilation] * dims, pads=[pad] * (2 * dims),
                 group=groups)
    shape_c = (c_out,) + (1,) * dims
    if fold == "threshold":
        y = g.op("Conv", [x, w], "conv", **attrs)
        thr = g.const(t_val.reshape(shape_c), "thr")
    elif fold == "bias":
        y = g.op("Conv", [x, w, g.const(-t_val, "bias")], "conv", **attrs)
        thr = g.const(np.float32(0.0), "zero")
    elif fold == "bn":
        y = g.op("Conv", [x, w], "conv", **attrs)
        gamma = rng.uniform(0.5, 2.0, c_out).astype(np.float32)
        gamma[:neg_channels] *= -1
        var = np.full(c_out, 1.0 - 1e-5, np.float32)  # sqrt(var + eps) == 1 exactly
        mean_bn = np.zeros(c_out, np.float32)
        # gamma * y + beta > 0  <=>  y > t (gamma > 0)  or  y < t (gamma < 0)
        beta = (-gamma * t_val).astype(np.float32)
        y = g.op("BatchNormalization", [y, g.const(gamma, "gamma"), g.const(beta, "beta"), g.const(mean_bn, "mean"),
                                        g.const(var, "var")], "bn")
        thr = g.const(np.float32(0.0), "zero")
    else:
        raise ValueError(fold)
    return _head(g, y, thr, act, fold)


# ±1 activations written as an affine map of a {0,1} Heaviside map, 2*Cast(Greater(y, T)) - 1
# (what a PyTorch `2 * (y > t).float() - 1` exports): name -> how the Mul/Sub/Add are written
PM1_AFFINE_FORMS = {
    "pm1_mul_sub": "Sub(Mul(b, 2), 1)",
    "pm1_mul_sub_left": "Sub(Mul(2, b), 1)",
    "pm1_mul_add": "Add(Mul(b, 2), -1)",
    "pm1_add_left": "Add(-1, Mul(2, b))",
    "pm1_one_minus": "Sub(1, Mul(b, 2))",  # 1 - 2b: +1 where the comparison is false
}
# an affine map of a Heaviside map that is NOT a {-1,+1} map (nrqc must not read it as bits)
NOT_PM1_FORMS = {"affine_3b_minus_1": "Sub(Mul(b, 3), 1)"}


def pm1_affine(g: G, b, form):
    """2*b - 1 of a {0,1} map b in one of PM1_AFFINE_FORMS."""
    two, one, m_one = np.float32(2.0), np.float32(1.0), np.float32(-1.0)
    if form == "pm1_mul_sub":
        return g.op("Sub", [g.op("Mul", [b, g.const(two, "two")], "mul"), g.const(one, "one")], "sub")
    if form == "pm1_mul_sub_left":
        return g.op("Sub", [g.op("Mul", [g.const(two, "two"), b], "mul"), g.const(one, "one")], "sub")
    if form == "pm1_mul_add":
        return g.op("Add", [g.op("Mul", [b, g.const(two, "two")], "mul"), g.const(m_one, "m_one")], "add")
    if form == "pm1_add_left":
        return g.op("Add", [g.const(m_one, "m_one"), g.op("Mul", [g.const(two, "two"), b], "mul")], "add")
    if form == "pm1_one_minus":
        return g.op("Sub", [g.const(one, "one"), g.op("Mul", [b, g.const(two, "two")], "mul")], "sub")
    if form == "affine_3b_minus_1":
        return g.op("Sub", [g.op("Mul", [b, g.const(np.float32(3.0), "three")], "mul"), g.const(one, "one")], "sub")
    raise ValueError(form)


def _head(g: G, y, thr, act, fold):
    """The binary activation of `y` against the threshold `thr` (see binary_conv's `act`)."""
    if act in PM1_AFFINE_FORMS or act in NOT_PM1_FORMS:  # 2*Cast(Greater(y, T)) - 1 (or 3b - 1)
        return pm1_affine(g, _head(g, y, thr, "greater", fold), act)
    if act == "sign":
        return g.op("Sign", [g.op("Sub", [y, thr], "sub")], "sign")
    if act == "sign_bare":  # Sign(y): the threshold must already be folded into y
        if fold == "threshold":
            raise ValueError("act='sign_bare' needs fold='bias' or 'bn' (Sign(y) compares with 0)")
        return g.op("Sign", [y], "sign")
    cmp, args = {"greater": ("Greater", [y, thr]), "greaterequal": ("GreaterOrEqual", [y, thr]),
                 "less": ("Less", [thr, y]), "lessequal": ("LessOrEqual", [thr, y]),
                 "less_below": ("Less", [y, thr])}[act]
    return g.op("Cast", [g.op(cmp, args, "cmp")], "binary", to=TensorProto.FLOAT)


def first_conv(g: G, x, c_in, c_out, k=3, dims=2, act="greater"):
    """Float conv on the (log-mel) input with a Heaviside output, T chosen for ~30 % ones
    (act: "greater", "sign", or any binary_conv activation with a threshold)."""
    w = (g.rng.standard_normal((c_out, c_in, *[k] * dims)) / np.sqrt(c_in * k ** dims)).astype(np.float32)
    y = g.op("Conv", [x, g.const(w, "w0")], "conv", kernel_shape=[k] * dims, pads=[k // 2] * (2 * dims))
    thr = g.const(np.full((c_out,) + (1,) * dims, 0.5, np.float32), "thr")
    if act == "sign":
        return g.op("Sign", [g.op("Sub", [y, thr], "sub")], "sign")
    return _head(g, y, thr, act, "threshold")


def dense(g: G, x, n_in, n_out, *, op="MatMul", relu=True, weights="float", trans_b=False, bias=True):
    """A dense layer: MatMul [in, out] (+ Add) or Gemm (weight [in, out], or [out, in] with
    transB=1 as PyTorch's nn.Linear exports it).

    weights: "float", "int8" (DequantizeLinear of int8, per-output-channel scale on the
    weight's output axis) or "binary" (a float initializer holding +-s_c per output unit)."""
    rng = g.rng
    trans_b = bool(trans_b) and op == "Gemm"
    wshape, out_axis = ((n_out, n_in), 0) if trans_b else ((n_in, n_out), 1)
    if weights == "int8":
        wq = rng.integers(-127, 128, size=wshape).astype(np.int8)
        s = rng.uniform(0.002, 0.02, n_out).astype(np.float32)
        w = g.op("DequantizeLinear", [g.const(wq, "dq"), g.const(s, "ds"), g.const(np.zeros(n_out, np.int8), "dz")],
                 "dw_deq", axis=out_axis)
    elif weights == "binary":
        s = rng.uniform(0.01, 0.1, n_out).astype(np.float32)
        sign = rng.choice([-1.0, 1.0], size=wshape).astype(np.float32)
        w = g.const((sign * (s[:, None] if trans_b else s[None, :])).astype(np.float32), "dwbin")
    else:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        w = g.const(np.ascontiguousarray(w.T) if trans_b else w, "dw")
    b = g.const((rng.standard_normal(n_out) * 0.1).astype(np.float32), "db") if bias else None
    if op == "Gemm":
        y = g.op("Gemm", [x, w] + ([b] if bias else []), "gemm", **({"transB": 1} if trans_b else {}))
    else:
        y = g.op("MatMul", [x, w], "matmul")
        y = g.op("Add", [y, b], "add") if bias else y
    return g.op("Relu", [y], "relu") if relu else y


def binary_dense(g: G, x, n_in, n_out, *, op="MatMul", trans_b=False, weights="binary", p_in=0.3, z=0.5,
                 act="greater"):
    """A dense layer fed by a binary {0,1} vector, followed by its own binary activation
    (so it emits packed bits): int8 (DequantizeLinear) or +-s_c weights, MatMul [in, out]
    or Gemm ([out, in] with transB=1), bias folded into the threshold by the exporter
    (Gemm) or a threshold initializer (MatMul). Thresholds sit half-way between two
    accumulator values."""
    rng = g.rng
    wshape = (n_out, n_in) if trans_b else (n_in, n_out)
    if weights == "binary":
        wq = rng.choice([-1, 1], size=wshape).astype(np.int8)
        s = rng.uniform(0.01, 0.1, n_out).astype(np.float32)
    else:
        wq = rng.integers(-127, 128, size=wshape).astype(np.int8)
        s = rng.uniform(0.002, 0.02, n_out).astype(np.float32)
    rows = (wq if trans_b else wq.T).astype(np.float64)  # [out, in]
    scale_b = s[:, None] if trans_b else s[None, :]
    if weights == "binary":
        w = g.const((wq.astype(np.float32) * scale_b).astype(np.float32), "dwbin")
    else:
        w = g.op("DequantizeLinear", [g.const(wq, "dq"), g.const(s, "ds"), g.const(np.zeros(n_out, np.int8), "dz")],
                 "dw_deq", axis=0 if trans_b else 1)
    mean, std = p_in * rows.sum(1), np.sqrt(p_in * (1 - p_in) * (rows ** 2).sum(1))
    t_val = (_half_threshold(mean, std, z) * s).astype(np.float32)
    if op == "Gemm":
        y = g.op("Gemm", [x, w, g.const(-t_val, "db")], "gemm", **({"transB": 1} if trans_b else {}))
        thr = g.const(np.float32(0.0), "zero")
        fold = "bias"
    else:
        y = g.op("MatMul", [x, w], "matmul")
        thr = g.const(t_val, "thr")
        fold = "threshold"
    return _head(g, y, thr, act, fold)


def save(g: G, x_shape, out, y_shape, path: Path) -> Path:
    graph = helper.make_graph(g.nodes, "bam", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(y_shape))], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def bam_model(path: Path, frames=200, bands=64, channels=(32, 32, 32, 64), head=64, seed=0, global_pool="GlobalMaxPool",
              float_model=False, first_act="greater", **conv_kw) -> Path:
    """The BAM paper's speech-quality CNN per the contract (or its float twin with ReLU
    and float weights when float_model=True, the same architecture)."""
    g = G(seed)
    x, c_in = "x", 1
    for i, c in enumerate(channels):
        if float_model:
            w = (g.rng.standard_normal((c, c_in, 3, 3)) / np.sqrt(c_in * 9)).astype(np.float32)
            x = g.op("Relu", [g.op("Conv", [x, g.const(w, "w"), g.const(np.zeros(c, np.float32), "b")], "conv",
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1])], "relu")
        elif i == 0:
            x = first_conv(g, x, c_in, c, act=first_act)
        else:
            x = binary_conv(g, x, c_in, c, p_in=0.45, **conv_kw)
        x = g.op("MaxPool", [x], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
        c_in = c
    if global_pool == "GlobalMaxPool":
        x = g.op("Flatten", [g.op("GlobalMaxPool", [x], "gmp")], "flatten", axis=1)
    else:
        x = g.op("ReduceMax", [x], "reducemax", axes=[2, 3], keepdims=0)
    x = dense(g, x, c_in, head)
    x = dense(g, x, head, head)
    x = dense(g, x, head, 1, relu=False)
    return save(g, (1, 1, frames, bands), x, (1, 1), path)


def chain_model(path: Path, layers: list[dict], x_shape=(1, 1, 12, 13), seed=0, first_act="greater") -> Path:
    """First float conv -> a list of binary layers (dicts of binary_conv kwargs, or
    {"pool": (k, s, pad)}) -> output = the last binary map itself (every bit is compared)."""
    g = G(seed)
    dims = len(x_shape) - 2
    c_in = layers[0].get("c_first", 8) if layers else 8
    x = first_conv(g, "x", x_shape[1], c_in, dims=dims, act=first_act)
    for spec in layers:
        spec = dict(spec)
        spec.pop("c_first", None)
        if "pool" in spec:
            k, s, p = spec["pool"]
            x = g.op("MaxPool", [x], "maxpool", kernel_shape=[k] * dims, strides=[s] * dims, pads=[p] * (2 * dims))
            continue
        c_out = spec.pop("c_out")
        x = binary_conv(g, x, c_in, c_out, dims=dims, **spec)
        c_in = c_out
    import onnxruntime as ort

    tmp = save_untyped(g, x_shape, x)
    sess = ort.InferenceSession(tmp.SerializeToString())
    shape = sess.run(None, {"x": np.zeros(x_shape, np.float32)})[0].shape
    return save(g, x_shape, x, shape, path)


def save_untyped(g: G, x_shape, out):
    graph = helper.make_graph(list(g.nodes), "bam", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], list(g.inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# ---------------------------------------------------------------- one BAM model, many writers
# tests/onnx/test_foreign_writers.py compiles the same small BAM model as written by nrqc's own
# exporter and by foreign writers (onnx.helper without names / with duplicate names,
# torch.onnx.export TorchScript and dynamo, onnxruntime's quantize_static QDQ).

def nrqc_bam_net(frames=24, bands=16, channels=(16, 32, 32), head=16, seed=0, p_in=0.4, z=0.3):
    """A SeqNet (float first conv, int8 binary convs, max-pools, global max, float dense head)
    whose binary layers' thresholds -b sit half-way between two integer accumulator values
    (so onnxruntime's float sums cannot flip a bit). The first conv's threshold is ~0.3 of
    its fan-in's spread."""
    import torch

    from nrqc.training.net import Block, GlobalMaxPool, MaxPool, SeqNet
    from nrqc.training.quant import quantize_int8

    torch.manual_seed(seed)
    layers, c_in = [], 1
    for i, c in enumerate(channels):
        block = Block("conv2d", c_in, c, weight="float" if i == 0 else "int8", act="heaviside")
        with torch.no_grad():
            if i == 0:
                block.layer.bias.fill_(-0.3)
            else:
                q, s = quantize_int8(block.layer.weight, axis=0, scale=block.quant_scale(None))
                rows = q.reshape(c, -1).double()
                acc = np.floor((p_in * rows.sum(1) + z * np.sqrt(p_in * (1 - p_in) * (rows ** 2).sum(1))).numpy()) + 0.5
                block.layer.bias.copy_(torch.from_numpy(-(acc * s.double().numpy())).float())
        layers += [block, MaxPool("conv2d") if i < len(channels) - 1 else GlobalMaxPool()]
        c_in = c
    layers += [Block("linear", c_in, head, act="relu"), Block("linear", head, 1, act="none")]
    net = SeqNet(layers, layout="image", meta={"frames": frames, "bands": bands, "task": "synthetic",
                                                "variant": "bam"})
    return net.eval()


def nrqc_export(net, path: Path) -> Path:
    """The model as `nrqc export` writes it (BAM contract, every node named)."""
    from nrqc.training.onnx_export import to_onnx

    model, _ = to_onnx(net)
    onnx.save(model, str(path))
    return Path(path)


def renamed(src: Path, path: Path, names="empty") -> Path:
    """A copy of an ONNX file with every node name empty (names="empty", as several
    converters write) or all nodes of an op type sharing one name (names="duplicate")."""
    model = onnx.load(str(src))
    for node in model.graph.node:
        node.name = "" if names == "empty" else node.op_type.lower()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def exported_arrays(src: Path) -> list[dict]:
    """Per weighted layer of an nrqc export, in order: kind, float weight or int8 + scale,
    threshold or bias (what a torch module needs to compute the same thing)."""
    model = onnx.load(str(src))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in model.graph.node:
        if n.op_type not in ("Conv", "MatMul"):
            continue
        w = n.input[1]
        entry = {"kind": "conv2d" if n.op_type == "Conv" else "linear"}
        if w in inits:
            entry["w"] = inits[w]
        else:
            dq = producers[w]
            entry["wq"], entry["scale"] = inits[dq.input[0]], inits[dq.input[1]]
        nxt = consumers[n.output[0]][0]
        if nxt.op_type == "Greater":
            entry["threshold"] = inits[nxt.input[1]]
        elif nxt.op_type == "Add":
            entry["bias"] = inits[nxt.input[1]]
            entry["relu"] = any(c.op_type == "Relu" for c in consumers.get(nxt.output[0], []))
        if entry["kind"] == "linear":  # MatMul stores [in, out]; torch's Linear [out, in]
            for k in ("w", "wq"):
                if k in entry:
                    entry[k] = np.ascontiguousarray(entry[k].T)
        out.append(entry)
    return out


def torch_bam_module(arrays: list[dict], weight_quant: str = "fake_quant"):
    """A plain torch module computing the same thing as the nrqc export the arrays come
    from, written as a PyTorch user would: Heaviside as (y > t).float(), int8 weights by
    torch.fake_quantize_per_channel_affine of float parameters (weight_quant="fake_quant")
    or as float parameters holding the dequantized int8 values (weight_quant="none"),
    F.max_pool2d, a global amax, nn.Linear."""
    import torch
    import torch.nn.functional as F

    class BamNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ParameterList()
            self.scales, self.thresholds, self.quant = [], [], []
            self.linears = torch.nn.ModuleList()
            self.relu = []
            for i, a in enumerate(arrays):
                if a["kind"] == "conv2d":
                    if "wq" in a:
                        w = a["wq"].astype(np.float32) * a["scale"].reshape(-1, 1, 1, 1)
                        self.register_buffer(f"s{i}", torch.from_numpy(np.array(a["scale"], np.float32)))
                        self.register_buffer(f"z{i}", torch.zeros(len(a["scale"]), dtype=torch.int32))
                    else:
                        w = a["w"]
                    self.convs.append(torch.nn.Parameter(torch.from_numpy(np.array(w, np.float32))))
                    self.quant.append(("wq" in a) and weight_quant == "fake_quant")
                    self.register_buffer(f"t{i}", torch.from_numpy(np.array(a["threshold"], np.float32)))
                else:
                    lin = torch.nn.Linear(a["w"].shape[1], a["w"].shape[0])
                    with torch.no_grad():
                        lin.weight.copy_(torch.from_numpy(a["w"]))
                        lin.bias.copy_(torch.from_numpy(a["bias"]))
                    self.linears.append(lin)
                    self.relu.append(a.get("relu", False))

        def forward(self, x):
            x = x.unsqueeze(1)
            n = len(self.convs)
            for i, w in enumerate(self.convs):
                if self.quant[i]:
                    w = torch.fake_quantize_per_channel_affine(w, getattr(self, f"s{i}"), getattr(self, f"z{i}"),
                                                               0, -128, 127)
                x = (F.conv2d(x, w, padding=1) > getattr(self, f"t{i}")).float()
                x = F.max_pool2d(x, 2) if i < n - 1 else torch.amax(x, dim=(2, 3))
            for lin, relu in zip(self.linears, self.relu):
                x = lin(x)
                x = torch.relu(x) if relu else x
            return x

    return BamNet().eval()


def torch_export(module, x_shape, path: Path, dynamo: bool) -> Path:
    """torch.onnx.export with the TorchScript exporter (dynamo=False) or torch.export +
    onnxscript (dynamo=True), opset 17, static shapes."""
    import torch

    x = torch.zeros(x_shape)
    kw = {"dynamo": True, "external_data": False} if dynamo else {"dynamo": False}
    torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, **kw)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return Path(path)


def ort_quantize_static(float_path: Path, path: Path, x_shape, n_calib=4, seed=0) -> Path:
    """onnxruntime.quantization.quantize_static, QDQ format, per-channel int8 weights,
    calibrated on a few random inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.data = iter([{"x": rng.standard_normal(x_shape).astype(np.float32)} for _ in range(n_calib)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return Path(path)


def cnn48_model(path: Path, seed: int = 0) -> Path:
    """Issue 18's 48x48 4-layer binary CNN per the contract: 3x3 convs 1->24 (float first layer)
    ->40->56->72 (int8 weights, binary maps), strides 1/2/1/2, global average pool, dense 72->3;
    node names removed (as other writers leave them)."""
    g = G(seed)
    x = first_conv(g, "x", 1, 24)
    c_in = 24
    for c, s in ((40, 2), (56, 1), (72, 2)):
        x = binary_conv(g, x, c_in, c, stride=s, pad=1, p_in=0.3)
        c_in = c
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
    x = dense(g, x, c_in, 3, relu=False)
    named = save(g, (1, 1, 48, 48), x, (1, 3), Path(path).with_suffix(".named.onnx"))
    return renamed(named, path, names="empty")
