"""+-1 weights on a {0,1} map: acc = 2 popcount(x & Wp) - popcount(x & M) (Wp: bit 1 for
+1; M: the output channel's group)."""
from __future__ import annotations

from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.pixelwise import build_popcount_conv
from nrqc.targets.kernels.strategies.estimates import popcount_bits_per_cycle, taps

NAME = "and"
WEIGHTS = "binary"
ENCODING = "01"  # the input encoding it computes on ({0,1} map)


def available(target) -> bool:
    return True


def supports(g) -> bool:
    return True


def cost(g, target) -> float:
    # two popcounts of WORD bits per input word, plus and/shift/sub (x3)
    return taps(g) * g.words_in * 2 * pk.WORD / popcount_bits_per_cycle(target) * 3


def weight_args(g, wq):
    return list(pk.binary_weights(wq, g.groups))


def build(g, out: str, target, pool=None, strict: bool = False):
    return build_popcount_conv(g, WEIGHTS, NAME, out, target, pool)
