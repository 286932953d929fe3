"""Pass 1: find binary-activation layers in the imported Relax module.

One job: read main's dataflow block and write a plan (``ctx.binary.plan``)
with one entry per weighted layer (conv1d/conv2d/matmul with a constant weight) that
either ends in a Heaviside/Sign head or consumes a binary map. Nothing is rewritten here.

Recognized heads (after DecomposeOpsForInference + FoldConstant):
  astype(greater|greater_equal|less|less_equal(pre, T), float)   -> {0,1} map
  sign(pre - T) / sign(pre)                                      -> {-1,+1} map
  2 * astype(cmp(pre, T), float) - 1  (any chain of constant add/subtract/multiply/divide
  after the astype that maps 0 -> -1 and 1 -> +1 exactly, e.g. multiply(2) + subtract(1)
  or add(-1), constants on either side)                          -> {-1,+1} map
  (a chain mapping 0 -> +1, 1 -> -1, e.g. 1 - 2b, is the negated comparison's {-1,+1} map)
where ``pre`` is the layer output through a chain of per-channel constant affine ops
(bias add, folded BatchNorm multiply/add/subtract/divide) and T a constant.
Weights (from the layer's ONNX node, checked against the folded Relax constant):
DequantizeLinear of an int8 initializer (per-tensor/per-channel scale, zero point 0),
QuantizeLinear -> DequantizeLinear of a float initializer, or +-s per output channel.
"""
from __future__ import annotations

import numpy as np

from nrqc.passes.binary_plan import BinaryState, Head, LayerPlan

CORE_OPS = {"relax.nn.conv2d": "conv2d", "relax.nn.conv1d": "conv1d", "relax.matmul": "matmul"}
AFFINE_OPS = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide"}
CMP_OPS = {"relax.greater": (False, True), "relax.greater_equal": (False, False),
           "relax.less": (True, True), "relax.less_equal": (True, False)}  # (flipped, strict)


def op_name(v) -> str | None:
    from tvm import relax

    return v.op.name if isinstance(v, relax.Call) and hasattr(v.op, "name") else None


def const_value(e):
    import tvm

    if isinstance(e, tvm.ir.GenericConst) and hasattr(e.value, "numpy"):
        return e.value.numpy()
    return None


def main_bindings(mod):
    from tvm import relax

    func = mod["main"]
    blocks = func.body.blocks
    if len(blocks) != 1 or not isinstance(blocks[0], relax.DataflowBlock):
        return None
    return list(blocks[0].bindings)


def use_counts(bindings, body) -> dict:
    from tvm import relax

    counts: dict = {}

    def visit(e):
        if isinstance(e, relax.Var):
            counts[e] = counts.get(e, 0) + 1

    for b in bindings:
        relax.analysis.post_order_visit(b.value, visit)
    relax.analysis.post_order_visit(body, visit)
    return counts


def _shape(e) -> tuple[int, ...]:
    return tuple(int(d) for d in e.ty.shape)


def parse_head(value, defs) -> Head | None:
    """A Heaviside/Sign head binding value -> Head (threshold still on `pre`)."""
    from tvm import relax

    name = op_name(value)
    if name == "relax.astype" and str(value.attrs.dtype).startswith("float"):
        inner = defs.get(value.args[0]) if isinstance(value.args[0], relax.Var) else None
        cmp = op_name(inner) if inner is not None else None
        if cmp not in CMP_OPS:
            return None
        flipped, strict = CMP_OPS[cmp]
        a, b = inner.args
        if const_value(b) is not None and isinstance(a, relax.Var):
            return Head(None, a, const_value(b), strict, flipped, "01")
        if const_value(a) is not None and isinstance(b, relax.Var):
            return Head(None, b, const_value(a), strict, not flipped, "01")
        return None
    if name == "relax.sign" and isinstance(value.args[0], relax.Var):
        pre = value.args[0]
        inner = defs.get(pre)
        if op_name(inner) == "relax.subtract" and const_value(inner.args[1]) is not None \
                and isinstance(inner.args[0], relax.Var):
            return Head(None, inner.args[0], const_value(inner.args[1]), True, False, "pm1")
        return Head(None, pre, np.zeros((), np.float32), True, False, "pm1")
    return None


def trace_affine(pre, defs, counts, c_out: int, ndim: int):
    """Walk back from `pre` over single-use constant affine ops to a core op.
    Returns (core var, ops list innermost-first) or (None, reason)."""
    from tvm import relax

    ops = []
    v = pre
    while True:
        value = defs.get(v)
        name = op_name(value)
        if name in CORE_OPS:
            return v, list(reversed(ops))
        if name in AFFINE_OPS:
            a, b = value.args
            ca, cb = const_value(a), const_value(b)
            if cb is not None and isinstance(a, relax.Var):
                ops.append((name, cb, False))
                nxt = a
            elif ca is not None and isinstance(b, relax.Var) and name in ("relax.add", "relax.multiply", "relax.subtract"):
                ops.append((name, ca, True))
                nxt = b
            else:
                return None, "non-constant operand between the layer and its threshold"
            if counts.get(nxt, 0) != 1:
                return None, "intermediate of the threshold chain is used elsewhere"
            v = nxt
            continue
        return None, f"threshold input is produced by {name or 'a non-call'}"


def eval_chain(ops, value: float, c_out: int, ndim: int, channel_axis: int = 1, dtype=np.float64):
    """The op chain applied to a constant `value` in every channel (evaluated in `dtype`), as a
    per-channel vector, or None if a constant varies along other axes."""
    shape = [1] * ndim
    shape[channel_axis] = c_out
    y = np.full(shape, value, dtype)
    for name, c, const_left in ops:
        c = np.asarray(c, dtype)
        off = ndim - c.ndim  # numpy broadcasting aligns c's axes to the right
        if c.ndim > ndim or any(d not in (1, shape[i + off]) or (d != 1 and i + off != channel_axis)
                                for i, d in enumerate(c.shape)):
            return None
        if name == "relax.add":
            y = y + c
        elif name == "relax.multiply":
            y = y * c
        elif name == "relax.subtract":
            y = c - y if const_left else y - c
        else:
            y = y / c
    return np.broadcast_to(y, shape).reshape(c_out)


def eval_affine(ops, c_out: int, ndim: int, channel_axis: int = 1):
    """Per-channel (M, K) of the op chain, or None if a constant varies along other axes."""
    k = eval_chain(ops, 0.0, c_out, ndim, channel_axis)
    m1 = eval_chain(ops, 1.0, c_out, ndim, channel_axis)
    if k is None or m1 is None:
        return None
    return m1 - k, k


def pm1_affine_tail(var, users, counts, c_out: int, ndim: int, max_ops: int = 4):
    """Follow a {0,1} Heaviside map `var` forward over single-use constant affine ops
    (add/subtract/multiply/divide by a constant, on either side where that is affine) to the
    first var whose values are exactly -1 for 0 and +1 for 1 (2*b - 1, b*2 + (-1), ...) or
    +1 for 0 and -1 for 1 (1 - 2*b). Evaluated per channel in float32 (the model's
    precision) and float64. Returns (var, negated, op names) or None."""
    from tvm import relax

    ops, names = [], []
    v = var
    for _ in range(max_ops):
        if counts.get(v, 0) != 1 or v not in users:
            return None
        nv, value = users[v]
        name = op_name(value)
        if name not in AFFINE_OPS or len(value.args) != 2:
            return None
        a, b = value.args
        if isinstance(a, relax.Var) and a.same_as(v) and const_value(b) is not None:
            ops.append((name, const_value(b), False))
        elif isinstance(b, relax.Var) and b.same_as(v) and const_value(a) is not None \
                and name in ("relax.add", "relax.multiply", "relax.subtract"):
            ops.append((name, const_value(a), True))
        else:
            return None
        names.append(name.split(".")[-1])
        ends = []
        for dtype in (np.float32, np.float64):
            f0, f1 = (eval_chain(ops, x, c_out, ndim, dtype=dtype) for x in (0.0, 1.0))
            if f0 is None or f1 is None:
                return None
            ends.append((f0, f1))
        if all(np.all(f0 == -1) and np.all(f1 == 1) for f0, f1 in ends):
            return nv, False, names
        if all(np.all(f0 == 1) and np.all(f1 == -1) for f0, f1 in ends):
            return nv, True, names
        v = nv
    return None


def channel_vector(arr, c_out: int, ndim: int, channel_axis: int = 1):
    a = np.asarray(arr, np.float64)
    shape = [1] * ndim
    shape[channel_axis] = c_out
    try:
        out = np.broadcast_to(a, shape)
    except ValueError:
        return None
    if a.ndim and a.size > 1 and a.size != c_out:
        return None
    return np.ascontiguousarray(out).reshape(c_out)


# ------------------------------------------------------------------ weights from ONNX


class OnnxGraph:
    """Producers and constants of the (shape-inferred) ONNX graph, built once per pass."""

    def __init__(self, model):
        from nrqc.layer_table import _shapes

        self.model = model
        self.producers = {o: n for n in model.graph.node for o in n.output} if model is not None else {}
        self.inits = {i.name: i for i in model.graph.initializer} if model is not None else {}
        self.shapes = _shapes(model) if model is not None else {}

    def const(self, name):
        from nrqc.layer_table import const_value

        return const_value(name, self.inits, self.producers) if name else None

    def weight_shape(self, layer) -> tuple[int, ...] | None:
        """The shape the layer's folded Relax weight has: the ONNX weight's, transposed for
        a Gemm with transB = 1 (the importer folds the transpose into a [in, out] matmul)."""
        from nrqc.layer_table import _attr, layer_node

        node = layer_node(self.model, layer)
        if node is None or len(node.input) < 2:
            return None
        shape = self.shapes.get(node.input[1])
        if shape is None:
            c = self.const(node.input[1])
            shape = None if c is None else tuple(c.shape)
        if shape is not None and node.op_type == "Gemm" and _attr(node, "transB", 0):
            shape = tuple(reversed(shape))
        return shape


def _onnx_weight_info(graph: OnnxGraph | None, node):
    """(kind, wq or None, scale, reason) for the weight of ONNX node `node` (the layer's own
    node, found by its graph identity). Constants may come as initializers, Constant nodes,
    or through Identity nodes (as the TorchScript exporter writes shared zero points)."""
    if graph is None or graph.model is None:
        return "float", None, None, "no ONNX graph available"
    if node is None or len(node.input) < 2:
        return "float", None, None, "no ONNX node for this layer"
    w = node.input[1]
    p = graph.producers.get(w)
    if p is not None and p.op_type == "DequantizeLinear":
        src = p.input[0]
        scale = graph.const(p.input[1])
        zp = graph.const(p.input[2]) if len(p.input) > 2 else None
        if scale is None:
            return "float", None, None, "DequantizeLinear scale is not a constant"
        if zp is not None and np.any(zp != 0):
            return "float", None, None, "DequantizeLinear zero point is not 0"
        wq = graph.const(src)
        if wq is not None and wq.dtype == np.int8:
            return "int8", wq, scale.astype(np.float32), None
        q = graph.producers.get(src)
        if q is not None and q.op_type == "QuantizeLinear" and graph.const(q.input[0]) is not None:
            zq = graph.const(q.input[2]) if len(q.input) > 2 else None
            if zq is None or zq.dtype != np.int8:
                return "float", None, None, "QuantizeLinear to uint8 weights"
            return "int8", None, scale.astype(np.float32), None  # wq recovered from the folded constant
        return "float", None, None, "DequantizeLinear input is not an int8 constant"
    if graph.const(w) is not None:
        return "float-or-binary", None, None, None
    return "float", None, None, "weight is computed at run time"


def classify_weights(plan: LayerPlan, graph: OnnxGraph | None) -> None:
    """Fill plan.weights / wq / scale (per output channel), or plan.reason."""
    from nrqc.layer_table import layer_node

    w = plan.weight.astype(np.float32)
    co = plan.c_out
    # rows: one per output channel
    rows = w.reshape(co, -1) if plan.kind != "matmul" else w.T.reshape(co, -1)
    node = layer_node(graph.model, plan.layer) if graph is not None else None
    kind, wq_onnx, scale, reason = _onnx_weight_info(graph, node)
    if kind == "int8":
        s = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (co,)).astype(np.float32)
        if np.any(s == 0):
            plan.reason = "zero weight scale"
            return
        q = np.round(rows / s[:, None])
        if np.all(np.abs(q) <= 127.0) or (np.all(q >= -128) and np.all(q <= 127)):
            if np.array_equal((q.astype(np.float32) * s[:, None]).astype(np.float32), rows):
                qi = q.astype(np.int8)
                if wq_onnx is not None and not _same_int8(qi, wq_onnx, plan, node):
                    plan.reason = "folded weight differs from the ONNX node's int8 weight"
                    return
                plan.weights, plan.scale = "int8", s
                plan.wq = qi.reshape(w.shape) if plan.kind != "matmul" else qi.T.reshape(w.shape)
                return
        plan.reason = "folded weight is not int8 x scale (non-zero zero point or saturation)"
        return
    if kind == "float-or-binary":
        mag = np.abs(rows)
        if rows.shape[1] > 1 and np.all(mag > 0) and np.all(mag == mag[:, :1]):
            plan.weights, plan.scale = "binary", mag[:, 0].astype(np.float32)
            sign = np.sign(rows).astype(np.int8)
            plan.wq = sign.reshape(w.shape) if plan.kind != "matmul" else sign.T.reshape(w.shape)
            return
        plan.weights = "float"
        plan.reason = "float weights (neither int8 QDQ nor +-1)"
        return
    plan.weights = "float"
    plan.reason = reason


def _same_int8(rows_q, wq_onnx, plan: LayerPlan, node) -> bool:
    """The int8 values recovered from the folded Relax weight (one row per output channel)
    are the ONNX node's own int8 initializer: the layer entry and the Relax op are the same
    layer (structure, not names, links them)."""
    from nrqc.layer_table import _attr

    wq = np.asarray(wq_onnx)
    if plan.kind == "matmul":
        trans_b = node is not None and node.op_type == "Gemm" and _attr(node, "transB", 0)
        wq = wq if trans_b else wq.T  # -> [out, in]
    return wq.size == rows_q.size and np.array_equal(wq.reshape(rows_q.shape), rows_q)


# ------------------------------------------------------------------ Q/DQ of activations

QDQ_MAP_OPS = {"relax.nn.max_pool2d", "relax.nn.max_pool1d", "relax.max", "relax.reshape", "relax.flatten",
               "relax.expand_dims", "relax.squeeze"}


def _qdq_params(value, defs):
    """(src var, [(scale, zero point, axis, qmin, qmax) of Q, of DQ]) when `value` is
    dequantize(quantize(src)) with constant parameters, else None."""
    from tvm import relax

    if op_name(value) != "relax.dequantize" or not isinstance(value.args[0], relax.Var):
        return None
    q = defs.get(value.args[0])
    if op_name(q) != "relax.quantize" or not isinstance(q.args[0], relax.Var):
        return None
    params = []
    for call, dtype in ((q, str(q.attrs.out_dtype)), (value, str(value.args[0].ty.dtype))):
        s, z = const_value(call.args[1]), const_value(call.args[2])
        if s is None or z is None or not dtype.startswith(("int", "uint")):
            return None
        info = np.iinfo(np.dtype(dtype))
        params.append((np.asarray(s, np.float32), np.asarray(z), int(call.attrs.axis), info.min, info.max))
    return q.args[0], params


def _per_axis(arr, axis: int, ndim: int):
    """A Q/DQ parameter (scalar or one value per index of `axis`) broadcastable to rank ndim."""
    arr = np.asarray(arr)
    if arr.ndim == 0 or arr.size == 1:
        return arr.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = arr.size
    return arr.reshape(shape)


def _dq_of_q(x, params, ndim: int):
    """onnxruntime's DequantizeLinear(QuantizeLinear(x)) in float32 (round half to even,
    saturate to the integer type)."""
    (s_q, z_q, a_q, lo, hi), (s_d, z_d, a_d, _, _) = params
    s_q, z_q = _per_axis(s_q, a_q, ndim), _per_axis(z_q, a_q, ndim)
    s_d, z_d = _per_axis(s_d, a_d, ndim), _per_axis(z_d, a_d, ndim)
    q = np.clip(np.round(np.asarray(x, np.float32) / s_q) + z_q.astype(np.float64), lo, hi)
    return ((q - z_d.astype(np.float64)).astype(np.float32) * s_d).astype(np.float32)


def _map_values(var, defs, depth: int = 16):
    """The values a binary map var can take ({0, 1} for a Heaviside map, {-1, 0, 1} for a
    Sign), following pools, a global max and reshapes back to its head; else None."""
    from tvm import relax

    v = var
    for _ in range(depth):
        value = defs.get(v)
        name = op_name(value)
        if name in QDQ_MAP_OPS and isinstance(value.args[0], relax.Var):
            v = value.args[0]
            continue
        if parse_head(value, defs) is not None:
            return (0.0, 1.0) if name == "relax.astype" else (-1.0, 0.0, 1.0)
        return None
    return None


def _cmp_through_qdq(value, defs):
    """A comparison of DequantizeLinear(QuantizeLinear(y)) with a constant (onnxruntime's
    quantize_static quantizes a conv output before its Heaviside) as an equivalent
    comparison of y itself: the quantized value is a monotone step function of y, so the
    bit is y >= T' (or y < T'') with T' at the rounding boundary of the first integer level
    whose dequantized value passes the comparison (evaluated in float32 over all levels, as
    onnxruntime computes it). Only an exact tie y/s = k + 0.5 (round half to even) can
    differ. Returns the new Call or None."""
    from tvm import relax

    name = op_name(value)
    if name not in CMP_OPS:
        return None
    a, b = value.args
    if isinstance(a, relax.Var) and const_value(b) is not None:
        dq_var, t, const_left = a, const_value(b), False
    elif isinstance(b, relax.Var) and const_value(a) is not None:
        dq_var, t, const_left = b, const_value(a), True
    else:
        return None
    qdq = _qdq_params(defs.get(dq_var), defs)
    if qdq is None:
        return None
    src, params = qdq
    (s_q, z_q, a_q, lo, hi), (s_d, z_d, a_d, _, _) = params
    ndim = len(src.ty.shape)
    if np.any(s_q <= 0) or np.any(s_d <= 0) or not (np.array_equal(s_q, s_d) and np.array_equal(z_q, z_d)
                                                      and (s_q.size == 1 or a_q == a_d)):
        return None
    s, z = _per_axis(s_q, a_q, ndim).astype(np.float64), _per_axis(z_q, a_q, ndim).astype(np.float64)
    t = np.asarray(t, np.float32)
    shape = np.broadcast_shapes(t.shape, s.shape, z.shape)
    levels = np.arange(lo, hi + 1, dtype=np.float64).reshape((-1,) + (1,) * len(shape))
    deq = ((levels - z).astype(np.float32) * s.astype(np.float32)).astype(np.float32)
    op = {"relax.greater": np.greater, "relax.greater_equal": np.greater_equal, "relax.less": np.less,
          "relax.less_equal": np.less_equal}[name]
    bits = op(t, deq) if const_left else op(deq, t)
    bits = np.broadcast_to(bits, (levels.shape[0],) + shape)
    steps = np.diff(bits.astype(np.int8), axis=0)
    rising = bool(np.all(steps >= 0))
    if not rising and not np.all(steps <= 0):
        return None
    n_true = bits.sum(0)
    s_b, z_b = np.broadcast_to(s, shape), np.broadcast_to(z, shape)
    with np.errstate(over="ignore"):
        if rising:  # bit <=> level >= lo + #false <=> y >= (level - z - 0.5) * s
            first = lo + (levels.shape[0] - n_true)
            thr = np.where(n_true == levels.shape[0], -np.inf,
                           np.where(n_true == 0, np.inf, (first - z_b - 0.5) * s_b))
        else:  # bit <=> level <= lo + #true - 1 <=> y < (level - z + 0.5) * s
            last = lo + n_true - 1
            thr = np.where(n_true == levels.shape[0], np.inf,
                           np.where(n_true == 0, -np.inf, (last - z_b + 0.5) * s_b))
    # y is float32: y >= T (or y < T) for a real T is y >= (or <) the smallest float32 >= T
    t32 = thr.astype(np.float32)
    t32 = np.where(t32.astype(np.float64) < thr, np.nextafter(t32, np.float32(np.inf)), t32).astype(np.float32)
    if t32.ndim > ndim:
        return None
    t32 = np.ascontiguousarray(t32.reshape(shape))
    cmp = relax.op.greater_equal if rising else relax.op.less
    return cmp(src, relax.const(t32))


def fold_activation_qdq(mod, ctx):
    """Q/DQ pairs on activations (onnxruntime's quantize_static QDQ format) that do not
    change what the binary passes see: DequantizeLinear(QuantizeLinear(m)) of a binary map
    m that returns every value of m exactly (0 and 1 for a Heaviside map, checked in float32)
    is m itself; a comparison of a Q/DQ'd layer output becomes the equivalent comparison of
    the output (see _cmp_through_qdq). A Q/DQ that is not exact on a map stays, and the
    layer it feeds stays float."""
    import tvm
    from tvm import relax

    bindings = main_bindings(mod)
    if bindings is None:
        return mod
    defs = {b.var: b.value for b in bindings}
    new, changed = [], 0
    for b in bindings:
        qdq = _qdq_params(b.value, defs)
        if qdq is not None:
            src, params = qdq
            vals = _map_values(src, defs)
            if vals is not None and tuple(src.ty.shape) == tuple(b.var.ty.shape) and all(
                    np.all(_dq_of_q(np.full((1,) * len(src.ty.shape), v, np.float32), params, len(src.ty.shape))
                           == np.float32(v)) for v in vals):
                new.append(relax.VarBinding(b.var, src))  # an alias: CanonicalizeBindings substitutes it
                defs[b.var] = defs[src]
                changed += 1
                continue
        cmp = _cmp_through_qdq(b.value, defs)
        if cmp is not None:
            new.append(relax.VarBinding(b.var, cmp))
            changed += 1
            continue
        new.append(b)
    if not changed:
        return mod
    func = mod["main"]
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    mod["main"] = relax.Function(func.params, relax.SeqExpr([relax.DataflowBlock(new)], func.body.body),
                                 func.ret_ty, func.is_pure, func.attrs)
    mod = relax.transform.CanonicalizeBindings()(mod)
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    ctx.notes.append(f"binary passes: {changed} activation Q/DQ pair(s) read through (exact on binary maps, "
                     "or folded into the threshold of the comparison they feed)")
    return mod


def detect(mod, ctx):
    """Build ctx.binary.plan (list of LayerPlan), in binding order."""
    from tvm import relax

    plan: list[LayerPlan] = []
    ctx.binary = BinaryState(plan=plan)
    if main_bindings(mod) is None:
        ctx.notes.append("binary passes: main is not a single dataflow block; no binary rewrite")
        return mod
    mod = fold_activation_qdq(mod, ctx)
    bindings = main_bindings(mod)
    graph = OnnxGraph(ctx.onnx_model) if ctx.onnx_model is not None else None
    defs = {b.var: b.value for b in bindings}
    counts = use_counts(bindings, mod["main"].body.body)
    users = {}  # var -> (binding var, value) of a call reading it directly (used for single-use vars)
    for b in bindings:
        if isinstance(b.value, relax.Call):
            for a in b.value.args:
                if isinstance(a, relax.Var):
                    users[a] = (b.var, b.value)
    layers_by_op = {"conv": [l for l in ctx.layers if l.op in ("Conv",)],
                    "dense": [l for l in ctx.layers if l.op in ("MatMul", "Gemm")]}
    seen = {"conv": 0, "dense": 0}
    by_core = {}
    for b in bindings:
        name = op_name(b.value)
        if name in CORE_OPS:
            kind = CORE_OPS[name]
            w = const_value(b.value.args[1])
            fam = "dense" if kind == "matmul" else "conv"
            # Relax keeps the ONNX node order (the importer emits nodes in order): the n-th
            # conv (matmul) is the n-th Conv (MatMul/Gemm) layer, if its weight has that
            # layer's shape; a conv/matmul the importer made for another op (an LSTM's, ...)
            # does not take the layer's place.
            layer = layers_by_op[fam][seen[fam]] if seen[fam] < len(layers_by_op[fam]) else None
            want = graph.weight_shape(layer) if graph is not None and layer is not None else None
            got = tuple(int(d) for d in b.value.args[1].ty.shape) if hasattr(b.value.args[1].ty, "shape") else None
            if layer is not None and want is not None and got is not None and tuple(want) != got:
                layer = None
            else:
                seen[fam] += 1
            if w is None or not isinstance(b.value.args[0], relax.Var):
                continue
            attrs = {}
            if kind != "matmul":
                a = b.value.attrs
                attrs = {"strides": [int(v) for v in a.strides], "padding": [int(v) for v in a.padding],
                         "dilation": [int(v) for v in a.dilation], "groups": int(a.groups),
                         "layout": (str(a.data_layout), str(a.kernel_layout))}
            elif w.ndim != 2 or len(_shape(b.value.args[0])) != 2:
                continue
            p = LayerPlan(layer, b.var, kind, b.value.args[0], w, attrs)
            classify_weights(p, graph)
            by_core[b.var] = p
            plan.append(p)
            continue
        head = parse_head(b.value, defs)
        if head is None:
            continue
        head.var = b.var
        core, ops = trace_affine(head.pre, defs, counts, 0, 0)
        if core is None or core not in by_core:
            continue
        p = by_core[core]
        ndim = len(_shape(head.pre))
        aff = eval_affine(ops, p.c_out, ndim)
        thr = channel_vector(head.threshold, p.c_out, ndim)
        if aff is None or thr is None:
            p.reason = "threshold or affine constants vary along non-channel axes"
            continue
        if head.encoding == "01":
            # 2 * Cast(cmp) - 1 (Mul + Sub/Add after the Cast): the same bits, read as {-1,+1}
            tail = pm1_affine_tail(b.var, users, counts, p.c_out, ndim)
            if tail is not None:
                head.var, negated, names = tail
                head.encoding = "pm1"
                if negated:  # 1 - 2*Cast(cmp): +1 where the comparison is false
                    head.flipped, head.strict = not head.flipped, not head.strict
                ctx.notes.append(f"{p.layer.name if p.layer else 'layer'}: Heaviside map followed by "
                                 f"{' + '.join(names)} ({'1 - 2b' if negated else '2b - 1'}) read as a "
                                 "{-1,+1} map")
        p.head, p.affine = head, aff
        p.head.threshold = thr
    return mod


def drop_unused_kernels(mod):
    """Remove nrqc kernels that no longer have a caller in main (DeadCodeElimination keeps
    functions that carry a global symbol)."""
    import tvm
    from tvm import relax

    called = set()

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", None) == "relax.call_tir":
            called.add(e.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"], visit)
    keep = {gv: f for gv, f in mod.functions.items()
            if not (gv.name_hint.startswith("nrqc_") and gv.name_hint not in called)}
    if len(keep) == len(mod.functions):
        return mod
    return tvm.IRModule(keep, attrs=mod.attrs)
