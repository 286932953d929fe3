"""Pipeline step: ONNX's NaN semantics for max/min-like float operators.

TVM lowers `max(a, b)` to `a > b ? a : b`: an ordered compare, so a NaN in `a` is
dropped (`max(NaN, 0.5) = 0.5`). ONNX (and onnxruntime, the reference) propagate it:
Relu, Clip, Max, Min, ReduceMax and ReduceMin of a NaN are NaN. Left alone, a NaN input
came out of `nrqc run` as 0 (Relu) or as the constant (Max(x, 1e-12)), silently.

This rewrites, before legalization, each float
- `maximum(a, b)` / `minimum(a, b)` to `where(isnan(a), a, where(isnan(b), b, op(a, b)))`
  (the test on an operand is left out when it is a constant without NaN),
- `relu(x)` / `clip(x, lo, hi)` to `where(isnan(x), x, op(x))`,
- `max(x, axes)` / `min(x, axes)` (reductions, which is also how the ONNX frontend imports
  Max/Min: broadcast, stack, reduce) to the reduction with NaN wherever a reduced element
  was NaN.
The extra compare and select fuse into the same kernel (an epilogue for a conv's ReLU).
MaxPool is not touched: onnxruntime's own MaxPool drops NaN (its result depends on the
window order), so there is no NaN behaviour to match there.

Runs after the float steps (Winograd matches conv -> ReLU on the unrewritten graph).
"""
from __future__ import annotations

import numpy as np

from nrqc.passes.base import CompileContext, Step

_ELEMWISE = ("relax.maximum", "relax.minimum")
_UNARY = ("relax.nn.relu", "relax.clip")
_REDUCE = ("relax.max", "relax.min")


def _float_dtype(expr) -> str | None:
    ty = getattr(expr, "ty", None)
    dtype = str(getattr(ty, "dtype", ""))
    return dtype if dtype.startswith(("float", "bfloat")) else None


def _nan_free_constant(expr) -> bool:
    import tvm

    if isinstance(expr, tvm.ir.GenericConst) and hasattr(expr.value, "numpy"):
        return not bool(np.isnan(expr.value.numpy()).any())
    return False


def propagate_nan(mod, ctx: CompileContext):
    import tvm
    from tvm import relax

    ops = {name: tvm.ir.Op.get(name) for name in (*_ELEMWISE, *_UNARY, *_REDUCE)}
    call_tir = tvm.ir.Op.get("relax.call_tir")
    count = 0

    @relax.expr_functor.mutator
    class NaNPropagation(relax.PyExprMutator):
        def visit_call_(self, call):
            nonlocal count
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, tvm.ir.Op):
                return call
            if call.op.same_as(call_tir):
                as_op = _te_max_min_as_op(mod, call)
                if as_op is None:
                    return call
                call = self.builder_.normalize(as_op)
            name = next((n for n, op in ops.items() if call.op.same_as(op)), None)
            dtype = _float_dtype(call)
            if name is None or dtype is None:
                return call
            bb = self.builder_
            if name in _ELEMWISE:
                a, b = call.args
                out = call
                # b first: the outer test (on a) then wins when both are NaN (either is NaN)
                for operand in (b, a):
                    if not _nan_free_constant(operand):
                        out = relax.op.where(bb.emit(relax.op.isnan(operand)), operand, bb.emit(out))
            elif name in _UNARY:
                x = call.args[0]
                out = relax.op.where(bb.emit(relax.op.isnan(x)), x, bb.emit(call))
            else:
                x = call.args[0]
                attrs = call.attrs
                axis = None if attrs.axis is None else [int(a) for a in attrs.axis]
                flag = relax.op.max(bb.emit(relax.op.astype(bb.emit(relax.op.isnan(x)), "int8")),
                                    axis=axis, keepdims=bool(attrs.keepdims))
                nan = relax.const(np.array(np.nan, dtype=dtype), dtype)
                hit = relax.op.greater(bb.emit(flag), relax.const(np.int8(0), "int8"))
                out = relax.op.where(bb.emit(hit), nan, bb.emit(call))
            count += 1
            return out

    new_mod = mod
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            mutated = NaNPropagation(new_mod).visit_expr(func)
            new_mod = tvm.IRModule({g: (mutated if g.same_as(gv) else f) for g, f in new_mod.functions.items()},
                                   attrs=new_mod.attrs)
    if count:
        ctx.notes.append(f"NaN-propagating max/min/relu/clip: x{count}")
    return new_mod


def _is_load(expr) -> bool:
    return type(expr).__name__ in ("BufferLoad", "TensorLoad")  # (tirx.BufferLoad is a factory in 0.27)


def _te_max_min_as_op(mod, call):
    """The frontend imports Clip as `emit_te(topi.maximum/minimum)`: a call_tir of a one-block
    PrimFunc `out = max(x, lo)`. Such a call as the Relax op it computes (so that the NaN rule
    applies to it), or None for any other call_tir."""
    import tvm
    from tvm import relax, s_tir, tirx

    gv = call.args[0]
    name = gv.name_hint
    if not name.startswith(("maximum", "minimum")) or not isinstance(mod[gv], tirx.PrimFunc):
        return None
    func = mod[gv]
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    from nrqc.targets.schedules.rules import _blocks

    blocks = _blocks(sch)
    if len(blocks) != 1:
        return None
    store = sch.get(blocks[0]).body
    value = getattr(store, "value", None)
    kind = tirx.Max if name.startswith("maximum") else tirx.Min
    if not isinstance(value, kind):
        return None
    args = list(call.args[1].fields)
    dtype = str(value.ty.dtype) if hasattr(value, "ty") else str(value.dtype)
    if len(args) == 2 and _is_load(value.a) and _is_load(value.b):
        a, b = args
    elif len(args) == 1 and _is_load(value.a) and isinstance(value.b, tirx.FloatImm):
        a, b = args[0], relax.const(np.array(float(value.b.value), dtype=dtype), dtype)
    else:
        return None
    return (relax.op.maximum if kind is tirx.Max else relax.op.minimum)(a, b)


def step() -> Step:
    return Step("nrqc.PropagateNaN", "float", propagate_nan)
