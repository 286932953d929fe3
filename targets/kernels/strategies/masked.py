"""Masked add: unpack each input bit and add the int8 weight where it is 1 (a select-add,
vectorized over output channels; LLVM turns it into masked vector adds)."""
from __future__ import annotations

from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.pixelwise import build_popcount_conv, target_family
from nrqc.targets.kernels.strategies.estimates import int8_macs_per_cycle, taps

NAME = "masked"
ARM_CYCLES_PER_MAC = 0.895
WEIGHTS = "int8"


def available(target) -> bool:
    return True


def supports(g) -> bool:
    return True


def cost(g, target) -> float:
    if target_family(target) == "c":
        # scalar C: per input channel a bit test, a weight load and a select-add (~7)
        return taps(g) * g.cg * 7
    if target_family(target) == "arm":
        # aarch64 (Pi 4/5): measured: 0.895 estimated Cortex-A72 cycles per (tap visit, input
        # channel), everything included (how: strategies/neon_unpacked.MEASURED_ON)
        return taps(g) * g.cg * ARM_CYCLES_PER_MAC
    # one select-add per input channel, int32 lanes = int8 MACs / 4
    return taps(g) * g.cg / max(1.0, int8_macs_per_cycle(target) / 4) * 2


def weight_args(g, wq):
    return [pk.masked_weights(wq)]


def build(g, out: str, target, pool=None, strict: bool = False):
    return build_popcount_conv(g, WEIGHTS, NAME, out, target, pool)
