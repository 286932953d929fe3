"""Memory of the DNSMOS-like BAM model (int8 weights, Heaviside maps) against its float
twin of the same architecture, both compiled by nrqc, from the manifests `nrqc profile`
reads: weights as stored + peak activation bytes (static plan + largest kernel scratch +
inputs/outputs). Issue 4 asks for at least 20x in total (the BAM paper reports 25x).

Measured with the corrected scratch accounting (kernel parameters are not scratch): the
activation memory (static plan + kernel scratch) shrinks about 45x, but the total only
about 8x, because both models hold the same float log-mel input (51 KB) and keep the
first conv and the dense head in float. The tests assert the activation reduction and
print the total; the 20x total is an open item of issue 4, not asserted here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import binary_models as bm  # noqa: E402

from nrqc.compiler import CompileOptions, compile_model  # noqa: E402


def _manifest(path, out):
    d = compile_model(path, "x86", out, CompileOptions(check=False), log=lambda *a: None)
    return json.loads((d / "manifest.json").read_text())


def _activations(m) -> int:
    return m["memory_plan"]["planned_storage_bytes"] + m["memory_plan"]["max_kernel_scratch_bytes"]


def _check_reduction(name, bam, flt):
    total = lambda m: m["weights_bytes"] + m["peak_activation_bytes"]  # noqa: E731
    acts = _activations(flt) / _activations(bam)
    print(f"{name}: total {total(bam)} B vs float {total(flt)} B = {total(flt) / total(bam):.1f}x; "
          f"activations {_activations(bam)} B vs {_activations(flt)} B = {acts:.1f}x; "
          f"weights {bam['weights_bytes']} B vs {flt['weights_bytes']} B")
    assert acts >= 20.0, (bam["memory_plan"], flt["memory_plan"])
    assert bam["weights_bytes"] < flt["weights_bytes"] / 2


@pytest.mark.slow
def test_bam_activation_memory_reduction_at_least_20x(tmp_path):
    bam = _manifest(bm.bam_model(tmp_path / "bam.onnx"), tmp_path / "bam")
    flt = _manifest(bm.bam_model(tmp_path / "float.onnx", float_model=True), tmp_path / "float")
    assert bam["weights_bytes_by_dtype"].get("int8", 0) > 30_000  # the three binary convs' int8 weights
    _check_reduction("builder BAM", bam, flt)


@pytest.mark.slow
def test_zoo_bam4_activation_memory_reduction_at_least_20x(tmp_path):
    """Same check on the model zoo's quality_bam4 ('bam' with int8 weights vs 'float'),
    exported by nrqc's exporter (untrained weights: memory does not depend on them)."""
    import onnx
    import torch

    from nrqc.models.zoo import quality_bam4
    from nrqc.training.onnx_export import to_onnx

    manifests = {}
    for variant in ("bam", "float"):
        torch.manual_seed(0)
        net = quality_bam4(variant)
        net.eval()
        model, _ = to_onnx(net)
        path = tmp_path / f"{variant}.onnx"
        onnx.save(model, str(path))
        manifests[variant] = _manifest(path, tmp_path / variant)
    _check_reduction("zoo BAM4", manifests["bam"], manifests["float"])
