"""Pass: float 3x3 convolutions as Winograd F(2x2, 3x3) kernels on SIMD CPU targets.

Runs after the binary passes, before legalization, on x86 and aarch64 (NEON) targets. A `relax.nn.conv2d` with a constant
OIHW float32 weight, 3x3 kernel, stride 1, dilation 1, padding 1, one group, batch 1,
at least 8 input channels and output channels a multiple of the vector width, is replaced
together with its epilogue (a per-channel constant bias add, a ReLU, and a 2x2 / stride-2
max pool when they follow, each used only by the next) by one call of
`nrqc.targets.kernels.winograd` (2.25x fewer multiplications; the weights are
transformed at compile time, 16/9 of their bytes). Bare-metal C targets keep the direct
conv (no SIMD to feed, and the transformed weights would cost flash).
NRQC_NO_WINOGRAD=1 turns the pass off.
"""
from __future__ import annotations

import os

import numpy as np

from nrqc.layer_table import LayerRecord
from nrqc.passes.base import CompileContext, Step

MIN_CHANNELS = 8


def _users(bindings, body):
    from tvm import relax

    users: dict = {}
    for b in bindings:
        def visit(e, b=b):
            if isinstance(e, relax.Var):
                users.setdefault(e, []).append(b)
        relax.analysis.post_order_visit(b.value, visit)

    def visit_body(e):
        if isinstance(e, relax.Var):
            users.setdefault(e, []).append(None)
    relax.analysis.post_order_visit(body, visit_body)
    return users


def _conv_ok(value, lanes: int):
    """Why a conv2d binding is not a Winograd candidate (None if it is)."""
    from tvm import relax

    from nrqc.passes.binary_patterns import const_value

    a = value.attrs
    w = const_value(value.args[1])
    if w is None or w.dtype != np.float32 or not isinstance(value.args[0], relax.Var):
        return "weights not a float32 constant"
    if (str(a.data_layout), str(a.kernel_layout)) != ("NCHW", "OIHW") or int(a.groups) != 1:
        return "layout/groups"
    if [int(v) for v in a.strides] != [1, 1] or [int(v) for v in a.dilation] != [1, 1] \
            or [int(v) for v in a.padding] != [1, 1, 1, 1] or tuple(w.shape[2:]) != (3, 3):
        return "not 3x3 / stride 1 / pad 1"
    try:
        n, c, h, wd = (int(d) for d in value.args[0].ty.shape)
    except (TypeError, ValueError):
        return "dynamic shape"
    if n != 1 or c < MIN_CHANNELS or w.shape[0] % lanes or h < 2 or wd < 2:
        return "batch, channel count or size"
    return None


def _bias(value, conv_var, defs, k: int):
    """The per-channel constant added to conv_var by `value` (an add), or None."""
    from tvm import relax

    from nrqc.passes.binary_patterns import const_value, op_name

    if op_name(value) != "relax.add":
        return None
    a, b = value.args
    other = b if a.same_as(conv_var) else a if b.same_as(conv_var) else None
    if other is None:
        return None
    arr = const_value(other)
    if arr is None and isinstance(other, relax.Var) and op_name(defs.get(other)) == "relax.reshape":
        arr = const_value(defs[other].args[0])
    if arr is None or arr.size != k or arr.dtype != np.float32:
        return None
    shape = tuple(int(d) for d in other.ty.shape)
    if shape not in ((1, k, 1, 1), (k, 1, 1)):
        return None
    return np.asarray(arr, np.float32).reshape(k)


def _is_pool2(value) -> bool:
    from nrqc.passes.binary_patterns import op_name

    if op_name(value) != "relax.nn.max_pool2d":
        return False
    a = value.attrs
    return ([int(v) for v in a.pool_size] == [2, 2] and [int(v) for v in a.strides] == [2, 2]
            and [int(v) for v in a.padding] == [0, 0, 0, 0] and [int(v) for v in a.dilation] == [1, 1]
            and not bool(a.ceil_mode) and str(a.layout) == "NCHW")


def _onnx_pool_after(onnx_model, conv_layer: LayerRecord, layers: list[LayerRecord]):
    """The layer entry of the MaxPool node that the ONNX conv's output reaches through
    Add/Relu, found by graph structure (the conv's node identity, then its output's single
    consumers), never by node name: names may be empty or repeated."""
    from nrqc.layer_table import layer_node

    node = layer_node(onnx_model, conv_layer)
    if node is None:
        return None
    consumers: dict = {}
    for n in onnx_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for _ in range(3):
        if len(consumers.get(node.output[0], [])) != 1:
            return None
        node = consumers[node.output[0]][0]
        if node.op_type == "MaxPool":
            return next((layer for layer in layers
                         if layer.onnx_node.get("output") == node.output[0]), None)
        if node.op_type not in ("Add", "Relu"):
            return None
    return None


def rewrite(mod, ctx: CompileContext):
    from tvm import relax

    from nrqc.passes.binary_patterns import main_bindings, op_name
    from nrqc.targets.kernels import winograd as wg
    from nrqc.targets.kernels.binary_ops import as_kernel, with_workload
    from nrqc.targets.schedules import vector_spec

    if os.environ.get("NRQC_NO_WINOGRAD", "") not in ("", "0"):
        return mod
    bindings = main_bindings(mod)
    if bindings is None:
        return mod
    if ctx.target.caps.scalar:
        return mod
    spec = vector_spec(ctx.target)
    if ctx.target.caps.isa == "armv7":
        # 32-bit arm (armv7) is compile-only here: no board or emulator has checked the kernel there
        if any(op_name(b.value) == "relax.nn.conv2d" for b in bindings):
            ctx.notes.append("winograd F(2x2,3x3) not used on 32-bit arm (not checked on such a board); "
                             "convs keep the direct schedule")
        return mod
    body = mod["main"].body.body
    users = _users(bindings, body)
    defs = {b.var: b.value for b in bindings}
    plan = {p.core: p for p in ctx.binary.plan}
    bb = relax.BlockBuilder(mod)
    replace: dict = {}  # var of the chain's last binding -> new value
    extra_bytes, done = 0, []

    def only_user(var):
        u = users.get(var, [])
        return u[0] if len(u) == 1 and u[0] is not None else None

    for b in bindings:
        if op_name(b.value) != "relax.nn.conv2d" or _conv_ok(b.value, spec.lanes) is not None:
            continue
        w = np.asarray(b.value.args[1].value.numpy(), np.float32)
        k = int(w.shape[0])
        _, c, h, wd = (int(d) for d in b.value.args[0].ty.shape)
        last, bias, relu, pool = b, np.zeros(k, np.float32), False, False
        nxt = only_user(last.var)
        if nxt is not None and (bv := _bias(nxt.value, last.var, defs, k)) is not None:
            last, bias, nxt = nxt, bv, only_user(nxt.var)
        if nxt is not None and op_name(nxt.value) == "relax.nn.relu":
            last, relu, nxt = nxt, True, only_user(nxt.var)
        if nxt is not None and _is_pool2(nxt.value):
            last, pool = nxt, True
        g = wg.WinogradConv(c, k, h, wd, pool, relu)
        workload = wg.winograd_conv(g)
        func = with_workload(wg.schedule(workload, g, spec.lanes, spec.registers), workload)
        name = f"nrqc_winograd_conv{len(done)}"
        gv = bb.add_func(as_kernel(func, name, ctx.target, ctx.notes), name)
        u = wg.transform_weights(w)
        replace[last.var] = relax.call_tir(gv, [b.value.args[0], relax.const(u), relax.const(bias)],
                                           relax.TensorType(list(g.out_shape), "float32"))
        extra_bytes += u.nbytes - w.nbytes
        layer = plan[b.var].layer if b.var in plan else None
        if layer is not None:
            layer.kernel = f"nrqc:{name}"
            layer.strategy = {"strategy": "winograd F(2x2,3x3)", "method": "rule: float 3x3 stride-1 conv, "
                                 f">= {MIN_CHANNELS} input channels, output channels a multiple of {spec.lanes}",
                                 "multiplications_per_output": "4 instead of 9 per input channel"}
            layer.float_reason = layer.float_reason or "float model layer (no binary activation input)"
            pool_layer = _onnx_pool_after(ctx.onnx_model, layer, ctx.layers) if pool else None
            if pool_layer is not None:
                pool_layer.kernel = f"nrqc:{name}"
                pool_layer.fused_into = layer.name
        done.append(f"{c}->{k} @{h}x{wd}" + (" +pool" if pool else ""))
    if not done:
        return mod
    new = [relax.VarBinding(b.var, replace[b.var]) if b.var in replace else b for b in bindings]
    func = mod["main"]
    mod = bb.get()
    mod["main"] = relax.Function(func.params, relax.SeqExpr([relax.DataflowBlock(new)], body), func.ret_ty,
                                 func.is_pure, func.attrs)
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    ctx.notes.append(f"winograd F(2x2,3x3): {len(done)} float 3x3 conv(s) ({', '.join(done)}); "
                     f"transformed weights +{extra_bytes / 1024:.1f} KiB")
    return mod


def step() -> Step:
    return Step("nrqc.ConvWinograd", "float", rewrite)
