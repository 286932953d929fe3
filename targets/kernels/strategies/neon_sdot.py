"""Unpack to {0,1} bytes + NEON ``sdot`` (ARMv8.2 dot product: Cortex-A76, the Pi 5).

The VNNI strategy's workload and schedule (strategies/neon_unpacked.py); the 16x4 update
is 4 ``sdot v.4s, v.16b, v.16b``: each int32 lane adds the 4 byte products of the 4 input
bytes (the same dword in every lane, one ``ld1r``) with its output channel's 4 int8
weights. Input bytes are 0 or 1, so the signed form is exact for them (the u8 x s8
``usdot`` needs ARMv8.6's i8mm, which the A76 lacks)."""
from __future__ import annotations

import functools

from tvm.script import tirx as T

from nrqc.targets.kernels import intrin
from nrqc.targets.kernels.strategies import neon_unpacked as common

NAME = "neon_sdot"
WEIGHTS = "int8"
supports = common.supports
weight_args = common.weight_args

# Estimated Cortex-A76 cycles per 16x4 update, everything included: 28,852 / 4,800 on the
# zoo VAD's binary convs (how: neon_unpacked.MEASURED_ON).
CYCLES_PER_16x4 = 6.0


def available(target) -> bool:
    return common.available_on(target, "dotprod")


def cost(g, target) -> float:
    return common.updates(g) * CYCLES_PER_16x4


def build(g, out: str, target, pool=None, strict: bool = False):
    return common.build(g, out, target, pool, strict, sdot_16x4())


def sdot_impl(a_dtype: str):
    """The 16x4 update as 4 ``sdot`` for `a_dtype` inputs ("uint8": {0,1} bytes, exact in
    the signed form; "int8": the int8-input strategy's s8 bytes)."""

    @T.macro
    def update(A, B, C):
        a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], a_dtype + "x4"), dtype="int32"), 4), dtype="int8x16")
        for h in T.unroll(4):
            C[T.ramp(h * 4, 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([h * 4], "int32x4"), B.vload([h * 4, 0], "int8x16"), a, dtype="int32x4")

    return intrin.dot_16x4_func(a_dtype, update)


_sdot = sdot_impl("uint8")


@functools.lru_cache(maxsize=1)
def sdot_16x4() -> str:
    return common.register("nrqc_dot_16x4_u8i8i32_neon_sdot", _sdot)
