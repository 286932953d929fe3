"""+-1 weights on a {0,1} map: acc = 2 popcount(x & Wp) - popcount(x & M) (Wp: bit 1 for
+1; M: the output channel's group)."""
from __future__ import annotations

from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.pixelwise import build_popcount_conv, target_family
from nrqc.targets.kernels.strategies.estimates import popcount_bits_per_cycle, taps

NAME = "and"
WEIGHTS = "binary"
ENCODING = "01"  # the input encoding it computes on ({0,1} map)


def available(target) -> bool:
    return True


def supports(g) -> bool:
    return True


# aarch64 (Pi 4/5): measured, not derived: estimated Cortex-A72 cycles per (tap visit,
# input word), everything included, of this TE kernel as LLVM compiles it (cnt + two
# uaddlp widenings per word at every step): AND 36.8 and XNOR 39.8 cycles per 4 output
# channels' step on bench/bench_neon_strategies.py --model pm1 (llvm-mca of the kernels' own
# blocks, -mcpu=cortex-a72); the peak-popcount formula below said 0.75, 12x too optimistic
# against the NEON kernels (strategies/neon_popcount.py). XNOR shares this estimate.
ARM_CYCLES_PER_TAP_WORD = 9.2


def cost(g, target) -> float:
    if target_family(target) == "arm":
        return taps(g) * g.words_in * ARM_CYCLES_PER_TAP_WORD
    # two popcounts of WORD bits per input word, plus and/shift/sub (x3)
    return taps(g) * g.words_in * 2 * pk.WORD / popcount_bits_per_cycle(target) * 3


def weight_args(g, wq):
    return list(pk.binary_weights(wq, g.groups))


def build(g, out: str, target, pool=None, strict: bool = False):
    return build_popcount_conv(g, WEIGHTS, NAME, out, target, pool)
