"""The all-integer first layer through the binary passes: an int8 x int8 conv found by
graph structure (models written without node names) whose input is QuantizeLinear ->
DequantizeLinear of the float input (quantize fused into the kernel's load), with a
Heaviside head (threshold + pack, the next binary layer reads its bits) or without one
(int32 -> float epilogue); uint8 input with a non-zero zero point as onnxruntime's
quantize_static writes it; bits and values against onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.passes.int8_input_models import int8_first_layer
from tests.passes.pass_helpers import call_tir_callees, imported, onnxruntime_outputs, run_module, run_steps, step

BINARY = ("nrqc.BinaryPatterns", "nrqc.BinaryInt8Input", "nrqc.BinaryThresholds", "nrqc.BinaryRewrite",
          "nrqc.BinaryFusePack", "nrqc.BinaryInt8Entry")


def _rewritten(path):
    m, ctx, mod = imported(path)
    return ctx, run_steps(mod, ctx, *(step(n) for n in BINARY))


def _x(shape, seed=1):
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(np.float32)
    x.flat[:3] = [0.025, -0.075, 1e5]  # exact ties (round half to even) and saturation
    return x


def test_int8_first_layer_becomes_an_integer_conv_emitting_the_packed_bits(tmp_path):
    path = int8_first_layer(tmp_path / "m.onnx", (1, 1, 12, 13), 13, pool=True, next_conv=16)
    ctx, mod = _rewritten(path)
    first = ctx.binary.plan[0]
    assert first.input_quant is not None and first.input_quant.src_dtype == "float32"
    assert first.input_quant.scale == pytest.approx(0.05) and first.sigma is not None
    callees = call_tir_callees(mod)
    assert any(c.startswith("nrqc_int8conv_") and c.endswith("_orpool") for c in callees)
    assert not any(c.startswith("nrqc_fconv") for c in callees)
    conv = [layer for layer in ctx.layers if layer.op == "Conv"]
    assert (conv[0].act_bits, conv[0].weight_bits, conv[0].float_reason) == (8, 8, None)
    assert conv[0].strategy["input"]["quantize"].startswith("QuantizeLinear fused")
    x = _x((1, 1, 12, 13))
    got, want = run_module(mod, ctx, x), onnxruntime_outputs(path, x)
    assert 0.05 < want.mean() < 0.95 and np.array_equal(got, want)


@pytest.mark.parametrize("q_dtype,zp", [("uint8", 131), ("int8", -9)])
def test_conv1d_stride_dilation_zero_point(tmp_path, q_dtype, zp):
    path = int8_first_layer(tmp_path / "m.onnx", (1, 5, 23), 20, stride=2, dilation=2, pad=2, q_dtype=q_dtype,
                            zp=zp, seed=4)
    ctx, mod = _rewritten(path)
    assert any(c.startswith("nrqc_int8conv_") for c in call_tir_callees(mod))
    x = _x((1, 5, 23), 2)
    got, want = run_module(mod, ctx, x), onnxruntime_outputs(path, x)
    assert 0.05 < want.mean() < 0.95 and np.array_equal(got, want)


def test_int8_layer_without_a_heaviside_gets_the_float_epilogue(tmp_path):
    path = int8_first_layer(tmp_path / "m.onnx", (1, 2, 9, 11), 7, q_dtype="uint8", zp=100, head=False, seed=2)
    ctx, mod = _rewritten(path)
    assert any(c.startswith("nrqc_int8conv_") and "_float_" in c for c in call_tir_callees(mod))
    x = _x((1, 2, 9, 11), 3)
    got, want = run_module(mod, ctx, x), onnxruntime_outputs(path, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_qdq_pair_with_different_parameters_stays_float_and_says_why(tmp_path):
    import onnx
    from onnx import numpy_helper

    path = int8_first_layer(tmp_path / "m.onnx", (1, 1, 8, 9), 8)
    model = onnx.load(str(path))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    model.graph.initializer.append(numpy_helper.from_array(np.float32(0.04), "other_scale"))
    dq.input[1] = "other_scale"
    onnx.save(model, str(path))
    ctx, mod = _rewritten(path)
    conv = next(layer for layer in ctx.layers if layer.op == "Conv")
    assert conv.act_bits == 32 and "int8 input not taken" in conv.float_reason
    assert "differ in scale or zero point" in conv.float_reason


def test_main_int8_takes_the_quantized_input_through_the_same_kernels(tmp_path):
    import tvm
    from tvm import relax

    from nrqc.passes.binary_int8_entry import quantize_like_onnx

    path = int8_first_layer(tmp_path / "m.onnx", (1, 1, 12, 13), 16, q_dtype="uint8", zp=140, pool=True, seed=8)
    ctx, mod = _rewritten(path)
    quant = ctx.binary.int8_input
    assert (quant.name, quant.dtype, quant.zero_point) == ("x", "uint8", 140)
    assert "main_int8" in [gv.name_hint for gv in mod.functions]
    with ctx.target.tvm():
        vm = relax.VirtualMachine(tvm.compile(mod, target=ctx.target.tvm()), tvm.cpu())
    x = _x((1, 1, 12, 13), 5)
    q = quantize_like_onnx(x, quant)
    want = onnxruntime_outputs(path, x)
    assert np.array_equal(vm["main_int8"](tvm.runtime.tensor(q)).numpy(), want)
    assert np.array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)


@pytest.mark.slow
@pytest.mark.parametrize("mcpu", [None, "haswell", "x86-64-v2"])
def test_compiled_uint8_model_matches_onnxruntime_from_disk(tmp_path, mcpu):
    """`nrqc compile`'s check runs the written artifact in a fresh process against onnxruntime,
    through main and main_int8 (at each x86 level: the VNNI, AVX2 and generic strategies);
    `nrqc run --input x=q.npy` (uint8) gives onnxruntime's outputs on the float input."""
    from nrqc.passes.binary_int8_entry import QuantizedInput, quantize_like_onnx

    path = int8_first_layer(tmp_path / "m.onnx", (1, 1, 16, 12), 24, q_dtype="uint8", zp=128, pool=True,
                            next_conv=32, seed=6)
    out = tmp_path / "out"
    run_cli("compile", path, "-t", "x86", "-o", out, *(["--mcpu", mcpu] if mcpu else []))
    manifest = json.loads((out / "manifest.json").read_text())
    check = manifest["check"]
    assert check["passed"] and check["max_abs_error"] == 0 and check["int8_entry_point"]["max_abs_error"] == 0
    first = next(layer for layer in manifest["layers"] if layer["op"] == "Conv")
    assert first["act_bits"] == 8 and first["kernel"].startswith("nrqc:nrqc_int8conv_")
    # the level's strategies were the candidates (the cost model or the clock chose among them)
    offered = {None: "int8_vnni", "haswell": "int8_avx2", "x86-64-v2": "int8_generic"}[mcpu]
    if mcpu is not None or "avx512_vnni" in manifest["cpu"]["isa_flags"]:
        assert offered in first["strategy"]["cost_model_cycles"]
    assert mcpu is None or "int8_vnni" not in first["strategy"]["cost_model_cycles"]
    quant = manifest["int8_input"]
    assert (quant["entry_point"], quant["dtype"], quant["zero_point"]) == ("main_int8", "uint8", 128)
    x = _x((1, 1, 16, 12), 9)
    q = quantize_like_onnx(x, QuantizedInput(0, "x", "uint8", quant["scale"], 128))
    np.save(tmp_path / "q.npy", q)
    run_cli("run", out, "--input", f"x={tmp_path / 'q.npy'}", "-o", tmp_path / "y.npy")
    assert np.array_equal(np.load(tmp_path / "y.npy"), onnxruntime_outputs(path, x))
    np.save(tmp_path / "wrong.npy", q.astype(np.int8))  # the model's QuantizeLinear makes uint8
    bad = run_cli("run", out, "--input", f"x={tmp_path / 'wrong.npy'}", check_exit=2)
    assert "input 'x' is int8, but the artifact takes float32 there or uint8 already quantized" in bad.stderr
    if mcpu is None:  # nrqc profile times main_int8 on the quantized input as well
        prof = json.loads(run_cli("profile", out, "--repeat", "3", "--json").stdout)
        assert prof["int8_input_latency_ms"]["runs"] == 3 and prof["latency_ms"]["runs"] == 3


def test_onnxruntime_quantize_static_model_gets_the_integer_first_layer(tmp_path):
    """quantize_static (QDQ, uint8 activations with a calibrated zero point, per-channel int8
    weights, int32 bias) of a float-first-layer BAM chain: the first conv becomes the int8
    conv too, and main_int8 takes uint8."""
    from tests import binary_models as bm

    float_path = bm.chain_model(tmp_path / "f.onnx", [{"c_out": 16}, {"pool": (2, 2, 0)}, {"c_out": 32}],
                                x_shape=(1, 1, 12, 14), seed=3)
    path = bm.ort_quantize_static(float_path, tmp_path / "qs.onnx", (1, 1, 12, 14))
    ctx, mod = _rewritten(path)
    first = next(layer for layer in ctx.layers if layer.op == "Conv")
    assert (first.act_bits, first.float_reason) == (8, None)
    assert ctx.binary.int8_input is not None and ctx.binary.int8_input.dtype == "uint8"
    x = _x((1, 1, 12, 14), 6)
    assert np.array_equal(run_module(mod, ctx, x), onnxruntime_outputs(path, x))
