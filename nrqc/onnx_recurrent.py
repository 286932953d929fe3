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

import numpy as np

from nrqc.errors import NrqcError

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# inputs that must be constants (initializers): W, R, B, sequence_lens, P (by position)
WEIGHT_INPUTS = {"LSTM": (1, 2, 3, 4, 7), "GRU": (1, 2, 3, 4), "RNN": (1, 2, 3, 4)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_ACTIVATIONS = ("Sigmoid", "Tanh", "Relu")


# ----------------------------------------------------------------------- load-time checks


def check_recurrent(model, path) -> None:
    """Refuse, naming the node, what the import cannot compile: weights that are not
    initializers, sequence_lens shorter than the sequence, other activations."""
    from onnx import numpy_helper

    from nrqc.layer_table import _shapes

    consts = {i.name: i for i in model.graph.initializer}
    shapes = _shapes(model)
    for node in model.graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        # named by its first output when unnamed (Y itself may be omitted: "")
        where = f"{path}: {node.op_type} node '{node.name or next((o for o in node.output if o), '')}'"
        for i in WEIGHT_INPUTS[node.op_type]:
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


def convert_recurrent(op: str, bb, inputs, attr):
    """The Relax of one ONNX recurrent node: (Y, Y_h[, Y_c])."""
    from tvm import relax

    a = _Attrs(op, attr)
    x = inputs[0]
    if a.layout:
        x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
    steps, batch, _ = (int(d) for d in x.ty.shape)
    w, r = _numpy(inputs[1]), _numpy(inputs[2])
    g = _GATES[op]
    hidden = a.hidden or w.shape[1] // g
    dtype = w.dtype
    b = _numpy(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else np.zeros((a.n_dir, 2 * g * hidden), dtype)
    wb, rb = b[:, :g * hidden], b[:, g * hidden:].copy()
    rb_h = rb[:, 2 * hidden:3 * hidden].copy() if op == "GRU" else np.zeros((a.n_dir, hidden), dtype)
    if a.lbr:  # GRU's Rb_h is multiplied by the reset gate: it cannot join the input bias
        rb[:, 2 * hidden:] = 0
    peep = _numpy(inputs[7]) if op == "LSTM" and len(inputs) > 7 and inputs[7] is not None else \
        np.zeros((a.n_dir, 3 * hidden), dtype)

    # every step's and direction's input projection in one product
    w_all = np.concatenate([w[d].T for d in range(a.n_dir)], axis=1)  # [I, D*G*H]
    xw = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(w_all)), relax.const((wb + rb).reshape(-1))))

    ys, hs, cs = [], [], []
    n = len(_DEFAULT_ACTS[op])
    for d in range(a.n_dir):
        reverse = a.direction == "reverse" or d == 1
        h0 = _initial(bb, inputs, 5, d, a.layout, batch, hidden, dtype)
        c0 = _initial(bb, inputs, 6, d, a.layout, batch, hidden, dtype)
        func = scan_kernel(op, steps, batch, hidden, a.n_dir * g * hidden, d * g * hidden, reverse,
                           a.acts[d * n:(d + 1) * n], a.clip, a.lbr, a.input_forget, str(dtype))
        gv = bb.add_func(func, f"{op.lower()}_scan")
        out_ty = [relax.TensorType((steps, batch, hidden), str(dtype)), relax.TensorType((batch, hidden), str(dtype))]
        res = bb.emit(relax.call_tir(gv, [xw, relax.const(np.ascontiguousarray(r[d].T)), relax.const(rb_h[d]),
                                          relax.const(peep[d]), h0, c0], out_ty))
        y = bb.emit(relax.TupleGetItem(res, 0))
        ys.append(relax.op.expand_dims(y, 1))  # [T, 1, B, H]
        last = 0 if reverse else steps - 1
        hs.append(relax.op.strided_slice(y, axes=[0], begin=[last], end=[last + 1]))  # [1, B, H]
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
    part = relax.op.strided_slice(inputs[i], axes=[axis], begin=[d], end=[d + 1])
    return bb.emit(relax.op.reshape(part, (batch, hidden)))


# ----------------------------------------------------------------------- the recurrence kernel


def _activation(name: str, clip, dtype: str):
    from tvm import tirx

    def f(x, clipped=True):
        if clip is not None and clipped:
            x = tirx.max(tirx.min(x, tirx.const(clip, dtype)), tirx.const(-clip, dtype))
        if name == "Sigmoid":
            return tirx.sigmoid(x)
        if name == "Tanh":
            return tirx.tanh(x)
        return tirx.max(x, tirx.const(0, dtype))

    return f


def scan_kernel(op, steps, batch, hidden, width, offset, reverse, acts, clip, lbr, input_forget, dtype):
    """The PrimFunc running one direction's recurrence over all steps:
    (XW [T, B, width], Rt [H, G*H], Rb_h [H], P [3H], H0 [B, H], C0 [B, H]) -> (Y [T, B, H],
    C_last [B, H]); the gates of step t read XW[t, :, offset:offset + G*H]."""
    from tvm import tirx
    from tvm.script import tirx as T

    g = _GATES[op]
    gh = g * hidden
    f = _activation(acts[0], clip, dtype)
    gg = _activation(acts[1], clip, dtype) if len(acts) > 1 else None
    hh = _activation(acts[2], clip, dtype) if len(acts) > 2 else None
    H = hidden

    one = tirx.const(1, dtype)
    zero = tirx.const(0, dtype)
    zr = gh if lbr else 2 * H  # GRU: gates of the first product (all three when linear_before_reset)
    h_later = 0 if lbr else H  # GRU: (r * h) x R_h^T as a second product

    def time(s):
        return steps - 1 - s if reverse else s

    def forget(i_g, pre_f):  # LSTM: coupled input and forget gates when input_forget
        return one - i_g if input_forget else f(pre_f)

    def reset_times(r_g, acc_h, rbh, hp_j):  # GRU: r (.) (H R_h^T + Rb_h), or r (.) H
        return r_g * (acc_h + rbh) if lbr else r_g * hp_j

    def candidate_in(rh_j, acc_h):
        return rh_j if lbr else acc_h

    # per op, one step of batch row b at time t: gate pre-activations in acc, the previous
    # hidden state in hp, the new one written to Y[t, b], the cell state kept in CL[b]
    @T.macro
    def lstm_step(XW, Rt, P, Y, CL, acc, hp, rh, Rbh, b, t):
        for q in range(gh):
            acc[q] = XW[t, b, offset + q]
        for k in range(H):
            for q in range(gh):
                acc[q] = acc[q] + hp[k] * Rt[k, q]
        for j in range(H):  # gate order i, o, f, c; peepholes i, o, f
            i_g = f(acc[j] + P[j] * CL[b, j])
            f_g = forget(i_g, acc[2 * H + j] + P[2 * H + j] * CL[b, j])
            c_new = f_g * CL[b, j] + i_g * gg(acc[3 * H + j])
            CL[b, j] = c_new
            Y[t, b, j] = f(acc[H + j] + P[H + j] * c_new) * hh(c_new, False)

    @T.macro
    def gru_step(XW, Rt, P, Y, CL, acc, hp, rh, Rbh, b, t):
        # gate order z, r, h: z and r (and h when linear_before_reset) from hp
        for q in range(gh):
            acc[q] = zero
        for k in range(H):
            for q in range(zr):
                acc[q] = acc[q] + hp[k] * Rt[k, q]
        for j in range(H):
            rh[j] = reset_times(f(XW[t, b, offset + H + j] + acc[H + j]), acc[2 * H + j], Rbh[j], hp[j])
        for k in range(h_later):
            for j in range(H):
                acc[2 * H + j] = acc[2 * H + j] + rh[k] * Rt[k, 2 * H + j]
        for j in range(H):
            z = f(XW[t, b, offset + j] + acc[j])
            cand = gg(XW[t, b, offset + 2 * H + j] + candidate_in(rh[j], acc[2 * H + j]))
            Y[t, b, j] = (one - z) * cand + z * hp[j]

    @T.macro
    def rnn_step(XW, Rt, P, Y, CL, acc, hp, rh, Rbh, b, t):
        for q in range(gh):
            acc[q] = XW[t, b, offset + q]
        for k in range(H):
            for q in range(gh):
                acc[q] = acc[q] + hp[k] * Rt[k, q]
        for j in range(H):
            Y[t, b, j] = f(acc[j])

    step = {"LSTM": lstm_step, "GRU": gru_step, "RNN": rnn_step}[op]

    @T.prim_func(s_tir=False)
    def kernel(XW: T.Buffer((steps, batch, width), dtype), Rt: T.Buffer((H, gh), dtype),
               Rbh: T.Buffer((H,), dtype), P: T.Buffer((3 * H,), dtype), H0: T.Buffer((batch, H), dtype),
               C0: T.Buffer((batch, H), dtype), Y: T.Buffer((steps, batch, H), dtype),
               CL: T.Buffer((batch, H), dtype)):
        acc = T.alloc_buffer((gh,), dtype)
        hp = T.alloc_buffer((H,), dtype)
        rh = T.alloc_buffer((H,), dtype)
        for b in range(batch):
            for j in range(H):
                hp[j] = H0[b, j]
                CL[b, j] = C0[b, j]
            for s in range(steps):
                step(XW, Rt, P, Y, CL, acc, hp, rh, Rbh, b, time(s))
                for j in range(H):
                    hp[j] = Y[time(s), b, j]
    # opaque: FuseOps leaves it alone (a hand-written kernel, see tvm-0.27 notes)
    return kernel.without_attr("global_symbol").with_attrs({"op_pattern": 8, "tirx.noalias": True})
