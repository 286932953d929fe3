"""The int8-input entry point `main_int8`, for models that quantize their input themselves.

When a float input's only use is `QuantizeLinear` (Relax `quantize`) with constant scalar
scale and zero point, a caller that already has the quantized tensor (a device computing
int8 features, `nrqc run --input x=q.npy`, Cortex-M `nrqc_run_int8`) can skip that step: the
module gets a second Relax function `main_int8`, identical to `main` but with that input
an int8/uint8 parameter. Both go through the rest of the pipeline (one library, shared
kernels and weights, each with its static memory plan).

Two ways to make it, one function:
* `find_quantized_input` (before the pipeline, as the Cortex-M back end does): the quantize
  binding becomes the int8 parameter itself; the layers after it run as in `main`.
* the `nrqc.BinaryInt8Entry` step (after the binary rewrite, every TVM-library back end):
  the quantize is already fused into an int8 conv kernel's load (BinaryRewrite), so in
  `main_int8` that call reads the int8 parameter through the kernel's int8-source twin
  (`BinaryState.int8_twins`: the same strategy built for an int8/uint8 source).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nrqc.passes.binary_patterns import main_bindings

INT8_FUNC = "main_int8"


@dataclasses.dataclass
class QuantizedInput:
    index: int
    name: str
    dtype: str  # "int8" | "uint8"
    scale: float
    zero_point: int

    def manifest(self, entry_point: str = INT8_FUNC) -> dict:
        return {"entry_point": entry_point, "input": self.name, "index": self.index, "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


def _scalar_quantize(value, param):
    """(dtype, scale, zero point) of `quantize(param, s, zp)` with scalar constants, else None."""
    import tvm
    from tvm import relax

    if not (isinstance(value, relax.Call) and getattr(value.op, "name", None) == "relax.quantize"
            and value.args[0].same_as(param)):
        return None
    scale, zp = value.args[1], value.args[2]
    if not all(isinstance(c, tvm.ir.GenericConst) and hasattr(c.value, "numpy") for c in (scale, zp)):
        return None
    s, z = scale.value.numpy(), zp.value.numpy()
    if s.size != 1 or z.size != 1:
        return None
    dtype = str(value.attrs.out_dtype)
    return (dtype, float(s.reshape(-1)[0]), int(z.reshape(-1)[0])) if dtype in ("int8", "uint8") else None


def _with_int8_function(mod, i: int, q_ty, rebind):
    """mod plus main_int8: main with parameter i replaced by a new var of type q_ty and each
    binding passed through rebind(binding, q) (None keeps it)."""
    import tvm
    from tvm import relax
    from tvm.relax.utils import copy_with_new_vars

    main = mod["main"]
    q = relax.Var(f"{main.params[i].name}_q", q_ty)
    params = [q if k == i else p for k, p in enumerate(main.params)]
    blocks = []
    for block in main.body.blocks:
        new = [rebind(b, q) or b for b in block.bindings]
        blocks.append(relax.DataflowBlock(new) if isinstance(block, relax.DataflowBlock) else relax.BindingBlock(new))
    fn = relax.Function(params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs)
    fn = copy_with_new_vars(fn)  # the two functions must not share binding variables
    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    out[INT8_FUNC] = fn.with_attr("global_symbol", INT8_FUNC)
    return out


def find_quantized_input(mod):
    """(QuantizedInput, module with main_int8) or (None, mod): an input whose only use is a
    quantize with scalar constants; main_int8 binds the quantize result to the int8 input."""
    from tvm import relax

    main = mod["main"]
    uses: dict[int, int] = {}

    def count(expr):
        for i, p in enumerate(main.params):
            if isinstance(expr, relax.Var) and expr.same_as(p):
                uses[i] = uses.get(i, 0) + 1

    relax.analysis.post_order_visit(main.body, count)
    for block in main.body.blocks:
        for b in block.bindings:
            for i, p in enumerate(main.params):
                if uses.get(i) != 1:
                    continue
                found = _scalar_quantize(b.value, p)
                if found is None:
                    continue
                info = QuantizedInput(i, str(p.name), *found)
                binding = b
                return info, _with_int8_function(mod, i, b.var.ty,
                                                 lambda x, q: relax.VarBinding(x.var, q) if x.same_as(binding) else None)
    return None, mod


def add_int8_entry(mod, ctx):
    """The `nrqc.BinaryInt8Entry` step: main_int8 for the float input whose every use is a
    kernel that fuses its quantize (or the quantize itself). Records ctx.binary.int8_input."""
    from tvm import relax

    from nrqc.targets.kernels.binary_ops import as_kernel

    twins = ctx.binary.int8_twins
    if INT8_FUNC in [gv.name_hint for gv in mod.functions] or not twins or main_bindings(mod) is None:
        return mod
    main = mod["main"]
    bindings = main_bindings(mod)
    for i, p in enumerate(main.params):
        calls, other = [], 0
        found = None

        def visit(e):
            nonlocal other
            if isinstance(e, relax.Var) and e.same_as(p):
                other += 1

        for b in bindings:
            relax.analysis.post_order_visit(b.value, visit)
            v = b.value
            if isinstance(v, relax.Call) and getattr(v.op, "name", None) == "relax.call_tir":
                name = v.args[0].name_hint
                args = list(v.args[1].fields)
                if name in twins and args and args[0].same_as(p):
                    calls.append(b)
                    found = found or twins[name][1]
        relax.analysis.post_order_visit(main.body.body, visit)
        if not calls or other != len(calls) or any(twins[c.value.args[0].name_hint][1] != found for c in calls):
            continue
        dtype, scale, zp = found
        bb = relax.BlockBuilder(mod)
        new_gv = {}
        for c in calls:
            name = c.value.args[0].name_hint
            if name not in new_gv:
                twin = f"{name}_{dtype}in"
                new_gv[name] = bb.add_func(as_kernel(twins[name][0](), twin, ctx.target, ctx.notes), twin)
        mod = bb.get()

        def rebind(b, q):
            if not any(b.same_as(c) for c in calls):
                return None
            args = list(b.value.args[1].fields)
            return relax.VarBinding(b.var, relax.call_tir(new_gv[b.value.args[0].name_hint], [q, *args[1:]],
                                                          b.var.ty))

        mod = _with_int8_function(mod, i, relax.TensorType(list(p.ty.shape), dtype), rebind)
        ctx.binary.int8_input = QuantizedInput(i, str(p.name), dtype, scale, zp)
        ctx.notes.append(f"input {p.name} is quantized by the model ({dtype}, scale {scale:g}, zero point {zp}) "
                         f"inside {len(calls)} int8 kernel(s): also built {INT8_FUNC}, which takes it already quantized")
        return mod
    return mod


def quantize_like_onnx(x: np.ndarray, q: QuantizedInput) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), float32 division."""
    info = np.iinfo(q.dtype)
    return np.clip(np.rint(x.astype(np.float32) / np.float32(q.scale)) + q.zero_point, info.min, info.max).astype(q.dtype)
