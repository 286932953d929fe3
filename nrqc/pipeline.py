"""The ordered compilation pipeline: Relax in, Relax ready for VM code generation out.

Every step has a name and a stage; the manifest lists the steps that ran, in order.
Our own passes plug into the named slots that `nrqc.passes` exposes (binary-layer
rewrites before legalization, schedule application after fusion), so adding a pass never
means editing this file's order.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from nrqc.targets import TargetDescription


@dataclasses.dataclass
class CompileContext:
    """What a pass may read (target, source graph, options) and write (layer notes)."""

    target: TargetDescription
    onnx_model: Any  # shape-inferred onnx.ModelProto
    layers: list[dict]  # the layer table (nrqc.layer_table), annotated by passes
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    # Filled by the memory-plan recorder step.
    memory_plan: dict[str, int] = dataclasses.field(default_factory=dict)
    # Filled by the fusion recorder: call_tir callees of main, in execution order.
    kernels_in_order: list[str] = dataclasses.field(default_factory=list)
    steps_run: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    stage: str
    run: Callable[[Any, CompileContext], Any]  # (IRModule, ctx) -> IRModule
    when: Callable[[CompileContext], bool] = lambda ctx: True


def tvm_pass(name: str, stage: str, make: Callable[[], Any], when=None) -> Step:
    """A step wrapping a stock TVM pass (made fresh per run; passes hold no state)."""
    return Step(name, stage, lambda mod, ctx: make()(mod), when or (lambda ctx: True))


def _relax_steps_before_binary() -> list[Step]:
    from tvm import relax

    return [
        tvm_pass("relax.DecomposeOpsForInference", "cleanup", relax.transform.DecomposeOpsForInference),
        tvm_pass("relax.CanonicalizeBindings", "cleanup", relax.transform.CanonicalizeBindings),
        tvm_pass("relax.FoldConstant", "cleanup", relax.transform.FoldConstant),
    ]


def _relax_lowering_steps() -> tuple[list[Step], list[Step], list[Step]]:
    from tvm import relax
    from tvm.relax import backend

    legalize = [
        tvm_pass("relax.backend.DispatchSampling", "legalize", backend.DispatchSampling),
        tvm_pass("relax.backend.DispatchSortScan", "legalize", backend.DispatchSortScan),
        tvm_pass("relax.LegalizeOps", "legalize", relax.transform.LegalizeOps),
        tvm_pass("relax.AnnotateTIROpPattern", "legalize", relax.transform.AnnotateTIROpPattern),
        tvm_pass("relax.FoldConstant", "legalize", relax.transform.FoldConstant),
        tvm_pass("relax.FuseOps", "fuse", relax.transform.FuseOps),
        tvm_pass("relax.FuseTIR", "fuse", relax.transform.FuseTIR),
        Step("nrqc.RecordKernels", "fuse", _record_kernels),
    ]
    dataflow = [
        tvm_pass("relax.RewriteDataflowReshape", "lower", relax.transform.RewriteDataflowReshape),
        tvm_pass("relax.ToNonDataflow", "lower", relax.transform.ToNonDataflow),
        tvm_pass("relax.RemovePurityChecking", "lower", relax.transform.RemovePurityChecking),
        tvm_pass("relax.CallTIRRewrite", "lower", relax.transform.CallTIRRewrite),
    ]
    finalize = [
        tvm_pass("relax.StaticPlanBlockMemory", "memory", relax.transform.StaticPlanBlockMemory),
        Step("nrqc.RecordMemoryPlan", "memory", _record_memory_plan),
        tvm_pass("relax.LowerAllocTensor", "memory", relax.transform.LowerAllocTensor),
        tvm_pass("relax.KillAfterLastUse", "memory", relax.transform.KillAfterLastUse),
        tvm_pass("relax.LowerRuntimeBuiltin", "vm", relax.transform.LowerRuntimeBuiltin),
        tvm_pass("relax.ComputePrimValue", "vm", relax.transform.ComputePrimValue),
        tvm_pass("relax.VMShapeLower", "vm", relax.transform.VMShapeLower),
        tvm_pass("relax.AttachGlobalSymbol", "vm", relax.transform.AttachGlobalSymbol),
    ]
    return legalize, dataflow, finalize


def build_pipeline() -> list[Step]:
    """The full ordered list; our passes come from the slots in nrqc.passes."""
    from nrqc import passes

    legalize, dataflow, finalize = _relax_lowering_steps()
    return [
        *_relax_steps_before_binary(),
        *passes.binary_steps(),
        *passes.float_steps(),
        *legalize,
        *passes.schedule_steps(),
        *dataflow,
        *finalize,
    ]


def run_pipeline(mod, ctx: CompileContext, steps: list[Step] | None = None):
    import tvm

    steps = build_pipeline() if steps is None else steps
    with ctx.target.tvm(), tvm.transform.PassContext(opt_level=3):
        for step in steps:
            if not step.when(ctx):
                continue
            t0 = time.perf_counter()
            mod = step.run(mod, ctx)
            ctx.steps_run.append({"name": step.name, "stage": step.stage,
                                  "seconds": round(time.perf_counter() - t0, 4)})
    return mod


def _main_calls(mod):
    """(callee name, call) for each kernel call of main, in order: `call_tir` before
    CallTIRRewrite, a direct call of the PrimFunc's GlobalVar after it."""
    import tvm
    from tvm import relax

    out = []
    call_tir = tvm.ir.Op.get("relax.call_tir")
    for block in mod["main"].body.blocks:
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
    """Sum the storage blocks StaticPlanBlockMemory allocated, and the largest kernel
    scratch buffer (kernels run one at a time, so scratch never adds up)."""
    import tvm
    from tvm import relax, tirx

    storage = 0
    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")

    def visit(expr):
        nonlocal storage
        if isinstance(expr, relax.Call) and expr.op.same_as(alloc_storage):
            size = expr.args[0]
            dims = [int(v) for v in size.values]
            storage += int(dims[0]) if dims else 0

    relax.analysis.post_order_visit(mod["main"], visit)
    from tvm.s_tir import transform as stir

    called = {name for name, _ in _main_calls(mod)}
    kernels = tvm.IRModule({gv: f for gv, f in mod.functions.items()
                            if isinstance(f, tirx.PrimFunc) and gv.name_hint in called})
    # Buffers shrink to what a schedule's compute_at actually keeps alive only after
    # TIR's own compaction; measure them as the TIR build will allocate them.
    kernels = tvm.transform.Sequential([
        stir.CanonicalizeLoop(), stir.LowerCrossThreadReduction(), stir.LowerInitBlock(),
        stir.PlanAndUpdateBufferAllocationLocation(), stir.ConvertBlocksToOpaque(), stir.CompactBufferAllocation(),
    ])(kernels)
    scratch = max((_primfunc_scratch_bytes(f) for f in kernels.functions.values()), default=0)
    ctx.memory_plan = {"planned_storage_bytes": storage, "max_kernel_scratch_bytes": scratch}
    return mod


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
    dt = str(buf.dtype)
    bits = int("".join(c for c in dt if c.isdigit()) or 32) if dt != "bool" else 8
    return n * max(bits, 8) // 8
