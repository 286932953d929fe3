"""Element-wise numerics against onnxruntime, on artifacts written to disk and run in a
fresh process: every binary ONNX op with a constant operand of each broadcast shape, in
both operand orders; NaN/Inf propagation; a model with a 0-d (scalar) input end to end.

(Issue 13: `Max(1e-12, x)` compiled to a kernel whose first row was garbage: the shipped
pool rule moved the broadcast/stack blocks feeding the reduction the frontend makes of
Max/Min *after* it in the row loop. NaN inputs came out as 0 from Relu/Max/Clip.
A 0-d input was reshaped to [1] by `np.ascontiguousarray` before the shape check.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli

X_SHAPE = (3, 9, 35)  # rows x a width that is not a multiple of the vector length
CONST_SHAPES = {"scalar": (), "one": (1,), "n": (35,), "nm": (9, 35), "1nm": (1, 9, 35)}

# op -> (input kind, operand orders, attributes)
FLOAT_OPS = {
    "Add": {}, "Sub": {}, "Mul": {}, "Div": {}, "Pow": {}, "Max": {}, "Min": {}, "Sum": {}, "Mean": {},
    "Mod": {"fmod": 1}, "Greater": {}, "Less": {}, "Equal": {}, "GreaterOrEqual": {}, "LessOrEqual": {},
}
INT_OPS = {"Add": {}, "Sub": {}, "Mul": {}, "Div": {}, "Max": {}, "Min": {}, "Mod": {"fmod": 0},
           "Greater": {}, "Less": {}, "Equal": {}}
BOOL_OPS = {"And": {}, "Or": {}, "Xor": {}}
COMPARISONS = {"Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual"}
ORDERS = ("xc", "cx")


def _cases():
    for kind, ops in (("f", FLOAT_OPS), ("i", INT_OPS), ("b", BOOL_OPS)):
        for op, attrs in ops.items():
            for order in ORDERS:
                yield kind, op, order, attrs
    yield "f", "PRelu", "xc", {}  # the slope broadcasts to X only (unidirectional)


def _out_name(kind, op, order):
    return f"{op}_{kind}_{order}"


def _binary_model(path: Path, cshape: tuple[int, ...], seed: int = 0) -> Path:
    """One node per (op, dtype, order), each with its own constant of shape `cshape`."""
    rng = np.random.default_rng(seed)
    elem = {"f": TensorProto.FLOAT, "i": TensorProto.INT32, "b": TensorProto.BOOL}
    nodes, inits, outputs = [], [], []
    for kind, op, order, attrs in _cases():
        name = _out_name(kind, op, order)
        if kind == "f":
            c = rng.choice(np.float32([0.5, 1.5, 2.0, -1.0, 3.0, -0.5]), cshape).astype(np.float32)
        elif kind == "i":
            c = rng.choice(np.int32([2, 3, -2, 5, -7]), cshape).astype(np.int32)
        else:
            c = rng.integers(0, 2, cshape).astype(bool)
        inits.append(numpy_helper.from_array(np.asarray(c), f"c_{name}"))
        x = f"x{kind}"
        ins = [x, f"c_{name}"] if order == "xc" else [f"c_{name}", x]
        nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        out_elem = TensorProto.BOOL if (op in COMPARISONS or kind == "b") else elem[kind]
        outputs.append(helper.make_tensor_value_info(name, out_elem, X_SHAPE))
    inputs = [helper.make_tensor_value_info(f"x{k}", elem[k], X_SHAPE) for k in ("f", "i", "b")]
    graph = helper.make_graph(nodes, "binary_ops", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _binary_inputs(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        # no zeros (Div, Mod); repeated values so Equal and ties in Max/Min are exercised
        "xf": rng.choice(np.float32([0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 3.0]), X_SHAPE).astype(np.float32),
        "xi": rng.choice(np.int32([1, -1, 2, -2, 3, -3, 5, -5, 7, -7, 9]), X_SHAPE).astype(np.int32),
        "xb": rng.integers(0, 2, X_SHAPE).astype(bool),
    }


def compile_artifact(model: Path, out: Path) -> Path:
    from nrqc.compiler import CompileOptions, compile_model

    return compile_model(model, "x86", out, CompileOptions(check=False), log=lambda *a: None)


_RUNNER = """
import json, sys
import numpy as np
from nrqc.runtime import ArtifactSession
out, feeds, result = sys.argv[1:4]
session = ArtifactSession(out)
with np.load(feeds) as z:
    got = session.run({k: z[k] for k in z.files})
np.savez(result, **{s["name"]: a for s, a in zip(session.manifest["outputs"], got)})
"""


def run_fresh(out: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The written artifact, loaded and run in a new Python process."""
    np.savez(out.parent / f"{out.name}-feeds.npz", **feeds)
    result = out.parent / f"{out.name}-result.npz"
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(out), str(out.parent / f"{out.name}-feeds.npz"),
                           str(result)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(result) as z:
        return {k: z[k] for k in z.files}


def onnxruntime_outputs(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_same(got: np.ndarray, ref: np.ndarray, what: str, rtol: float = 1e-6, atol: float = 1e-6):
    assert got.shape == ref.shape and got.dtype == ref.dtype, (what, got.shape, got.dtype, ref.shape, ref.dtype)
    if got.dtype.kind == "f":
        bad = ~np.isclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)
    else:
        bad = got != ref
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ; first at {first}: "
                             f"got {got[first]!r}, onnxruntime {ref[first]!r}")


@pytest.fixture(scope="module")
def binary_results(tmp_path_factory):
    """{const shape key: (nrqc outputs, onnxruntime outputs)}, one compiled model per shape."""
    results = {}
    feeds = _binary_inputs()
    for key, cshape in CONST_SHAPES.items():
        d = tmp_path_factory.mktemp(f"binary-{key}")
        model = _binary_model(d / "m.onnx", cshape)
        out = compile_artifact(model, d / "out")
        results[key] = (run_fresh(out, feeds), onnxruntime_outputs(model, feeds))
    return results


@pytest.mark.parametrize("key", list(CONST_SHAPES))
@pytest.mark.parametrize("kind,op,order", [(k, op, o) for k, op, o, _ in _cases()],
                         ids=[_out_name(k, op, o) for k, op, o, _ in _cases()])
def test_binary_op_with_constant(binary_results, key, kind, op, order):
    got, ref = binary_results[key]
    name = _out_name(kind, op, order)
    assert_same(got[name], ref[name], f"{op} ({kind}, {order}) with a constant of shape {CONST_SHAPES[key]}")


def _model(path: Path, nodes, inputs, outputs, inits=()) -> Path:
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_power_spectrum_floor_then_log(tmp_path):
    """The DNSMOS P.835 front end: log(max(1e-12, |X|^2)), every row exact (no garbage first row)."""
    shape = (1, 1, 64, 161)
    f = TensorProto.FLOAT
    model = _model(tmp_path / "m.onnx", [
        helper.make_node("Mul", ["x", "x"], ["p"]),
        helper.make_node("Max", ["eps", "p"], ["m"]),
        helper.make_node("Log", ["m"], ["y"]),
    ], [helper.make_tensor_value_info("x", f, shape)], [helper.make_tensor_value_info("y", f, shape)],
        [numpy_helper.from_array(np.array(1e-12, np.float32), "eps")])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x[0, 0, :, ::7] = 0.0  # floored to 1e-12
    got = run_fresh(compile_artifact(model, tmp_path / "out"), {"x": x})["y"]
    assert_same(got, onnxruntime_outputs(model, {"x": x})["y"], "log(max(1e-12, x*x))", rtol=1e-5, atol=1e-5)


def test_nan_and_inf_propagate_like_onnxruntime(tmp_path):
    shape = (2, 8, 19)
    f = TensorProto.FLOAT
    c = numpy_helper.from_array(np.array(0.5, np.float32), "c")
    lo = numpy_helper.from_array(np.array(-1.0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(1.0, np.float32), "hi")
    ops = {
        "relu": helper.make_node("Relu", ["x"], ["relu"]),
        "max_xc": helper.make_node("Max", ["x", "c"], ["max_xc"]),
        "max_cx": helper.make_node("Max", ["c", "x"], ["max_cx"]),
        "min_xc": helper.make_node("Min", ["x", "c"], ["min_xc"]),
        "min_cx": helper.make_node("Min", ["c", "x"], ["min_cx"]),
        "max_xy": helper.make_node("Max", ["x", "y"], ["max_xy"]),
        "min_yx": helper.make_node("Min", ["y", "x"], ["min_yx"]),
        "clip": helper.make_node("Clip", ["x", "lo", "hi"], ["clip"]),
        "add": helper.make_node("Add", ["x", "y"], ["add"]),
        "sigmoid": helper.make_node("Sigmoid", ["x"], ["sigmoid"]),
        "leaky": helper.make_node("LeakyRelu", ["x"], ["leaky"], alpha=0.1),
        "mul_self": helper.make_node("Mul", ["x", "x"], ["mul_self"]),
    }
    reduced = {
        "reduce_max": helper.make_node("ReduceMax", ["x"], ["reduce_max"], axes=[2], keepdims=0),
        "reduce_min": helper.make_node("ReduceMin", ["x"], ["reduce_min"], axes=[2], keepdims=0),
    }
    model = _model(tmp_path / "m.onnx", [*ops.values(), *reduced.values()],
                   [helper.make_tensor_value_info(n, f, shape) for n in ("x", "y")],
                   [helper.make_tensor_value_info(n, f, shape) for n in ops]
                   + [helper.make_tensor_value_info(n, f, shape[:2]) for n in reduced], [c, lo, hi])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, :6] = [np.nan, np.inf, -np.inf, np.nan, 0.0, -0.0]
    x[1, 5, 18] = np.nan  # last row, last column (a vector tail)
    y[0, 1, 3] = np.nan  # NaN in the other operand only
    y[0, 2, 4] = np.inf
    feeds = {"x": x, "y": y}
    got = run_fresh(compile_artifact(model, tmp_path / "out"), feeds)
    ref = onnxruntime_outputs(model, feeds)
    assert np.isnan(ref["relu"][0, 0, 0]) and np.isnan(ref["reduce_max"][0, 0])  # the reference propagates
    for name in ops:
        assert_same(got[name], ref[name], name, rtol=1e-6, atol=1e-6)
    # Reductions: onnxruntime propagates a NaN except in the tail its vector loop leaves over
    # (x[1, 5, 18] of 19: ReduceMax gives 2.55 there); ONNX's reference (numpy) propagates
    # it everywhere, and so does nrqc. Elsewhere onnxruntime agrees.
    for name, fn in (("reduce_max", np.max), ("reduce_min", np.min)):
        assert_same(got[name], fn(x, axis=2), f"{name} vs numpy")
        agree = np.ones(shape[:2], bool)
        agree[1, 5] = False
        assert_same(got[name][agree], ref[name][agree], f"{name} vs onnxruntime")


def test_scalar_input_compile_then_run(tmp_path):
    """A VAD-like model with a 0-d sample-rate input: `nrqc compile` (with its check) then
    `nrqc run` with a 0-d .npy, compared with onnxruntime."""
    model = _model(tmp_path / "vad.onnx", [
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["x", "srf"], ["scaled"]),
        helper.make_node("ReduceSum", ["scaled"], ["y"], keepdims=0),
        helper.make_node("Mul", ["gain", "srf"], ["z"]),  # a 0-d output too
    ], [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 160)),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [])])
    out = tmp_path / "vad-x86"
    proc = run_cli("compile", model, "--target", "x86", "-o", out)
    assert "within" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["shape"] for s in manifest["inputs"]] == [[1, 160], [], []]
    x = np.random.default_rng(3).standard_normal((1, 160)).astype(np.float32)
    feeds = {"x": x, "sr": np.array(16000, np.int64), "gain": np.array(0.25, np.float32)}
    args = []
    for name, arr in feeds.items():
        np.save(tmp_path / f"{name}.npy", arr)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    run_cli("run", out, *args, "-o", tmp_path / "y.npy")
    got = np.load(tmp_path / "y.npy")
    ref = onnxruntime_outputs(model, feeds)
    assert got.shape == () and ref["y"].shape == ()
    np.testing.assert_allclose(got, ref["y"], rtol=1e-5, atol=1e-6)
    # and the 0-d output, through the same fresh-process runner as the other tests
    got_all = run_fresh(out, feeds)
    assert got_all["z"].shape == () and float(got_all["z"]) == pytest.approx(4000.0)
