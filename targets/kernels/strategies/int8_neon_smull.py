"""Int8-input conv on NEON without a dot product (the Pi 4's Cortex-A72): per 4 output
channels x 4 input channels, ``smull``/``smull2`` multiply the 16 weight bytes by the 4
input bytes (repeated) into 16 int16 products, ``addp`` adds neighbouring products (one
output channel's pairs) and ``sadalp`` adds those pairs into the channel's int32
accumulator: 4 instructions per 16 MACs. A product is at most 128 x 128 in magnitude, a
pair 2 x 128 x 127 = 32512 when no weight is -128 (a -128 weight times a -128 input twice
would reach 32768): layers with a -128 weight are not supported (the generic kernel runs
them). Loop nest, weight layout and schedule as strategies/int8_neon_sdot.py."""
from __future__ import annotations

import functools

from tvm.script import tirx as T

from nrqc.targets.kernels import intrin
from nrqc.targets.kernels.strategies import int8_neon_sdot, neon_unpacked

NAME = "int8_neon_smull"
# Estimated Cortex-A72 cycles per 16x4 update, measured: llvm-mca (-mcpu=cortex-a72) of the
# executed blocks of this kernel on the zoo vad_tiny BAM's first conv (80 -> 32, 1x3, 100
# frames, float source quantized in the kernel: 12,000 updates) came to 137,109 cycles, i.e.
# 10.8 per update after the input rows' share (smull issues on the A72's F0 pipe only,
# addp/sadalp on F1 only, so 16 instructions take ~8-16 cycles; the inner loop alone is
# 35 cycles per 4 updates). 190,454 before the quantize lost its fdiv (quantize_reciprocal.py).
CYCLES_PER_16x4 = 10.8
weight_args = int8_neon_sdot.weight_args


def available(target) -> bool:
    return neon_unpacked.available_on(target)


def supports(g) -> bool:
    return neon_unpacked.supports(g.conv) and not g.full_range_weights


def cost(g, target) -> float:
    return neon_unpacked.updates(g.conv) * CYCLES_PER_16x4 + int8_neon_sdot.input_rows_cost(g)


def build(g, out: str, target, pool=None, strict: bool = False):
    return int8_neon_sdot.build_with(g, out, target, pool, strict, smull_16x4())


@T.macro
def _smull_update(A, B, C):
    a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 2), dtype="int8x8")
    for h in T.unroll(4):
        # weights of output channels 4h..4h+3 (4 bytes each): products of channels
        # (4h, 4h+1) and (4h+2, 4h+3), neighbours summed, pairs into the accumulators
        lo = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                                     B.vload([h * 4, 0], "int8x8"), a, dtype="int16x8")
        hi = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                                     B.vload([h * 4 + 2, 0], "int8x8"), a, dtype="int16x8")
        pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v8i16"), lo, hi,
                                        dtype="int16x8")
        C[T.ramp(h * 4, 1, 4)] = C.vload([h * 4], "int32x4") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), pairs, dtype="int32x4")


_impl = intrin.dot_16x4_func("int8", _smull_update)


@functools.lru_cache(maxsize=1)
def smull_16x4() -> str:
    return neon_unpacked.register("nrqc_dot_16x4_i8i8i32_neon_smull", _impl, "int8")
