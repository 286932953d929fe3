"""Shipped CPU schedules: numerical parity of scheduled kernels with numpy and onnxruntime.

Each model is compiled by `nrqc compile` (whose own check runs onnxruntime) and we also
run the artifact ourselves against an independent numpy reference, and assert that the
rule we mean to test (conv / pool / dense) really scheduled the kernel.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _conv_model(path, cin, cout, h, w, k, stride, pad, bias=True, pool=None, conv1d=False, seed=0):
    rng = np.random.default_rng(seed)
    if conv1d:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, w])
        wt = (rng.standard_normal((cout, cin, k)) / np.sqrt(cin * k)).astype(np.float32)
        attrs = dict(kernel_shape=[k], strides=[stride], pads=[pad, pad])
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])
        wt = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    b = rng.standard_normal(cout).astype(np.float32)
    inits = [numpy_helper.from_array(wt, "w")] + ([numpy_helper.from_array(b, "b")] if bias else [])
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], **attrs),
             helper.make_node("Relu", ["c"], ["r"])]
    out = "r"
    if pool == "max":
        nodes.append(helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
        out = "p"
    elif pool == "avg":
        nodes.append(helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
        out = "p"
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "conv", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    onnx.save(m, path)
    return wt, (b if bias else np.zeros(cout, np.float32))


def _np_conv2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride].astype(np.float64)
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return out + b[None, :, None, None]


@pytest.fixture(autouse=True)
def _direct_convolutions(monkeypatch):
    """These tests are about the shipped direct-conv schedules: Winograd off (its own
    tests are in test_winograd.py)."""
    monkeypatch.setenv("NRQC_NO_WINOGRAD", "1")


def _compile(tmp_path, model, shapes=None):
    from nrqc.compiler import CompileOptions, compile_model

    out = compile_model(model, "x86", tmp_path / "out", CompileOptions(shapes=shapes or {}), log=lambda m: None)
    return out, json.loads((out / "manifest.json").read_text())


def _run(out, x):
    from nrqc.runtime import ArtifactSession

    return ArtifactSession(out).run({"x": x})[0]


def _rules(manifest) -> str:
    return " ".join(n for n in manifest["notes"] if n.startswith("shipped schedules"))


@pytest.mark.parametrize("cin,cout,h,w,stride,pad,bias,pool", [
    (1, 32, 30, 24, 1, 1, True, "max"),     # first layer of a speech CNN (one input channel)
    (8, 32, 14, 20, 1, 1, True, "avg"),
    (16, 64, 9, 15, 1, 1, False, None),     # odd width, no bias
    (8, 16, 16, 12, 2, 1, True, None),      # stride 2
    (1, 16, 13, 40, 1, 1, True, None),      # short reduction, no pool: x-vectorized tile
    (16, 32, 9, 15, 1, 1, True, "max"),     # conv+pool fused, odd height and width
])
def test_conv2d_schedule_matches_numpy(tmp_path, cin, cout, h, w, stride, pad, bias, pool):
    wt, b = _conv_model(tmp_path / "m.onnx", cin, cout, h, w, 3, stride, pad, bias=bias, pool=pool)
    out, man = _compile(tmp_path, tmp_path / "m.onnx")
    assert man["check"]["passed"], man["check"]["summary"]
    assert man["check"]["max_abs_error"] < 1e-4
    rules = _rules(man)
    assert "conv x1" in rules, rules
    if pool == "max":
        # a 2x2 max pool after the conv is fused into the conv kernel (nrqc.ScheduleShipped)
        assert "pool x" not in rules, rules
        assert any(n.startswith("conv+max-pool fused into one kernel: x1") for n in man["notes"]), man["notes"]
    elif pool:
        assert "pool x1" in rules, rules
    x = np.random.default_rng(5).standard_normal((1, cin, h, w)).astype(np.float32)
    ref = np.maximum(_np_conv2d(x, wt, b, stride, pad), 0)
    if pool:
        ref = ref[:, :, :ref.shape[2] // 2 * 2, :ref.shape[3] // 2 * 2]
    if pool == "max":
        ref = ref.reshape(1, cout, ref.shape[2] // 2, 2, ref.shape[3] // 2, 2).max(axis=(3, 5))
    elif pool == "avg":
        ref = ref.reshape(1, cout, ref.shape[2] // 2, 2, ref.shape[3] // 2, 2).mean(axis=(3, 5))
    got = _run(out, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)


def test_conv1d_schedule_matches_numpy(tmp_path):
    cin, cout, w, k = 16, 32, 50, 5
    wt, b = _conv_model(tmp_path / "m.onnx", cin, cout, None, w, k, 1, 2, conv1d=True)
    out, man = _compile(tmp_path, tmp_path / "m.onnx")
    assert man["check"]["passed"], man["check"]["summary"]
    assert "conv x1" in _rules(man), _rules(man)
    x = np.random.default_rng(6).standard_normal((1, cin, w)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (2, 2)))[:, :, None, :]  # pad 2 along the time axis only
    ref = np.maximum(_np_conv2d(xp, wt[:, :, None, :], b, 1, 0)[:, :, 0, :], 0)
    np.testing.assert_allclose(_run(out, x), ref, atol=2e-4, rtol=1e-4)


def test_channels_not_multiple_of_vector_fall_back_to_generic(tmp_path):
    wt, b = _conv_model(tmp_path / "m.onnx", 3, 12, 10, 10, 3, 1, 1)
    out, man = _compile(tmp_path, tmp_path / "m.onnx")
    assert man["check"]["passed"], man["check"]["summary"]
    assert "generic" in _rules(man) and "conv x" not in _rules(man)
    x = np.random.default_rng(7).standard_normal((1, 3, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), np.maximum(_np_conv2d(x, wt, b, 1, 1), 0), atol=2e-4, rtol=1e-4)


def test_dense_schedule_matches_numpy(tmp_path):
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((64, 48)).astype(np.float32)
    b1 = rng.standard_normal(48).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 48])],
        [numpy_helper.from_array(w1, "w"), numpy_helper.from_array(b1, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "d.onnx")
    out, man = _compile(tmp_path, tmp_path / "d.onnx")
    assert man["check"]["passed"], man["check"]["summary"]
    assert "dense x1" in _rules(man), _rules(man)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    ref = np.maximum(x.astype(np.float64) @ w1 + b1, 0)
    np.testing.assert_allclose(_run(out, x), ref, atol=2e-4, rtol=1e-4)


def test_vector_spec_per_target():
    from nrqc.targets import get_target
    from nrqc.targets.schedules import vector_spec

    arm = vector_spec(get_target("arm_cpu"))
    assert (arm.isa, arm.lanes, arm.registers) == ("neon", 4, 32)
    assert vector_spec({"kind": "llvm", "mcpu": "skylake-avx512"}).lanes == 16
    assert vector_spec({"kind": "llvm", "mcpu": "haswell"}).lanes == 8
    assert vector_spec({"kind": "llvm", "mcpu": "x86-64"}).lanes == 4
    # AArch32 NEON: 4 lanes, 16 q registers, named apart from aarch64 (Winograd is checked there only)
    v7 = vector_spec(get_target("armv7"))
    assert (v7.isa, v7.lanes, v7.registers) == ("neon32", 4, 16)
    # C (Cortex-M): scalar code; the same split factors as before capabilities existed
    m4 = vector_spec(get_target("cortex-m4"))
    assert (m4.isa, m4.lanes, m4.registers) == ("scalar", 4, 16)
    # a tvm.target.Target gives the same spec as its JSON dict
    import tvm

    for t in ({"kind": "llvm", "mcpu": "haswell"}, get_target("arm_cpu").tvm_target):
        assert vector_spec(tvm.target.Target(dict(t))) == vector_spec(t)


def test_arm_conv_schedule_uses_neon_fma(tmp_path):
    """The conv rule for aarch64 tiles by 4-lane NEON vectors and compiles to fmla."""
    import tvm

    from nrqc.targets import get_target
    from nrqc.targets.schedules import schedule_primfunc, vector_spec
    from nrqc.tuning.tune import extract_tasks

    _conv_model(tmp_path / "m.onnx", 8, 16, 6, 8, 3, 1, 1)
    target = get_target("arm_cpu")
    tasks, _ = extract_tasks(tmp_path / "m.onnx", target)
    conv = [t for t in tasks if "conv" in t.name][0]
    rule, func = schedule_primfunc(conv.func, vector_spec(target))
    assert rule == "conv"
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target.tvm())
    asm = lib.inspect_source("asm")
    assert "fmla" in asm and "v" in asm


def test_model_v8_all_convolutions_scheduled(tmp_path, dnsmos_path):
    out, man = _compile(tmp_path, dnsmos_path)
    assert man["check"]["passed"] and man["check"]["max_abs_error"] < 1e-4, man["check"]["summary"]
    rules = _rules(man)
    # 5 convolutions (4 distinct kernels + one called twice), 3 max-pools, 3 dense layers;
    # each max pool is fused into the conv before it: 3 conv+pool kernels + 2 plain convs
    assert "conv x5" in rules and "pool x" not in rules, rules
    assert any(n.startswith("conv+max-pool fused into one kernel: x3") for n in man["notes"]), man["notes"]
