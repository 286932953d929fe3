"""+-1 weights on a {0,1} map with NEON ``and`` + ``cnt`` (Cortex-A72, the Pi 4): the counts
of the input bits under +1 and under -1 weights, byte adds widened by ``uaddlp``, 16 output
channels per register block (strategies/neon_popcount.py)."""
from __future__ import annotations

from nrqc.targets.kernels.strategies import neon_popcount as common

NAME = "neon_and"
WEIGHTS = "binary"
ENCODING = "01"  # the input encoding it computes on ({0,1} map)
MODE = "and"
available = common.available
supports = common.supports


def cost(g, target) -> float:
    return common.cost(g, target, MODE)


def weight_args(g, wq):
    return common.weight_args(g, wq, MODE)


def build(g, out: str, target, pool=None, strict: bool = False):
    return common.build(g, out, target, pool, strict, MODE)
