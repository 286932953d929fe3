"""Compile-time evaluation of an ONNX graph's shape arithmetic and control flow, once its
input shapes are bound (and inputs bound by `--const` are initializers).

Exporters compute pads, reshape targets and slice bounds from `Shape` at run time, and
wrap sample-rate handling in `If` on a scalar input; with static shapes all of that is
constant. Repeated until nothing changes:

- `Shape`/`Size` of a tensor whose shape is known become initializers;
- a node of the shape-arithmetic kind (`_FOLDABLE`) whose inputs are all constants and
  whose outputs are small becomes initializers (evaluated by onnx's reference evaluator);
- an `If` whose condition is constant is replaced by its taken branch (the branch's
  nodes inlined with fresh names, its initializers added, outer-scope names as they are).

Weights, quantization (`DequantizeLinear`) and anything large stay as they are: the
passes after import match those patterns. What stays computed at run time and decides
a shape is named by `check_static_shape_inputs`.
"""
from __future__ import annotations

import numpy as np

from nrqc.errors import NrqcError

# ops evaluated here when all their inputs are constant and their outputs small
_FOLDABLE = frozenset({
    "Constant", "Identity", "Cast", "CastLike", "Gather", "Concat", "Slice", "Squeeze", "Unsqueeze", "Reshape",
    "Flatten", "Expand", "ConstantOfShape", "Range", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor",
    "Ceil", "Max", "Min", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor",
    "Where", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "Transpose", "Tile", "Sqrt", "Pow",
})
_MAX_FOLDED_ELEMENTS = 4096  # shape vectors, pads, small state templates; never weights


def fold_static(model, infer) -> tuple[object, list[str]]:
    """(the model with its static shape arithmetic and constant-condition Ifs folded,
    a list of what was done) — `infer(model)` returns the shape-inferred model."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    done: list[str] = []
    for _ in range(64):
        shaped = infer(m)
        shapes = _static_shapes(shaped)
        if not _fold_once(m, shapes, done):
            break
    _drop_dead(m)
    return infer(m), done


def _static_shapes(model) -> dict[str, tuple[int, ...]]:
    from nrqc.layer_table import _shapes

    return _shapes(model)


def _fold_once(m, shapes, done: list[str]) -> bool:
    from onnx import numpy_helper

    consts = {i.name: i for i in m.graph.initializer}
    outputs = {o.name for o in m.graph.output}
    taken = _names(m)
    values: dict[str, np.ndarray] = {}

    def value(name):
        if name not in values:
            values[name] = numpy_helper.to_array(consts[name])
        return values[name]

    changed = False
    nodes = []
    for node in m.graph.node:
        where = f"{node.op_type} node '{node.name or node.output[0]}'"
        if node.op_type == "If" and node.input[0] in consts:
            taken_branch = "then_branch" if bool(np.asarray(value(node.input[0])).reshape(-1)[0]) else "else_branch"
            nodes.extend(_inline(node, taken_branch, m, taken))
            done.append(f"{where}: condition constant, {taken_branch.split('_')[0]} branch inlined")
            changed = True
            continue
        if any(o in outputs for o in node.output):
            nodes.append(node)
            continue
        result = None
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            result = [_shape_value(node, shapes[node.input[0]])]
        elif node.op_type in _FOLDABLE and all(i in consts for i in node.input if i) \
                and all(value(i).size <= _MAX_FOLDED_ELEMENTS for i in node.input if i):
            result = _evaluate(node, {i: value(i) for i in node.input if i}, m.opset_import)
            if result is not None and any(np.asarray(r).size > _MAX_FOLDED_ELEMENTS for r in result):
                result = None
        if result is None:
            nodes.append(node)
            continue
        for name, v in zip(node.output, result):
            if name:
                m.graph.initializer.append(numpy_helper.from_array(np.asarray(v), name))
                consts[name] = m.graph.initializer[-1]
        changed = True
    if changed:
        del m.graph.node[:]
        m.graph.node.extend(nodes)
        # an output given by value_info and now an initializer: drop the stale entry
        keep = [v for v in m.graph.value_info if v.name not in consts]
        del m.graph.value_info[:]
        m.graph.value_info.extend(keep)
    return changed


def _shape_value(node, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.asarray(int(np.prod(shape, dtype=np.int64)), np.int64)
    start, end = _int_attr(node, "start", 0), _int_attr(node, "end", None)
    return np.asarray(shape[start:end], np.int64)


def _int_attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _evaluate(node, feeds: dict[str, np.ndarray], opset_import) -> list[np.ndarray] | None:
    """The node's outputs on constant inputs (onnx's reference evaluator), None when it
    cannot say (an op or type it does not implement: the node then stays)."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    outputs = [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=list(opset_import))
    try:
        got = ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # noqa: BLE001 - not foldable here; the import handles the node
        return None
    it = iter(got)
    return [next(it) if o else None for o in node.output]


def _names(m) -> set[str]:
    names = {i.name for i in m.graph.input} | {i.name for i in m.graph.initializer}
    for n in m.graph.node:
        names.update(n.input)
        names.update(n.output)
    return names


def _inline(node, branch: str, m, taken: set[str]) -> list:
    """The nodes of the If's taken branch, with its own names made fresh and its outputs
    renamed to the If's; its initializers join the graph's."""
    import onnx
    from onnx import helper

    graph = next(a.g for a in node.attribute if a.name == branch)
    prefix = f"{node.name or node.output[0]}/{branch.split('_')[0]}/"
    local = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output if o}
    rename = {}
    for name in sorted(local):
        new = prefix + name
        while new in taken:
            new += "_"
        taken.add(new)
        rename[name] = new
    for init in graph.initializer:
        t = onnx.TensorProto()
        t.CopyFrom(init)
        t.name = rename[init.name]
        m.graph.initializer.append(t)
    out = []
    for n in graph.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.input[:] = [rename.get(i, i) for i in n.input]
        c.output[:] = [rename.get(o, o) for o in n.output]
        if c.name:
            c.name = prefix + c.name
        out.append(c)
    for branch_out, if_out in zip(graph.output, node.output):
        if if_out:
            out.append(helper.make_node("Identity", [rename.get(branch_out.name, branch_out.name)], [if_out],
                                        name=f"{prefix}output_{if_out}"))
    return out


def _drop_dead(m) -> None:
    """Remove nodes whose outputs nothing uses, and initializers nothing reads."""
    while True:
        used = {o.name for o in m.graph.output} | _subgraph_inputs(m.graph)
        for n in m.graph.node:
            used.update(n.input)
        keep = [n for n in m.graph.node if any(o in used for o in n.output if o)]
        if len(keep) == len(m.graph.node):
            break
        del m.graph.node[:]
        m.graph.node.extend(keep)
    inits = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)


def _subgraph_inputs(graph) -> set[str]:
    """Names read inside subgraphs (If/Loop bodies may read outer-scope values)."""
    names = set()
    for n in graph.node:
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for sub in g.node:
                    names.update(sub.input)
                names |= _subgraph_inputs(g)
    return names


# ----------------------------------------------------------------------- what stays dynamic


def check_static_shape_inputs(model, shape_inputs: dict[str, tuple[int, ...]], path) -> None:
    """Name the first node whose shape-deciding input is still computed at run time after
    folding (nrqc compiles static shapes; the frontend would fail without naming it)."""
    consts = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        for i in shape_inputs.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] and node.input[i] not in consts:
                src = producers.get(node.input[i])
                origin = (f"computed at run time by {src.op_type} node '{src.name or src.output[0]}'" if src
                          else "a graph input")
                raise NrqcError(f"{path}: {node.op_type} node '{node.name or node.output[0]}' takes its input {i} "
                                f"('{node.input[i]}') from {origin}, which stays dynamic with the bound shapes: "
                                f"nrqc compiles static shapes (bind inputs with --shape / --const)")


# ----------------------------------------------------------------------- --const


def parse_const_options(options) -> dict[str, str]:
    """`--const NAME=VALUE` (repeatable; VALUE a number or comma-separated numbers)."""
    out: dict[str, str] = {}
    for opt in options or ():
        name, sep, value = opt.partition("=")
        if not sep or not name or not value:
            raise NrqcError(f"malformed --const '{opt}': expected NAME=VALUE (for example sr=16000)")
        out[name] = value
    return out


def bind_constants(specs, values: dict[str, str], path) -> dict[str, np.ndarray]:
    """{input name: array} for `--const` values, in the input's element type and static shape
    (`specs`: the graph's input specs, shapes bound)."""
    by_name = {s.name: s for s in specs}
    out = {}
    for name, text in values.items():
        if name not in by_name:
            raise NrqcError(f"--const names unknown input '{name}': the model's inputs are "
                            f"{', '.join(by_name)}")
        spec = by_name[name]
        try:
            flat = np.asarray([float(v) for v in text.split(",")])
        except ValueError:
            raise NrqcError(f"malformed --const '{name}={text}': values must be numbers separated by commas") from None
        n = int(np.prod(spec.shape, dtype=np.int64))
        if flat.size != n:
            raise NrqcError(f"--const {name}={text}: input '{name}' has shape {list(spec.shape)} ({n} value"
                            f"{'s' if n != 1 else ''}), not {flat.size}")
        arr = flat.astype(spec.dtype)
        if spec.dtype != "bool" and not spec.dtype.startswith("float") and not np.array_equal(arr, flat):
            raise NrqcError(f"--const {name}={text}: input '{name}' is {spec.dtype}; the value is not")
        out[name] = arr.reshape(spec.shape)
    return out


def with_constants(model, constants: dict[str, np.ndarray]):
    """The model with the bound inputs turned into initializers (removed from its inputs)."""
    import onnx
    from onnx import numpy_helper

    if not constants:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [i for i in m.graph.input if i.name not in constants]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    return m
