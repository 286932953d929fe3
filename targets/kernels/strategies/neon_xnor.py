"""+-1 x +-1 XNOR popcount on NEON ({-1,+1} maps; Cortex-A72, the Pi 4): ``eor`` with the
negated weights, ``and`` with the group mask, ``cnt``, byte adds widened by ``uaddlp``,
16 output channels per register block (strategies/neon_popcount.py)."""
from __future__ import annotations

from nrqc.targets.kernels.strategies import neon_popcount as common

NAME = "neon_xnor"
WEIGHTS = "binary"
ENCODING = "pm1"  # the input encoding it computes on ({-1,+1} map)
available = common.available
supports = common.supports
cost, weight_args, build = common.bind("xnor")
