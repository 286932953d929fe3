"""ONNX recurrent layers (LSTM, GRU, RNN): checked at load, imported as one matrix product
plus one recurrence kernel per direction.

TVM's Relax ONNX frontend has no converter for them; `recurrent_converters()` lends it
ours while nrqc imports a model. Once shapes are static the sequence length is known, and
a layer becomes:

- one `matmul` projecting the inputs of *all* time steps and directions at once
  (X [T, B, I] x [I, D*G*H]), the input biases and the recurrent biases that can be
  added early folded into one bias;
- per direction, one TIR kernel (`call_tir`, opaque) running the recurrence: per step the
  hidden state times the recurrent weights (one [H] x [H, G*H] product), the gates, their
  activations and the state update, writing Y[t] — the whole loop in one kernel, so a
  100-frame GRU is one call, not 100 fused kernels (an unrolled graph built for minutes);
- `concat`/`take`/`permute_dims` assembling Y, Y_h and Y_c in the node's layout.

The equations are those of the ONNX operator specification, with onnxruntime's reading
where it is ambiguous (LSTM's clip bounds the gate inputs, not the cell state fed to h).
The float weights stay float; tests/onnx/test_recurrent.py checks every variant against
onnxruntime from disk in a fresh process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np

from nrqc.errors import NrqcError

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# inputs that must be constants (initializers): W, R, B, sequence_lens, P (by position)
WEIGHT_INPUTS = {"LSTM": (1, 2, 3, 4, 7), "GRU": (1, 2, 3, 4), "RNN": (1, 2, 3, 4)}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_GATES = GATES
# the placeholder attribute carrying a direction's RecurrentSpec (passes/recurrent_kernels.py)
SPEC_ATTR = "nrqc.recurrent"
_DEFAULT_ACTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_ACTIVATIONS = ("Sigmoid", "Tanh", "Relu")


@dataclasses.dataclass(frozen=True)
class RecurrentSpec:
    """One direction of a recurrent node, as the ONNX import reads it."""

    op: str
    steps: int
    batch: int
    inputs: int
    hidden: int
    reverse: bool
    acts: tuple[str, ...]
    clip: float | None
    lbr: bool  # GRU linear_before_reset
    input_forget: bool  # LSTM coupled input/forget gates
    w_dtype: str = "float32"  # float32, int8 or uint8
    r_dtype: str = "float32"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RecurrentSpec":
        return cls(**{**d, "acts": tuple(d["acts"])})


# ----------------------------------------------------------------------- load-time checks


def check_recurrent(model, path) -> None:
    """Refuse, naming the node, what the import cannot compile: weights that are not
    initializers, sequence_lens shorter than the sequence, other activations."""
    from onnx import numpy_helper

    from nrqc.layer_table import _shapes

    consts = {i.name: i for i in model.graph.initializer}
    shapes = _shapes(model)
    dequantized = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        # named by its first output when unnamed (Y itself may be omitted: "")
        where = f"{path}: {node.op_type} node '{node.name or next((o for o in node.output if o), '')}'"
        for i in WEIGHT_INPUTS[node.op_type]:
            if i in (1, 2) and node.input[i] in dequantized:
                _check_dequantized(dequantized[node.input[i]], consts, where, i, node.input[i])
                continue
            if i < len(node.input) and node.input[i] and node.input[i] not in consts:
                raise NrqcError(f"{where} takes its input {i} ('{node.input[i]}') from a computed tensor or a graph "
                                f"input: nrqc compiles recurrent layers whose weights, biases and sequence_lens "
                                f"are initializers")
        a = _Attrs(node.op_type, {x.name: _attr_value(x) for x in node.attribute})
        bad = [x for x in a.acts if x not in _ACTIVATIONS]
        if bad or a.alpha or a.beta:
            raise NrqcError(f"{where}: activation {bad[0] if bad else 'parameters (activation_alpha/beta)'} is not "
                            f"supported: nrqc compiles recurrent layers with {', '.join(_ACTIVATIONS)} activations")
        x = shapes.get(node.input[0])
        if x is None or len(x) != 3:
            raise NrqcError(f"{where}: the shape of its input X ('{node.input[0]}') is not static")
        steps = x[1] if a.layout else x[0]
        if len(node.input) > 4 and node.input[4]:
            lens = numpy_helper.to_array(consts[node.input[4]])
            if not np.all(lens == steps):
                raise NrqcError(f"{where}: sequence_lens {lens.tolist()} differ from the sequence length {steps}: "
                                f"nrqc compiles full-length sequences only")


def _check_dequantized(dq, consts, where: str, i: int, name: str) -> None:
    """W or R through DequantizeLinear: an int8/uint8 initializer with a per-tensor scale,
    or per axis 0 (direction) or 1 (gate row), and initializer scale and zero point."""
    from onnx import TensorProto

    what = f"{where} takes its input {i} ('{name}') from DequantizeLinear"
    if any(x and x not in consts for x in dq.input):
        raise NrqcError(f"{what} of a computed tensor: nrqc compiles it when the quantized weights, scale and zero "
                        f"point are initializers")
    q = consts[dq.input[0]]
    if q.data_type not in (TensorProto.INT8, TensorProto.UINT8):
        raise NrqcError(f"{what} of {TensorProto.DataType.Name(q.data_type).lower()} values: nrqc keeps int8 or uint8 "
                        f"recurrent weights")
    attrs = {a.name: _attr_value(a) for a in dq.attribute}
    scale = consts[dq.input[1]]
    per_axis = len(scale.dims) > 0 and int(np.prod(scale.dims)) > 1
    if attrs.get("block_size", 0) or (per_axis and int(attrs.get("axis", 1)) % 3 not in (0, 1)):
        raise NrqcError(f"{what} with {'blocked' if attrs.get('block_size', 0) else 'per-input-column'} scales: nrqc "
                        f"compiles per-tensor, per-direction (axis 0) and per-gate-row (axis 1) scales")


def _attr_value(a):
    import onnx

    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


class _Attrs:
    """A recurrent node's attributes with the specification's defaults."""

    def __init__(self, op: str, attrs: dict):
        dec = {k: (v.decode() if isinstance(v, bytes) else
                   [x.decode() if isinstance(x, bytes) else x for x in v] if isinstance(v, (list, tuple)) else v)
               for k, v in attrs.items() if k != "tvm_custom"}
        self.op = op
        self.direction = dec.get("direction", "forward")
        self.n_dir = 2 if self.direction == "bidirectional" else 1
        self.acts = list(dec.get("activations") or _DEFAULT_ACTS[op] * self.n_dir)
        self.alpha, self.beta = dec.get("activation_alpha"), dec.get("activation_beta")
        self.clip = dec.get("clip")
        self.layout = int(dec.get("layout", 0))
        self.hidden = dec.get("hidden_size")
        self.lbr = op == "GRU" and int(dec.get("linear_before_reset", 0)) != 0
        self.input_forget = op == "LSTM" and int(dec.get("input_forget", 0)) != 0


# ----------------------------------------------------------------------- import


@contextlib.contextmanager
def recurrent_converters():
    """The Relax ONNX frontend with converters for LSTM, GRU and RNN while the block runs
    (it looks its op table up through `_get_convert_map` on every node)."""
    from tvm.relax.frontend.onnx import onnx_frontend as fe

    original = fe._get_convert_map
    fe._get_convert_map = lambda: {**original(), **{op: _Converter(op) for op in RECURRENT_OPS}}
    try:
        yield
    finally:
        fe._get_convert_map = original


class _Converter:
    """The frontend's converter protocol: get_converter(opset) -> f(bb, inputs, attr, params)."""

    def __init__(self, op: str):
        self.op = op

    def get_converter(self, opset):
        return lambda bb, inputs, attr, params: convert_recurrent(self.op, bb, inputs, attr)


def _numpy(expr) -> np.ndarray:
    value = getattr(expr, "data", None) or getattr(expr, "value", None)
    return value.numpy()


def _weights(bb, expr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W or R ([D, G*H, K]) as (values, scale, zero point), the last two [D, G*H]: float
    values with scale 1 and zero 0, or the 8-bit initializer of a DequantizeLinear with its
    per-tensor, per-direction (axis 0) or per-row (axis 1) scale and zero point broadcast
    (check_recurrent refused every other form at load)."""
    from tvm import relax

    value = bb.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
    if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.dequantize":
        q, scale, zero = (_numpy(a) for a in value.args[:3])
        shape = q.shape[:2]
        if scale.size > 1:  # per axis: its length is the axis' extent
            scale = scale.reshape((-1, 1) if int(value.attrs.axis) == 0 else (1, -1))
            zero = zero.reshape(scale.shape) if zero.size > 1 else zero
        return (q, np.broadcast_to(scale.astype(np.float32), shape).copy(),
                np.broadcast_to(zero.astype(np.float32), shape).copy())
    w = _numpy(expr)
    return w, np.ones(w.shape[:2], np.float32), np.zeros(w.shape[:2], np.float32)


def convert_recurrent(op: str, bb, inputs, attr):
    """The Relax of one ONNX recurrent node: (Y, Y_h[, Y_c]). Each direction is a call of a
    placeholder carrying its RecurrentSpec; passes/recurrent_kernels.py builds the kernel
    for the target."""
    from tvm import relax

    a = _Attrs(op, attr)
    x = inputs[0]
    if a.layout:
        x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
    steps, batch, n_in = (int(d) for d in x.ty.shape)
    (w, ws, wz), (r, rs, rz) = _weights(bb, inputs[1]), _weights(bb, inputs[2])
    g = _GATES[op]
    hidden = a.hidden or w.shape[1] // g
    dtype = np.dtype("float32")
    b = _numpy(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else np.zeros((a.n_dir, 2 * g * hidden), dtype)
    wb, rb = b[:, :g * hidden], b[:, g * hidden:].copy()
    rb_h = rb[:, 2 * hidden:3 * hidden].copy() if op == "GRU" else np.zeros((a.n_dir, hidden), dtype)
    if a.lbr:  # GRU's Rb_h is multiplied by the reset gate: it cannot join the input bias
        rb[:, 2 * hidden:] = 0
    peep = _numpy(inputs[7]) if op == "LSTM" and len(inputs) > 7 and inputs[7] is not None else \
        np.zeros((a.n_dir, 3 * hidden), dtype)

    ys, hs, cs = [], [], []
    n = len(_DEFAULT_ACTS[op])
    for d in range(a.n_dir):
        reverse = a.direction == "reverse" or d == 1
        h0 = _initial(bb, inputs, 5, d, a.layout, batch, hidden, dtype)
        c0 = _initial(bb, inputs, 6, d, a.layout, batch, hidden, dtype)
        spec = RecurrentSpec(op, steps, batch, n_in, hidden, reverse, tuple(a.acts[d * n:(d + 1) * n]),
                             a.clip, a.lbr, a.input_forget, str(w.dtype), str(r.dtype))
        gv = bb.add_func(placeholder(spec).with_attr(SPEC_ATTR, json.dumps(spec.to_json())), f"{op.lower()}_spec")
        out_ty = [relax.TensorType((steps, batch, hidden), "float32"), relax.TensorType((batch, hidden), "float32")]
        consts = [w[d].T, ws[d], wz[d], wb[d] + rb[d], r[d].T, rs[d], rz[d], rb_h[d], peep[d]]
        res = bb.emit(relax.call_tir(gv, [x] + [relax.const(np.ascontiguousarray(c)) for c in consts[:-2]]
                                     + [relax.const(consts[-2]), relax.const(consts[-1]), h0, c0], out_ty))
        y = bb.emit(relax.TupleGetItem(res, 0))
        ys.append(relax.op.expand_dims(y, 1))  # [T, 1, B, H]
        last = 0 if reverse else steps - 1
        # [1, B, H]; a one-step sequence is Y itself (no copy kernel per frame when streaming)
        hs.append(y if steps == 1 else relax.op.strided_slice(y, axes=[0], begin=[last], end=[last + 1]))
        cs.append(relax.op.expand_dims(relax.TupleGetItem(res, 1), 0))
    y = _join(bb, ys, 1, (2, 0, 1, 3) if a.layout else None)
    y_h = _join(bb, hs, 0, (1, 0, 2) if a.layout else None)
    outs = [y, y_h]
    if op == "LSTM":
        outs.append(_join(bb, cs, 0, (1, 0, 2) if a.layout else None))
    return relax.Tuple(outs)


def _join(bb, parts, axis: int, perm):
    from tvm import relax

    out = parts[0] if len(parts) == 1 else relax.op.concat(parts, axis=axis)
    if perm is not None:
        out = relax.op.permute_dims(out, list(perm))
    return bb.emit(out)


def _initial(bb, inputs, i: int, d: int, layout: int, batch: int, hidden: int, dtype):
    """Direction d's initial state [B, H] (initial_h / initial_c are [D, B, H], layout 1
    [B, D, H]), zeros when the node has none."""
    from tvm import relax

    if len(inputs) <= i or inputs[i] is None:
        return relax.const(np.zeros((batch, hidden), dtype))
    axis = 1 if layout else 0
    # one direction: the whole tensor, reshaped (a view, no copy kernel)
    part = inputs[i] if int(inputs[i].ty.shape[axis]) == 1 else \
        relax.op.strided_slice(inputs[i], axes=[axis], begin=[d], end=[d + 1])
    return bb.emit(relax.op.reshape(part, (batch, hidden)))


# ----------------------------------------------------------------------- the placeholder


def placeholder(spec: RecurrentSpec):
    """A PrimFunc with the call's signature and no body: (X [T, B, I], W^T [I, G*H], its
    scale and zero [G*H], bias [G*H], R^T [H, G*H], its scale and zero, Rb_h [H], P [3H],
    H0 [B, H], C0 [B, H]) -> (Y [T, B, H], C_last [B, H]). Replaced by the kernel before
    legalization (passes/recurrent_kernels.py)."""
    from tvm.script import tirx as T

    t, b, i, h = spec.steps, spec.batch, spec.inputs, spec.hidden
    gh = GATES[spec.op] * h
    f32 = "float32"

    @T.prim_func(s_tir=False)
    def func(X: T.Buffer((t, b, i), f32), W: T.Buffer((i, gh), spec.w_dtype), Ws: T.Buffer((gh,), f32),
             Wz: T.Buffer((gh,), f32), Bias: T.Buffer((gh,), f32), R: T.Buffer((h, gh), spec.r_dtype),
             Rs: T.Buffer((gh,), f32), Rz: T.Buffer((gh,), f32), Rbh: T.Buffer((h,), f32),
             P: T.Buffer((3 * h,), f32), H0: T.Buffer((b, h), f32), C0: T.Buffer((b, h), f32),
             Y: T.Buffer((t, b, h), f32), CL: T.Buffer((b, h), f32)):
        T.evaluate(0)

    return func.without_attr("global_symbol").with_attrs({"op_pattern": 8})
