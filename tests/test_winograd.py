"""Winograd F(2x2, 3x3) kernels against torch's direct conv (+ bias, ReLU, 2x2 max pool),
on shapes with odd sizes, channels not a multiple of the vector width, with and without
the fused pool; and a whole model compiled with the pass against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm

from nrqc.targets import get_target
from nrqc.targets.kernels import winograd as wg

TARGET = get_target("x86")


def _reference(x, w, b, relu, pool):
    y = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                   torch.tensor(b, dtype=torch.float64), padding=1)
    if relu:
        y = torch.relu(y)
    if pool:
        y = torch.nn.functional.max_pool2d(y, 2)
    return y.numpy()


@pytest.mark.parametrize("c,k,h,w,pool,relu", [
    (32, 32, 20, 12, True, True), (32, 32, 15, 9, False, True), (8, 16, 9, 10, True, False),
    (16, 64, 7, 15, False, True), (5, 16, 11, 7, True, True), (32, 24, 6, 6, False, False),
])
def test_winograd_matches_direct_conv(c, k, h, w, pool, relu):
    rng = np.random.default_rng(c * 7 + h)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = (rng.standard_normal(k) * 0.1).astype(np.float32)
    g = wg.WinogradConv(c, k, h, w, pool, relu)
    lanes = 16 if k % 16 == 0 else 8
    func = wg.schedule(wg.winograd_conv(g), g, lanes, 32)
    lib = tvm.tirx.build(func, target=TARGET.tvm())
    out = tvm.runtime.tensor(np.zeros(g.out_shape, np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(wg.transform_weights(wt)), tvm.runtime.tensor(b), out)
    ref = _reference(x, wt, b, relu, pool)
    assert ref.shape == g.out_shape
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-5, rtol=1e-5)


def test_model_v8_convolutions_become_winograd(tmp_path, dnsmos_path):
    """DNSMOS model_v8: the four 32-channel 3x3 convs (two with their max pool) run as
    Winograd kernels; the first conv (one input channel) stays direct; onnxruntime agrees."""
    import json

    from nrqc.compiler import CompileOptions, compile_model

    out = compile_model(dnsmos_path, "x86", tmp_path / "out", CompileOptions(), log=lambda m: None)
    man = json.loads((out / "manifest.json").read_text())
    assert man["check"]["passed"] and man["check"]["max_abs_error"] < 1e-4, man["check"]["summary"]
    convs = [layer for layer in man["layers"] if layer["op"] == "Conv"]
    assert [str(layer["kernel"]).startswith("nrqc:nrqc_winograd") for layer in convs] == [False] + [True] * 4
    assert all(layer["strategy"]["strategy"] == "winograd F(2x2,3x3)" for layer in convs[1:])
    pools = [layer for layer in man["layers"] if layer["op"] == "MaxPool"]
    assert [layer.get("fused_into") for layer in pools][1:] == [convs[1]["name"], convs[3]["name"]]
    note = next(n for n in man["notes"] if n.startswith("winograd"))
    assert "4 float 3x3 conv(s)" in note and "+pool" in note, note
    report = (out / "report.txt").read_text()
    assert "winograd F(2x2,3x3) by rule" in report


def test_winograd_on_request_only(tmp_path, monkeypatch):
    """A small conv + ReLU + max pool model: one Winograd kernel (checked against
    onnxruntime at compile time); NRQC_NO_WINOGRAD=1 turns the pass off."""
    import json

    from nrqc.compiler import CompileOptions, compile_model
    from tests.test_schedules_cpu import _conv_model

    _conv_model(tmp_path / "m.onnx", 16, 32, 8, 10, 3, 1, 1, bias=True, pool="max")

    def kernels(out):
        man = json.loads((out / "manifest.json").read_text())
        assert man["check"].get("passed", True)
        return [layer["kernel"] for layer in man["layers"]]

    on = kernels(compile_model(tmp_path / "m.onnx", "x86", tmp_path / "on", CompileOptions(), log=lambda m: None))
    assert on[0] == on[1] == "nrqc:nrqc_winograd_conv0", on
    monkeypatch.setenv("NRQC_NO_WINOGRAD", "1")
    off = kernels(compile_model(tmp_path / "m.onnx", "x86", tmp_path / "off", CompileOptions(), log=lambda m: None))
    assert not any("winograd" in str(k) for k in off), off
