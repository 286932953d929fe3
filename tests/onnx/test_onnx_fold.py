"""Load-time folding (nrqc/onnx_fold.py): static shape arithmetic becomes constants, an
`If` on a bound condition becomes its branch, `--const` binds an input; what stays
dynamic is named. Models written with onnx.helper without node names."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nrqc.compiler import CompileOptions, compile_model
from nrqc.errors import NrqcError
from nrqc.onnx_model import load_model


def _i64(name, v):
    return numpy_helper.from_array(np.asarray(v, np.int64), name)


def shape_chain_model(dynamic_batch: bool = True):
    """x [N, 6] -> Pad by Shape-computed amounts, Reshape/Expand/Slice/ConstantOfShape fed
    by Shape/Gather/Concat/Unsqueeze/Cast/Mul chains, an If on a scalar `mode` input taking
    either x*2 or x-1; two outputs."""
    n = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["cols"], axis=0),                    # 6
        helper.make_node("Cast", ["cols"], ["cols_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["cols_f"], ["cols_i"], to=TensorProto.INT64),
        helper.make_node("Sub", ["eight", "cols_i"], ["pad_r"]),                        # 2
        helper.make_node("Unsqueeze", ["pad_r", "ax0"], ["pad_r1"]),
        helper.make_node("Concat", ["zeros3", "pad_r1"], ["pads"], axis=0),             # [0, 0, 0, 2]
        helper.make_node("Pad", ["x", "pads"], ["xp"]),                                 # [N, 8]
        helper.make_node("Shape", ["xp"], ["sp"]),
        helper.make_node("Gather", ["sp", "zero"], ["rows"], axis=0),
        helper.make_node("Unsqueeze", ["rows", "ax0"], ["rows1"]),
        helper.make_node("Concat", ["rows1", "four", "two"], ["shape3"], axis=0),       # [N, 4, 2]
        helper.make_node("Reshape", ["xp", "shape3"], ["x3"]),
        helper.make_node("Mul", ["rows1", "one1"], ["rows1b"]),
        helper.make_node("Concat", ["rows1b", "four", "two"], ["eshape"], axis=0),
        helper.make_node("ConstantOfShape", ["eshape"], ["ones"],
                         value=numpy_helper.from_array(np.ones(1, np.float32))),
        helper.make_node("Expand", ["bias", "eshape"], ["bias3"]),
        helper.make_node("Add", ["x3", "bias3"], ["x3b"]),
        helper.make_node("Add", ["x3b", "ones"], ["x3c"]),
        helper.make_node("Slice", ["x3c", "zero1", "rows1", "ax0"], ["y0"]),
        helper.make_node("Equal", ["mode", "zero"], ["is0"]),
        helper.make_node("If", ["is0"], ["y"], then_branch=helper.make_graph(
            [helper.make_node("Mul", ["y0", "k"], ["t"])], "then", [],
            [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.float32(2), "k")]),
            else_branch=helper.make_graph(
            [helper.make_node("Sub", ["y0", "k"], ["e"])], "else", [],
            [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.float32(1), "k")])),
        helper.make_node("ReduceSum", ["y", "ax1"], ["total"], keepdims=0),
    ]
    inits = [_i64("one", 1), _i64("zero", 0), _i64("eight", 8), _i64("ax0", [0]), _i64("ax1", [1, 2]),
             _i64("zeros3", [0, 0, 0]), _i64("four", [4]), _i64("two", [2]), _i64("one1", [1]),
             _i64("zero1", [0]), numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(4, 2), "bias")]
    batch = "N" if dynamic_batch else 3
    graph = helper.make_graph(
        n, "chains", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6]),
                      helper.make_tensor_value_info("mode", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 2]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [batch])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_shape_chains_and_if_fold(tmp_path):
    path = tmp_path / "chains.onnx"
    onnx.save(shape_chain_model(), str(path))
    m = load_model(path, {"x": (3, 6)}, {"mode": "0"})
    ops = [n.op_type for n in m.onnx_model.graph.node]
    for gone in ("Shape", "Gather", "Concat", "ConstantOfShape", "Cast", "Unsqueeze", "If", "Equal"):
        assert gone not in ops, (gone, ops)
    inits = {i.name: numpy_helper.to_array(i) for i in m.onnx_model.graph.initializer}
    by_op = {n.op_type: n for n in m.onnx_model.graph.node}
    assert inits[by_op["Pad"].input[1]].tolist() == [0, 0, 0, 2]
    assert inits[by_op["Reshape"].input[1]].tolist() == [3, 4, 2]
    assert inits[by_op["Slice"].input[2]].tolist() == [3]
    assert "Mul" in ops and "Sub" not in ops  # the then branch (mode == 0) is inlined
    assert [s.name for s in m.inputs] == ["x"] and list(m.constants) == ["mode"]


@pytest.mark.slow
def test_const_compiles_and_checks_two_outputs(tmp_path):
    """--const mode=1 (the else branch), two outputs, checked against onnxruntime fed
    mode=1, from disk in a fresh process."""
    path = tmp_path / "chains.onnx"
    onnx.save(shape_chain_model(dynamic_batch=False), str(path))
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(constants={"mode": "1"}), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"] and set(manifest["check"]["outputs"]) == {"y", "total"}
    assert [i["name"] for i in manifest["inputs"]] == ["x"]
    assert manifest["constants"] == {"mode": {"dtype": "int64", "shape": [], "value": [1]}}


@pytest.mark.parametrize("consts, needle", [
    ({"rate": "1"}, "--const names unknown input 'rate': the model's inputs are x, mode"),
    ({"mode": "1,2"}, "--const mode=1,2: input 'mode' has shape [] (1 value), not 2"),
    ({"mode": "1.5"}, "--const mode=1.5: input 'mode' is int64; the value is not"),
    ({"mode": "abc"}, "malformed --const 'mode=abc'"),
])
def test_const_errors_are_one_line(tmp_path, consts, needle):
    path = tmp_path / "chains.onnx"
    onnx.save(shape_chain_model(), str(path))
    with pytest.raises(NrqcError) as e:
        load_model(path, {"x": (3, 6)}, consts)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_dynamic_shape_input_is_named(tmp_path):
    """A Reshape whose shape comes from the data (not from shapes) stays dynamic: refused at
    load, naming the Reshape and the node computing its shape."""
    nodes = [helper.make_node("Cast", ["v"], ["vi"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "vi"], ["y"])]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                             helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    with pytest.raises(NrqcError, match=r"dyn.onnx: Reshape node 'y' takes its input 1 \('vi'\) from computed at "
                                        r"run time by Cast node 'vi'"):
        load_model(path, {}, {})
    # bound with --const, the same chain folds
    m = load_model(path, {}, {"v": "3,2"})
    assert [n.op_type for n in m.onnx_model.graph.node] == ["Reshape"]
