"""Per-target code generation of the binary kernels: hardware popcount where the ISA has
one (x86 AVX-512 VPOPCNTDQ `vpopcntd/q` via the target's mcpu, aarch64 NEON `cnt`), and
plain C with `__builtin_popcount` for Cortex-M (generic TIR lowered by the C back end)."""
from __future__ import annotations

import re

import pytest
import tvm

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import select

G = bo.ConvGeom(1, 32, 10, 6, 32, 3, 3, (1, 1), (1, 1, 1, 1))


def _source(lib, kind):
    return lib.inspect_source(kind) if hasattr(lib, "inspect_source") else lib.get_source(kind)


def _build(target_name, strategy="bitserial"):
    target = get_target(target_name)
    func = select.schedule_conv(bo.binary_conv(G, "int8", strategy, "pack"), G, "pack", target)
    return tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm())


def test_x86_uses_vector_popcount_when_the_host_has_it():
    flags = set(get_target("x86").notes)
    asm = _source(_build("x86"), "asm")
    if "avx512_vpopcntdq" in flags:
        assert re.search(r"vpopcnt[dq]", asm)
    else:
        assert re.search(r"\bpopcnt", asm) or "vpshufb" in asm


def test_aarch64_uses_neon_cnt():
    asm = _source(_build("arm_cpu"), "asm")
    assert re.search(r"\bcnt\s+v\d+\.(8|16)b", asm)


@pytest.mark.parametrize("strategy", ["bitserial", "masked"])
def test_cortex_m_lowers_to_plain_c(strategy):
    import nrqc.cortex_m as cm

    cm._register_popcount()
    src = _source(_build("cortex-m4", strategy), "c")
    assert "TVMFFIAny" in src or "int32_t" in src
    if strategy == "bitserial":
        assert "__builtin_popcount" in src


def test_cortex_m4_bam_small_runs_exactly_in_qemu(tmp_path):
    """The BAM architecture (small input) through the Cortex-M back end: binary kernels as
    plain C, firmware run in QEMU (mps2-an386), output equal to onnxruntime."""
    import json
    import shutil
    import sys
    from pathlib import Path

    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import binary_models as bm

    from nrqc.compiler import CompileOptions, compile_model

    path = bm.bam_model(tmp_path / "bam.onnx", frames=32, bands=32, channels=(8, 8, 8, 16), head=16)
    out = compile_model(path, "cortex-m4", tmp_path / "m4", CompileOptions(check=True), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]
    convs = [layer for layer in manifest["layers"] if layer["op"] == "Conv"]
    assert all(str(layer["kernel"]).startswith("nrqc:nrqc_bconv_int8") for layer in convs[1:])
