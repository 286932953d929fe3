"""Memory of the DNSMOS-like BAM models (int8 weights, Heaviside maps) against their float
twins of the same architecture, both compiled by nrqc, from the manifests `nrqc profile`
reads. Issue 4 asks for at least 20x in total inference memory (the BAM paper reports 25x).

What is counted: the weights as stored plus the activation memory the model itself needs
(the static plan's storage, the largest kernel scratch). The caller's input and output
buffers are left out: the log-mel input is the same float32 tensor for both models and
lives in the caller's (the feature front end's) memory, so it cannot be reduced by the
model. Counted in, it caps this architecture below 20x whatever the model does (at 900x120
the 432 KB input is 1/19.9 of the float twin's total). Both figures are printed, and
`nrqc profile --against` shows both ("total without the caller-owned model I/O").

Measured (zoo models with head_kind="binary": int8 weights and 1-bit activations everywhere
after the first conv; the default float head keeps 33 KB of float weights): activations
shrink 45x (200x64 input) to 55x (DNSMOS's published 900x120). Total without the model's
I/O: 16.6x (bam4, 200x64) and 40x (dnsmos, 900x120); with the float input counted 10x /
13.6x (VNNI kernels). On a host where the AMX kernels are chosen their int32 tile scratch
and zero-padded weights (3 taps stored as 2 pairs) cost some of that: activations 34x /
50x, total without I/O 13.0x / 34.8x, with the input 8.7x / 12.9x. Where the table-lookup
kernel is chosen (Zen 4) its tables, built per call for one block of output channels, are
the largest kernel scratch: activations 25.7x / 45.6x, total without I/O 13.4x / 35.0x,
with the input 8.8x / 12.9x. The tests assert the
activation reduction and, for the DNSMOS-like zoo model at its published input size, the
total >= 20x."""
from __future__ import annotations

import json

import pytest

from tests import binary_models as bm

from nrqc.compiler import CompileOptions, compile_model


@pytest.fixture(autouse=True)
def _float_twin_without_winograd(monkeypatch):
    """Winograd stores 16/9 of a float conv's weights: the float twins are compiled with
    the direct conv, their smaller footprint (the conservative reduction factor)."""
    monkeypatch.setenv("NRQC_NO_WINOGRAD", "1")


def _manifest(path, out):
    d = compile_model(path, "x86", out, CompileOptions(check=False), log=lambda *a: None)
    return json.loads((d / "manifest.json").read_text())


def _activations(m) -> int:
    return m["memory_plan"]["planned_storage_bytes"] + m["memory_plan"]["max_kernel_scratch_bytes"]


def _check_reduction(name, bam, flt):
    total = lambda m: m["weights_bytes"] + m["peak_activation_bytes"]  # noqa: E731
    no_io = lambda m: total(m) - m["memory_plan"]["io_bytes"]  # noqa: E731
    acts = _activations(flt) / _activations(bam)
    print(f"{name}: total {total(bam)} B vs float {total(flt)} B = {total(flt) / total(bam):.1f}x "
          f"({no_io(flt) / no_io(bam):.1f}x without the model's input/output); "
          f"activations {_activations(bam)} B vs {_activations(flt)} B = {acts:.1f}x; "
          f"weights {bam['weights_bytes']} B vs {flt['weights_bytes']} B")
    assert acts >= 20.0, (bam["memory_plan"], flt["memory_plan"])
    assert bam["weights_bytes"] < flt["weights_bytes"] / 2
    return no_io(flt) / no_io(bam)


def _zoo_manifests(tmp_path, arch, **shape):
    """The zoo's 'bam' (int8 weights, binary head) and 'float' variants, exported by nrqc's
    exporter (untrained weights: memory does not depend on them), compiled for x86."""
    import onnx
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    manifests = {}
    for variant in ("bam", "float"):
        torch.manual_seed(0)
        net = build(arch, variant, head_kind="binary", **shape)
        net.eval()
        model, _ = to_onnx(net)
        path = tmp_path / f"{variant}.onnx"
        onnx.save(model, str(path))
        manifests[variant] = _manifest(path, tmp_path / variant)
    return manifests["bam"], manifests["float"]


@pytest.mark.slow
def test_bam_activation_memory_reduction_at_least_20x(tmp_path):
    bam = _manifest(bm.bam_model(tmp_path / "bam.onnx"), tmp_path / "bam")
    flt = _manifest(bm.bam_model(tmp_path / "float.onnx", float_model=True), tmp_path / "float")
    assert bam["weights_bytes_by_dtype"].get("int8", 0) > 30_000  # the three binary convs' int8 weights
    _check_reduction("builder BAM", bam, flt)


@pytest.mark.slow
def test_zoo_bam4_activation_memory_reduction_at_least_20x(tmp_path):
    bam, flt = _zoo_manifests(tmp_path, "bam4")
    assert bam["weights_bytes_by_dtype"]["int8"] > 40_000  # convs and the dense head
    _check_reduction("zoo BAM4", bam, flt)


@pytest.mark.slow
def test_zoo_dnsmos_published_size_memory_reduction(tmp_path):
    """The DNSMOS-like zoo model at DNSMOS's own input size (900 frames x 120 bands)."""
    bam, flt = _zoo_manifests(tmp_path, "dnsmos", frames=900, bands=120)
    assert _check_reduction("zoo DNSMOS 900x120", bam, flt) >= 20.0
