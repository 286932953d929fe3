"""Generic int8-input conv: a plain int32 multiply-accumulate of the s8 input and the int8
weights (``kernels/int8_conv.py``), scheduled per output pixel like the other TE kernels
(output channels innermost and vectorized where the target has vectors, one channel's
reduction innermost on scalar C). Correct on every target: x86, arm_cpu, Cortex-M C."""
from __future__ import annotations

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.pixelwise import keeps_workload, schedule_pixelwise, target_family, unscheduled
from nrqc.targets.kernels.strategies.estimates import int8_macs_per_cycle, taps

NAME = "int8_generic"


def available(target) -> bool:
    return True


def supports(g) -> bool:
    return True


def cost(g, target) -> float:
    c = g.conv
    if target_family(target) == "c":
        return taps(c) * c.cg * 3  # load, load, multiply-accumulate per MAC
    # int32 lanes: a widening multiply + add per MAC lane
    return taps(c) * c.cg / max(1.0, int8_macs_per_cycle(target) / 8)


def weight_args(g, wq):
    return [pk.masked_weights(wq), ic.s8_correction(g, wq)]


def build(g, out: str, target, pool=None, strict: bool = False):
    c = g.conv
    func = ic.int8_conv(g, ic.acc_direct, [(c.kh, c.kw, c.cg, c.c_out)], out, pool)
    return _schedule(func, g, out, target, pool, strict)


@keeps_workload
def _schedule(func, g, out, target, pool, strict):
    try:
        return schedule_pixelwise(func, g.conv, "acc", "packed" if out == "pack" else "y", out, target, pool)
    except Exception as e:
        if strict:
            raise
        return unscheduled(func, "int8 conv", e)
