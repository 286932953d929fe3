"""Op counts and target figures the strategies' cost estimates share."""
from __future__ import annotations


def taps(g) -> int:
    """Output pixel x output channel x kernel tap visits of one conv."""
    return g.n * g.ho * g.wo * g.c_out * g.kh * g.kw


def popcount_bits_per_cycle(target) -> float:
    # no figure (no target): a 64-bit scalar popcount per cycle
    return (target.figure("peak_popcount_bits_per_cycle") if target is not None else None) or 64


def int8_macs_per_cycle(target) -> float:
    return (target.figure("peak_int8_macs_per_cycle") if target is not None else None) or 1
