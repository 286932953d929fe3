"""Pass: fuse a float two-layer 1x1 head on a packed map into one kernel (bits_head).

One job: where main computes, from a packed binary map P,

    A = call_tir(binary_conv1x1_float, [P, W1])   (BinaryRewrite's select-add over the bits)
    [reshape] -> [add bias B1] -> relu -> conv 1x1 (W2) -> [add bias B2]

each intermediate used once, the chain becomes one call of `bits_head` whose hidden vector
stays in registers, so none of the head's float maps is stored (the VAD: 6.4 kB of
[16, 100] float32 on top of the select-add's output). Only constants of the expected
shapes are folded (the bias along the channel axis, the second conv 1x1 / stride 1 / no
padding / one group); anything else leaves the chain as it is. Bare-metal targets fuse the
same chain in their own C kernel (their hand kernels replace binary_conv1x1_float by its
operator description), so the pass skips them.
"""
from __future__ import annotations

import numpy as np

from nrqc.passes.binary_patterns import const_value, drop_unused_kernels, main_bindings, op_name, use_counts


def fuse_head(mod, ctx):
    from tvm import relax

    from nrqc.targets.kernels import binary_ops as bo
    from nrqc.targets.kernels.bits_head import bits_head

    bindings = main_bindings(mod)
    if ctx.target.caps.scalar or bindings is None:
        return mod
    counts = use_counts(bindings, mod["main"].body.body)
    users: dict = {}
    for b in bindings:
        for a in _var_args(b.value):
            users.setdefault(a, []).append(b)
    bb = relax.BlockBuilder(mod)
    replace, drop = {}, set()
    for b in bindings:
        op = _select_add_op(mod, b.value)
        if op is None:
            continue
        chain = _head_chain(b, users, counts, op["o"])
        if chain is None:
            continue
        w1 = const_value(b.value.args[1].fields[1])
        if w1 is None:
            continue
        last, b1, w2, b2, consumed = chain
        o1, o2 = op["o"], w2.shape[0]
        if int(np.prod([int(d) for d in last.var.ty.shape])) != op["n"] * o2 * op["h"] * op["w"]:
            continue
        name = f"{b.value.args[0].name_hint}_head"
        out_shape = [int(d) for d in last.var.ty.shape]
        func = bits_head(op["n"], op["c"], op["h"], op["w"], o1, o2, signed_input=op["signed_input"],
                         out_shape=tuple(out_shape))
        gv = bb.add_func(bo.as_kernel(func, name, ctx.target, ctx.notes), name)
        args = [b.value.args[1].fields[0],
                relax.const(np.ascontiguousarray(w1.reshape(o1, op["c"]).T.astype(np.float32))),
                relax.const((b1 if b1 is not None else np.zeros(o1)).astype(np.float32)),
                relax.const(np.ascontiguousarray(w2.reshape(o2, o1).astype(np.float32))),
                relax.const((b2 if b2 is not None else np.zeros(o2)).astype(np.float32))]
        replace[last.var] = relax.VarBinding(last.var, relax.call_tir(gv, args, relax.TensorType(out_shape, "float32")))
        drop |= {c.var for c in consumed} | {b.var}
        _annotate(ctx, consumed, name)
    if not replace:
        return mod
    out = []
    for b in bindings:
        if b.var in replace:
            out.append(replace[b.var])
        elif b.var not in drop:
            out.append(b)
    func = mod["main"]
    mod = bb.get()
    mod["main"] = relax.Function(func.params, relax.SeqExpr([relax.DataflowBlock(out)], func.body.body),
                                 func.ret_ty, func.is_pure, func.attrs)
    mod = drop_unused_kernels(relax.transform.DeadCodeElimination(["main"])(mod))
    ctx.notes.append(f"binary fuse-head: {len(replace)} float 1x1 head(s) on a packed map fused into one kernel "
                     "(no float map of the head is stored)")
    return mod


def _var_args(value):
    from tvm import relax

    out = []
    if isinstance(value, relax.Call):
        for a in value.args:
            if isinstance(a, relax.Var):
                out.append(a)
            elif isinstance(a, relax.Tuple):
                out += [f for f in a.fields if isinstance(f, relax.Var)]
    return out


def _select_add_op(mod, value) -> dict | None:
    """The operator description of a binary_conv1x1_float call, else None."""
    from nrqc.targets.kernels import binary_ops as bo

    if op_name(value) != "relax.call_tir":
        return None
    op = bo.op_of(mod[value.args[0]])
    return op if op is not None and op.get("op") == "binary_conv1x1_float" else None


def _channel_vector(value, channels: int, rank: int):
    """A constant broadcast along axis 1 of a rank-`rank` tensor only -> its [channels] values."""
    if value is None or value.size != channels or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    if shape != tuple(channels if i == 1 else 1 for i in range(rank)) and channels != 1:
        return None
    return value.reshape(channels).astype(np.float64)


def _head_chain(start, users, counts, o1: int):
    """(last binding, B1, W2, B2, bindings consumed) when the chain after `start` is
    [reshape] [add B1] relu conv1x1(W2) [add B2] with every intermediate used once."""
    consumed = []
    cur = start
    stage = "bias1"
    b1 = w2 = b2 = None
    while True:
        nxt = users.get(cur.var, [])
        if counts.get(cur.var, 0) != 1 or len(nxt) != 1:
            break
        u = nxt[0]
        v = u.value
        name = op_name(v)
        rank = len(v.ty.shape) if hasattr(v.ty, "shape") and v.ty.shape is not None else 0
        if name == "relax.reshape" and stage in ("bias1", "relu") and v.args[0].same_as(cur.var):
            pass
        elif name == "relax.add" and stage in ("bias1", "bias2") and v.args[0].same_as(cur.var):
            vec = _channel_vector(const_value(v.args[1]), o1 if stage == "bias1" else w2.shape[0], rank)
            if vec is None:
                break
            if stage == "bias1":
                b1, stage = vec, "relu"
            else:
                b2, stage = vec, "done"
        elif name == "relax.nn.relu" and stage in ("bias1", "relu"):
            stage = "conv"
        elif name in ("relax.nn.conv1d", "relax.nn.conv2d") and stage == "conv" and v.args[0].same_as(cur.var):
            w = const_value(v.args[1])
            a = v.attrs
            if w is None or w.ndim < 3 or w.shape[1] != o1 or any(int(k) != 1 for k in w.shape[2:]) \
                    or any(int(s) != 1 for s in a.strides) or any(int(p) != 0 for p in a.padding) \
                    or any(int(d) != 1 for d in a.dilation) or int(a.groups) != 1 \
                    or str(a.data_layout) not in ("NCW", "NCHW") or str(a.kernel_layout) not in ("OIW", "OIHW") \
                    or str(a.out_layout) not in ("NCW", "NCHW"):
                break
            w2, stage = w.astype(np.float64), "bias2"
        else:
            break
        consumed.append(u)
        cur = u
        if stage == "done":
            break
    if w2 is None:
        return None
    return cur, b1, w2, b2, consumed


def _annotate(ctx, consumed, kernel: str) -> None:
    """The layer entries of the head's convs name the fused kernel; the later ones are fused
    into the first (the select-add's layer, whose core var is re-bound to its reshape)."""
    by_var = {p.core: p.layer for p in ctx.binary.plan if p.core is not None and p.layer is not None}
    layers = [by_var[b.var] for b in consumed if b.var in by_var]
    for layer in layers:
        layer.kernel = f"nrqc:{kernel}"
        if layer is not layers[0]:
            layer.fused_into = layers[0].name
