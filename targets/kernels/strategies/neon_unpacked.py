"""What the NEON unpack-to-bytes strategies share (neon_sdot on the Pi 5's Cortex-A76,
neon_sadalp on the Pi 4's Cortex-A72): the VNNI strategy's workload, weight layout and
schedule (strategies/vnni.py: the {0,1} bytes of the input rows an output row reads are
unpacked from the packed words, and 16 output channels of a pixel are updated per
(tap, 4 input channels)) with the 16x4 update tensorized by a NEON intrinsic, one block of
16 output channels at a time; the count of 16x4 updates a layer makes (the unit of the
estimates), and how the aarch64 estimates were measured (MEASURED_ON). The int8-input
(first layer) NEON strategies, int8_neon_smull and int8_neon_sdot, use the same pieces."""
from __future__ import annotations

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import intrin
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import vnni
from nrqc.targets.kernels.strategies.estimates import taps


def available_on(target, *features: str) -> bool:
    return target is not None and target.caps.isa == "aarch64" and target.caps.has("neon", *features)


def supports(g) -> bool:
    # the VNNI schedule's loop nest: groups == 1 and output channels a multiple of 16
    # (other counts fail its tensorize, see avx2_maddubs.supports)
    return g.groups == 1 and g.c_out % 16 == 0


def weight_args(g, wq):
    return vnni.weight_args(g, wq)


def build(g, out: str, target, pool, strict: bool, dot_16x4: str):
    # one block of 16 output channels at a time: 4 accumulator registers per pixel of the
    # tile (or pool window) and 4 of weights, instead of spilling 32 channels' worth
    return vnni.schedule(bo.binary_conv(g, "int8", "vnni", out, pool), g, out, target, pool, strict,
                         dot_16x4=dot_16x4, channel_blocks_outside=True)


def register(name: str, impl, a_dtype: str = "uint8") -> str:
    """Register a 16x4 (`a_dtype` input x s8 weights -> s32) implementation under its own
    name (the description is the VNNI one for u8 inputs, so the VNNI schedule tensorizes
    with it; "int8" for the int8-input strategies)."""
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(name, intrin.dot_16x4_desc(a_dtype), impl, override=True)
    return name


def updates(g) -> float:
    """16x4 updates of a layer: one per (output pixel, tap, 16 output channels, 4 input channels)."""
    return taps(g) / 16 * pk.vnni_padded_channels(g.c_in, g.c_out)[0] / 4


# How the Pi strategies' estimates were measured (the bitserial and masked strategies'
# aarch64 figures come from the same runs): the zoo vad_tiny BAM (100 frames, 80 bands,
# torch seed 0) compiled with each strategy forced on both binary convs (32 -> 32, 1x3,
# 100 pixels: 9,600 tap visits, 4,800 16x4 updates), `nrqc profile` of each build, the
# llvm-mca cycles of the executed translation blocks summed per kernel function (mean of
# the two layers): bitserial 204,491, masked 274,873, neon_sadalp 43,688 (-mcpu=cortex-a72),
# neon_sdot 28,852 (-mcpu=cortex-a76, LLVM 14's A57-based model). Each figure is all-inclusive
# (unpack, accumulation, threshold and pack) per unit of its strategy's work.
MEASURED_ON = "llvm-mca cycles per unit of work, zoo vad_tiny BAM binary convs (strategies/neon_unpacked.py)"
