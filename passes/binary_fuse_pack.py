"""Pass 4: fuse an OR-pool into the kernel that produces its packed input.

One job: where main binds ``P = call_tir(producer, args)`` (a binary conv or the first
float conv, both already emitting thresholded packed words) and ``Q = call_tir(or_pool,
[P])`` is P's only use, replace Q by one call of a kernel that computes, per pooled output
pixel, the window's packed words and ORs them, so the un-pooled map is never stored (for
the BAM model: the first conv's 200x64x32 map exists only as 4 words at a time).
The producer's recipe (``ctx.binary.recipes``, written by BinaryRewrite) builds
the fused kernel with the same schedule family; the layer entries of both layers name it.
"""
from __future__ import annotations

from nrqc.passes.binary_patterns import drop_unused_kernels, main_bindings, use_counts


def fuse_pack(mod, ctx):
    from tvm import relax

    from nrqc.targets.kernels.binary_ops import as_kernel

    recipes, pools = ctx.binary.recipes, ctx.binary.pool_kernels
    bindings = main_bindings(mod)
    if not recipes or not pools or bindings is None:
        return mod
    defs = {b.var: b.value for b in bindings}
    counts = use_counts(bindings, mod["main"].body.body)
    bb = relax.BlockBuilder(mod)
    out = []
    fused = 0
    for b in bindings:
        v = b.value
        callee = _callee(v)
        if callee in pools and isinstance(v.args[1].fields[0], relax.Var):
            src = v.args[1].fields[0]
            prod = defs.get(src)
            pcallee = _callee(prod)
            if pcallee in recipes and counts.get(src, 0) == 1:
                make, layer = recipes[pcallee]
                spec, pool_layer = pools[callee]
                name = f"{pcallee}_orpool"
                gv = bb.add_func(as_kernel(make(spec), name, ctx.target, ctx.notes), name)
                twin = ctx.binary.int8_twins.pop(pcallee, None)
                if twin is not None:  # main_int8's kernel gets the same pool fused
                    ctx.binary.int8_twins[name] = (lambda make_twin=twin[0], spec=spec: make_twin(spec), twin[1])
                value = relax.call_tir(gv, list(prod.args[1].fields), b.var.ty)
                out.append(relax.VarBinding(b.var, value))
                fused += 1
                for entry in (layer, pool_layer):
                    if entry is not None:
                        entry.kernel = f"nrqc:{name}"
                if pool_layer is not None:
                    pool_layer.fused_into = layer.name if layer else pcallee
                continue
        out.append(b)
    if not fused:
        return mod
    func = mod["main"]
    new_seq = relax.SeqExpr([relax.DataflowBlock(out)], func.body.body)
    mod = bb.get()
    mod["main"] = relax.Function(func.params, new_seq, func.ret_ty, func.is_pure, func.attrs)
    mod = drop_unused_kernels(relax.transform.DeadCodeElimination(["main"])(mod))
    ctx.notes.append(f"binary fuse-pack: {fused} OR-pool(s) fused into the kernel producing their packed input")
    return mod


def _callee(value):
    from tvm import relax

    if isinstance(value, relax.Call) and getattr(value.op, "name", None) == "relax.call_tir":
        return value.args[0].name_hint
    return None
