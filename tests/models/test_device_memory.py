"""Device memory (nrqc/memory.py): the input counted at its real width when the model
quantizes it (issue 15 item 5), against hand counts; `nrqc profile --against` prints it."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nrqc.memory import model_memory, quantized_graph_inputs, reduction
from tests.conftest import run_cli
from tests.onnx_builders import int8_input_model, small_conv_model


def test_quantized_inputs_are_found_by_structure(tmp_path):
    model = onnx.load(str(int8_input_model(tmp_path / "q.onnx", s_in=0.0625)))
    assert quantized_graph_inputs(model) == {"x": {"dtype": "int8", "scale": 0.0625, "zero_point": 0}}
    assert quantized_graph_inputs(onnx.load(str(small_conv_model(tmp_path / "f.onnx")))) == {}
    # the input also read in float by another node: the model needs the float input
    model.graph.node.append(helper.make_node("ReduceMax", ["x"], ["m"]))
    assert quantized_graph_inputs(model) == {}
    # a per-channel (non-scalar) scale is not a per-tensor input quantization
    g = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1)], "pc",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
                          [helper.make_tensor_value_info("q", TensorProto.INT8, [1, 2, 3])],
                          [numpy_helper.from_array(np.ones(2, np.float32), "s"),
                           numpy_helper.from_array(np.zeros(2, np.int8), "z")])
    assert quantized_graph_inputs(helper.make_model(g)) == {}


def _manifest(source, inputs, outputs, weights, plan, scratch):
    return {"source_model": str(source), "inputs": inputs, "outputs": outputs, "weights_bytes": weights,
            "memory_plan": {"planned_storage_bytes": plan, "max_kernel_scratch_bytes": scratch}}


def test_model_memory_hand_count(tmp_path):
    q = int8_input_model(tmp_path / "q.onnx", frames=20, bands=12)
    f = small_conv_model(tmp_path / "f.onnx")
    ins = [{"name": "x", "shape": [1, 20, 12], "dtype": "float32"}]
    outs = [{"name": "out", "shape": [1, 3], "dtype": "float32"}]
    mine = model_memory(_manifest(q, ins, outs, 1000, 300, 200))
    # int8 input: 240 elements x 1 byte; activations 300 + 200 + 12 (the float output)
    assert (mine["input_bytes"], mine["activation_bytes"], mine["total_bytes"]) == (240, 512, 1000 + 512 + 240)
    assert mine["inputs"][0]["quantized_by_model"] and mine["inputs"][0]["as_given_bytes"] == 960
    other = model_memory(_manifest(f, [{"name": "x", "shape": [1, 1, 16, 20], "dtype": "float32"}], outs,
                                   4000, 3000, 1000))
    assert (other["input_bytes"], other["total_bytes"]) == (1280, 4000 + 4012 + 1280)
    assert reduction(mine, other)["total_bytes"] == pytest.approx(9292 / 1752)
    gone = model_memory(_manifest(tmp_path / "deleted.onnx", ins, outs, 1000, 300, 200))
    assert gone["input_bytes"] == 960 and "source model not found" in gone["input_note"]
    # a compile that records its quantized inputs is believed without the source model
    rec = _manifest(tmp_path / "deleted.onnx", ins, outs, 1000, 300, 200)
    rec["quantized_inputs"] = {"x": {"dtype": "int8", "scale": 0.1, "zero_point": 0}}
    assert model_memory(rec)["input_bytes"] == 240


@pytest.mark.slow  # two compiles and two profiles: 2-10 min on 2 shared cores
def test_profile_against_reports_the_int8_input(tmp_path):
    """An all-integer first layer model vs the same model reading float (Q/DQ removed):
    `nrqc profile --against` reports the input at 1 vs 4 bytes per element, and every figure
    equals the artifacts' manifests."""
    q = int8_input_model(tmp_path / "q.onnx", frames=20, bands=12)
    m = onnx.load(str(q))
    del m.graph.node[:2]  # QuantizeLinear, DequantizeLinear
    for n in m.graph.node:
        n.input[:] = ["x" if i == "xd" else i for i in n.input]
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "f.onnx"))
    for name in ("q", "f"):
        run_cli("compile", tmp_path / f"{name}.onnx", "-o", tmp_path / f"out_{name}")
    r = run_cli("profile", tmp_path / "out_q", "--against", tmp_path / "out_f", "--repeat", "2", "--json")
    p = json.loads(r.stdout)
    mine, other = p["memory"]["device"], p["against"]["memory"]["device"]
    assert (mine["input_bytes"], other["input_bytes"]) == (240, 960)
    for dev, out in ((mine, "out_q"), (other, "out_f")):
        man = json.loads((tmp_path / out / "manifest.json").read_text())
        plan = man["memory_plan"]
        assert dev["weights_bytes"] == man["weights_bytes"]
        assert dev["activation_bytes"] == plan["planned_storage_bytes"] + plan["max_kernel_scratch_bytes"] + 12
    assert p["memory_reduction"]["device"]["total_bytes"] == pytest.approx(other["total_bytes"] / mine["total_bytes"])
    text = run_cli("profile", tmp_path / "out_q", "--against", tmp_path / "out_f", "--repeat", "2").stdout
    assert "input at its real width" in text and "x int8, 960 B as float" in text
