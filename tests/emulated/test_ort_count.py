"""onnxruntime counted on the emulated board the way nrqc is (nrqc profile --against-onnxruntime).

Default: the refusals (one clear line, before anything runs). Slow: a real count of a tiny
model on the emulated Cortex-A72: the counted run's outputs equal onnxruntime's here, the
count is deterministic, and `nrqc profile OUT --against-onnxruntime` prints both engines.
"""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli


def test_refusals_name_the_problem(tmp_path):
    from nrqc.profiler import onnxruntime_count_refusal

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    x86 = {"target": "x86", "tvm_target": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}, "source_model": str(model)}
    assert "built for x86" in onnxruntime_count_refusal(x86, "OUT", [])
    arm = {"target": "arm_cpu", "tvm_target": {"mtriple": "aarch64-linux-gnu"}, "source_model": str(tmp_path / "gone")}
    assert "source model" in onnxruntime_count_refusal(arm, "OUT", []) and "gone" in onnxruntime_count_refusal(arm, "OUT", [])
    assert "no such ONNX file" in onnxruntime_count_refusal(arm, "OUT", [str(tmp_path / "nope.onnx")])
    assert onnxruntime_count_refusal(arm, "OUT", [str(model)]) is None


needs_board = pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None or shutil.which("llvm-mca") is None,
                                 reason="qemu-user-static / llvm not installed")


@pytest.mark.slow
@needs_board
def test_onnxruntime_count_is_checked_deterministic_and_side_by_side(tmp_path):
    import numpy as np

    from nrqc.emulator.peer_count import count_onnxruntime, onnx_input_specs
    from nrqc.onnx_model import random_inputs
    from nrqc.reference import run_onnxruntime
    from tests.onnx_builders import small_conv_model

    model = small_conv_model(tmp_path / "m.onnx")
    a = count_onnxruntime(model, "cortex-a72")
    ref = run_onnxruntime(model, random_inputs(onnx_input_specs(model), seed=0))
    np.testing.assert_allclose(a["outputs"][0], ref[0], rtol=1e-5, atol=1e-5)
    # one 12,480-MAC conv + pool: at least one instruction per 4 MACs (NEON fp32), and the
    # framework's per-run work is tens of thousands of instructions, not millions
    assert 12_480 / 4 < a["instructions"] < 1_000_000 and a["cycles"]["cycles"] > 0
    assert a["onnxruntime"].startswith("1.")
    b = count_onnxruntime(model, "cortex-a72", estimate_cycles=False)
    assert b["instructions"] == a["instructions"]

    out = tmp_path / "out"
    run_cli("compile", model, "-t", "arm_cpu", "-o", out, "--no-check")
    p = json.loads(run_cli("profile", out, "--against-onnxruntime", "--json", timeout=3600).stdout)
    rows = p["against_onnxruntime"]["onnxruntime"]
    assert rows[0]["instructions"] == a["instructions"] and rows[0]["check"]["passed"]
    assert p["against_onnxruntime"]["nrqc"]["instructions"] == p["instructions"]
