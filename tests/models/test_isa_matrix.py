"""Builds for older and other x86 ISAs, run on this host (issue 13, items 2 and 3).

Users run nrqc's libraries on CPUs other than the one that built them: most have AVX2 and
FMA only, some SSE4.2 only, some AVX-512 at one of several levels. Code built for an older
ISA runs on a newer CPU, so every host can run the levels up to its own: each key model is
built with `nrqc compile --target x86 --mcpu LEVEL` for every level this CPU has, and the
artifact as written to disk is run by `nrqc run` in a fresh process and compared with
onnxruntime (the compile's own check does the same, in a fresh process too).

Levels: x86-64-v2 (SSE4.2, 4 float lanes), haswell (AVX2 + FMA, 8 lanes), skylake-avx512
(AVX-512 F/BW/DQ/VL, 16 lanes), icelake-server (+ VNNI, VBMI, VPOPCNTDQ: the vnni/lut
binary strategies), sapphirerapids (+ AMX). A level this CPU lacks is not run (the test
reports which), and a build for it must be refused at load time, not die of SIGILL.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nrqc.targets import x86
from tests import binary_models as bm
from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model

LEVELS = ("x86-64-v2", "haswell", "skylake-avx512", "icelake-server", "sapphirerapids")
HOST_LEVELS = [m for m in LEVELS if x86.mcpu_flags(m) <= x86.host_cpu_flags()]
# What each level must not use (a strategy or instruction set beyond it).
_STRATEGY_NEEDS = {"vnni": {"avx512_vnni"}, "lut": {"avx512_vnni", "avx512vbmi"}, "amx": {"amx_int8"},
                   "avx2_maddubs": {"avx2"}, "avx2_lut": {"avx2"}, "avx2_xnor": {"avx2"},
                   "int8_vnni": {"avx512_vnni"}, "int8_avx2": {"avx2"}}  # int8-input first layers


def _unnamed(path):
    import onnx

    m = onnx.load(str(path))
    for node in m.graph.node:
        node.name = ""
    onnx.save(m, str(path))
    return path


def _zoo(arch, variant, path):
    import onnx
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    model = to_onnx(build(arch, variant).eval())
    onnx.save(model[0] if isinstance(model, tuple) else model, str(path))
    return path


MODELS = {
    "model_v8": lambda tmp, dnsmos: dnsmos,
    "float_cnn": lambda tmp, dnsmos: small_conv_model(tmp / "float_cnn.onnx"),
    "bam_unnamed": lambda tmp, dnsmos: _unnamed(bm.bam_model(tmp / "bam_unnamed.onnx", frames=64, bands=48)),
    "zoo_vad_bam": lambda tmp, dnsmos: _zoo("vad_tiny", "bam", tmp / "vad_bam.onnx"),
    "zoo_dnsmos_bam": lambda tmp, dnsmos: _zoo("dnsmos", "bam", tmp / "dnsmos_bam.onnx"),
}


def _check_level(tmp_path, model_path, level):
    import onnxruntime as ort

    out = tmp_path / f"out-{level}"
    run_cli("compile", model_path, "--target", "x86", "--mcpu", level, "-o", out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["tvm_target"]["mcpu"] == level and man["cpu"]["mcpu"] == level
    assert set(man["cpu"]["isa_flags"]) <= x86.mcpu_flags(level)
    assert man["check"]["ran"] and man["check"]["passed"], man["check"]
    assert man["check"]["where"] == "fresh process"
    for layer in man["layers"]:
        strategy = (layer.get("strategy") or {}).get("strategy")
        assert _STRATEGY_NEEDS.get(strategy, set()) <= x86.mcpu_flags(level), (level, layer["name"], strategy)
    # and once more as a user would: `nrqc run` on another input, against onnxruntime
    rng = np.random.default_rng(7)
    feeds, args = {}, []
    for spec in man["inputs"]:
        arr = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
        np.save(tmp_path / f"{spec['name']}.npy", arr)
        feeds[spec["name"]] = arr
        args += ["--input", f"{spec['name']}={tmp_path / (spec['name'] + '.npy')}"]
    run_cli("run", out, *args, "-o", tmp_path / "got.npz")
    ref = ort.InferenceSession(str(model_path)).run(None, feeds)
    with np.load(tmp_path / "got.npz") as got:
        for spec, r in zip(man["outputs"], ref):
            np.testing.assert_allclose(got[spec["name"]], r, atol=2e-4, rtol=2e-4, err_msg=f"{level} {spec['name']}")
    return man


@pytest.mark.parametrize("level", HOST_LEVELS)
@pytest.mark.parametrize("model", ["model_v8", "float_cnn", "bam_unnamed"])
def test_key_models_at_every_isa_level_this_cpu_runs(tmp_path, dnsmos_path, model, level):
    _check_level(tmp_path, MODELS[model](tmp_path, dnsmos_path), level)


@pytest.mark.parametrize("level", ["haswell", HOST_LEVELS[-1]])
@pytest.mark.parametrize("model", ["zoo_vad_bam", "zoo_dnsmos_bam"])
def test_zoo_bam_models_on_avx2_and_the_newest_level(tmp_path, dnsmos_path, model, level):
    _check_level(tmp_path, MODELS[model](tmp_path, dnsmos_path), level)


@pytest.mark.slow
@pytest.mark.parametrize("level", HOST_LEVELS)
@pytest.mark.parametrize("model", ["zoo_vad_bam", "zoo_dnsmos_bam"])
def test_zoo_bam_models_at_every_level(tmp_path, dnsmos_path, model, level):
    _check_level(tmp_path, MODELS[model](tmp_path, dnsmos_path), level)


def test_the_matrix_covers_avx2_and_sse_on_any_x86_host():
    """Every x86-64 CPU nrqc supports runs x86-64-v2; every AVX2 machine runs haswell."""
    assert HOST_LEVELS[0] == "x86-64-v2"
    if "avx2" in x86.host_cpu_flags() and "fma" in x86.host_cpu_flags():
        assert "haswell" in HOST_LEVELS


def test_a_build_for_a_newer_cpu_is_refused_before_loading(tmp_path):
    """A library for an ISA this CPU lacks: the compile says its check could not run here,
    and `nrqc run` refuses it with one line naming the missing features (not SIGILL)."""
    newer = [m for m in LEVELS if m not in HOST_LEVELS]
    if not newer:
        pytest.skip(f"this CPU ({x86.host_mcpu()}) runs every level in {LEVELS}")
    level = newer[0]
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "out"
    run_cli("compile", model, "--target", "x86", "--mcpu", level, "-o", out)
    man = json.loads((out / "manifest.json").read_text())
    assert not man["check"]["ran"] and "lacks" in man["check"]["reason"]
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 16, 20), np.float32))
    proc = run_cli("run", out, "--input", tmp_path / "x.npy", check_exit=2)
    missing = sorted(set(man["cpu"]["isa_flags"]) - x86.host_cpu_flags())
    assert f"built for x86 CPU '{level}'" in proc.stderr and missing[0] in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_mcpu_and_mcpu_on_other_targets_are_input_errors(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    proc = run_cli("compile", model, "--target", "x86", "--mcpu", "pentium-nonesuch", check_exit=2)
    assert "--mcpu pentium-nonesuch" in proc.stderr
    proc = run_cli("compile", model, "--target", "cortex-m4", "--mcpu", "haswell", check_exit=2)
    assert "only the x86 target" in proc.stderr
