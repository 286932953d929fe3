"""+-1 weights on a {-1,+1} map: acc = 2 popcount(~(x ^ Wp) & M) - popcount(M) for
in-bounds taps (zero-padded taps contribute 0: ONNX pads a Sign map with 0, not -1).
Same weight layout as ``and_popcount``."""
from __future__ import annotations

from nrqc.targets.kernels.pixelwise import build_popcount_conv
from nrqc.targets.kernels.strategies import and_popcount

NAME = "xnor"
WEIGHTS = "binary"
ENCODING = "pm1"  # the input encoding it computes on ({-1,+1} map)
available = and_popcount.available
supports = and_popcount.supports
# the same two popcounts per word as AND (xor/not replace and: same instruction count)
cost = and_popcount.cost
weight_args = and_popcount.weight_args


def build(g, out: str, target, pool=None, strict: bool = False):
    return build_popcount_conv(g, WEIGHTS, NAME, out, target, pool)
