"""Scheduled PrimFuncs of nrqc's kernels: a binary conv by its strategy (the registry in
``strategies``), the first layer's float conv + threshold + pack, binary dense layers and
packed pooling."""
from __future__ import annotations

import numpy as np

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import pixelwise, strategies
from nrqc.targets.kernels.strategies import vnni


def weight_args(g: bo.ConvGeom, weights: str, strategy: str, wq: np.ndarray) -> list[np.ndarray]:
    """The weight arrays of a strategy's kernel, in its layout."""
    return strategies.lookup(weights, strategy).weight_args(g, wq)


def build_conv(g: bo.ConvGeom, weights: str, strategy: str, out: str, wq: np.ndarray, target, pool=None):
    """(scheduled PrimFunc, weight arrays) of a binary conv built by the named strategy."""
    s = strategies.lookup(weights, strategy)
    return s.build(g, out, target, pool), s.weight_args(g, wq)


def schedule_binary_conv(func, g: bo.ConvGeom, out: str, target, pool=None, strict: bool = False):
    """Schedule a TE-built binary conv (``binary_ops.binary_conv``) of any strategy: the
    VNNI schedule for its unpack-to-u8 form, the per-pixel one otherwise."""
    if "unpacked" in func.script():
        return vnni.schedule(func, g, out, target, pool, strict)
    return pixelwise.schedule_popcount_conv(func, g, out, target, pool)


@pixelwise.keeps_workload
def schedule_float_conv_pack(func, g: bo.ConvGeom, target, pool=None):
    try:
        return pixelwise.schedule_pixelwise(func, g, "conv", "packed", "pack", target, pool)
    except Exception as e:
        return pixelwise.unscheduled(func, "float conv + threshold + pack", e)


@pixelwise.keeps_workload
def schedule_dense(func, target):
    return func


@pixelwise.keeps_workload
def schedule_elementwise(func, target):
    if pixelwise.target_family(target) == "c":
        return func
    try:
        sch = pixelwise.new_schedule(func)
        blk = sch.get_sblock("pooled")
        loops = sch.get_loops(blk)
        if len(loops) >= 2:
            sch.parallel(loops[1])
        return sch.mod["main"]
    except Exception as e:
        return pixelwise.unscheduled(func, "packed pooling", e)
