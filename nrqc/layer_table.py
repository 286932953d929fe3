"""The per-layer table of the manifest, built from the shape-inferred ONNX graph.

Layers are named by their ONNX node names (what the user sees in Netron or their
exporter), with MACs counted as a profiler would. Passes annotate entries (kernel,
bits, why a layer stayed float); the kernel of a layer left to TVM is resolved after
fusion by matching the n-th layer of an op kind with the n-th fused kernel of that kind.
"""
from __future__ import annotations

import re

import numpy as np

# ONNX op -> pattern of the name of the fused TIR kernel TVM generates for it.
_LAYER_OPS = {
    "Conv": r"conv", "ConvTranspose": r"conv", "MatMul": r"matmul|dense", "Gemm": r"matmul|dense",
    "MaxPool": r"max_pool", "AveragePool": r"avg_pool", "GlobalMaxPool": r"(^|_)max\d*($|_(?!pool))",
    "GlobalAveragePool": r"(^|_)mean\d*($|_)", "ReduceMax": r"(^|_)max\d*($|_(?!pool))", "ReduceMean": r"(^|_)mean\d*($|_)",
    "LSTM": r"lstm", "GRU": r"gru",
}


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
    if op in ("LSTM", "GRU"):
        x, w, r = (shapes.get(node.input[i]) for i in range(3))
        if x is None or w is None or r is None:
            return 0
        seq, batch = x[0], x[1]
        return seq * batch * (int(np.prod(w[1:])) + int(np.prod(r[1:]))) * w[0]
    return 0


def _weight_bits(model, node, producers, inits) -> int:
    """32 for float weights, 8 for DequantizeLinear(int8), 1 for +-1 values."""
    if len(node.input) < 2:
        return 32
    w = node.input[1]
    prod = producers.get(w)
    if prod is not None and prod.op_type == "DequantizeLinear" and prod.input[0] in inits:
        return 8 if inits[prod.input[0]].data_type in (2, 3) else 32
    if w in inits:
        import onnx.numpy_helper as nh

        arr = nh.to_array(inits[w])
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


def _const(name, inits, producers):
    if name in inits:
        import onnx.numpy_helper as nh

        return nh.to_array(inits[name])
    p = producers.get(name)
    if p is not None and p.op_type == "Constant":
        import onnx

        for a in p.attribute:
            if a.name == "value":
                return onnx.numpy_helper.to_array(a.t)
    return None


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


def build_layer_table(model) -> list[dict]:
    shapes = _shapes(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    layers = []
    for i, node in enumerate(model.graph.node):
        if node.op_type not in _LAYER_OPS:
            continue
        weighted = node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU")
        layers.append({
            "name": node.name or f"{node.op_type}_{i}",
            "op": node.op_type,
            "kernel": None,
            "act_bits": _act_bits(node, producers, inits),
            "weight_bits": _weight_bits(model, node, producers, inits) if weighted else None,
            "macs": layer_macs(node, shapes),
            "output_shape": list(shapes.get(node.output[0], ())),
            # Filled by passes that rewrite the layer; otherwise TVM's float kernel.
            "multiplications_replaced": 0,
            "float_reason": None,
        })
    return layers


def resolve_tvm_kernels(layers: list[dict], kernels_in_order: list[str]) -> None:
    """Name the fused TVM kernel of every layer that no nrqc pass claimed."""
    used: dict[str, int] = {}
    for layer in layers:
        if layer["kernel"] is not None:
            continue
        token = _LAYER_OPS[layer["op"]]
        seen = used.get(token, 0)
        # nrqc's own kernels (nrqc_*) are claimed by the passes that emit them
        matches = [k for k in kernels_in_order if re.search(token, k) and not k.startswith("nrqc_")]
        layer["kernel"] = f"tvm:{matches[seen]}" if seen < len(matches) else "tvm:fused"
        used[token] = seen + 1
        if layer["float_reason"] is None and layer["weight_bits"] is not None:
            layer["float_reason"] = ("float model layer (no binary activation input)" if layer["act_bits"] == 32
                                     else "binary input, but no nrqc pass converted this layer")
