"""Intel AMX tiles (``tdpbusd``): the unpack-to-u8 + int8 dot product at matrix-unit width,
16 pixels x 16 output channels per instruction (kernels/amx.py, written in TIR)."""
from __future__ import annotations

from nrqc.targets.kernels import amx as kernel
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk

NAME = "amx"
WEIGHTS = "int8"


def available(target) -> bool:
    # x86 descriptions list amx_int8 only where the tiles are usable (OS grants their state)
    return target is not None and target.caps.has("amx_int8")


def supports(g) -> bool:
    return g.groups == 1


def cost(g, target) -> float:
    """tdpbusd count x its issue interval (a 16x16 tile pair costs the same at any K <= 64),
    plus the u8 unpack of each output row's input rows (one 64-byte vector per ~2 cycles)."""
    p = kernel.amx_plan(g)
    per_tile = 16 * 16 * 64 / (target.figure("peak_amx_int8_macs_per_cycle") or 1024)
    tiles = g.n * g.ho * (p.wo16 // 16) * (p.cop // 16) * g.kh * p.kwg * p.nq
    unpack = g.n * g.ho * g.kh * p.wpa * p.c4 / 32
    return tiles * per_tile + unpack


def weight_args(g, wq):
    return [pk.amx_weights(wq, kernel.amx_plan(g))]


def build(g, out: str, target, pool=None, strict: bool = False):
    return bo.hand_written(kernel.amx_conv(g, out, pool))
