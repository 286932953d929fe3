"""Schedule pieces shared by the TE-built binary kernels (the bit-serial, masked and
popcount strategies, the VNNI strategy's epilogue, the first layer's float conv): the
per-output-pixel schedule and its parts, read from the target's capabilities.

Order of primitives: parallel and vectorize before decompose_reduction (TVM's
compact-dataflow rule).
"""
from __future__ import annotations

import functools

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import knobs
from nrqc.targets.kernels.packing import WORD, n_words


def target_family(target) -> str:
    """The code generator a kernel is scheduled for: "c" (scalar C, bare metal), "arm"
    (aarch64 / AArch32 NEON) or "x86" (also for no target)."""
    if target is None:
        return "x86"
    if target.caps.vector_bits == 0:
        return "c"
    return "arm" if target.caps.isa in ("aarch64", "armv7") else "x86"


def vector_lanes(target) -> int:
    """32-bit lanes a channel loop is split into: a whole vector register on C (1) and
    Arm (4) and on AVX-512 (16); 8 on every other x86, SSE-only included (two xmm per
    vector), as before capabilities existed."""
    if target is None:
        return 8
    if target_family(target) == "x86":
        return max(target.caps.float_lanes, 8)
    return target.caps.float_lanes


def new_schedule(func):
    from tvm import s_tir

    return s_tir.Schedule(func)


def unroll_reductions(sch, red, target=None):
    """Unroll the reduction loops of one output pixel when their trip count is small
    (measured 4x on the first conv: LLVM then keeps the accumulators in registers)."""
    if target_family(target) == "c":
        return  # plain C loops (TVM 0.27's C printer mis-caches loads in unrolled reductions)
    total = 1
    for r in red:
        total *= int(sch.get(r).extent)
    for r in (red if total <= knobs.UNROLL_MAX else red[:-1]):
        sch.unroll(r)


def xpad_at(sch, row_loop, target, pixel_loop=None):
    """The first conv's zero-padded input rows, computed per output row (vectorized).
    C (bare metal): only the receptive field of one output pixel (Cg x kh x kw floats, a
    small local array laid out like a filter, so the dot products read both contiguously),
    never a padded copy of the map (for a Conv1d the "row" is the whole map: as large as
    the input); without a pixel loop the padding becomes a guarded read."""
    try:
        xp = sch.get_sblock("xpad")
    except Exception:
        return
    if target_family(target) == "c":
        if pixel_loop is not None:
            sch.compute_at(xp, pixel_loop)
        else:
            sch.compute_inline(xp)
        return
    sch.compute_at(xp, row_loop)
    sch.vectorize(sch.get_loops(xp)[-1])


def wext_at(sch, loop, g, target):
    """The pool window's per-channel extreme, computed at the pooled pixel, vectorized."""
    try:
        wx = sch.get_sblock("wext")
    except Exception:
        return
    sch.compute_at(wx, loop)
    vectorize_channels(sch, sch.get_loops(wx)[-1], g.c_out, vector_lanes(target))


def bitval_at(sch, loop, g, target):
    """Compute the per-channel bit values of one output pixel at `loop`, vectorized."""
    try:
        bv = sch.get_sblock("bitval")
    except Exception:
        return
    sch.compute_at(bv, loop)
    if target_family(target) == "c":
        return
    lanes = vector_lanes(target)
    lo = sch.get_loops(bv)[-1]
    cw = n_words(g.c_out) * WORD
    if cw > lanes and cw % lanes == 0:
        _, inner = sch.split(lo, [None, lanes])
        sch.vectorize(inner)
    else:
        sch.vectorize(lo)


def vectorize_channels(sch, loop, c_out: int, lanes: int):
    """Vectorize the output-channel loop (split to whole vectors when it divides)."""
    if lanes <= 1:
        return
    if c_out > lanes and c_out % lanes == 0:
        _, inner = sch.split(loop, [None, lanes])
        sch.vectorize(inner)
    elif c_out <= lanes:
        sch.vectorize(loop)
    # else: odd widths above one vector stay scalar (wide odd vectors cost LLVM minutes)


def schedule_pixelwise(func, g: bo.ConvGeom, producer: str, epilogue: str, out: str, target, pool=None):
    """Shared schedule: producer (acc / conv, reduction) computed per output pixel inside
    the epilogue (pack or float), output channels innermost and vectorized, reductions
    outside them (unrolled when small), rows in parallel. Order of primitives: parallel
    and vectorize before decompose_reduction (TVM's compact-dataflow rule)."""
    sch = new_schedule(func)
    acc = sch.get_sblock(producer)
    epi = sch.get_sblock(epilogue)
    rows = g.ho
    if pool is not None:
        # the output is the pooled packed map: per pooled pixel, the window's accumulators
        # (independent chains), their per-channel extreme ("wext"), one threshold + pack
        en, eh, ew, ej, eb = sch.get_loops(epi)
        bitval_at(sch, ew, g, target)
        wext_at(sch, ew, g, target)
        sch.compute_at(acc, ew)
        xpad_at(sch, eh, target)
        inner = sch.get_loops(acc)[3:]
        npix = sum(1 for e in pool[0] if e > 1)
        pixl, o_loop, red = inner[:npix], inner[npix], inner[npix + 1:]
        sch.reorder(*red, *pixl, o_loop)
        vectorize_channels(sch, o_loop, g.c_out, vector_lanes(target))
        if target_family(target) != "c":
            for lp in pixl:
                sch.unroll(lp)
            sch.unroll(eb)
        rows = bo.pool_out(g.ho, g.wo, *pool)[0]
        if rows > 1 and knobs.PARALLEL:
            sch.parallel(eh)
        unroll_reductions(sch, red, target)
        sch.decompose_reduction(acc, red[0])
        return sch.mod["main"]
    if out == "pack":
        en, eh, ew, ej, eb = sch.get_loops(epi)
        bitval_at(sch, ew, g, target)
    else:
        en, eo, eh, ew = sch.get_loops(epi)
        sch.reorder(en, eh, ew, eo)
    sch.compute_at(acc, ew)
    c_family = target_family(target) == "c"
    xpad_at(sch, eh, target, ew if c_family else None)
    loops = sch.get_loops(acc)
    o_loop, red = loops[3], loops[4:]
    if c_family:
        # scalar C: one output channel's whole reduction innermost, so its accumulator stays
        # in a register and the weights are read contiguously (no vectors to fill)
        sch.reorder(o_loop, *red)
        if producer == "conv" and len(red) > 1:
            # first layer: the pixel's receptive field is laid out like a filter row, so
            # the whole reduction is one contiguous dot product (no 3-trip inner loop)
            try:
                red = [sch.fuse(*red)]
            except Exception:  # noqa: keep the nested loops
                pass
    else:
        sch.reorder(*red, o_loop)
    if g.ho > 1 and knobs.PARALLEL:
        sch.parallel(eh)
    lanes = vector_lanes(target)
    vectorize_channels(sch, o_loop, g.c_out, lanes)
    if target_family(target) == "c":
        pass
    elif out == "pack":
        sch.unroll(eb)
    elif g.c_out <= 64:
        sch.vectorize(eo)
    unroll_reductions(sch, red, target)
    sch.decompose_reduction(acc, red[0])
    return sch.mod["main"]


def keeps_workload(schedule):
    """A schedule function whose result remembers its unscheduled input (`nrqc tune`)."""
    @functools.wraps(schedule)
    def run(func, *args, **kwargs):
        return bo.with_workload(schedule(func, *args, **kwargs), func)

    return run


def unscheduled(func, what: str, err: Exception):
    """A schedule is an optimization: on failure the kernel runs as plain loops, and the
    reason rides on the function (`as_kernel` moves it to the compile report's notes)."""
    reason = f"{what} schedule failed ({type(err).__name__}: {str(err).strip().splitlines()[-1][:160] if str(err).strip() else ''})"
    return func.with_attr(bo.FALLBACK_ATTR, reason)


@keeps_workload
def schedule_popcount_conv(func, g: bo.ConvGeom, out: str, target, pool=None):
    """The per-pixel schedule of a TE conv whose accumulator block is "acc" (bit-serial,
    masked, AND/XNOR popcount); on C the same loop structure without vectors or unrolling."""
    try:
        return schedule_pixelwise(func, g, "acc", "packed" if out == "pack" else "y", out, target, pool)
    except Exception as e:
        return unscheduled(func, "binary conv", e)


def build_popcount_conv(g: bo.ConvGeom, weights: str, name: str, out: str, target, pool=None):
    """A TE-built strategy's kernel (``binary_ops.binary_conv``), scheduled per pixel."""
    return schedule_popcount_conv(bo.binary_conv(g, weights, name, out, pool), g, out, target, pool)
