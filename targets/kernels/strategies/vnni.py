"""Unpack to u8 + int8 dot product on AVX-512 VNNI (``vpdpbusd``): the u8 rows an output
row reads are unpacked from the packed words, and 16 output channels of a pixel take one
vpdpbusd per (tap, 4 input channels)."""
from __future__ import annotations

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import knobs
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.pixelwise import bitval_at, keeps_workload, new_schedule, unscheduled, wext_at
from nrqc.targets.kernels.strategies.estimates import int8_macs_per_cycle, taps

NAME = "vnni"
WEIGHTS = "int8"


def available(target) -> bool:
    return target is not None and target.caps.has("avx512_vnni")


def supports(g) -> bool:
    return g.groups == 1


def cost(g, target) -> float:
    # vpdpbusd at the int8 peak, plus the u8 unpack of kh input rows per output row
    # (64 channels per 64-byte vector)
    return taps(g) * pk.vnni_padded_channels(g.c_in, g.c_out)[0] / int8_macs_per_cycle(target) + g.n * g.ho * g.kh * g.w * g.c_in / 64


def weight_args(g, wq):
    return [pk.vnni_weights(wq)]


def build(g, out: str, target, pool=None, strict: bool = False):
    return schedule(bo.binary_conv(g, WEIGHTS, NAME, out, pool), g, out, target, pool, strict)


@keeps_workload
def schedule(func, g, out: str, target, pool=None, strict: bool = False, dot_16x4=None,
             channel_blocks_outside: bool = False, reduction=None, unroll_taps: bool = False):
    """The VNNI schedule; on failure the kernel runs as plain loops (an error if strict).
    `dot_16x4` names the registered 16x4 u8*s8 dot-product intrinsic the inner update is
    tensorized with (default vpdpbusd; strategies/avx2_maddubs.py passes its AVX2 one).
    `channel_blocks_outside`: the blocks of 16 output channels loop outside the taps, so
    only one block's accumulators (x the pixels of a tile or pool window) and weights are
    live at once (NEON: 32 registers of 4 int32 lanes; strategies/neon_unpacked.py).
    `reduction`: the accumulator's reduction loops as ((name, extent), ...) ending with
    ("ci", 4) when they are not the conv's (r, s, cq, ci) (int8_conv.acc_row4: (r, cq, ci));
    `unroll_taps` unrolls them all but ci (straight-line updates: the accumulators stay
    in registers across the taps)."""
    try:
        return _schedule(func, g, out, target, pool, dot_16x4, channel_blocks_outside, reduction, unroll_taps)
    except Exception as e:
        if strict:
            raise
        return unscheduled(func, "VNNI conv", e)


def _schedule(func, g: bo.ConvGeom, out: str, target, pool=None, dot_16x4=None, channel_blocks_outside=False,
              reduction=None, unroll_taps=False):
    """Unpack-to-u8 + vpdpbusd: the u8 rows one output row reads are unpacked at that row
    (vectorized), the accumulators of one output pixel (16 channels per vector) are
    updated with one vpdpbusd per (tap, 4 input channels, 16 output channels)."""
    from nrqc.targets.kernels.intrin import vnni_16x4

    c4, co16 = bo.vnni_dims(g)
    sch = new_schedule(func)
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
        bitval_at(sch, ew, g, target)
    if pool is not None:
        wext_at(sch, ew, g, target)
    pos = [sch.get(lp).same_as(sch.get(acc_at)) for lp in sch.get_loops(epi)].index(True) + 1
    sch.compute_at(acc, acc_at)
    inner = sch.get_loops(acc)[pos:]
    pix = [f"p{i}" for i, e in enumerate(pixel_extents) if e > 1]
    reduction = reduction or (("r", g.kh), ("s", g.kw), ("cq", c4 // 4), ("ci", 4))
    present = pix + [n for n, e in (("o", co16), *reduction) if e > 1]
    if len(inner) != len(present):
        raise ValueError(f"unexpected loop nest {len(inner)} vs {present}")
    L = dict(zip(present, inner))
    oo, oi = sch.split(L["o"], [None, 16])
    taps_ = [L[k] for k in ("r", "s", "cq") if k in L]
    if channel_blocks_outside:
        order = [oo] + taps_ + [L[p] for p in pix] + [oi, L["ci"]]
    else:
        order = taps_ + [L[p] for p in pix] + [oo, oi, L["ci"]]
    sch.reorder(*order)
    sch.compute_at(unp, row)
    sch.vectorize(sch.get_loops(unp)[-1])
    if rows > 1 and knobs.PARALLEL:
        sch.parallel(row)
    if eb is not None:
        sch.unroll(eb)
    if eo is not None and g.c_out <= 64:
        sch.vectorize(eo)
    init = sch.decompose_reduction(acc, order[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(oi, dot_16x4 or vnni_16x4())
    for lp in [L[p] for p in pix] + ([] if channel_blocks_outside else [oo]) + \
            ([L["s"]] if "s" in L and knobs.VNNI_UNROLL_TAPS else []) + (taps_ if unroll_taps else []):
        sch.unroll(lp)
    return sch.mod["main"]
