"""+-1 weights on a {0,1} map with NEON ``and`` + ``cnt`` (Cortex-A72, the Pi 4): the counts
of the input bits under +1 and under -1 weights, byte adds widened by ``uaddlp``, 16 output
channels per register block (strategies/neon_popcount.py)."""
from __future__ import annotations

from nrqc.targets.kernels.strategies import neon_popcount as common

NAME = "neon_and"
WEIGHTS = "binary"
ENCODING = "01"  # the input encoding it computes on ({0,1} map)
available = common.available
supports = common.supports
cost, weight_args, build = common.bind("and")
