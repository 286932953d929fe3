"""Int8-input conv on NEON ``sdot`` (the Pi 5's Cortex-A76): s8 input x s8 weights, 16
output channels x 4 input channels per 4 ``sdot v.4s, v.16b, v.16b``, exact for every int8
value (-128 included: a 4-term int32 dot product cannot overflow). The loop nest and weight
layout are the VNNI strategy's (strategies/int8_vnni.py ``dot4_conv`` on the s8 input, no
offset: correction -pad_s8 * sum(w_c)), scheduled as the binary NEON kernels are
(strategies/neon_unpacked.py: one block of 16 output channels at a time)."""
from __future__ import annotations

import dataclasses
import functools

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import int8_vnni, neon_sdot, neon_unpacked, vnni

NAME = "int8_neon_sdot"
# Estimated Cortex-A76 cycles per 16x4 update, measured: llvm-mca (-mcpu=cortex-a76) of the
# executed blocks of this kernel on the zoo vad_tiny BAM's first conv (80 -> 32, 1x3, 100
# frames, float source quantized in the kernel: 12,000 updates) came to 65,226 cycles,
# i.e. 4.8 per update after the input rows' share (input_rows_cost); 113,720 before the
# quantize lost its fdiv (quantize_reciprocal.py).
CYCLES_PER_16x4 = 4.8


def available(target) -> bool:
    return neon_unpacked.available_on(target, "dotprod")


def supports(g) -> bool:
    return neon_unpacked.supports(g.conv)


def cost(g, target) -> float:
    return neon_unpacked.updates(g.conv) * CYCLES_PER_16x4 + input_rows_cost(g)


def input_rows_cost(g) -> float:
    """The kh input rows (padded to 4 channels) loaded, and quantized from float, per output
    row: ~1 cycle per byte (a float source's reciprocal multiply, fma correction, round and
    saturate, 4 lanes at a time: 21,000 A72 cycles for the 8,000 of the VAD's first conv)."""
    c = g.conv
    return c.n * c.ho * c.kh * c.w * pk.vnni_padded_channels(c.c_in, c.c_out)[0]


def weight_args(g, wq):
    return [pk.vnni_weights(wq), ic.s8_correction(g, wq)]


def build(g, out: str, target, pool=None, strict: bool = False):
    return build_with(g, out, target, pool, strict, sdot_s8_16x4())


def build_with(g, out: str, target, pool, strict: bool, dot_16x4: str):
    """The VNNI loop nest on the s8 input, scheduled one block of 16 output channels at a
    time with `dot_16x4` (a registered s8 x s8 16x4 intrinsic) as the update. A float
    source is quantized with a reciprocal and an fma where exact (every aarch64 core has
    fmla): 20 ``fdiv v.4s`` per 80 input bytes cost the A72 more than the conv's products."""
    g = dataclasses.replace(g, quantize_by_reciprocal=True)
    return vnni.schedule(int8_vnni.dot4_conv(g, out, pool, 0, "int8"), g.conv, out, target, pool, strict,
                         dot_16x4=dot_16x4, channel_blocks_outside=True)


_impl = neon_sdot.sdot_impl("int8")


@functools.lru_cache(maxsize=1)
def sdot_s8_16x4() -> str:
    return neon_unpacked.register("nrqc_dot_16x4_i8i8i32_neon_sdot", _impl, "int8")
