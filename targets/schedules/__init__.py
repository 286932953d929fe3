"""Hand-written `s_tir.Schedule` rules for the common CPU layers, per target.

`schedule_primfunc(func, target)` recognises the anchor block of a fused kernel
(NCHW/NCW convolution, dense/matmul, pooling, generic injective/reduction) and returns
a scheduled copy, or None when no rule applies. The vector width and the register
budget come from the target (`vector_spec`): AVX-512 (16 float lanes, 32 registers),
AVX2 (8 lanes, 16 registers), aarch64 NEON (4 lanes, 32 registers).
"""
from __future__ import annotations

from nrqc.targets.schedules.common import VectorSpec, vector_spec  # noqa: F401
from nrqc.targets.schedules.rules import schedule_primfunc  # noqa: F401
