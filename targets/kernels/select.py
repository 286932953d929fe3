"""Per-layer kernel choice and per-target schedules for the binary operators.

Strategy choice for binary x int8 layers: on a target that runs here (kind "host") every
offered strategy (``strategies_for``) is built with its schedule and timed on the layer's
real shape (median of a few runs, random packed input): the fastest wins. Elsewhere an
op-count cost model over the target's figures decides (popcount bits/cycle vs int8
MACs/cycle). Both the numbers and the method go to the manifest.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from nrqc.targets.kernels import amx, lut
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk


def weight_args(g: bo.ConvGeom, weights: str, strategy: str, wq: np.ndarray) -> list[np.ndarray]:
    if weights == "int8" and strategy == "lut":  # the table layout does not depend on a fused pool
        return [lut.lut_weights(wq, lut.lut_plan(g))]
    if weights == "int8" and strategy == "amx":
        return [pk.amx_weights(wq, amx.amx_plan(g))]
    if weights == "int8" and strategy == "vnni":
        return [pk.vnni_weights(wq)]
    if weights == "int8" and strategy == "bitserial":
        return [pk.bitplanes_int8(wq, g.groups)]
    if weights == "int8" and strategy == "masked":
        return [pk.masked_weights(wq)]
    wp, m = pk.binary_weights(wq, g.groups)
    return [wp, m]


def _target_family(target) -> str:
    t = target.tvm_target if target is not None else {}
    kind = t.get("kind", "llvm")
    if kind == "c":
        return "c"
    triple = str(t.get("mtriple", ""))
    if "aarch64" in triple or "arm" in triple:
        return "arm"
    return "x86"


def _vector_lanes(target) -> int:
    fam = _target_family(target)
    if fam == "c":
        return 1
    if fam == "arm":
        return 4
    flags = set(getattr(target, "notes", ()) or ())
    return 16 if any(f.startswith("avx512f") for f in flags) else 8


# ------------------------------------------------------------------ schedules

def _sch(func):
    from tvm import s_tir

    return s_tir.Schedule(func)


# Rows in parallel measured 2x slower at one thread (the parallel body is outlined and its
# per-pixel scratch becomes a workspace allocation); the benchmark and the MCU/edge use
# case are batch-1 single-thread, so kernels are serial unless this is switched on.
PARALLEL = False
VNNI_UNROLL_TAPS = False
UNROLL_MAX = 64


def _unroll_reductions(sch, red, target=None):
    """Unroll the reduction loops of one output pixel when their trip count is small
    (measured 4x on the first conv: LLVM then keeps the accumulators in registers)."""
    if _target_family(target) == "c":
        return  # plain C loops (TVM 0.27's C printer mis-caches loads in unrolled reductions)
    total = 1
    for r in red:
        total *= int(sch.get(r).extent)
    for r in (red if total <= UNROLL_MAX else red[:-1]):
        sch.unroll(r)


def _xpad_at(sch, row_loop, target, pixel_loop=None):
    """The first conv's zero-padded input rows, computed per output row (vectorized).
    C (bare metal): only the receptive field of one output pixel (Cg x kh x kw floats, a
    small local array laid out like a filter, so the dot products read both contiguously),
    never a padded copy of the map (for a Conv1d the "row" is the whole map: as large as
    the input); without a pixel loop the padding becomes a guarded read."""
    try:
        xp = sch.get_sblock("xpad")
    except Exception:
        return
    if _target_family(target) == "c":
        if pixel_loop is not None:
            sch.compute_at(xp, pixel_loop)
        else:
            sch.compute_inline(xp)
        return
    sch.compute_at(xp, row_loop)
    sch.vectorize(sch.get_loops(xp)[-1])


def _wext_at(sch, loop, g, target):
    """The pool window's per-channel extreme, computed at the pooled pixel, vectorized."""
    try:
        wx = sch.get_sblock("wext")
    except Exception:
        return
    sch.compute_at(wx, loop)
    _vectorize_channels(sch, sch.get_loops(wx)[-1], g.c_out, _vector_lanes(target))


def _bitval_at(sch, loop, g, target):
    """Compute the per-channel bit values of one output pixel at `loop`, vectorized."""
    try:
        bv = sch.get_sblock("bitval")
    except Exception:
        return
    sch.compute_at(bv, loop)
    if _target_family(target) == "c":
        return
    lanes = _vector_lanes(target)
    lo = sch.get_loops(bv)[-1]
    cw = bo.n_words(g.c_out) * bo.WORD
    if cw > lanes and cw % lanes == 0:
        _, inner = sch.split(lo, [None, lanes])
        sch.vectorize(inner)
    else:
        sch.vectorize(lo)


def _vectorize_channels(sch, loop, c_out: int, lanes: int):
    """Vectorize the output-channel loop (split to whole vectors when it divides)."""
    if lanes <= 1:
        return
    if c_out > lanes and c_out % lanes == 0:
        _, inner = sch.split(loop, [None, lanes])
        sch.vectorize(inner)
    elif c_out <= lanes:
        sch.vectorize(loop)
    # else: odd widths above one vector stay scalar (wide odd vectors cost LLVM minutes)


def _schedule_pixelwise(func, g: bo.ConvGeom, producer: str, epilogue: str, out: str, target, pool=None):
    """Shared schedule: producer (acc / conv, reduction) computed per output pixel inside
    the epilogue (pack or float), output channels innermost and vectorized, reductions
    outside them (unrolled when small), rows in parallel. Order of primitives: parallel
    and vectorize before decompose_reduction (TVM's compact-dataflow rule)."""
    sch = _sch(func)
    acc = sch.get_sblock(producer)
    epi = sch.get_sblock(epilogue)
    rows = g.ho
    if pool is not None:
        # the output is the pooled packed map: per pooled pixel, the window's accumulators
        # (independent chains), their per-channel extreme ("wext"), one threshold + pack
        en, eh, ew, ej, eb = sch.get_loops(epi)
        _bitval_at(sch, ew, g, target)
        _wext_at(sch, ew, g, target)
        sch.compute_at(acc, ew)
        _xpad_at(sch, eh, target)
        inner = sch.get_loops(acc)[3:]
        npix = sum(1 for e in pool[0] if e > 1)
        pixl, o_loop, red = inner[:npix], inner[npix], inner[npix + 1:]
        sch.reorder(*red, *pixl, o_loop)
        _vectorize_channels(sch, o_loop, g.c_out, _vector_lanes(target))
        if _target_family(target) != "c":
            for lp in pixl:
                sch.unroll(lp)
            sch.unroll(eb)
        rows = bo.pool_out(g.ho, g.wo, *pool)[0]
        if rows > 1 and PARALLEL:
            sch.parallel(eh)
        _unroll_reductions(sch, red, target)
        sch.decompose_reduction(acc, red[0])
        return sch.mod["main"]
    if out == "pack":
        en, eh, ew, ej, eb = sch.get_loops(epi)
        _bitval_at(sch, ew, g, target)
    else:
        en, eo, eh, ew = sch.get_loops(epi)
        sch.reorder(en, eh, ew, eo)
    sch.compute_at(acc, ew)
    c_family = _target_family(target) == "c"
    _xpad_at(sch, eh, target, ew if c_family else None)
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
    if g.ho > 1 and PARALLEL:
        sch.parallel(eh)
    lanes = _vector_lanes(target)
    _vectorize_channels(sch, o_loop, g.c_out, lanes)
    if _target_family(target) == "c":
        pass
    elif out == "pack":
        sch.unroll(eb)
    elif g.c_out <= 64:
        sch.vectorize(eo)
    _unroll_reductions(sch, red, target)
    sch.decompose_reduction(acc, red[0])
    return sch.mod["main"]


def has_vnni(target) -> bool:
    return target is not None and _target_family(target) == "x86" and "avx512_vnni" in set(target.notes or ())


def has_lut(target) -> bool:
    """vpermb (AVX-512 VBMI) table lookups accumulated by vpdpbusd (VNNI)."""
    notes = set(target.notes or ()) if target is not None else set()
    return _target_family(target) == "x86" and {"avx512vbmi", "avx512_vnni"} <= notes


def has_amx(target) -> bool:
    """AMX tiles usable: the target's features say so (x86 describes them only where the
    host has amx_int8 and the OS grants the tile state)."""
    return target is not None and _target_family(target) == "x86" and "amx_int8" in set(target.notes or ())


def _schedule_vnni(func, g: bo.ConvGeom, out: str, target, pool=None):
    """Unpack-to-u8 + vpdpbusd: the u8 rows one output row reads are unpacked at that row
    (vectorized), the accumulators of one output pixel (16 channels per vector) are
    updated with one vpdpbusd per (tap, 4 input channels, 16 output channels)."""
    from nrqc.targets.kernels.intrin import vnni_16x4

    c4, co16 = bo.vnni_dims(g)
    sch = _sch(func)
    acc = sch.get_sblock("acc")
    unp = sch.get_sblock("unpacked")
    epi = sch.get_sblock("packed" if out == "pack" else "y")
    eb = eo = None
    # Register blocking: the accumulators of several output pixels are live at once, so
    # the vpdpbusd chains are independent (latency ~4-5 cycles, 2 per cycle issue).
    if pool is not None:
        en, eh, ew, ej, eb = sch.get_loops(epi)  # pooled coordinates
        row, rows = eh, bo.pool_out(g.ho, g.wo, *pool)[0]
        acc_at, pixel_extents = ew, list(pool[0])  # the pool window's pixels
    elif out == "pack":
        en, eh, ew, ej, eb = sch.get_loops(epi)
        tile = 4 if g.wo % 4 == 0 else 2 if g.wo % 2 == 0 else 1
        acc_at = ew
        if tile > 1:
            acc_at, ew = sch.split(ew, [None, tile])
        row, rows = eh, g.ho
        pixel_extents = [tile]
    else:
        en, eo, eh, ew = sch.get_loops(epi)
        sch.reorder(en, eh, ew, eo)
        row, rows = eh, g.ho
        acc_at, pixel_extents = ew, []
    if out == "pack":
        _bitval_at(sch, ew, g, target)
    if pool is not None:
        _wext_at(sch, ew, g, target)
    pos = [sch.get(lp).same_as(sch.get(acc_at)) for lp in sch.get_loops(epi)].index(True) + 1
    sch.compute_at(acc, acc_at)
    inner = sch.get_loops(acc)[pos:]
    pix = [f"p{i}" for i, e in enumerate(pixel_extents) if e > 1]
    present = pix + [n for n, e in (("o", co16), ("r", g.kh), ("s", g.kw), ("cq", c4 // 4), ("ci", 4)) if e > 1]
    if len(inner) != len(present):
        raise ValueError(f"unexpected loop nest {len(inner)} vs {present}")
    L = dict(zip(present, inner))
    oo, oi = sch.split(L["o"], [None, 16])
    order = [L[k] for k in ("r", "s", "cq") if k in L] + [L[p] for p in pix] + [oo, oi, L["ci"]]
    sch.reorder(*order)
    sch.compute_at(unp, row)
    sch.vectorize(sch.get_loops(unp)[-1])
    if rows > 1 and PARALLEL:
        sch.parallel(row)
    if eb is not None:
        sch.unroll(eb)
    if eo is not None and g.c_out <= 64:
        sch.vectorize(eo)
    init = sch.decompose_reduction(acc, order[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(oi, vnni_16x4())
    for lp in [L[p] for p in pix] + [oo] + ([L["s"]] if "s" in L and VNNI_UNROLL_TAPS else []):
        sch.unroll(lp)
    return sch.mod["main"]


def _keeps_workload(schedule):
    """A schedule function whose result remembers its unscheduled input (`nrqc tune`)."""
    import functools

    @functools.wraps(schedule)
    def run(func, *args, **kwargs):
        return bo.with_workload(schedule(func, *args, **kwargs), func)

    return run


def _unscheduled(func, what: str, err: Exception):
    """A schedule is an optimization: on failure the kernel runs as plain loops, and the
    reason rides on the function (`as_kernel` moves it to the compile report's notes)."""
    reason = f"{what} schedule failed ({type(err).__name__}: {str(err).strip().splitlines()[-1][:160] if str(err).strip() else ''})"
    return func.with_attr(bo.FALLBACK_ATTR, reason)


@_keeps_workload
def schedule_conv(func, g: bo.ConvGeom, out: str, target, pool=None, strict: bool = False):
    # C (Cortex-M): the same loop structure (per-pixel accumulators, fused pool) without
    # vectors or unrolling: generic TIR that lowers to plain C loops with small scratch
    if "unpacked" in func.script():
        try:
            return _schedule_vnni(func, g, out, target, pool)
        except Exception as e:
            if strict:
                raise
            return _unscheduled(func, "VNNI conv", e)
    try:
        return _schedule_pixelwise(func, g, "acc", "packed" if out == "pack" else "y", out, target, pool)
    except Exception as e:
        return _unscheduled(func, "binary conv", e)


@_keeps_workload
def schedule_float_conv_pack(func, g: bo.ConvGeom, target, pool=None):
    try:
        return _schedule_pixelwise(func, g, "conv", "packed", "pack", target, pool)
    except Exception as e:
        return _unscheduled(func, "float conv + threshold + pack", e)


@_keeps_workload
def schedule_dense(func, target):
    return func


@_keeps_workload
def schedule_elementwise(func, target):
    if _target_family(target) == "c":
        return func
    try:
        sch = _sch(func)
        blk = sch.get_sblock("pooled")
        loops = sch.get_loops(blk)
        if len(loops) >= 2:
            sch.parallel(loops[1])
        return sch.mod["main"]
    except Exception as e:
        return _unscheduled(func, "packed pooling", e)


def build_conv(g: bo.ConvGeom, weights: str, strategy: str, out: str, wq: np.ndarray, target, pool=None):
    if weights == "int8" and strategy == "amx":  # written directly in TIR (tile registers)
        return bo.hand_written(amx.amx_conv(g, out, pool)), weight_args(g, weights, strategy, wq)
    if weights == "int8" and strategy == "lut":  # written directly in TIR (vpermb + vpdpbusd)
        return bo.hand_written(lut.lut_conv(g, out, pool)), weight_args(g, weights, strategy, wq)
    func = bo.binary_conv(g, weights, strategy, out, pool)
    return schedule_conv(func, g, out, target, pool), weight_args(g, weights, strategy, wq)


# ------------------------------------------------------------------ choice

def strategies_for(g: bo.ConvGeom, target) -> tuple[str, ...]:
    """The int8 strategies that exist for this layer on this target."""
    dot = ((("vnni",) if has_vnni(target) else ()) + (("lut",) if has_lut(target) else ())
           + (("amx",) if has_amx(target) else ()))
    return ("bitserial", "masked") + (dot if g.groups == 1 else ())


def cost_model(g: bo.ConvGeom, target) -> dict:
    """Cycles estimated from op counts and the target's peak figures."""
    pix = g.n * g.ho * g.wo * g.c_out * g.kh * g.kw
    pop_bits = (target.figure("peak_popcount_bits_per_cycle") if target is not None else None) or 64
    macs = (target.figure("peak_int8_macs_per_cycle") if target is not None else None) or 1
    # bitserial: 8 planes x words x 32 bits of popcount, plus and/shift/add (x3)
    bitserial = pix * g.words_in * 8 * 32 / pop_bits * 3
    # masked: one select-add per (input channel), int32 lanes = macs/4
    masked = pix * g.cg / max(1.0, macs / 4) * 2
    if _target_family(target) == "c":
        # scalar C (Cortex-M): no vectors to fill, so count instructions per output pixel,
        # channel and tap. bitserial: per input word 8 x (popcount + and/shift/add);
        # masked: per input channel a bit test, a weight load and a select-add (~7).
        # Measured in QEMU on vad_tiny (M4): bitserial 9.55 M vs masked 13.05 M instructions.
        pix_taps = g.n * g.ho * g.wo * g.c_out * g.kh * g.kw
        bitserial = pix_taps * g.words_in * 8 * (32 / pop_bits + 3)
        masked = pix_taps * g.cg * 7
    est = {"bitserial": bitserial, "masked": masked}
    if has_vnni(target) and g.groups == 1:
        # vpdpbusd at the int8 peak, plus the u8 unpack of kh input rows per output row
        est["vnni"] = pix * ((g.c_in + 3) // 4 * 4) / macs + g.n * g.ho * g.kh * g.w * g.c_in / 64
    if has_lut(target) and g.groups == 1:
        est["lut"] = _lut_cycles(g)
    if has_amx(target) and g.groups == 1:
        est["amx"] = _amx_cycles(g, target)
    return est


def _lut_cycles(g: bo.ConvGeom) -> float:
    """Two vpermb + vpdpbusd pairs (the lo and hi table planes) per 16-pixel vector, output
    channel and quad of 16 input channels, one pair per cycle; a map narrower than 16
    leaves lanes empty; the epilogue costs ~20 vector ops per channel and 16 vectors."""
    p = lut.lut_plan(g)
    vectors = g.n * g.ho * p.nkb * p.cop
    return vectors * (g.kh * g.kw * p.nh * 2 + 20 / 16)


def _amx_cycles(g: bo.ConvGeom, target) -> float:
    """tdpbusd count x its issue interval (a 16x16 tile pair costs the same at any K <= 64),
    plus the u8 unpack of each output row's input rows (one 64-byte vector per ~2 cycles)."""
    p = amx.amx_plan(g)
    per_tile = 16 * 16 * 64 / (target.figure("peak_amx_int8_macs_per_cycle") or 1024)
    tiles = g.n * g.ho * (p.wo16 // 16) * (p.cop // 16) * g.kh * p.kwg * p.nq
    unpack = g.n * g.ho * g.kh * p.wpa * p.c4 / 32
    return tiles * per_tile + unpack


def _measure(g, strategy, target, repeat=5) -> float:
    import tvm

    rng = np.random.default_rng(0)
    wq = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    func, wargs = build_conv(g, "int8", strategy, "pack", wq, target)
    lib = tvm.tirx.build(func, target=target.tvm())
    x = pk.pack_channels(rng.random((g.n, g.h, g.w, g.c_in)) < 0.4)
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(a, dev) for a in [x, *wargs, np.ones(g.c_out, np.int32), np.zeros(g.c_out, np.int32),
                                                  np.zeros((g.n, g.ho, g.wo, g.words_out), np.uint32)]]
    lib(*args)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        lib(*args)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


@functools.lru_cache(maxsize=256)
def _choose_cached(g: bo.ConvGeom, target_name: str, mcpu: str | None, kind: str, measure: bool):
    from nrqc.targets import get_target

    # mcpu: an x86 build for a named CPU is not the host's description (other strategies)
    target = get_target(target_name, mcpu)
    est = cost_model(g, target)
    if measure:
        try:
            ms = {s: round(_measure(g, s, target), 4) for s in strategies_for(g, target)}
            best = min(ms, key=ms.get)
            return {"strategy": best, "method": "measured on this host (median of 5, ms)", "candidates_ms": ms,
                    "cost_model_cycles": {k: round(v) for k, v in est.items()}}
        except Exception as e:  # measurement is an optimization; the cost model still decides
            err = str(e).splitlines()[0][:120]
            best = min(est, key=est.get)
            return {"strategy": best, "method": f"cost model (measurement failed: {err})",
                    "cost_model_cycles": {k: round(v) for k, v in est.items()}}
    best = min(est, key=est.get)
    why = ("target cannot run here" if kind != "host" or not runs_here(target)
           else f"layer under {MEASURE_MIN_MACS:,} MACs, too small to time")
    return {"strategy": best, "method": f"cost model from the target's peak figures ({why})",
            "cost_model_cycles": {k: round(v) for k, v in est.items()}}


MEASURE_MIN_MACS = 2_000_000  # below this a layer runs in microseconds: timing it is noise


def choose_int8_strategy(g: bo.ConvGeom, target, measure: bool | None = None) -> dict:
    macs = g.n * g.ho * g.wo * g.c_out * g.kh * g.kw * g.cg
    if measure is None:
        # Only where this CPU can run the target's code: a build for a newer x86 CPU
        # (--mcpu) would die of SIGILL while being timed.
        measure = target is not None and target.kind == "host" and macs >= MEASURE_MIN_MACS and runs_here(target)
    try:
        name = target.name
    except AttributeError:
        name = "x86"
    mcpu = target.tvm_target.get("mcpu") if name == "x86" and target is not None else None
    return dict(_choose_cached(g, name, mcpu, target.kind if target is not None else "host", bool(measure)))


def runs_here(target) -> bool:
    """This host's CPU has every ISA feature the (x86) target's code may use."""
    from nrqc.targets import x86

    return _target_family(target) != "x86" or not x86.missing_here(x86.required_flags(target))
