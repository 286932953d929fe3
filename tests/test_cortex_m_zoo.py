"""Issue 7, item 4: the zoo's VAD model fits a Cortex-M4 (256 KB flash / 64 KB RAM) as a
float and as a BAM network; both are checked against onnxruntime in QEMU and profiled."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli

_MISSING = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm") if not shutil.which(t)]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(_MISSING), reason=f"Cortex-M toolchain/emulator missing: {', '.join(_MISSING)}")]


@pytest.mark.parametrize("variant", ["float", "bam"])
def test_zoo_vad_fits_m4(tmp_path, variant):
    torch = pytest.importorskip("torch")
    import onnx

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    model = to_onnx(build("vad_tiny", variant).eval())
    model = model[0] if isinstance(model, tuple) else model
    path = tmp_path / f"vad_tiny_{variant}.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    run_cli("compile", path, "--target", "cortex-m4", "-o", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"], manifest["check"]
    prof = json.loads(run_cli("profile", out, "--json").stdout)
    assert prof["memory"]["flash_bytes"] <= 256 * 1024
    assert prof["memory"]["ram_bytes"] + prof["memory"]["stack_bytes"] <= 64 * 1024
    assert prof["instructions"] >= manifest["macs"] > 0
    if variant == "bam":
        assert any(str(layer["kernel"]).startswith("nrqc:") for layer in manifest["layers"]), manifest["layers"]
    print(variant, prof["memory"], prof["instructions"])
