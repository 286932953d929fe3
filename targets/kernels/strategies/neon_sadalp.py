"""Unpack to {0,1} bytes + NEON mask and pairwise adds (ARMv8.0: Cortex-A72, the Pi 4,
which has no dot product).

The VNNI strategy's workload and schedule (strategies/neon_unpacked.py); the 16x4 update
selects instead of multiplying: the 4 input bytes (0 or 1) become a byte mask (0 - x: 0x00
or 0xff) in every dword, and per 4 output channels one ``and`` keeps the weights whose
input bit is set, ``saddlp`` adds them pairwise to int16 and ``sadalp`` adds the pairs
into the int32 accumulators: 3 instructions per 16 MACs, exact for any int8 weights (a
pair of int8 sums to at most 256 in magnitude)."""
from __future__ import annotations

import functools

from tvm.script import tirx as T

from nrqc.targets.kernels import intrin
from nrqc.targets.kernels.strategies import neon_unpacked as common

NAME = "neon_sadalp"
WEIGHTS = "int8"
supports = common.supports
weight_args = common.weight_args

# Estimated Cortex-A72 cycles per 16x4 update, everything included: 43,688 / 4,800 on the
# zoo VAD's binary convs (how: neon_unpacked.MEASURED_ON). Its inner loop alone is 16
# instructions per update for 4 pixels' worth of and/saddlp/sadalp (~4 cycles: saddlp and
# sadalp issue on one of the A72's two NEON pipes).
CYCLES_PER_16x4 = 9.1


def available(target) -> bool:
    return common.available_on(target)


def cost(g, target) -> float:
    return common.updates(g) * CYCLES_PER_16x4


def build(g, out: str, target, pool=None, strict: bool = False):
    return common.build(g, out, target, pool, strict, sadalp_16x4())


@T.macro
def _sadalp_update(A, B, C):
    x = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 4), dtype="int8x16")
    mask = T.broadcast(T.int8(0), 16) - x  # 1 -> 0xff, 0 -> 0x00
    for h in T.unroll(4):
        C[T.ramp(h * 4, 1, 4)] = C.vload([h * 4], "int32x4") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
            T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v8i16.v16i8"),
                                    T.bitwise_and(B.vload([h * 4, 0], "int8x16"), mask), dtype="int16x8"),
            dtype="int32x4")


_sadalp = intrin.dot_16x4_func("uint8", _sadalp_update)


@functools.lru_cache(maxsize=1)
def sadalp_16x4() -> str:
    return common.register("nrqc_dot_16x4_u8i8i32_neon_sadalp", _sadalp)
