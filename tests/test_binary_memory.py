"""Memory of the DNSMOS-like BAM model (int8 weights, Heaviside maps) against its float
twin of the same architecture, both compiled by nrqc, from the manifests `nrqc profile`
reads: weights as stored + peak activation bytes (static plan + largest kernel scratch +
inputs/outputs). Issue 4 asks for at least 20x in total (the BAM paper reports 25x)."""
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


@pytest.mark.slow
def test_bam_total_memory_reduction_at_least_20x(tmp_path):
    bam = _manifest(bm.bam_model(tmp_path / "bam.onnx"), tmp_path / "bam")
    flt = _manifest(bm.bam_model(tmp_path / "float.onnx", float_model=True), tmp_path / "float")
    total = lambda m: m["weights_bytes"] + m["peak_activation_bytes"]  # noqa: E731
    ratio = total(flt) / total(bam)
    print(f"BAM {total(bam)} B vs float {total(flt)} B: {ratio:.1f}x")
    assert bam["weights_bytes_by_dtype"].get("int8", 0) > 30_000  # the three binary convs' int8 weights
    assert ratio >= 20.0, (bam["memory_plan"], flt["memory_plan"])


@pytest.mark.slow
def test_zoo_bam4_total_memory_reduction_at_least_20x(tmp_path):
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
    total = lambda m: m["weights_bytes"] + m["peak_activation_bytes"]  # noqa: E731
    ratio = total(manifests["float"]) / total(manifests["bam"])
    print(f"zoo BAM4 {total(manifests['bam'])} B vs float {total(manifests['float'])} B: {ratio:.1f}x")
    assert ratio >= 20.0, (manifests["bam"]["memory_plan"], manifests["float"]["memory_plan"])
