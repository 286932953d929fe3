"""Tiny ONNX models written by the tests themselves (no files shipped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_conv_model(path: Path, seed: int = 0, op_after: str = "Relu") -> Path:
    """[1,1,16,20] -> Conv 3x3 (4 ch) -> op_after -> MaxPool 2x2 -> Flatten -> MatMul (->3)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    d = numpy_helper.from_array(rng.standard_normal((4 * 8 * 10, 3)).astype(np.float32), "d")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node(op_after, ["c"], ["r"], name="act0"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool0", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat0"),
        helper.make_node("MatMul", ["f", "d"], ["y"], name="dense0"),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b, d])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
