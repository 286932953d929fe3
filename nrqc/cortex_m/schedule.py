"""A memory-first fallback schedule for microcontroller kernels.

Legalized Relax operators leave every stage of a fused kernel (padding, convolution,
bias add, activation) as its own full-size buffer. On a 64 KB part those temporaries
dominate RAM, so for every fused kernel we:

1. inline every injective producer into its consumer (padding into the convolution,
   bias add into the activation): the padded input becomes a guarded read;
2. move the epilogue of a reduction (the activation writing the kernel's output) under
   the reduction's innermost spatial loop, so the reduction's own result shrinks to one
   element (CompactBufferAllocation then turns it into a scalar).

Blocks a step cannot handle are left as they are (correct, just bigger); kernels given a
schedule by an earlier pass (the binary kernels, a tuning database) keep it, because we
only rewrite functions whose blocks are all still in their legalized form.
"""
from __future__ import annotations


def shrink_temporaries(func):
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    params = {str(getattr(p, "name", "")) for p in func.params}
    changed = True
    while changed:
        changed = False
        for block in _blocks(sch):
            b = sch.get(block)
            if b.writes and str(b.writes[0].source.name) in params:
                continue
            if b.iter_vars and any(int(iv.iter_type) == 2 for iv in b.iter_vars):
                continue  # a reduction: handled below
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: not inlinable (e.g. read twice with different indices)
                continue
    for block in _blocks(sch):
        b = sch.get(block)
        if not b.iter_vars or str(b.writes[0].source.name) in params:
            continue
        if not any(int(iv.iter_type) == 2 for iv in b.iter_vars):
            continue
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            continue
        loops = sch.get_loops(block)
        n_spatial = sum(1 for iv in b.iter_vars if int(iv.iter_type) == 0)
        if n_spatial == 0 or len(loops) < n_spatial:
            continue
        # Innermost spatial loop first (the temporary shrinks to one element); if the
        # consumer needs more of it (e.g. packing 32 channels into one word), the next
        # loop out, and so on.
        for k in range(n_spatial - 1, -1, -1):
            try:
                sch.reverse_compute_at(consumers[0], loops[k])
                break
            except Exception:  # noqa: try one loop further out, else keep the full-size temporary
                continue
    return sch.mod["main"]


def _blocks(sch):
    """Every block under the root, outer before inner, in program order."""
    out = []

    def walk(parent):
        for child in sch.get_child_blocks(parent):
            out.append(child)
            walk(child)

    walk(sch.get_sblock("root"))
    return out


def schedule_step_run(mod, ctx):
    """Pipeline step: apply shrink_temporaries to every PrimFunc of the module."""
    import tvm
    from tvm import tirx

    from nrqc.targets.kernels.binary_ops import is_hand_written

    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not is_hand_written(func):
            try:
                updates[gv] = shrink_temporaries(func)
            except Exception as e:  # noqa: keep the unscheduled kernel, say so
                ctx.notes.append(f"cortex-m: kept {gv.name_hint} unscheduled ({type(e).__name__})")
    for gv, func in updates.items():
        mod[gv] = func
    return mod
