"""The NEON +-1 x +-1 popcount strategies without a board: which targets offer them, the
instructions they are named after in their Cortex-A72 builds, and the per-layer choice
against the generic TE popcount kernels (bit-exactness on the emulated board:
tests/emulated/test_neon_popcount.py)."""
from __future__ import annotations

import re

import tvm

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import select
from nrqc.targets.kernels.strategies import neon_and, neon_xnor

G = bo.ConvGeom(1, 64, 10, 9, 40, 3, 3, pad=(1, 1, 1, 1))


def test_offered_on_aarch64_for_its_encoding_only():
    a72, a76 = get_target("arm_cpu"), get_target("arm_cpu_a76")
    for s in (neon_xnor, neon_and):
        assert s.available(a72) and s.available(a76)
        for name in ("x86", "armv7", "cortex-m4"):
            assert not s.available(get_target(name))
    assert select.strategies_for(G, a72, "pm1") == ("xnor", "neon_xnor")
    assert select.strategies_for(G, a72, "01") == ("and", "neon_and")


def test_each_encoding_chooses_its_neon_kernel_by_the_measured_estimates():
    a72 = get_target("arm_cpu")
    for enc, best in (("pm1", "neon_xnor"), ("01", "neon_and")):
        choice = select.choose_int8_strategy(G, a72, encoding=enc)
        assert choice["strategy"] == best, choice


def test_xnor_build_for_the_a72_uses_byte_popcounts_and_pairwise_widening():
    a72 = get_target("arm_cpu")
    func = neon_xnor.build(G, "pack", a72, ((2, 2), (2, 2), (0, 0, 0, 0)))
    asm = tvm.tirx.build(bo.as_kernel(func, "k"), target=a72.tvm()).inspect_source("asm")
    assert re.search(r"\bcnt\s+v\d+\.16b", asm) and re.search(r"\beor\s+v\d+\.16b", asm)
    assert re.search(r"\buaddlp\s+v\d+\.8h, v\d+\.16b", asm) and re.search(r"\buaddlp\s+v\d+\.4s, v\d+\.8h", asm)
    assert re.search(r"\bld1r\s+\{\s*v\d+\.4s", asm)  # the input word broadcast to 4 channels
