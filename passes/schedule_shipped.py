"""Pipeline step: give every fused TIR kernel that no database scheduled a shipped schedule.

Rules (in `nrqc.targets.schedules`): NCHW/NCW convolution register tiles, pooling,
dense/matmul, then a generic parallel+vectorize rule for whatever remains. A kernel
already marked `tirx.is_scheduled` (by the tuning database step) is left alone.

`fuse_for_schedules` (called first by the database step, and by `nrqc tune`'s task
extraction) merges each NCHW conv kernel with the 2-D max pool that alone consumes its output
into one kernel (Relax `FuseTIR`), which the conv rule schedules with the pooled rows as the
parallel loop: the conv output (13.8 MB for model_v8's first layer) stays in cache.
NRQC_NO_CONV_POOL_FUSION=1 turns it off.
"""
from __future__ import annotations

import os

from nrqc.passes.base import CompileContext, Step


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
    for rule, n in counts.items():
        ctx.schedule.rules[rule] = ctx.schedule.rules.get(rule, 0) + n
    return mod


def fuse_for_schedules(mod, ctx: CompileContext):
    """conv -> max-pool kernel pairs merged (`fuse_conv_pool`) where the conv rule schedules
    the merged kernel; runs first in the schedule slot (before the tuning database, so that
    `nrqc tune` tasks and database records are the kernels the compile builds)."""
    from tvm import tirx

    from nrqc.targets.schedules import schedule_primfunc, vector_spec

    spec = vector_spec(ctx.target)
    if spec.isa == "scalar" or os.environ.get("NRQC_NO_CONV_POOL_FUSION", "") not in ("", "0"):
        return mod
    try:
        fused = fuse_conv_pool(mod)
    except Exception as e:  # noqa: BLE001 - keep the unfused kernels
        ctx.notes.append(f"conv+pool fusion skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        return mod
    if fused is mod:
        return mod
    old = {g.name_hint for g in mod.get_global_vars()}
    new = [(gv, f) for gv, f in fused.functions.items() if isinstance(f, tirx.PrimFunc) and gv.name_hint not in old]
    # keep the fusion only where the conv rule schedules every merged kernel
    if not new or any(schedule_primfunc(f, spec)[0] != "conv" for _, f in new):
        return mod
    ctx.notes.append(f"conv+max-pool fused into one kernel: x{len(new)}")
    return fused


def step() -> Step:
    return Step("nrqc.ScheduleShipped", "schedule", apply_shipped_schedules)


# ------------------------------------------------------------- conv + pool fusion


def _is_pool_func(func) -> bool:
    """A single-block max/avg pooling PrimFunc (SSSS + RR window, one input)."""
    import tvm
    from tvm import s_tir

    from nrqc.targets.schedules.rules import _blocks, _iter_kinds

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = [sch.get(b) for b in _blocks(sch)]
    return (len(func.params) == 2 and len(blocks) == 1 and _iter_kinds(blocks[0]) == "SSSSRR"
            and len(blocks[0].reads) == 1 and blocks[0].name_hint.startswith("pool_max"))


def fuse_conv_pool(mod, spec=None):
    """Merge `conv kernel -> max-pool kernel` pairs of main into one PrimFunc (FuseTIR).

    The conv's output (the largest activation of a speech CNN: model_v8's first conv writes
    13.8 MB) then never leaves the cache: the conv+pool rule computes two conv rows per pooled
    row. Only NCHW conv kernels with a 2-D max pool right after them and no other user.
    """
    import tvm
    from tvm import relax, tirx

    main = mod["main"]
    call_tir = tvm.ir.Op.get("relax.call_tir")
    if not isinstance(main.body, relax.SeqExpr):
        return mod
    uses: dict = {}

    def count(e):
        if isinstance(e, relax.Var):
            uses[e] = uses.get(e, 0) + 1

    for block in main.body.blocks:
        for b in block.bindings:
            relax.analysis.post_order_visit(b.value, count)
    relax.analysis.post_order_visit(main.body.body, count)
    bb = relax.BlockBuilder(mod)
    new_blocks = []
    changed = False
    for block in main.body.blocks:
        bindings = list(block.bindings)
        out = []
        i = 0
        while i < len(bindings):
            b = bindings[i]
            nb = bindings[i + 1] if i + 1 < len(bindings) else None
            if (nb is not None and isinstance(b.value, relax.Call) and b.value.op.same_as(call_tir)
                    and isinstance(nb.value, relax.Call) and nb.value.op.same_as(call_tir)
                    and len(nb.value.args[1].fields) == 1 and nb.value.args[1].fields[0].same_as(b.var)
                    and uses.get(b.var, 0) == 1):  # the pool is the conv output's only user
                conv_gv, pool_gv = b.value.args[0], nb.value.args[0]
                cf, pf = mod[conv_gv], mod[pool_gv]
                if (isinstance(cf, tirx.PrimFunc) and isinstance(pf, tirx.PrimFunc)
                        and not _is_scheduled(cf) and not _is_scheduled(pf)
                        and "conv2d" in conv_gv.name_hint and _is_pool_func(pf)):
                    args = list(b.value.args[1].fields)
                    params = [relax.Var(f"p{k}", a.ty) for k, a in enumerate(args)]
                    bb_conv = relax.Var("c", b.var.ty)
                    bb_pool = relax.Var("o", nb.var.ty)
                    body = relax.SeqExpr(
                        [relax.DataflowBlock([
                            relax.VarBinding(bb_conv, relax.Call(call_tir, [conv_gv, relax.Tuple(params)],
                                                                 ty_args=b.value.ty_args)),
                            relax.VarBinding(bb_pool, relax.Call(call_tir, [pool_gv, relax.Tuple([bb_conv])],
                                                                 ty_args=nb.value.ty_args)),
                        ])], bb_pool)
                    fn = relax.Function(params, body, nb.var.ty).with_attr("Primitive", True)
                    gv = bb.add_func(fn, f"{conv_gv.name_hint}_{pool_gv.name_hint}")
                    out.append(relax.VarBinding(nb.var, relax.Call(gv, args)))
                    changed = True
                    i += 2
                    continue
            out.append(b)
            i += 1
        new_blocks.append(relax.DataflowBlock(out) if isinstance(block, relax.DataflowBlock)
                          else relax.BindingBlock(out))
    if not changed:
        return mod
    bb.update_func(mod.get_global_var("main"),
                   relax.Function(main.params, relax.SeqExpr(new_blocks, main.body.body),
                                  main.ret_ty, main.is_pure, main.attrs, main.span))
    fused = relax.transform.FuseTIR()(relax.transform.Normalize()(bb.get()))
    return relax.transform.DeadCodeElimination(["main"])(fused)
