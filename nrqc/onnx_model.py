"""Loading and validating the user's ONNX model before anything reaches TVM.

Everything here turns a bad input into an NrqcError naming the file, node or option at
fault, so the compiler proper can assume a well-formed, statically shaped graph.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nrqc.errors import NrqcError


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass
class LoadedModel:
    """The validated ONNX model with static shapes, ready for import."""

    path: Path
    onnx_model: object  # original
    shaped: object  # shape-inferred copy
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # inputs bound by `--const` (initializers in the imported graph, gone from `inputs`);
    # the onnxruntime reference still takes them as inputs of the source model
    constants: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    rewrites: list[str] = dataclasses.field(default_factory=list)  # what load-time folding did


def load_model(path: str | Path, shapes: dict[str, tuple[int, ...]],
               constants: dict[str, str] | None = None) -> LoadedModel:
    """Load, validate and bind `path`; `shapes` from --shape, `constants` from --const
    (text values). The graph handed to the import has its static shape arithmetic and
    constant-condition Ifs folded (nrqc.onnx_fold); its recurrent layers are checked here
    and imported by nrqc.onnx_recurrent."""
    from nrqc.onnx_fold import bind_constants, check_static_shape_inputs, fold_static, with_constants
    from nrqc.onnx_recurrent import check_recurrent

    path = Path(path)
    source = load_onnx(path)
    bound = bind_constants(_const_specs(source, shapes, path), constants or {}, path)
    model = with_constants(source, bound)
    check_supported_ops(model, path)
    validate_onnx(model, path)
    inputs = graph_inputs(model, {k: v for k, v in shapes.items() if k not in bound}, path)
    try:
        model, rewrites = fold_static(model, lambda mm: infer_shapes(mm, inputs))
    except Exception as e:
        raise NrqcError(f"{path}: shapes {_fmt_specs(inputs)} do not fit the model: {str(e).splitlines()[0]}") from None
    check_static_shape_inputs(model, _SHAPE_INPUTS, path)
    check_recurrent(model, path)
    check_element_types(model, path)
    return LoadedModel(path, model, model, inputs, graph_outputs(model), bound, rewrites)


# Element types an op's input may not have (the build crashes: Pow on integers "power only
# applies to float", ReduceMax/Min on bool "cannot decide min_value"): refused at load with
# the node named. {op: (input position, refused ONNX element types, what nrqc takes)}
_INTS = (2, 3, 4, 5, 6, 7, 12, 13)
_REFUSED_INPUT_TYPES = {"Pow": (0, (*_INTS, 9), "float tensors"), "ReduceMax": (0, (9,), "numeric tensors"),
                        "ReduceMin": (0, (9,), "numeric tensors")}


def check_element_types(shaped, path: str | Path) -> None:
    """Element-type checks that need the inferred types (shape-inferred model)."""
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*shaped.graph.input, *shaped.graph.value_info, *shaped.graph.output)}
    types.update({i.name: i.data_type for i in shaped.graph.initializer})
    for node in shaped.graph.node:
        i, refused, takes = _REFUSED_INPUT_TYPES.get(node.op_type, (None, (), ""))
        if i is not None and i < len(node.input) and types.get(node.input[i]) in refused:
            raise NrqcError(f"{path}: {node.op_type} node '{node.name or node.output[0]}' takes "
                            f"{_dtype_name(types[node.input[i]])} input '{node.input[i]}': nrqc compiles "
                            f"{node.op_type} on {takes} only")


def _fmt_specs(specs) -> str:
    return ", ".join(f"{s.name}={','.join(map(str, s.shape))}" for s in specs)


def import_relax(m: LoadedModel):
    """The model as a Relax IRModule (TVM's ONNX frontend, weights as constants)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from nrqc.onnx_recurrent import recurrent_converters

    try:
        with recurrent_converters():
            return from_onnx(m.onnx_model, shape_dict={s.name: list(s.shape) for s in m.inputs},
                             dtype_dict={s.name: s.dtype for s in m.inputs}, keep_params_in_input=False)
    except tvm.error.OpNotImplemented as e:
        raise NrqcError(f"{m.path}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # the frontend raises plain ValueError/TVMError for shape clashes
        raise NrqcError(f"{m.path}: import failed with shapes {_fmt_specs(m.inputs)}: {last_line(e)}") from None


def last_line(e: Exception) -> str:
    """The last non-empty line of an exception's message (TVM's errors end with the cause)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def parse_shape_options(options: tuple[str, ...] | list[str]) -> dict[str, tuple[int, ...]]:
    """`--shape NAME=1,900,120` (repeatable) -> {NAME: (1, 900, 120)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for opt in options or ():
        name, sep, dims = opt.partition("=")
        if not sep or not name or not dims:
            raise NrqcError(f"malformed --shape '{opt}': expected NAME=D1,D2,... (for example input_1=1,900,120)")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise NrqcError(f"malformed --shape '{opt}': dimensions must be integers separated by commas") from None
        if any(d <= 0 for d in shape):
            raise NrqcError(f"malformed --shape '{opt}': dimensions must be positive")
        shapes[name] = shape
    return shapes


def load_onnx(path: str | Path):
    import onnx

    path = Path(path)
    if not path.exists():
        raise NrqcError(f"{path}: no such file")
    if path.is_dir():
        raise NrqcError(f"{path}: is a directory, expected an ONNX model file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises several types for garbage input
        raise NrqcError(f"{path}: not an ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unparsable'})") from None
    if not model.graph.node:
        raise NrqcError(f"{path}: not an ONNX model (no graph nodes)")
    return model


def validate_onnx(model, path: str | Path) -> None:
    """onnx.checker, after check_supported_ops so an unknown op is named as such."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise NrqcError(f"{path}: invalid ONNX model: {str(e).splitlines()[0]}") from None


_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def _initializer_names(model) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _const_specs(model, shapes: dict[str, tuple[int, ...]], path) -> list[TensorSpec]:
    """The specs `--const` values are read against: every graph input's element type and
    shape (from --shape, else the model's dims with unknown ones taken as 1)."""
    inits = _initializer_names(model)
    out = []
    for inp in model.graph.input:
        tt = inp.type.tensor_type
        if inp.name in inits or tt.elem_type not in _ONNX_DTYPES:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim)
        out.append(TensorSpec(inp.name, tuple(shapes.get(inp.name, dims)), _ONNX_DTYPES[tt.elem_type]))
    return out


def graph_inputs(model, overrides: dict[str, tuple[int, ...]], path: str | Path) -> list[TensorSpec]:
    """Static input specs: model dims, with symbolic ones taken from --shape."""
    inits = _initializer_names(model)
    specs = []
    names = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        names.append(inp.name)
        tt = inp.type.tensor_type
        dtype = _ONNX_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise NrqcError(f"{path}: input '{inp.name}' has element type {_dtype_name(tt.elem_type)}, which nrqc "
                            f"does not compile (it takes {', '.join(_ONNX_DTYPES.values())})")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        if inp.name in overrides:
            want = overrides[inp.name]
            if len(want) != len(dims):
                raise NrqcError(f"--shape {inp.name}={','.join(map(str, want))}: model input '{inp.name}' has rank "
                                f"{len(dims)} ({_fmt_dims(dims)}), not {len(want)}")
            for i, (d, w) in enumerate(zip(dims, want)):
                if isinstance(d, int) and d > 0 and d != w:
                    raise NrqcError(f"--shape {inp.name}={','.join(map(str, want))}: dimension {i} of model input "
                                    f"'{inp.name}' is fixed to {d} ({_fmt_dims(dims)})")
            shape = want
        else:
            if 0 in dims:
                raise NrqcError(f"{path}: input '{inp.name}' has an empty dimension ({_fmt_dims(dims)}): nrqc "
                                f"compiles tensors with at least one element")
            if any(not (isinstance(d, int) and d > 0) for d in dims):
                # Batch-like symbolic dims default to 1; any other unknown dimension needs --shape.
                if all(isinstance(d, int) and d > 0 for d in dims[1:]):
                    shape = (1, *dims[1:])
                else:
                    raise NrqcError(f"{path}: input '{inp.name}' has dynamic shape ({_fmt_dims(dims)}): "
                                    f"give it with --shape {inp.name}=D1,D2,...")
            else:
                shape = tuple(dims)
        specs.append(TensorSpec(inp.name, tuple(int(s) for s in shape), dtype))
    unknown = set(overrides) - set(names)
    if unknown:
        raise NrqcError(f"--shape names unknown input(s) {', '.join(sorted(unknown))}: the model's inputs are "
                        f"{', '.join(names)}")
    return specs


def _fmt_dims(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def check_supported_ops(model, path: str | Path) -> None:
    """Name the first node whose op the Relax ONNX frontend cannot import."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    from nrqc.onnx_recurrent import RECURRENT_OPS

    known = set(_get_convert_map()) | {"If", "Constant", *RECURRENT_OPS}
    graph_input_names = {i.name for i in model.graph.input} - _initializer_names(model)
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            hint = (": onnxruntime's quantize_dynamic writes it; nrqc compiles LSTM/GRU with int8 weights as "
                    "DequantizeLinear(int8 initializer) -> W, R of a standard node"
                    if node.op_type.startswith("DynamicQuantize") and node.op_type != "DynamicQuantizeLinear" else "")
            raise NrqcError(f"{path}: unsupported op {node.domain}::{node.op_type} at node "
                            f"'{node.name or node.output[0]}'{hint}")
        if node.op_type not in known:
            raise NrqcError(f"{path}: unsupported op {node.op_type} at node '{node.name or node.output[0]}'")
        for i in _SHAPE_INPUTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in graph_input_names:
                why = "the import needs as a constant" if (node.op_type, i) == ("Pad", 2) else "decides the output shape"
                raise NrqcError(f"{path}: {node.op_type} node '{node.name or node.output[0]}' takes its input {i} "
                                f"('{node.input[i]}', which {why}) from the graph input of "
                                f"that name: nrqc compiles static shapes and needs it constant (an initializer)")
        _check_outputs_and_types(node, used, path)
        refused = _REFUSED_ATTRIBUTES.get(node.op_type)
        if refused:
            for attr in node.attribute:
                why = refused.get(attr.name)
                if why and why[0](attr):
                    raise NrqcError(f"{path}: unsupported {node.op_type} attribute {attr.name} at node "
                                    f"'{node.name or node.output[0]}': {why[1]}")
    # after the nodes: a Cast to the type names its node, which says more than the output
    for out in model.graph.output:
        elem = out.type.tensor_type.elem_type
        if elem and elem not in _ONNX_DTYPES:
            raise NrqcError(f"{path}: output '{out.name}' has element type {_dtype_name(elem)}, which nrqc does not "
                            f"compile (it takes {', '.join(_ONNX_DTYPES.values())})")


# Inputs (by position) that decide an op's output shape. Fed by a graph input they make the
# graph's shapes data-dependent, which the static pipeline cannot plan (Slice crashed in
# FuseOps, Squeeze in the memory plan): refused at load, naming the node and the input.
_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
_SHAPE_INPUTS = {
    "Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Reshape": (1,), "Expand": (1,), "Tile": (1,),
    # Pad's input 2 (constant_value) does not decide the shape, but the frontend needs it constant too
    "Pad": (1, 2, 3), "TopK": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "ConstantOfShape": (0,),
    "Range": (0, 1, 2), "OneHot": (1,), "Split": (1,), **{op: (1,) for op in _REDUCE_OPS},
}


# Optional outputs the Relax frontend does not produce (it returns output 0 only, or a wrong
# type: Dropout's mask comes back float32, LayerNormalization's Mean/InvStdDev empty): a model
# that uses one is refused, naming the node (ONNX backend node tests, docs/onnx-ops.md).
_FIRST_OUTPUT_ONLY = {"Dropout": "its mask output", "LayerNormalization": "its Mean / InvStdDev outputs",
                      "MaxPool": "its Indices output"}


def _dtype_name(elem: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return str(elem)


def _check_outputs_and_types(node, used: set[str], path) -> None:
    where = f"{node.op_type} node '{node.name or node.output[0]}'"
    if node.op_type in _FIRST_OUTPUT_ONLY and any(o and o in used for o in node.output[1:]):
        raise NrqcError(f"{path}: {where} uses {_FIRST_OUTPUT_ONLY[node.op_type]}, which nrqc does not compile "
                        f"(inference graphs use output 0 only)")
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        # training_mode: random masks at run time; an inference compiler cannot honour it
        raise NrqcError(f"{path}: {where} takes a training_mode input ('{node.input[2]}'): export the model for "
                        f"inference (Dropout is then the identity)")
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), 0)
        if to not in _ONNX_DTYPES:
            raise NrqcError(f"{path}: {where} converts to element type {_dtype_name(to)}, which nrqc does not "
                            f"compile (it takes {', '.join(_ONNX_DTYPES.values())})")


# Attribute values the Relax ONNX frontend imports but computes wrongly (ONNX backend node
# tests, docs/onnx-ops.md): refused at load rather than compiled to a wrong answer.
_REFUSED_ATTRIBUTES = {
    "BatchNormalization": {
        "training_mode": (lambda a: a.i != 0, "training_mode=1 (batch statistics) is not supported; "
                                               "export the model for inference"),
    },
    "ConvTranspose": {
        "output_shape": (lambda a: len(a.ints) > 0, "output_shape is not supported; give pads/output_padding "
                                                    "instead"),
    },
}


def infer_shapes(model, inputs: list[TensorSpec]):
    """A copy of the model with the static input shapes set and value_info inferred."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    by_name = {s.name: s for s in inputs}
    for inp in m.graph.input:
        if inp.name in by_name:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, by_name[inp.name].shape):
                d.Clear()
                d.dim_value = v
    return onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)


def graph_outputs(shaped_model) -> list[TensorSpec]:
    out = []
    for o in shaped_model.graph.output:
        tt = o.type.tensor_type
        dims = tuple(d.dim_value for d in tt.shape.dim)
        out.append(TensorSpec(o.name, dims, _ONNX_DTYPES.get(tt.elem_type, "float32")))
    return out


def random_inputs(specs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs in a range typical of normalised speech features."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        if s.dtype.startswith("float"):
            out[s.name] = rng.standard_normal(s.shape).astype(s.dtype)
        elif s.dtype == "bool":
            out[s.name] = rng.integers(0, 2, s.shape).astype(bool)
        else:
            info = np.iinfo(s.dtype)
            out[s.name] = rng.integers(max(info.min, -128), min(info.max, 127) + 1, s.shape).astype(s.dtype)
    return out
