"""Table lookup on AVX-512 VBMI + VNNI: ``vpermb`` looks up sums of 4 int8 weights by a
4-channel input nibble, ``vpdpbusd`` accumulates them (kernels/lut.py, written in TIR)."""
from __future__ import annotations

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import lut as kernel
from nrqc.targets.kernels import packing as pk

NAME = "lut"
WEIGHTS = "int8"


def available(target) -> bool:
    return target is not None and target.caps.has("avx512vbmi", "avx512_vnni")


def supports(g) -> bool:
    return g.groups == 1


def cost(g, target) -> float:
    """Two vpermb + vpdpbusd pairs (the lo and hi table planes) per 16-pixel vector, output
    channel and quad of 16 input channels, one pair per cycle; a map narrower than 16
    leaves lanes empty; the epilogue costs ~20 vector ops per channel and 16 vectors."""
    p = kernel.lut_plan(g)
    vectors = g.n * g.ho * p.nkb * p.cop
    return vectors * (g.kh * g.kw * p.nh * 2 + 20 / 16)


def weight_args(g, wq):
    # the table layout does not depend on a fused pool
    return [pk.lut_weights(wq, kernel.lut_plan(g))]


def build(g, out: str, target, pool=None, strict: bool = False):
    return bo.hand_written(kernel.lut_conv(g, out, pool))
