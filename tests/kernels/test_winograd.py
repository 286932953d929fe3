"""Winograd F(2x2, 3x3) kernels against torch's direct conv (+ bias, ReLU, 2x2 max pool),
on shapes with odd sizes, channels not a multiple of the vector width, with and without
the fused pool, at every x86 vector width this host runs (SSE 4 lanes, AVX2 8, AVX-512 16),
with every input placed against a PROT_NONE guard page (after its end, then before its
start) so a read outside an input faults instead of passing by luck; the same for aarch64
NEON builds on the emulated board (slow); and a whole model compiled with the pass against
onnxruntime."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm

from tests.guarded_memory import guarded_array, run_isolated

from nrqc.targets import get_target, x86
from nrqc.targets.kernels import winograd as wg
from nrqc.targets.schedules import vector_spec

TARGET = get_target("x86")

# x86 CPU levels by vector width; code for an older level runs on this newer CPU. The AVX-512
# build is for this host's own CPU (the build a user here gets), when it has AVX-512.
SSE, AVX2 = "x86-64-v2", "haswell"
HOST_AVX512 = x86.host_mcpu() if "avx512f" in x86.host_cpu_flags() else None
ISAS = [SSE, AVX2, pytest.param(HOST_AVX512 or "x86-64-v4", marks=pytest.mark.skipif(
    HOST_AVX512 is None, reason="this host has no AVX-512"))]


def _reference(x, w, b, relu, pool):
    y = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                   torch.tensor(b, dtype=torch.float64), padding=1)
    if relu:
        y = torch.relu(y)
    if pool:
        y = torch.nn.functional.max_pool2d(y, 2)
    return y.numpy()


def _guarded_run(mcpu: str, cases: list) -> list[float]:
    """In a fresh process: build each case for `mcpu` with the lanes and registers the
    Winograd pass would take from that target, run it with X, U and B each ending at a guard
    page, then each starting right after one; returns the max error vs torch per run."""
    spec = vector_spec({"kind": "llvm", "mcpu": mcpu})
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    errors = []
    for c, k, h, w, pool, relu in cases:
        lanes = spec.lanes
        while k % lanes:  # the pass takes only K a multiple of the target's lanes; smaller K: narrower
            lanes //= 2
        rng = np.random.default_rng(c * 7 + h)
        x = rng.standard_normal((1, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        b = (rng.standard_normal(k) * 0.1).astype(np.float32)
        g = wg.WinogradConv(c, k, h, w, pool, relu)
        lib = tvm.tirx.build(wg.schedule(wg.winograd_conv(g), g, lanes, spec.registers), target=target)
        ref = _reference(x, wt, b, relu, pool)
        assert ref.shape == g.out_shape
        for where in ("after", "before"):
            print(f"winograd {c}->{k} @{h}x{w} pool={pool} relu={relu} {mcpu} lanes={lanes}: inputs {where} a guard "
                  f"page", file=sys.stderr, flush=True)
            out = tvm.runtime.tensor(np.full(g.out_shape, np.nan, np.float32))
            with guarded_array(x, where) as gx, guarded_array(wg.transform_weights(wt), where) as gu, \
                    guarded_array(b, where) as gb:
                assert gx.slack == gu.slack == 0  # X and U end exactly at the guard page
                lib["main"](gx.tensor, gu.tensor, gb.tensor, out)
            errors.append(float(np.max(np.abs(out.numpy() - ref) / (1 + np.abs(ref)))))
    return errors


# odd sizes; channels not a multiple of 16 (and of 32: a partial register block); with and
# without the pool. X's byte size is a multiple of 64 (C*H*W a multiple of 16), so X starts
# aligned and ends exactly at the guard page (guarded_memory.ALIGN).
SMALL = [(32, 32, 20, 12, True, True), (32, 32, 15, 9, False, True), (16, 16, 9, 10, True, False),
         (16, 64, 7, 15, False, True), (16, 16, 11, 7, True, True), (32, 24, 6, 6, False, False),
         (16, 48, 13, 5, False, True), (16, 16, 3, 3, True, True), (32, 16, 1 + 1, 2, False, False)]


@pytest.mark.parametrize("mcpu", ISAS)
def test_winograd_matches_direct_conv_within_its_inputs(mcpu):
    errors = run_isolated(_guarded_run, mcpu, SMALL)
    assert len(errors) == 2 * len(SMALL)
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("mcpu", ISAS)
def test_winograd_dnsmos_layers_within_their_inputs(mcpu):
    """The DNSMOS layers users saw crash (32->32 at 901x161 with its pool, 64->64 at 450x161);
    ~8-10 s per vector width here."""
    errors = run_isolated(_guarded_run, mcpu, [(32, 32, 901, 161, True, True), (64, 64, 450, 161, False, True)])
    assert max(errors) < 1e-5, errors


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
    from tests.kernels.test_schedules_cpu import _conv_model

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


_GUEST_SCRIPT = '''
import sys
import numpy as np
import tvm
work = sys.argv[1]
from guarded_memory import guarded_array  # copied beside this script, whose folder Python searches first
data = np.load(work + "/cases.npz")
results = {}
for i in range(int(data["n"])):
    lib = tvm.runtime.load_module(f"{work}/k{i}.so")
    for where in ("after", "before"):
        print(f"case {i}: inputs {where} a guard page", file=sys.stderr, flush=True)
        out = tvm.runtime.tensor(np.full(tuple(data[f"shape{i}"]), np.nan, np.float32))
        with guarded_array(data[f"x{i}"], where) as gx, guarded_array(data[f"u{i}"], where) as gu, \\
                guarded_array(data[f"b{i}"], where) as gb:
            assert gx.slack == gu.slack == 0
            lib["main"](gx.tensor, gu.tensor, gb.tensor, out)
        results[f"y{i}_{where}"] = out.numpy()
np.savez(work + "/outputs.npz", **results)
'''


@pytest.mark.slow  # ~1-2 min: the guest's `import tvm` alone takes ~15 s under qemu
def test_winograd_neon_within_its_inputs_on_the_emulated_board(tmp_path):
    """aarch64 NEON builds (4 lanes, 32 registers) of the kernels, run on the emulated
    cortex-a72 board with every input against a guard page; exact vs torch here. The
    32->32 @225x30 layer is model_v8's, which crashed this board before the fix."""
    import shutil
    import subprocess

    from nrqc.emulator import board, guest_run, rootfs

    reason = guest_run.unavailable_reason()
    if reason:
        pytest.skip(f"no emulated board: {reason} (build it with `nrqc emulate arm_cpu`)")
    arm = get_target("arm_cpu")
    spec = vector_spec(arm)
    assert (spec.isa, spec.lanes) == ("neon", 4)
    cases = SMALL + [(32, 32, 225, 30, False, True), (32, 32, 450, 60, True, True)]
    root = rootfs.rootfs_dir()
    argv, env, prefix = board.guest_python(root)
    host_dir, guest_dir = board.guest_work_dir(root, prefix, "nrqc-winograd-")
    try:
        feeds, refs = {"n": np.array(len(cases))}, []
        for i, (c, k, h, w, pool, relu) in enumerate(cases):
            rng = np.random.default_rng(c * 7 + h)
            x = rng.standard_normal((1, c, h, w)).astype(np.float32)
            wt = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
            b = (rng.standard_normal(k) * 0.1).astype(np.float32)
            g = wg.WinogradConv(c, k, h, w, pool, relu)
            lib = tvm.tirx.build(wg.schedule(wg.winograd_conv(g), g, spec.lanes, spec.registers), target=arm.tvm())
            lib.export_library(str(host_dir / f"k{i}.so"),
                               fcompile=tvm.support.cc.cross_compiler(arm.cross_compiler))
            feeds.update({f"x{i}": x, f"u{i}": wg.transform_weights(wt), f"b{i}": b,
                          f"shape{i}": np.array(g.out_shape)})
            refs.append(_reference(x, wt, b, relu, pool))
        np.savez(host_dir / "cases.npz", **feeds)
        shutil.copyfile(Path(__file__).resolve().parents[1] / "guarded_memory.py", host_dir / "guarded_memory.py")
        (host_dir / "run_cases.py").write_text(_GUEST_SCRIPT)
        proc = subprocess.run([*argv, f"{guest_dir}/run_cases.py", guest_dir], env=env, cwd="/",
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"guest exited {proc.returncode}\n{proc.stderr[-3000:]}"
        got = np.load(host_dir / "outputs.npz")
        for i, ref in enumerate(refs):
            for where in ("after", "before"):
                y = got[f"y{i}_{where}"]
                assert y.shape == ref.shape
                np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5, err_msg=f"{cases[i]} {where}")
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
