"""The Raspberry Pi 5 target (arm_cpu_a76): its description against LLVM, and its builds on
the emulated board under ``qemu -cpu cortex-a76`` (slow), with the profile's cycle estimate."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import run_cli


def _llvm_arm_features(mcpu: str) -> set[str]:
    import tvm

    feats = tvm.target.codegen.llvm_get_cpu_features(
        tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu}))
    return {str(f) for f in feats}


def test_pi5_target_caps_are_llvms_cortex_a76_features():
    from nrqc.targets import caps_for_tvm_target, get_target

    d = get_target("arm_cpu_a76")
    assert get_target("rpi5") is not None and get_target("pi5").name == "arm_cpu_a76"
    assert d.tvm_target["mcpu"] == "cortex-a76" and d.tvm_target["mtriple"].startswith("aarch64")
    llvm = _llvm_arm_features("cortex-a76")
    # the kernel-relevant Arm features, exactly as LLVM describes the core (no i8mm on an A76)
    assert d.caps.features == {f for f in ("neon", "dotprod", "i8mm") if f in llvm} == {"neon", "dotprod"}
    assert sorted(d.tvm_target["mattr"]) == ["+dotprod", "+neon"]
    # a bare target dict of this build (what schedules see) has the same capabilities
    assert caps_for_tvm_target(d.tvm_target) == d.caps
    # and the Pi 4 target stays what LLVM says of the Cortex-A72: NEON, no dot product
    a72 = get_target("arm_cpu")
    assert "dotprod" not in _llvm_arm_features("cortex-a72") and a72.caps.features == {"neon"}
    assert d.figure("clock_ghz") == 2.4 and d.figure("l2_bytes") == 512 * 1024 and d.figure("l3_bytes") == 2 << 20


def test_pi5_tuning_database_key_differs_from_the_pi4s():
    from nrqc.targets import get_target
    from nrqc.tuning.database import target_dir, target_key

    a72, a76 = get_target("arm_cpu"), get_target("arm_cpu_a76")
    assert target_key(a72) != target_key(a76)
    assert target_dir("db", a72) != target_dir("db", a76)


def _bam4_onnx(path):
    import torch

    from nrqc.models import zoo
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    model, _ = to_onnx(zoo.build("bam4", "float", frames=48))
    onnx.save(model, str(path))
    return path


def _skip_without_emulator():
    from nrqc.emulator.guest_run import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.slow
def test_pi5_build_runs_on_the_emulated_board_under_cortex_a76(tmp_path):
    _skip_without_emulator()
    from nrqc.emulator.guest_run import run_emulated

    model = _bam4_onnx(tmp_path / "m.onnx")
    out = tmp_path / "a76"
    run_cli("compile", model, "--target", "pi5", "-o", out, "--no-check")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tvm_target"]["mcpu"] == "cortex-a76"
    spec = manifest["inputs"][0]
    x = np.random.default_rng(3).standard_normal(spec["shape"]).astype(np.float32)
    got, info = run_emulated(out / "model.so", [spec["name"]], {spec["name"]: x})
    assert info["emulator"].endswith("-cpu cortex-a76")  # the core came from the manifest
    ref = ort.InferenceSession(str(model)).run(None, {spec["name"]: x})[0]
    assert got[0].shape == ref.shape
    assert np.max(np.abs(got[0] - ref)) <= 1e-4 + 1e-4 * np.max(np.abs(ref))


@pytest.mark.slow
@pytest.mark.parametrize("target,cpu,clock", [("arm_cpu", "cortex-a72", 1.5), ("arm_cpu_a76", "cortex-a76", 2.4)])
def test_profile_json_carries_the_cycle_estimate(tmp_path, target, cpu, clock):
    _skip_without_emulator()
    out = tmp_path / target
    run_cli("compile", _bam4_onnx(tmp_path / "m.onnx"), "--target", target, "-o", out, "--no-check")
    p = run_cli("profile", out, "--json")
    r = json.loads(p.stdout)
    est = r["estimated_cycles"]
    assert r["instructions_check"]["passed"] and est["cpu"] == cpu and est["clock_ghz"] == clock
    assert est["latency_ms"] == pytest.approx(est["cycles"] / (clock * 1e6))
    # An out-of-order 3-wide model on compiled kernels: between 1/3 and a few cycles per instruction.
    assert r["instructions"] / 3 < est["cycles"] < 4 * r["instructions"]
    # a second profile (another emulated run): the same estimate, to the cycle
    text = run_cli("profile", out).stdout
    assert f"estimated Cortex-A7{cpu[-1]} cycles (llvm-mca, ignores caches and memory): {est['cycles']:,}" in text
    assert "ESTIMATED latency" in text
    print(f"\n{target}: {r['instructions']:,} instructions, {est['cycles']:,} estimated {cpu} cycles, "
          f"{est['latency_ms']:.3f} ms at {clock} GHz", file=sys.stderr)
