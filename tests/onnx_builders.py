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


def int8_input_model(path: Path, frames: int = 20, bands: int = 12, c_out: int = 8, layout: str = "image",
                     seed: int = 0, s_in: float = 0.025) -> Path:
    """The all-integer first layer of docs/bam-onnx-contract.md section 7, written with
    onnx.helper and no node names: x float32 [1, frames, bands] -> QuantizeLinear(s_in, 0)
    -> DequantizeLinear -> Unsqueeze (layout "image", 3x3 conv2d) or Transpose (layout
    "bands_as_channels", 3-tap conv1d) -> Conv(DequantizeLinear(int8 W, per-channel scale,
    axis=0)) -> Greater(T) -> Cast -> GlobalMaxPool -> Flatten -> MatMul (-> 3), with the
    nrqc.input.x.* metadata. Thresholds sit half-way between accumulator levels, so no
    output of onnxruntime's float conv lies within rounding of its threshold."""
    rng = np.random.default_rng(seed)
    conv2d = layout == "image"
    c_in, kernel = (1, [3, 3]) if conv2d else (bands, [3])
    wq = rng.integers(-127, 128, size=(c_out, c_in, *kernel)).astype(np.int8)
    s_w = rng.uniform(0.002, 0.02, c_out).astype(np.float32)
    fan_in = c_in * int(np.prod(kernel))
    acc_t = np.round(rng.normal(0, 40.0 * np.sqrt(fan_in), c_out)) + 0.5  # half-integer accumulator levels
    t = (acc_t * np.float64(s_in) * s_w.astype(np.float64)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(s_in, dtype=np.float32), "s_in"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "zp_in"),
        numpy_helper.from_array(wq, "w_q"),
        numpy_helper.from_array(s_w, "w_scale"),
        numpy_helper.from_array(np.zeros(c_out, np.int8), "w_zero"),
        numpy_helper.from_array(t.reshape((-1, 1, 1) if conv2d else (-1, 1)), "t"),
        numpy_helper.from_array(rng.standard_normal((c_out, 3)).astype(np.float32), "d"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "zp_in"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s_in", "zp_in"], ["xd"])]
    if conv2d:
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
        nodes.append(helper.make_node("Unsqueeze", ["xd", "axes"], ["xl"]))
    else:
        nodes.append(helper.make_node("Transpose", ["xd"], ["xl"], perm=[0, 2, 1]))
    nodes += [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
              helper.make_node("Conv", ["xl", "w"], ["y"], kernel_shape=kernel, pads=[1] * (2 * len(kernel))),
              helper.make_node("Greater", ["y", "t"], ["g"]),
              helper.make_node("Cast", ["g"], ["b"], to=TensorProto.FLOAT),
              helper.make_node("GlobalMaxPool", ["b"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"], axis=1),
              helper.make_node("MatMul", ["f", "d"], ["out"])]
    graph = helper.make_graph(nodes, "int8_input", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, frames, bands])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (("dtype", "int8"), ("scale", repr(float(np.float32(s_in)))), ("zero_point", "0")):
        model.metadata_props.add(key=f"nrqc.input.x.{key}", value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
