"""Cortex-M int8-input entry point: a model whose graph starts with QuantizeLinear gets
`nrqc_run_int8(const int8_t *...)`, checked in QEMU against onnxruntime."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli

_MISSING = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm") if not shutil.which(t)]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"Cortex-M toolchain/emulator missing: {', '.join(_MISSING)}")


def quantized_input_model(path, scale=0.05, zero_point=3):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(zero_point, np.int8), "zp"),
             numpy_helper.from_array((rng.standard_normal((8, 1, 3, 3)) / 3).astype(np.float32), "w0"),
             numpy_helper.from_array((rng.standard_normal((8 * 10 * 8, 2)) / 30).astype(np.float32), "d")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("Conv", ["xd", "w0"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "d"], ["y"])]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 20, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_int8_entry_point(tmp_path):
    model = quantized_input_model(tmp_path / "q.onnx")
    out = tmp_path / "out"
    proc = run_cli("compile", model, "--target", "cortex-m4", "-o", out)
    assert "also emitting nrqc_run_int8" in proc.stderr
    header = (out / "nrqc_model.h").read_text()
    assert "int nrqc_run_int8(const int8_t *in0, float *out0);" in header
    assert "#define NRQC_INPUT0_ZERO_POINT 3" in header
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["int8_input"]["scale"] == pytest.approx(0.05) and manifest["int8_input"]["dtype"] == "int8"
    check = manifest["check"]
    assert check["passed"] and check["int8_entry_point"]["passed"]
    # Independently: the firmware's int8 path on an input quantized here equals onnxruntime on that input.
    from nrqc.cortex_m.firmware import run_firmware
    from nrqc.onnx_model import TensorSpec
    from nrqc.targets import get_target

    x = np.random.default_rng(4).standard_normal((1, 1, 20, 16)).astype(np.float32) * 3  # some values saturate
    q = np.clip(np.rint(x / np.float32(0.05)) + 3, -128, 127).astype(np.int8)
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = run_firmware(get_target("cortex-m4"), out / "firmware" / "firmware.elf",
                       [TensorSpec("y", (1, 2), "float32")], feeds={0: x}, qfeeds={0: q})
    np.testing.assert_allclose(got["outputs_int8"][0], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["outputs"][0], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_run_cli_with_int8_input(tmp_path):
    """`nrqc run` with an int8 .npy for the quantized input calls nrqc_run_int8."""
    model = quantized_input_model(tmp_path / "q.onnx")
    out = tmp_path / "out"
    run_cli("compile", model, "--target", "cortex-m4", "-o", out, "--no-check")
    x = np.random.default_rng(8).standard_normal((1, 1, 20, 16)).astype(np.float32)
    q = np.clip(np.rint(x / np.float32(0.05)) + 3, -128, 127).astype(np.int8)
    np.save(tmp_path / "q.npy", q)
    run_cli("run", out, "--input", f"x={tmp_path / 'q.npy'}", "-o", tmp_path / "y.npy")
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)
