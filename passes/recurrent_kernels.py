"""Pipeline step: each recurrent layer's placeholder becomes its kernel, built for the target.

The ONNX import (`nrqc/onnx_recurrent.py`) cannot know the target, so it emits every LSTM /
GRU / RNN direction as a `call_tir` of a placeholder PrimFunc that only carries the layer's
description (`nrqc.recurrent`: a `RecurrentSpec`) and the weights in their ONNX reading
(W and R transposed, 8-bit or float, with per-column scales and zero points). Here, first
of the float steps, each call is replaced by a call of `targets/kernels/recurrent.py`'s
kernel with the register block the target's SIMD width and register count give, and the
weights packed in that block's layout. A placeholder left in the module would compute
nothing, so none is left: `lower_recurrent` replaces every one it finds.
"""
from __future__ import annotations

import json

import numpy as np

from nrqc.onnx_recurrent import SPEC_ATTR, RecurrentSpec
from nrqc.passes.base import CompileContext, Step



def _const(expr) -> np.ndarray:
    return expr.value.numpy()


def lower_recurrent(mod, ctx: CompileContext):
    import tvm
    from tvm import relax

    from nrqc.targets.kernels import recurrent as rk

    caps = ctx.target.caps
    lanes = 1 if caps.scalar else caps.float_lanes
    call_tir = tvm.ir.Op.get("relax.call_tir")
    placeholders = {gv for gv, f in mod.functions.items()
                    if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and SPEC_ATTR in f.attrs}
    if not placeholders:
        return mod
    count = 0
    widths = set()

    @relax.expr_functor.mutator
    class Lower(relax.PyExprMutator):
        def visit_call_(self, call):
            nonlocal count
            call = self.visit_expr_post_order(call)
            if not (call.op.same_as(call_tir) and call.args[0] in placeholders):
                return call
            spec = RecurrentSpec.from_json(json.loads(str(mod[call.args[0]].attrs[SPEC_ATTR])))
            bw = rk.block_width(spec, lanes, caps.vector_registers)
            widths.add(bw)
            x, w, ws, wz, bias, r, rs, rz, rbh, p, h0, c0 = call.args[1].fields
            mats = rk.kernel_matrices(spec, rk.QuantMatrix(_const(w), _const(ws), _const(wz)),
                                      rk.QuantMatrix(_const(r), _const(rs), _const(rz)))
            packed = [rk.pack_weights(m, bw) for m in mats]
            bias_p = np.zeros(packed[0][1].shape, np.float32)
            bias_p[:_const(bias).size] = _const(bias)
            args = [x]
            for k, (values, scale, zero) in enumerate(packed):
                args += [relax.const(values), relax.const(scale), relax.const(zero)]
                if k == 0:
                    args.append(relax.const(bias_p))
            args += [rbh, p, h0, c0]
            gv = self.builder_.add_func(rk.recurrent_kernel(spec, lanes, caps.vector_registers),
                                        f"{spec.op.lower()}_scan")
            count += 1
            return relax.call_tir(gv, args, list(call.ty_args[0].fields))

    lower = Lower(mod)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            lower.builder_.update_func(gv, lower.visit_expr(func))
    # the kernels the builder added, without the placeholders
    built = lower.builder_.get()
    names = {gv.name_hint for gv in placeholders}
    mod_out = tvm.IRModule({g: f for g, f in built.functions.items() if g.name_hint not in names}, attrs=built.attrs)
    ctx.notes.append(f"recurrent kernels: x{count} (GEMV blocks of {'/'.join(map(str, sorted(widths)))} columns)")
    return mod_out


def step() -> Step:
    return Step("nrqc.RecurrentKernels", "float", lower_recurrent)
