"""The NEON binary x int8 strategies without a board: which Pi offers which, the instructions
they are named after in their aarch64 builds, and the per-layer choice on the zoo models'
binary layers (bit-exactness runs on the emulated board: tests/emulated/test_neon_kernels.py)."""
from __future__ import annotations

import re

import pytest
import tvm

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import select, strategies
from nrqc.targets.kernels.strategies import neon_sadalp, neon_sdot

_PAD1 = (1, 1, 1, 1)
VAD_CONV = bo.ConvGeom(1, 32, 1, 100, 32, 1, 3, pad=(0, 1, 0, 1))  # zoo vad_tiny's binary convs
DNSMOS_CONV = bo.ConvGeom(1, 32, 100, 32, 32, 3, 3, pad=_PAD1)       # zoo dnsmos BAM's second conv


def test_which_pi_offers_which():
    a72, a76 = get_target("arm_cpu"), get_target("arm_cpu_a76")
    assert neon_sadalp.available(a72) and neon_sadalp.available(a76)
    assert not neon_sdot.available(a72) and neon_sdot.available(a76)  # sdot needs the dot product (v8.2)
    for name in ("x86", "armv7", "cortex-m4"):  # AArch32 NEON has no saddlp on these paths; no NEON on M
        t = get_target(name)
        assert not neon_sadalp.available(t) and not neon_sdot.available(t)
    assert [s.NAME for s in strategies.for_target(a72)] == ["bitserial", "masked", "neon_sadalp"]
    assert [s.NAME for s in strategies.for_target(a76)] == ["bitserial", "masked", "neon_sadalp", "neon_sdot"]
    # the schedule's limits: one group, output channels in blocks of 16
    assert not neon_sdot.supports(bo.ConvGeom(1, 32, 4, 4, 24, 3, 3))
    assert not neon_sadalp.supports(bo.ConvGeom(1, 32, 4, 4, 32, 3, 3, groups=2))


def _asm(strategy, target_name):
    t = get_target(target_name)
    func = strategy.build(DNSMOS_CONV, "pack", t, strict=True)
    return tvm.tirx.build(bo.as_kernel(func, "k"), target=t.tvm()).inspect_source("asm")


def test_sadalp_build_for_the_a72_uses_pairwise_adds_and_no_dot_product():
    asm = _asm(neon_sadalp, "arm_cpu")
    assert re.search(r"\bsadalp\s+v\d+\.4s, v\d+\.8h", asm) and re.search(r"\bsaddlp\s+v\d+\.8h, v\d+\.16b", asm)
    assert not re.search(r"\b[su]dot\b", asm)


@pytest.mark.slow  # an aarch64 build (~5 s); the A72 one above stays in the default suite
def test_sdot_build_for_the_a76_uses_sdot():
    assert re.search(r"\bsdot\s+v\d+\.4s, v\d+\.16b, v\d+\.16b", _asm(neon_sdot, "arm_cpu_a76"))


@pytest.mark.parametrize("g", [VAD_CONV, DNSMOS_CONV], ids=["vad", "dnsmos"])
def test_each_pi_chooses_its_neon_kernel_by_the_measured_estimates(g):
    """The estimates are llvm-mca cycles per unit of work measured on these layers'
    builds (each strategy's module says where its figure comes from); the NEON kernels
    are 4-7x under bit-serial on both layer shapes, so the choice is not close."""
    for name, best in (("arm_cpu", "neon_sadalp"), ("arm_cpu_a76", "neon_sdot")):
        choice = select.choose_int8_strategy(g, get_target(name))
        est = choice["cost_model_cycles"]
        assert choice["strategy"] == best, est
        assert est["bitserial"] > 3 * est[best]


@pytest.mark.slow  # two aarch64 builds
def test_int8_input_neon_kernels_per_pi_and_their_instructions():
    """The all-integer first layer's NEON kernels: smull/addp/sadalp on the A72, sdot on the
    A76 (built here, run on the emulated board by tests/emulated/test_neon_kernels.py)."""
    import numpy as np

    from nrqc.targets.kernels import int8_conv as ic

    c = bo.ConvGeom(1, 80, 1, 100, 32, 1, 3, pad=(0, 1, 0, 1))  # zoo vad_tiny's first conv
    g = ic.Int8ConvGeom(c, (1, 100, 80), (0, 2, 1), "float32", "int8", 0.05, 0, False)
    a72, a76 = get_target("arm_cpu"), get_target("arm_cpu_a76")
    names = lambda t: [s.NAME for s in strategies.int8_input_for_layer(g, t)]  # noqa: E731
    assert names(a72) == ["int8_generic", "int8_neon_smull"]
    assert names(a76) == ["int8_generic", "int8_neon_smull", "int8_neon_sdot"]
    smull = strategies.int8_input_lookup("int8_neon_smull")
    assert not smull.supports(ic.Int8ConvGeom(c, (1, 100, 80), (0, 2, 1), "float32", "int8", 0.05, 0, True))
    asm = tvm.tirx.build(bo.as_kernel(smull.build(g, "pack", a72, strict=True), "k"), target=a72.tvm()).inspect_source("asm")
    assert re.search(r"\bsmull2?\s+v\d+\.8h", asm) and re.search(r"\baddp\s+v\d+\.8h", asm)
    assert re.search(r"\bsadalp\s+v\d+\.4s", asm) and not re.search(r"\b[su]dot\b", asm)
    sdot = strategies.int8_input_lookup("int8_neon_sdot")
    asm = tvm.tirx.build(bo.as_kernel(sdot.build(g, "pack", a76, strict=True), "k"), target=a76.tvm()).inspect_source("asm")
    assert re.search(r"\bsdot\s+v\d+\.4s", asm)
    assert np.argmin([s.cost(g, a72) for s in strategies.int8_input_for_layer(g, a72)]) == 1
