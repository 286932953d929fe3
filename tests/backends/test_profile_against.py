"""`nrqc profile --against`: a binary model's memory beside its float twin's."""
import json

import pytest

from tests import binary_models as bm
from tests.conftest import run_cli


# slow (~40 s): the README's main job runs `nrqc profile --against` end to end in CI
@pytest.mark.slow
def test_profile_against_float_twin_reports_reduction(tmp_path):
    bam = bm.bam_model(tmp_path / "bam.onnx", frames=48, bands=32)
    flt = bm.bam_model(tmp_path / "float.onnx", frames=48, bands=32, float_model=True)
    run_cli("compile", bam, "-o", tmp_path / "bam")
    run_cli("compile", flt, "-o", tmp_path / "float")
    p = json.loads(run_cli("profile", tmp_path / "bam", "--against", tmp_path / "float", "--repeat", "2",
                           "--json").stdout)
    mb = json.loads((tmp_path / "bam" / "manifest.json").read_text())
    mf = json.loads((tmp_path / "float" / "manifest.json").read_text())
    total = lambda m: m["weights_bytes"] + m["peak_activation_bytes"]  # noqa: E731
    assert p["memory"]["total_bytes"] == total(mb) and p["against"]["memory"]["total_bytes"] == total(mf)
    assert abs(p["memory_reduction"]["total_bytes"] - total(mf) / total(mb)) < 1e-9
    assert p["memory_reduction"]["peak_activation_bytes"] > 1 and p["memory_reduction"]["weights_bytes"] > 1
    io = lambda m: m["memory_plan"]["io_bytes"]  # noqa: E731 - the caller's input/output tensors
    assert p["memory"]["io_bytes"] == io(mb) == 48 * 32 * 4 + 4
    assert abs(p["memory_reduction"]["total_without_io_bytes"]
               - (total(mf) - io(mf)) / (total(mb) - io(mb))) < 1e-9
    # An ONNX model as --against is compiled for the same target first.
    text = run_cli("profile", tmp_path / "bam", "--against", flt, "--repeat", "1").stdout
    assert "other/this" in text and "peak activations" in text and "without I/O" in text
