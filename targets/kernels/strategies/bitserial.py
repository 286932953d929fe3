"""Bit-serial: int8 weights as 8 two's-complement bit-planes packed like the input;
acc = sum_{b<7} 2^b popcount(x & P_b) - 128 popcount(x & P_7). Runs everywhere a
popcount exists (a hardware one, or a SWAR sequence in C)."""
from __future__ import annotations

from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.pixelwise import build_popcount_conv, target_family
from nrqc.targets.kernels.strategies.estimates import popcount_bits_per_cycle, taps

NAME = "bitserial"
ARM_CYCLES_PER_PLANE_WORD = 2.66
WEIGHTS = "int8"


def available(target) -> bool:
    return True


def supports(g) -> bool:
    return True


def cost(g, target) -> float:
    pop_bits = popcount_bits_per_cycle(target)
    if target_family(target) == "c":
        # scalar C (Cortex-M): per input word 8 x (popcount + and/shift/add) instructions.
        # Measured in QEMU on vad_tiny (M4): bitserial 9.55 M vs masked 13.05 M instructions.
        return taps(g) * g.words_in * 8 * (pk.WORD / pop_bits + 3)
    if target_family(target) == "arm":
        # aarch64 (Pi 4/5): measured, not derived: 2.66 estimated Cortex-A72 cycles per
        # (tap visit, input word, plane), everything included (how: neon_unpacked.MEASURED_ON);
        # the peak-popcount formula below said 0.375, 7x too optimistic against the NEON kernels
        return taps(g) * g.words_in * 8 * ARM_CYCLES_PER_PLANE_WORD
    # 8 planes x words x WORD bits of popcount, plus and/shift/add (x3)
    return taps(g) * g.words_in * 8 * pk.WORD / pop_bits * 3


def weight_args(g, wq):
    return [pk.bitplanes_int8(wq, g.groups)]


def build(g, out: str, target, pool=None, strict: bool = False):
    return build_popcount_conv(g, WEIGHTS, NAME, out, target, pool)
