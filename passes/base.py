"""What a pipeline step is, and what it may read and write.

These types sit below both `nrqc.pipeline` (which orders and runs the steps) and the
passes (which implement them): the pipeline imports the passes, a pass imports only this
module, so neither needs the other at import time.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from nrqc.layer_table import LayerRecord
from nrqc.passes.binary_plan import BinaryState
from nrqc.targets import TargetDescription


@dataclasses.dataclass
class ScheduleState:
    """The schedule phase's results: the `--db` whose records were applied (None when none
    was given, or it had no record for this target or kernel) and one asked for but not
    used, and how many kernels each shipped rule scheduled."""

    database: str | None = None
    database_unused: str | None = None
    rules: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CompileContext:
    """What a pass may read (target, source graph, user options) and write (layer notes,
    its typed results for the passes after it)."""

    target: TargetDescription
    onnx_model: Any  # shape-inferred onnx.ModelProto
    layers: list[LayerRecord]  # the manifest's layer table (nrqc.layer_table), annotated by passes
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the user's options only
    notes: list[str] = dataclasses.field(default_factory=list)
    # Filled by the memory-plan recorder step.
    memory_plan: dict[str, int] = dataclasses.field(default_factory=dict)
    # Filled by the fusion recorder: call_tir callees of main, in execution order.
    kernels_in_order: list[str] = dataclasses.field(default_factory=list)
    steps_run: list[dict] = dataclasses.field(default_factory=list)
    # When set, the module is written there after every step (`nrqc compile --dump-ir DIR`).
    dump_ir_dir: Path | None = None
    # The binary passes' plan and kernels (BinaryPatterns -> ... -> BinaryFusePack).
    binary: BinaryState = dataclasses.field(default_factory=BinaryState)
    # What the schedule phase did (tuning database, shipped rules).
    schedule: ScheduleState = dataclasses.field(default_factory=ScheduleState)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    stage: str
    run: Callable[[Any, CompileContext], Any]  # (IRModule, ctx) -> IRModule
    when: Callable[[CompileContext], bool] = lambda ctx: True
