"""Pipeline step: give every fused TIR kernel that no database scheduled a shipped schedule.

Rules (in `nrqc.targets.schedules`): NCHW/NCW convolution register tiles, pooling,
dense/matmul, then a generic parallel+vectorize rule for whatever remains. A kernel
already marked `tirx.is_scheduled` (by the tuning database step) is left alone.
"""
from __future__ import annotations

from nrqc.pipeline import CompileContext, Step


def _is_scheduled(func) -> bool:
    return bool(func.attrs is not None and "tirx.is_scheduled" in func.attrs and int(func.attrs["tirx.is_scheduled"]))


def apply_shipped_schedules(mod, ctx: CompileContext):
    import tvm
    from tvm import tirx

    from nrqc.targets.schedules import schedule_primfunc, vector_spec

    spec = vector_spec(ctx.target)
    counts: dict[str, int] = {}
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
            continue
        rule, new = schedule_primfunc(func, spec)
        counts[rule or "none"] = counts.get(rule or "none", 0) + 1
        if new is not None:
            updates[gv] = new.with_attr("tirx.is_scheduled", True)
    if updates:
        mod = tvm.IRModule({gv: updates.get(gv, f) for gv, f in mod.functions.items()}, attrs=mod.attrs)
    ctx.notes.append(f"shipped schedules ({spec.isa}, {spec.lanes} float lanes): "
                     + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    ctx.options.setdefault("schedule_rules", {}).update(counts)
    return mod


def step() -> Step:
    return Step("nrqc.ScheduleShipped", "schedule", apply_shipped_schedules)
