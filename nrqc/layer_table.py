"""The per-layer table of the manifest, built from the shape-inferred ONNX graph.

Layers are shown by their ONNX node names (what the user sees in Netron or their
exporter), or, for a node without a name (legal ONNX; several converters write none), by
an op-based name like `Conv_4`. A name is only for display: names may be empty or
repeated, so every entry also records the node's identity in the graph ("onnx_node": its
index in the node list, which valid ONNX keeps in topological order, and its first output
tensor name, unique in valid ONNX), and the passes find a layer's node through that
(`layer_node`), never by its name. MACs are counted as a profiler would. Passes annotate
entries (kernel, bits, why a layer stayed float); the kernel of a layer left to TVM is
resolved after fusion by matching the n-th layer of an op kind with the n-th fused kernel
of that kind.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

# ONNX op -> pattern of the name of the fused TIR kernel TVM generates for it.
_LAYER_OPS = {
    "Conv": r"conv", "ConvTranspose": r"conv", "MatMul": r"matmul|dense", "Gemm": r"matmul|dense",
    "MaxPool": r"max_pool", "AveragePool": r"avg_pool", "GlobalMaxPool": r"(^|_)max\d*($|_(?!pool))",
    "GlobalAveragePool": r"(^|_)mean\d*($|_)", "ReduceMax": r"(^|_)max\d*($|_(?!pool))", "ReduceMean": r"(^|_)mean\d*($|_)",
    "LSTM": r"lstm", "GRU": r"gru", "RNN": r"rnn",
}


_OPTIONAL_FIELDS = frozenset({"strategy", "accumulator", "output", "fused_into"})


@dataclasses.dataclass(eq=False)
class LayerRecord(dict):
    """One layer's entry of the manifest: the fields passes may set, typed.

    Passes set fields (`layer.kernel = ...`); item assignment and `update` are refused, so
    no pass adds a key the manifest schema does not have. The record is also the JSON
    object of its entry (a dict holding exactly today's keys, in today's order, the
    optional ones only once set), so the manifest writer stores it as it is; `to_json()`
    gives a plain dict copy."""

    name: str  # for display only: names may be empty or repeated in valid ONNX
    onnx_node: dict  # the node's identity in the graph: {"index", "output"}
    op: str
    kernel: str | None = None  # "nrqc:<kernel>" or "tvm:<fused kernel>"
    act_bits: int = 32
    weight_bits: int | None = None
    macs: int = 0
    output_shape: list[int] = dataclasses.field(default_factory=list)
    multiplications_replaced: int = 0
    float_reason: str | None = None
    # optional: written only when a pass sets them
    strategy: dict | None = None  # how the kernel was chosen
    accumulator: dict | None = None  # integer accumulator width record
    output: str | None = None  # what the layer emits when it is packed bits
    fused_into: str | None = None  # the layer whose kernel computes this one (a fused pool)

    def __setattr__(self, key, value):
        object.__setattr__(self, key, value)
        if key in _OPTIONAL_FIELDS and value is None:
            dict.pop(self, key, None)
        else:
            dict.__setitem__(self, key, value)

    def _refuse(self, *args, **kwargs):
        raise TypeError("LayerRecord: set a field (layer.<field> = value), not a key")

    __setitem__ = update = setdefault = _refuse

    def __reduce__(self):  # copy/pickle rebuild through the fields (item assignment is refused)
        return _layer_record, ({f.name: getattr(self, f.name) for f in dataclasses.fields(self)},)

    def to_json(self) -> dict:
        return dict(self)


def _layer_record(fields: dict) -> LayerRecord:
    return LayerRecord(**fields)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    out = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    for init in model.graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def layer_macs(node, shapes) -> int:
    op = node.op_type
    out = shapes.get(node.output[0])
    if out is None:
        return 0
    n_out = int(np.prod(out, dtype=np.int64))
    if op == "Conv":
        w = shapes.get(node.input[1])
        if w is None:
            return 0
        # Each output element sums (C_in / groups) * prod(kernel) products.
        return n_out * int(np.prod(w[1:], dtype=np.int64))
    if op == "ConvTranspose":
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if x is None or w is None:
            return 0
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if op == "MatMul":
        a = shapes.get(node.input[0])
        return n_out * (a[-1] if a else 0)
    if op == "Gemm":
        a = shapes.get(node.input[0])
        if a is None:
            return 0
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return n_out * k
    if op in ("LSTM", "GRU", "RNN"):
        x, w, r = (shapes.get(node.input[i]) for i in range(3))
        if x is None or w is None or r is None:
            return 0
        seq, batch = x[0], x[1]
        return seq * batch * (int(np.prod(w[1:])) + int(np.prod(r[1:]))) * w[0]
    return 0


def _weight_bits(model, node, producers, inits) -> int:
    """32 for float weights, 8 for DequantizeLinear(int8) or DequantizeLinear(QuantizeLinear(
    float, int8 zero point)), 1 for +-1 values. Constants may come through Constant/Identity
    nodes (the TorchScript exporter routes shared zero points through Identity)."""
    if len(node.input) < 2:
        return 32
    w = node.input[1]
    prod = producers.get(w)
    if prod is not None and prod.op_type == "DequantizeLinear":
        src = const_value(prod.input[0], inits, producers)
        if src is not None:
            return 8 if src.dtype in (np.int8, np.uint8) else 32
        q = producers.get(prod.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and const_value(q.input[0], inits, producers) is not None:
            zp = const_value(q.input[2], inits, producers) if len(q.input) > 2 and q.input[2] else None
            return 8 if zp is not None and zp.dtype in (np.int8, np.uint8) else 32
        return 32
    arr = const_value(w, inits, producers)
    if arr is not None:
        if node.op_type == "MatMul" or (node.op_type == "Gemm" and not _attr(node, "transB", 0)):
            arr = arr.T  # [in, out] -> one row per output unit
        if arr.ndim > 1 and arr.size // arr.shape[0] > 1:
            # Binary weights: every output channel holds only +-s for one scale s > 0.
            mag = np.abs(arr.reshape(arr.shape[0], -1))
            if np.all(mag > 0) and np.all(mag == mag[:, :1]):
                return 1
    return 32


_CMP_OPS = ("Greater", "GreaterOrEqual", "Less", "LessOrEqual")
# ops whose output is binary when their (first) input is: pooling, global max, reshapes
_BINARY_PRESERVING = ("MaxPool", "GlobalMaxPool", "ReduceMax", "Flatten", "Reshape", "Squeeze", "Unsqueeze")
_AFFINE = ("Add", "Sub", "Mul", "Div")


def const_value(name, inits, producers, depth: int = 8):
    """The value of tensor `name` when it is a constant: an initializer (TensorProto or an
    array), a Constant node's value, or one of those through Identity nodes; else None."""
    import onnx

    for _ in range(depth):
        if name in inits:
            v = inits[name]
            return onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
        p = producers.get(name)
        if p is None:
            return None
        if p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
            return None
        if p.op_type != "Identity":
            return None
        name = p.input[0]
    return None


_const = const_value


def qdq_identity_on_bits(q, dq, inits, producers) -> bool:
    """DequantizeLinear(QuantizeLinear(b)) returns 0 and 1 unchanged (checked in float32 as
    onnxruntime computes it) for every scale/zero point: a Q/DQ pair on a {0,1} map (what
    onnxruntime's quantize_static writes around pooled Heaviside maps) is then exact."""
    if q is None or dq is None or q.op_type != "QuantizeLinear" or dq.op_type != "DequantizeLinear":
        return False
    vals = []
    for n in (q, dq):
        s = const_value(n.input[1], inits, producers)
        z = const_value(n.input[2], inits, producers) if len(n.input) > 2 and n.input[2] else np.zeros((), np.uint8)
        if s is None or z is None:
            return False
        vals.append((np.asarray(s, np.float32), z))
    (s_q, z_q), (s_d, z_d) = vals
    info = np.iinfo(z_q.dtype) if np.issubdtype(z_q.dtype, np.integer) else None
    if info is None:
        return False
    for b in (0.0, 1.0):
        qv = np.clip(np.round(np.float32(b) / s_q) + z_q.astype(np.float64), info.min, info.max)
        back = ((qv - z_d.astype(np.float64)).astype(np.float32) * s_d).astype(np.float32)
        if not np.all(back == np.float32(b)):
            return False
    return True


def _is_pm1_affine_of_heaviside(src, producers, inits, max_ops: int = 4) -> bool:
    """src is a chain of Add/Sub/Mul/Div by constants of a Heaviside map (Cast of a comparison)
    that maps 0 and 1 exactly to -1 and +1 (2*Cast(Greater(y, T)) - 1, or 1 - 2*b)."""
    ops = []
    node = src
    for _ in range(max_ops):
        if node is None or node.op_type not in _AFFINE or len(node.input) != 2:
            return False
        ca, cb = (_const(i, inits, producers) for i in node.input)
        if cb is not None and ca is None:
            ops.append((node.op_type, cb, False))
            nxt = node.input[0]
        elif ca is not None and cb is None and node.op_type != "Div":
            ops.append((node.op_type, ca, True))
            nxt = node.input[1]
        else:
            return False
        prev = producers.get(nxt)
        if prev is not None and prev.op_type == "Cast":
            inner = producers.get(prev.input[0])
            if inner is None or inner.op_type not in _CMP_OPS:
                return False
            ends = []
            for x in (0.0, 1.0):
                y = np.float32(x)
                for op, c, left in reversed(ops):  # innermost op first
                    c = np.asarray(c, np.float32)
                    y = {"Add": lambda: y + c, "Mul": lambda: y * c, "Div": lambda: y / c,
                         "Sub": lambda: c - y if left else y - c}[op]()
                ends.append(np.asarray(y))
            return bool((np.all(ends[0] == -1) and np.all(ends[1] == 1)) or
                        (np.all(ends[0] == 1) and np.all(ends[1] == -1)))
        node = prev
    return False


def _act_bits(node, producers, inits=None) -> int:
    """1 when the layer's input is a binary map, else 32: a Heaviside map (Cast of a
    comparison), a Sign, or 2*Heaviside - 1, possibly through max-pools, a global max and
    reshapes (a dense layer on the globally max-pooled vector reads bits too)."""
    inits = inits or {}
    src = producers.get(node.input[0])
    for _ in range(16):
        if src is not None and src.op_type == "DequantizeLinear":
            q = producers.get(src.input[0])
            if qdq_identity_on_bits(q, src, inits, producers):
                src = producers.get(q.input[0])
                continue
        if src is None or src.op_type not in _BINARY_PRESERVING:
            break
        src = producers.get(src.input[0])
    if src is not None and src.op_type == "Cast":
        inner = producers.get(src.input[0])
        if inner is not None and inner.op_type in _CMP_OPS:
            return 1
    if src is not None and src.op_type == "Sign":
        return 1
    if src is not None and _is_pm1_affine_of_heaviside(src, producers, inits):
        return 1
    return 32


def display_names(model) -> list[str]:
    """Per node of the graph: its name, an op-based name (`Conv_4`, the node's index) when
    it has none, and the name with its output tensor (`conv [y3]`) when several nodes share
    it, so every layer row in a report is distinct."""
    nodes = list(model.graph.node)
    base = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
    count: dict[str, int] = {}
    for b in base:
        count[b] = count.get(b, 0) + 1
    return [b if count[b] == 1 else f"{b} [{n.output[0]}]" for b, n in zip(base, nodes)]


def layer_node(model, layer: LayerRecord | None):
    """The ONNX node a layer entry stands for, found by its graph identity (index and
    output tensor), never by its display name; None if the entry is not from this graph."""
    ident = layer.onnx_node if layer is not None else None
    if model is None or not ident:
        return None
    nodes = model.graph.node
    i = ident.get("index", -1)
    if 0 <= i < len(nodes) and nodes[i].output and nodes[i].output[0] == ident.get("output"):
        return nodes[i]
    return next((n for n in nodes if n.output and n.output[0] == ident.get("output")), None)


def build_layer_table(model) -> list[LayerRecord]:
    shapes = _shapes(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    names = display_names(model)
    layers = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in _LAYER_OPS:
            continue
        weighted = node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN")
        # kernel, multiplications_replaced, float_reason: filled by passes that rewrite the
        # layer; otherwise by resolve_tvm_kernels (TVM's float kernel)
        layers.append(LayerRecord(
            name=names[i],
            onnx_node={"index": i, "output": node.output[0]},
            op=node.op_type,
            act_bits=_act_bits(node, producers, inits),
            weight_bits=_weight_bits(model, node, producers, inits) if weighted else None,
            macs=layer_macs(node, shapes),
            output_shape=list(shapes.get(node.output[0], ())),
        ))
    return layers


def resolve_tvm_kernels(layers: list[LayerRecord], kernels_in_order: list[str]) -> None:
    """Name the fused TVM kernel of every layer that no nrqc pass claimed."""
    used: dict[str, int] = {}
    for layer in layers:
        if layer.kernel is not None:
            continue
        token = _LAYER_OPS[layer.op]
        seen = used.get(token, 0)
        # nrqc's own kernels (nrqc_*) are claimed by the passes that emit them
        matches = [k for k in kernels_in_order if re.search(token, k) and not k.startswith("nrqc_")]
        layer.kernel = f"tvm:{matches[seen]}" if seen < len(matches) else "tvm:fused"
        used[token] = seen + 1
        if layer.float_reason is None and layer.weight_bits is not None:
            layer.float_reason = ("float model layer (no binary activation input)" if layer.act_bits == 32
                                     else "binary input, but no nrqc pass converted this layer")
