"""nrqc's own Relax/TIR passes, exposed to the pipeline through named slots.

`nrqc.pipeline` calls each slot as one of its phases and splices the steps it returns in
place: binary-layer rewrites and float-layer algorithms before legalization, schedule
application after fusion. Passes import their shared types from `nrqc.passes.base`, never
from the pipeline.
"""
from __future__ import annotations

from nrqc.passes.base import Step


def binary_steps() -> list[Step]:
    """Steps that find binary-activation layers and rewrite them to bit-packed operators."""
    from nrqc.passes import (binary_fuse_head, binary_fuse_pack, binary_int8_entry, binary_int8_input, binary_patterns, binary_rewrite,
                             binary_thresholds)

    return [
        Step("nrqc.BinaryPatterns", "binary", binary_patterns.detect),
        Step("nrqc.BinaryInt8Input", "binary", binary_int8_input.detect),
        Step("nrqc.BinaryThresholds", "binary", binary_thresholds.fold_thresholds),
        Step("nrqc.BinaryRewrite", "binary", binary_rewrite.rewrite),
        Step("nrqc.BinaryFusePack", "binary", binary_fuse_pack.fuse_pack),
        Step("nrqc.BinaryFuseHead", "binary", binary_fuse_head.fuse_head),
        Step("nrqc.BinaryInt8Entry", "binary", binary_int8_entry.add_int8_entry),
    ]


def float_steps() -> list[Step]:
    """Steps that give float layers faster algorithms (before legalization)."""
    from nrqc.passes import conv_winograd, nan_semantics, recurrent_kernels

    # NaN semantics after Winograd, which matches conv -> ReLU on the unrewritten graph;
    # recurrent layers' placeholders become their kernels before anything else sees them
    return [recurrent_kernels.step(), conv_winograd.step(), nan_semantics.step()]


def schedule_steps() -> list[Step]:
    """Steps that give the fused TIR kernels schedules (shipped rules, tuning database)."""
    from nrqc.passes import schedule_database, schedule_shipped

    # A tuning database (`--db`, else the default one we ship) first; shipped rules and
    # the generic fallback for every kernel it did not cover.
    return [schedule_database.step(), schedule_shipped.step()]
