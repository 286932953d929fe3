"""Recognition of an int8-input layer (the all-integer first layer, docs/bam-onnx-contract.md
section 7): the layer's input is ``DequantizeLinear(q, s, zp)`` with scalar constant scale and
zero point, reached through at most one Transpose and one Unsqueeze/Reshape, where q is
``QuantizeLinear(src, s, zp)`` of a float tensor (the quantize is then fused into the
integer kernel's load) or an int8/uint8 tensor itself (the `main_int8` entry, or a model
fed int8). Found by graph structure only. Returns the InputQuant the rewrite needs, or the
reason the Q/DQ cannot be taken (the layer then stays a float conv and says why).
"""
from __future__ import annotations

import numpy as np

from nrqc.passes.binary_patterns import const_value, main_bindings, op_name
from nrqc.passes.binary_plan import InputQuant

LAYOUT_OPS = ("relax.reshape", "relax.expand_dims", "relax.permute_dims")


def _shape(e) -> tuple[int, ...]:
    return tuple(int(d) for d in e.ty.shape)


def _scalar_params(call):
    """(scale float32, zero point int) of a quantize/dequantize with scalar constants, else None."""
    s, z = const_value(call.args[1]), const_value(call.args[2])
    if s is None or z is None or np.asarray(s).size != 1 or np.asarray(z).size != 1:
        return None
    return np.float32(np.asarray(s).reshape(-1)[0]), int(np.asarray(z).reshape(-1)[0])


def input_quant_of(x, defs) -> tuple[InputQuant | None, str | None]:
    """(InputQuant, None) when layer input `x` is a dequantized int8/uint8 tensor, (None,
    reason) when it is one in a form the int8 kernels do not take, (None, None) otherwise."""
    from tvm import relax

    def walk(v, layout):
        """Back from v over layout ops (appended outermost first) to the var they read."""
        for _ in range(3):
            value = defs.get(v)
            name = op_name(value)
            if name in LAYOUT_OPS and isinstance(value.args[0], relax.Var):
                layout.append((name, value))
                v = value.args[0]
                continue
            break
        return v

    layout = []
    v = walk(x, layout)
    value = defs.get(v)
    if op_name(value) != "relax.dequantize" or not isinstance(value.args[0], relax.Var):
        return None, None
    q = value.args[0]
    q_dtype = str(q.ty.dtype)
    if q_dtype not in ("int8", "uint8"):
        return None, f"input is dequantized from {q_dtype}, not int8/uint8"
    params = _scalar_params(value)
    if params is None:
        return None, "input DequantizeLinear has a per-axis or non-constant scale/zero point"
    scale, zp = params
    if not scale > 0:
        return None, f"input scale {scale:g} is not positive"
    src, src_dtype = q, q_dtype
    qv = defs.get(q)
    if op_name(qv) == "relax.quantize" and isinstance(qv.args[0], relax.Var):
        if _scalar_params(qv) != params:
            return None, "input QuantizeLinear and DequantizeLinear differ in scale or zero point"
        if str(qv.args[0].ty.dtype) != "float32":
            return None, f"input QuantizeLinear reads {qv.args[0].ty.dtype}, not float32"
        src, src_dtype = qv.args[0], "float32"
    elif qv is not None and op_name(qv) not in LAYOUT_OPS:
        return None, f"the int8 input is computed by {op_name(qv) or 'a non-call'} in the model"
    # an elementwise quantize commutes with layout ops before it: read through those too
    src = walk(src, layout)
    # layout ops, innermost (closest to the source) first: [permute_dims] then reshapes
    perm = None
    ops = list(reversed(layout))
    if ops and ops[0][0] == "relax.permute_dims":
        axes = ops[0][1].attrs.axes
        perm = tuple(int(a) for a in axes) if axes is not None else tuple(reversed(range(len(_shape(src)))))
        ops = ops[1:]
    if any(name == "relax.permute_dims" for name, _ in ops):
        return None, "the input's layout ops are a reshape followed by a transpose"
    return InputQuant(src, _shape(src), perm, src_dtype, q_dtype, float(scale), zp), None


def detect(mod, ctx):
    """Pass 1b (after BinaryPatterns): mark the planned int8-weight layers whose input is a
    quantized tensor (LayerPlan.input_quant, or input_quant_reason)."""
    bindings = main_bindings(mod)
    if bindings is None:
        return mod
    defs = {b.var: b.value for b in bindings}
    for p in ctx.binary.plan:
        if p.weights == "int8" and p.kind in ("conv2d", "conv1d", "matmul"):
            p.input_quant, p.input_quant_reason = input_quant_of(p.x, defs)
    return mod
