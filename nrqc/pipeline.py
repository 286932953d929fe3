"""The ordered compilation pipeline: Relax in, Relax ready for VM code generation out.

The pipeline is a sequence of named phases (`PHASES`); each phase is a list of steps, and
every step has a name and a stage; the manifest lists the steps that ran, in order. Our
own passes plug into the phases that `nrqc.passes` fills (binary-layer rewrites and float
rewrites before legalization, schedule application after fusion), so adding a pass never
means editing this file's order. A caller that needs only part of the pipeline names the
last phase it wants (`build_pipeline(through=...)`), and a back end with its own
schedules fills the `TARGET_SCHEDULE` slot, so nothing cuts the pipeline by step names.

Each step runs as a TVM module pass (named after the step) under one `PassContext`, so
pass instruments see every step; `CompileContext.dump_ir_dir` writes the module after each.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from nrqc import passes
from nrqc.passes.base import CompileContext, Step

__all__ = ["CompileContext", "Step", "PHASES", "build_pipeline", "run_pipeline"]

IMPORT_CLEANUP = "import cleanup"
BINARY_REWRITE = "binary rewrite"
FLOAT_REWRITES = "float rewrites"
LEGALIZE_FUSE = "legalize+fuse"  # ends with nrqc.RecordKernels (ctx.kernels_in_order)
SCHEDULE = "schedule"
TARGET_SCHEDULE = "target schedule"  # empty unless a back end brings its own schedule steps
LOWER = "lower"
MEMORY_PLAN = "memory plan"  # ends with nrqc.RecordMemoryPlan (ctx.memory_plan)
VM = "vm"


def tvm_pass(name: str, stage: str, make: Callable[[], object], when=None) -> Step:
    """A step wrapping a stock TVM pass (made fresh per run; passes hold no state)."""
    return Step(name, stage, lambda mod, ctx: make()(mod), when or (lambda ctx: True))


def import_cleanup() -> list[Step]:
    from tvm import relax

    return [
        tvm_pass("relax.DecomposeOpsForInference", "cleanup", relax.transform.DecomposeOpsForInference),
        tvm_pass("relax.CanonicalizeBindings", "cleanup", relax.transform.CanonicalizeBindings),
        tvm_pass("relax.FoldConstant", "cleanup", relax.transform.FoldConstant),
    ]


def legalize_fuse() -> list[Step]:
    from tvm import relax
    from tvm.relax import backend

    return [
        tvm_pass("relax.backend.DispatchSampling", "legalize", backend.DispatchSampling),
        tvm_pass("relax.backend.DispatchSortScan", "legalize", backend.DispatchSortScan),
        tvm_pass("relax.LegalizeOps", "legalize", relax.transform.LegalizeOps),
        tvm_pass("relax.AnnotateTIROpPattern", "legalize", relax.transform.AnnotateTIROpPattern),
        tvm_pass("relax.FoldConstant", "legalize", relax.transform.FoldConstant),
        tvm_pass("relax.FuseOps", "fuse", relax.transform.FuseOps),
        tvm_pass("relax.FuseTIR", "fuse", relax.transform.FuseTIR),
        Step("nrqc.RecordKernels", "fuse", _record_kernels),
    ]


def lower() -> list[Step]:
    from tvm import relax

    return [
        tvm_pass("relax.RewriteDataflowReshape", "lower", relax.transform.RewriteDataflowReshape),
        tvm_pass("relax.ToNonDataflow", "lower", relax.transform.ToNonDataflow),
        tvm_pass("relax.RemovePurityChecking", "lower", relax.transform.RemovePurityChecking),
        tvm_pass("relax.CallTIRRewrite", "lower", relax.transform.CallTIRRewrite),
    ]


def memory_plan() -> list[Step]:
    from tvm import relax

    return [
        tvm_pass("relax.StaticPlanBlockMemory", "memory", relax.transform.StaticPlanBlockMemory),
        Step("nrqc.RecordMemoryPlan", "memory", _record_memory_plan),
    ]


def vm() -> list[Step]:
    from tvm import relax

    return [
        tvm_pass("relax.LowerAllocTensor", "memory", relax.transform.LowerAllocTensor),
        tvm_pass("relax.KillAfterLastUse", "memory", relax.transform.KillAfterLastUse),
        tvm_pass("relax.LowerRuntimeBuiltin", "vm", relax.transform.LowerRuntimeBuiltin),
        tvm_pass("relax.ComputePrimValue", "vm", relax.transform.ComputePrimValue),
        tvm_pass("relax.VMShapeLower", "vm", relax.transform.VMShapeLower),
        tvm_pass("relax.AttachGlobalSymbol", "vm", relax.transform.AttachGlobalSymbol),
    ]


# The phases in run order: (name, steps of the phase).
PHASES: tuple[tuple[str, Callable[[], list[Step]]], ...] = (
    (IMPORT_CLEANUP, import_cleanup),
    (BINARY_REWRITE, passes.binary_steps),
    (FLOAT_REWRITES, passes.float_steps),
    (LEGALIZE_FUSE, legalize_fuse),
    (SCHEDULE, passes.schedule_steps),
    (TARGET_SCHEDULE, list),
    (LOWER, lower),
    (MEMORY_PLAN, memory_plan),
    (VM, vm),
)


def build_pipeline(through: str = VM, target_schedule: Sequence[Step] = ()) -> list[Step]:
    """The ordered steps of every phase up to and including `through`; `target_schedule`
    fills the TARGET_SCHEDULE slot (after the shared schedules, before lowering)."""
    names = [name for name, _ in PHASES]
    if through not in names:
        raise ValueError(f"no pipeline phase {through!r} (phases: {', '.join(names)})")
    steps: list[Step] = []
    for name, make in PHASES[: names.index(through) + 1]:
        steps += list(target_schedule) if name == TARGET_SCHEDULE else make()
    return steps


def run_pipeline(mod, ctx: CompileContext, steps: list[Step] | None = None, instruments: Sequence = ()):
    """Run `steps` (default: the whole pipeline) in order, each as a TVM module pass under one
    PassContext carrying `instruments`; record each step's name, stage and seconds."""
    import tvm

    steps = build_pipeline() if steps is None else steps
    dump = _IrDump(ctx.dump_ir_dir, len(steps)) if ctx.dump_ir_dir is not None else None
    with ctx.target.tvm(), tvm.transform.PassContext(opt_level=3, instruments=list(instruments)):
        for step in steps:
            if not step.when(ctx):
                continue
            t0 = time.perf_counter()
            mod = _run_step(step, mod, ctx)
            ctx.steps_run.append({"name": step.name, "stage": step.stage,
                                  "seconds": round(time.perf_counter() - t0, 4)})
            if dump is not None:
                dump.write(step.name, mod)
    return mod


def _run_step(step: Step, mod, ctx: CompileContext):
    """`step` as a module pass named after it. An exception leaving a Python pass function
    crosses TVM's FFI as a RuntimeError; the original (an NrqcError, a KeyboardInterrupt,
    TVM's own error) is re-raised, so callers see what the step raised."""
    import tvm

    raised: list[BaseException] = []

    def transform(m, _pass_ctx):
        try:
            return step.run(m, ctx)
        except BaseException as e:  # noqa: BLE001 - handed back to the caller below
            raised.append(e)
            raise

    try:
        return tvm.transform.module_pass(transform, opt_level=0, name=step.name)(mod)
    except BaseException:
        if raised:
            err = raised[-1]
            raise err.with_traceback(err.__traceback__) from err.__cause__
        raise


class _IrDump:
    """`NN-<step name>.py`: the module's TVMScript after each step that ran, numbered in run order."""

    def __init__(self, directory, n_steps: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.width = max(2, len(str(n_steps)))
        self.count = 0

    def write(self, step_name: str, mod) -> None:
        self.count += 1
        (self.dir / f"{self.count:0{self.width}d}-{step_name}.py").write_text(mod.script())


def _main_calls(mod, entry: str = "main"):
    """(callee name, call) for each kernel call of `entry` (main), in order: `call_tir` before
    CallTIRRewrite, a direct call of the PrimFunc's GlobalVar after it."""
    import tvm
    from tvm import relax

    out = []
    call_tir = tvm.ir.Op.get("relax.call_tir")
    for block in mod[entry].body.blocks:
        for b in block.bindings:
            v = b.value
            if not isinstance(v, relax.Call):
                continue
            if v.op.same_as(call_tir):
                out.append((v.args[0].name_hint, v))
            elif isinstance(v.op, tvm.ir.GlobalVar) and isinstance(mod[v.op], tvm.tirx.PrimFunc):
                out.append((v.op.name_hint, v))
    return out


def _record_kernels(mod, ctx: CompileContext):
    ctx.kernels_in_order = [name for name, _ in _main_calls(mod)]
    return mod


def _record_memory_plan(mod, ctx: CompileContext):
    """Per entry point (main, and main_int8 when the model quantizes its input): the storage
    blocks StaticPlanBlockMemory allocated, and the scratch of each kernel it calls (kernels
    run one at a time, so scratch never adds up: the largest counts). The top-level figures
    are main's; `entry_points` has each one's."""
    from nrqc.passes.binary_int8_entry import INT8_FUNC

    entries = {}
    for gv in mod.functions:
        if gv.name_hint in ("main", INT8_FUNC):
            entries[gv.name_hint] = _entry_memory_plan(mod, gv.name_hint)
    plan = dict(entries.get("main", {"planned_storage_bytes": 0, "max_kernel_scratch_bytes": 0}))
    if len(entries) > 1:
        plan["entry_points"] = entries
    ctx.memory_plan = plan
    return mod


def _entry_memory_plan(mod, entry: str) -> dict:
    import tvm
    from tvm import relax, tirx

    storage = 0
    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")

    def visit(expr):
        nonlocal storage
        if isinstance(expr, relax.Call) and expr.op.same_as(alloc_storage):
            dims = [int(v) for v in expr.args[0].values]
            storage += int(dims[0]) if dims else 0

    relax.analysis.post_order_visit(mod[entry], visit)
    from tvm.s_tir import transform as stir

    called = {name for name, _ in _main_calls(mod, entry)}
    kernels = tvm.IRModule({gv: f for gv, f in mod.functions.items()
                            if isinstance(f, tirx.PrimFunc) and gv.name_hint in called})
    # Buffers shrink to what a schedule's compute_at actually keeps alive only after
    # TIR's own compaction; measure them as the TIR build will allocate them.
    kernels = tvm.transform.Sequential([
        stir.CanonicalizeLoop(), stir.LowerCrossThreadReduction(), stir.LowerInitBlock(),
        stir.PlanAndUpdateBufferAllocationLocation(), stir.ConvertBlocksToOpaque(), stir.CompactBufferAllocation(),
    ])(kernels)
    per_kernel = {gv.name_hint: _primfunc_scratch_bytes(f) for gv, f in kernels.functions.items()}
    return {"planned_storage_bytes": storage, "max_kernel_scratch_bytes": max(per_kernel.values(), default=0),
            "kernel_scratch_bytes": {k: v for k, v in sorted(per_kernel.items()) if v}}


def _primfunc_scratch_bytes(func) -> int:
    """Bytes of the buffers a kernel allocates itself (padding, packing), not its params."""
    from tvm.s_tir.analysis import detect_buffer_access_lca

    total = 0
    for buf in detect_buffer_access_lca(func):
        # In TVM 0.27 buffers are buffer-typed Vars and the parameters are such Vars.
        if not any(buf.same_as(p) for p in func.params):
            total += _buffer_bytes(buf)
    return total


def _buffer_bytes(buf) -> int:
    n = 1
    for d in buf.shape:
        try:
            n *= int(d)
        except TypeError:
            return 0
    import tvm

    dt = tvm.DataType(str(buf.dtype))  # "int32x16": 32 bits x 16 lanes (not the digits "3216")
    return n * max(int(dt.bits), 8) * int(dt.lanes) // 8
