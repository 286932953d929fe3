"""The int8-input entry point, for models that quantize their input themselves.

When a float input's only use is `QuantizeLinear` (Relax `quantize`) with constant scalar
scale and zero point, the caller can skip that step and take the already-quantized
tensor: we add a second Relax function `main_int8` to the module, identical to `main`
but with the input parameter replaced by an int8/uint8 one bound where the quantize
result was. Both functions then go through the same pipeline (so both have a static
memory plan; they share the arena, and identical kernels/weights are emitted once).
"""
from __future__ import annotations

import dataclasses

import numpy as np

INT8_FUNC = "main_int8"


@dataclasses.dataclass
class QuantizedInput:
    index: int
    name: str
    dtype: str  # "int8" | "uint8"
    scale: float
    zero_point: int


def find_quantized_input(mod):
    """(QuantizedInput, new module with main_int8) or (None, mod)."""
    import tvm
    from tvm import relax

    main = mod["main"]
    quantize = tvm.ir.Op.get("relax.quantize")
    found = None
    uses: dict[int, int] = {}

    def count(expr):
        for i, p in enumerate(main.params):
            if isinstance(expr, relax.Var) and expr.same_as(p):
                uses[i] = uses.get(i, 0) + 1

    relax.analysis.post_order_visit(main.body, count)
    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if not (isinstance(v, relax.Call) and v.op.same_as(quantize)):
                continue
            for i, p in enumerate(main.params):
                if v.args[0].same_as(p) and uses.get(i) == 1 and found is None:
                    scale, zp = v.args[1], v.args[2]
                    if not all(isinstance(c, tvm.ir.GenericConst) and hasattr(c.value, "numpy") for c in (scale, zp)):
                        continue
                    s, z = scale.value.numpy(), zp.value.numpy()
                    if s.size != 1 or z.size != 1:
                        continue
                    dtype = str(b.var.ty.dtype)
                    if dtype not in ("int8", "uint8"):
                        continue
                    found = (i, b, QuantizedInput(i, str(p.name), dtype, float(s.reshape(-1)[0]),
                                                  int(z.reshape(-1)[0])))
    if found is None:
        return None, mod
    i, binding, info = found
    q = relax.Var(f"{main.params[i].name}_q", binding.var.ty)
    params = [q if k == i else p for k, p in enumerate(main.params)]
    blocks = []
    for block in main.body.blocks:
        new = [relax.VarBinding(b.var, q) if b.same_as(binding) else b for b in block.bindings]
        blocks.append(relax.DataflowBlock(new) if isinstance(block, relax.DataflowBlock) else relax.BindingBlock(new))
    fn = relax.Function(params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs)
    from tvm.relax.utils import copy_with_new_vars

    fn = copy_with_new_vars(fn)  # the two functions must not share binding variables
    mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    mod[INT8_FUNC] = fn.with_attr("global_symbol", INT8_FUNC)
    return info, mod


def quantize_like_onnx(x: np.ndarray, q: QuantizedInput) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    info = np.iinfo(q.dtype)
    return np.clip(np.rint(x.astype(np.float32) / np.float32(q.scale)) + q.zero_point, info.min, info.max).astype(q.dtype)
