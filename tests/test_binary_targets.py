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
