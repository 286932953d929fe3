"""Int8-input conv on NEON ``sdot`` (the Pi 5's Cortex-A76): s8 input x s8 weights, 16
output channels x 4 input channels per 4 ``sdot v.4s, v.16b, v.16b``, exact for every int8
value (-128 included: a 4-term int32 dot product cannot overflow). The loop nest and weight
layout are the VNNI strategy's (strategies/int8_vnni.py ``dot4_conv`` on the s8 input, no
offset: correction -pad_s8 * sum(w_c)), scheduled as the binary NEON kernels are
(strategies/neon_unpacked.py: one block of 16 output channels at a time)."""
from __future__ import annotations

import functools

from tvm.script import tirx as T

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import int8_vnni, neon_unpacked, vnni

NAME = "int8_neon_sdot"
# Estimated Cortex-A76 cycles per 16x4 update, measured: llvm-mca (-mcpu=cortex-a76) of the
# executed blocks of this kernel on the zoo vad_tiny BAM's first conv (80 -> 32, 1x3, 100
# frames, float source quantized in the kernel: 12,000 updates) came to 113,720 cycles,
# i.e. 8.8 per update after the input rows' share (input_rows_cost).
CYCLES_PER_16x4 = 8.8


def available(target) -> bool:
    return neon_unpacked.available_on(target, "dotprod")


def supports(g) -> bool:
    return neon_unpacked.supports(g.conv)


def cost(g, target) -> float:
    return neon_unpacked.updates(g.conv) * CYCLES_PER_16x4 + input_rows_cost(g)


def input_rows_cost(g) -> float:
    """The kh input rows (padded to 4 channels) loaded, and quantized from float, per output
    row: ~1 cycle per byte (a float source's divide + round + saturate, 4 lanes at a time)."""
    c = g.conv
    return c.n * c.ho * c.kh * c.w * pk.vnni_padded_channels(c.c_in, c.c_out)[0]


def weight_args(g, wq):
    return [pk.vnni_weights(wq), ic.s8_correction(g, wq)]


def build(g, out: str, target, pool=None, strict: bool = False):
    return vnni.schedule(int8_vnni.dot4_conv(g, out, pool, 0, "int8"), g.conv, out, target, pool, strict,
                         dot_16x4=sdot_s8_16x4(), channel_blocks_outside=True)


@T.prim_func(s_tir=True)
def _impl(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
          C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16")
        for h in T.unroll(4):
            C[T.ramp(h * 4, 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([h * 4], "int32x4"), B.vload([h * 4, 0], "int8x16"), a, dtype="int32x4")


@functools.lru_cache(maxsize=1)
def sdot_s8_16x4() -> str:
    return neon_unpacked.register("nrqc_dot_16x4_i8i8i32_neon_sdot", _impl, "int8")
