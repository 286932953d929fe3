"""Schedules for fused CPU kernels (NCHW conv2d / NCW conv1d, dense/matmul, pooling,
generic injective and reduction kernels).

Convolution (the bulk of a speech CNN's time): a register tile of F output channels
(F = lanes or 2*lanes, one vector each) by X output columns. The innermost loop
broadcasts one input pixel per column and FMAs it with a vector of F weights; the X*F/lanes
accumulators live in registers for the whole reduction (channels x kernel window). The
weights are repacked once per call into [F-blocks, C_in, KH, KW, F] so the weight vector
is one contiguous load; the fused epilogue (bias, ReLU, ...) is applied to the tile in
registers and written back to NCHW. Rows are the parallel axis.

A convolution with few output positions per weight (an STFT-as-Conv front end, the convs of
a recurrent model's frame) is instead a set of dot products along its reduction
(`float_conv_dot_rule`): weights read in place, the input as an im2col patch matrix.
"""
from __future__ import annotations

import os

from nrqc.targets.schedules.common import VectorSpec


def _iter_kinds(block) -> str:
    from tvm.tirx import IterVar

    return "".join("S" if iv.iter_type == IterVar.DataPar else "R" if iv.iter_type == IterVar.CommReduce else "O"
                   for iv in block.iter_vars)


def _extent(x) -> int | None:
    try:
        return int(x)
    except TypeError:
        return None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _largest_divisor_le(n: int, cap: int) -> int:
    return max(d for d in _divisors(n) if d <= max(cap, 1))


def _blocks(sch):
    root = sch.get_sblock("root") if _has_root(sch) else None
    return sch.get_child_blocks(root) if root is not None else []


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001 - no root block
        return False


def _static(func) -> bool:
    for p in func.params:
        shape = getattr(p, "shape", None)
        if shape is not None and any(_extent(d) is None for d in shape):
            return False
    return True


# --------------------------------------------------------------------------- conv


def _find_conv(sch, blocks):
    """The NCHW (4 spatial + 3 reduce) or NCW (3 + 2) convolution block, if any."""
    for b in blocks:
        st = sch.get(b)
        kinds = _iter_kinds(st)
        if kinds not in ("SSSSRRR", "SSSRR") or len(st.reads) != 2 or len(st.writes) != 1:
            continue
        if not st.init:
            continue
        # weight: indexed by [f, rc, (ry,) rx] directly with the block's vars
        ivs = [iv.var for iv in st.iter_vars]
        ns = 4 if kinds == "SSSSRRR" else 3
        f_var = ivs[1]
        red = ivs[ns:]
        for wi, region in enumerate(st.reads):
            idx = [r.min for r in region.region]
            if len(idx) == 1 + len(red) and idx[0].same_as(f_var) and all(a.same_as(v) for a, v in zip(idx[1:], red)):
                return b, wi, 1 - wi, ns
    return None


def _epilogue_chain(sch, conv, blocks):
    """The injective blocks after conv, in order, if the kernel is conv -> elementwise*."""
    after = blocks[[sch.get(b).name_hint == sch.get(conv).name_hint for b in blocks].index(True) + 1:]
    for b in after:
        if "R" in _iter_kinds(sch.get(b)) or len(sch.get(b).writes) != 1:
            return None
    return after


def _output_stage(sch, conv, epi, ns: int):
    """The block writing the kernel's output: the last epilogue block with the others inlined
    into it (a copy of the conv's result when there is no epilogue); None if it does not have
    the conv's ns spatial loops."""
    if not epi:
        sch.cache_write(conv, 0, "global")
        blocks = _blocks(sch)
        epi = blocks[[sch.get(b).name_hint == sch.get(conv).name_hint for b in blocks].index(True) + 1:]
    for b in epi[:-1]:
        sch.compute_inline(b)
    out = epi[-1]
    return out if len(sch.get_loops(out)) == ns else None


def _xvec_tile(n_f: int, n_x: int, spec: VectorSpec):
    """(f_tile, x_tile) of an x-vectorized conv tile, or None when the row does not split
    into whole vectors. Measured on Zen 4 for model_v8's 1->32 conv @900x120 (+ 2x2 max pool):
    8 channels x 24 columns (3 ymm) 1.35 ms vs 2.3 ms for the channel-vectorized tile."""
    xv = next((w for w in (spec.lanes, spec.lanes // 2) if w > 1 and n_x % w == 0), None)
    if xv is None:
        return None
    budget = 24 if spec.registers >= 32 else 12
    m = next(m for m in (3, 2, 1) if (n_x // xv) % m == 0)
    f_tile = _largest_divisor_le(n_f, min(8, budget // m))
    return f_tile, xv * m


def _xvec_width(x_tile: int, lanes: int) -> int:
    """Vector width along x for an x-vectorized tile: a power of two that divides it
    (wide odd vectors legalize badly in LLVM)."""
    for w in (lanes, lanes // 2, lanes // 4):
        if w > 1 and x_tile % w == 0:
            return w
    return x_tile


def _region_buf(region):
    for name in ("buffer", "source", "tensor"):
        if hasattr(region, name):
            return getattr(region, name)
    raise AttributeError(f"no buffer in {type(region).__name__}: {[a for a in dir(region) if not a.startswith('_')]}")


def _pool_after(sch, conv, blocks):
    """The 2-D pooling block ending a conv -> elementwise* -> pool kernel (fused by
    nrqc.FuseConvPool), reading the last elementwise block's output directly."""
    names = [sch.get(b).name_hint for b in blocks]
    after = blocks[names.index(sch.get(conv).name_hint) + 1:]
    if len(after) < 2:
        return None
    last = sch.get(after[-1])
    if _iter_kinds(last) != "SSSSRR" or len(last.reads) != 1 or not last.init:
        return None
    prev = sch.get(after[-2])
    if len(prev.writes) != 1 or not _region_buf(last.reads[0]).same_as(_region_buf(prev.writes[0])):
        return None
    return after[-1]


def float_conv_rule(sch, spec: VectorSpec) -> bool:
    """The float conv rule: an NCHW/NCW conv anchor block, its elementwise epilogue and a
    max-pool right after it, scheduled as one register-tiled loop nest; False if the
    function holds no such conv."""
    blocks = _blocks(sch)
    found = _find_conv(sch, blocks)
    if found is None:
        return False
    conv, w_idx, d_idx, ns = found
    pool = _pool_after(sch, conv, blocks) if ns == 4 else None
    epi = _epilogue_chain(sch, conv, blocks if pool is None else [b for b in blocks if not b.same_as(pool)])
    if epi is None or (pool is not None and not epi):
        return False
    st = sch.get(conv)
    dom = [_extent(iv.dom.extent) for iv in st.iter_vars]
    if any(d is None for d in dom):
        return False
    n_f, n_x = dom[1], dom[ns - 1]
    lanes = spec.lanes
    if n_f % lanes:
        return False  # channel counts that are not a multiple of the vector: generic rule
    vecs = 2 if n_f % (2 * lanes) == 0 else 1
    # accumulator budget: vecs * X registers
    x_tile = _largest_divisor_le(n_x, spec.acc_budget // vecs)
    if x_tile < 4 and vecs == 2:
        vecs = 1
        x_tile = _largest_divisor_le(n_x, spec.acc_budget)
    red_len = 1
    for d in dom[ns:]:
        red_len *= d
    if red_len < 32:
        # a short reduction (a first layer with one input channel): the write-back
        # dominates and a small tile is faster (model_v8's 1->32 conv: ~1.7-3x over 2x16x10)
        vecs, x_tile = 1, _largest_divisor_le(n_x, 8)
    if os.environ.get("NRQC_CONV_TILE"):  # experiments: "vecs,x_tile,unroll_kw"
        v_, x_, u_ = (int(v) for v in os.environ["NRQC_CONV_TILE"].split(","))
        vecs, x_tile, unroll_kw = v_, _largest_divisor_le(n_x, x_), bool(u_)
    else:
        unroll_kw = False
    f_tile = vecs * lanes
    # x-vectorized tile (output columns in the vector, weights broadcast): the write-back is
    # plain contiguous NCHW stores (no [x, f] -> [f, x] transpose), which is what a short
    # reduction is bound by.
    xvec = None
    # (with a fused pool the channel-vectorized tile + [y, x, f] hand-off is faster still:
    # model_v8 1->32 conv + pool 1.05 ms vs 1.34 ms x-vectorized, whose pool reads stride 2)
    if red_len < 32 and ns == 4 and pool is None and not os.environ.get("NRQC_CONV_TILE"):
        xvec = _xvec_tile(n_f, n_x, spec)
    if os.environ.get("NRQC_CONV_XVEC"):  # experiments: "f_tile,x_tile"
        xf, xx = (int(v) for v in os.environ["NRQC_CONV_XVEC"].split(","))
        if xf and n_f % xf == 0 and n_x % xx == 0:
            xvec = (xf, xx)
    if xvec is not None:
        f_tile, x_tile = xvec

    # 1. Output stage: inline all epilogue blocks but the last into it.
    out = _output_stage(sch, conv, epi, ns)
    if out is None:
        return False

    # 2. Weight repack (before compute_at so that the copy stays at the root).
    if xvec is not None:
        pass
    elif ns == 4:
        wcache = sch.cache_read(conv, w_idx, "global")
        sch.transform_layout(wcache, ("write", 0),
                             lambda f, c, kh, kw: (f // f_tile, c, kh, kw, f % f_tile))
    else:
        wcache = sch.cache_read(conv, w_idx, "global")
        sch.transform_layout(wcache, ("write", 0), lambda f, c, kw: (f // f_tile, c, kw, f % f_tile))

    # 3. Accumulator layout: [.., x, f] innermost f, so the tile is F-contiguous.
    if xvec is not None:
        pass  # natural [n, f, y, x] tile: x innermost
    elif ns == 4:
        sch.transform_layout(conv, ("write", 0),
                             lambda n, f, y, x: (n, f // f_tile, y, x // x_tile, x % x_tile, f % f_tile))
    else:
        sch.transform_layout(conv, ("write", 0),
                             lambda n, f, x: (n, f // f_tile, x // x_tile, x % x_tile, f % f_tile))
    sch.set_scope(conv, 0, "local")

    # 4. Tile the output stage (under the pooled rows when a pool follows).
    fmajor = False  # conv output kept [y, x, f] between the tile and the pool
    if pool is not None:
        # channel-vectorized tile: the conv output stays [.., y, x, f] (the tile's own
        # layout: contiguous vector stores, no transpose) and the pool takes vectors of f
        # (contiguous loads; only its 4x smaller output is scattered to NCHW)
        fmajor = xvec is None and os.environ.get("NRQC_POOL_FMAJOR", "1") == "1"
        if fmajor:
            sch.transform_layout(out, ("write", 0), lambda n, f, y, x: (n, y, x, f))
        pl = sch.get_loops(pool)
        if len(pl) != 6:
            return False
        pn, pf, py, px, r0, r1 = pl
        pfo, pfi = sch.split(pf, [None, f_tile])
        if fmajor:
            sch.reorder(pn, pfo, py, px, r0, r1, pfi)
        else:
            sch.reorder(pn, pfo, py, pfi, r0, r1, px)
        outer = sch.fuse(pn, pfo, py)
        sch.parallel(outer)
        sch.compute_at(out, outer, preserve_unit_loops=True)
        sch.unroll(r0)
        sch.unroll(r1)
        sch.vectorize(pfi if fmajor else px)
        pinit = sch.decompose_reduction(pool, r0)
        sch.vectorize(sch.get_loops(pinit)[-1])
        n, f, y, x = sch.get_loops(out)[1:]
        xo, xi = sch.split(x, [None, x_tile])
        if fmajor:
            sch.reorder(n, y, xo, xi, f)
        else:
            sch.reorder(n, y, xo, f, xi)
        fi = f
        sch.compute_at(conv, xo, preserve_unit_loops=True)
        k = 4  # outer, n, y, xo
    else:
        loops = sch.get_loops(out)
        if ns == 4:
            n, f, y, x = loops
        else:
            n, f, x = loops
            y = None
        fo, fi = sch.split(f, [None, f_tile])
        xo, xi = sch.split(x, [None, x_tile])
        if y is not None:
            sch.reorder(n, fo, y, xo, fi, xi)
            outer = sch.fuse(n, fo, y)
        else:
            sch.reorder(n, fo, xo, fi, xi)
            outer = sch.fuse(n, fo)
        sch.parallel(outer)
        sch.compute_at(conv, xo, preserve_unit_loops=True)
        k = 2  # the fused parallel loop and xo
    # write-back: contiguous stores along x
    if fmajor:
        sch.unroll(xi)
        sch.vectorize(fi)
    else:
        sch.unroll(fi)
    if fmajor:
        pass
    elif xvec is not None and _xvec_width(x_tile, lanes) < x_tile:
        xio, xi = sch.split(xi, [None, _xvec_width(x_tile, lanes)])
        sch.unroll(xio)
    if x_tile > 1 and not fmajor:
        sch.vectorize(xi)

    # 5. Conv tile: reduction loops outside, x unrolled, f vectorized.
    cl = sch.get_loops(conv)
    tile = cl[k:]
    # tile loops: ns spatial (unit n, f, [y], x) then reductions
    sp = tile[:ns]
    rd = tile[ns:]
    c_f, c_x = sp[1], sp[ns - 1]
    if xvec is not None:
        sch.reorder(*rd, c_f, c_x)
        sch.unroll(c_f)
        xv = _xvec_width(x_tile, lanes)
        if xv < x_tile:
            cxo, c_x = sch.split(c_x, [None, xv])
            sch.unroll(cxo)
        sch.vectorize(c_x)
    else:
        sch.reorder(*rd, c_x, c_f)
    if xvec is not None:
        pass
    elif vecs > 1:
        cfo, cfi = sch.split(c_f, [vecs, lanes])
        sch.reorder(*rd, c_x, cfo, cfi)
        sch.unroll(cfo)
        c_f = cfi
    if xvec is None:
        sch.vectorize(c_f)
        sch.unroll(c_x)
    if unroll_kw:
        sch.unroll(rd[-1])  # kernel width
    init = sch.decompose_reduction(conv, rd[0])
    il = sch.get_loops(init)[k:]
    if xvec is not None and _xvec_width(x_tile, lanes) < x_tile:
        a, b = sch.split(il[-1], [None, _xvec_width(x_tile, lanes)])
        il = [*il[:-1], a, b]
    sch.vectorize(il[-1])
    for lp in il[:-1]:
        sch.unroll(lp)

    # 6. Padding: the padded input rows a row of output needs, copied inside the row loop
    #    (in cache) instead of a separate pass over the whole padded input.
    skip = []
    #    Only for short reductions (one input channel: model_v8's first conv 1.02 -> 0.95 ms);
    #    with 32 input channels the 2-3x re-copy costs more than the pass (1.15 -> 1.18 ms).
    pad_at_row = os.environ.get("NRQC_PAD_AT_ROW", "1" if red_len < 32 else "0") == "1"
    if pad_at_row:
        prod = [b for b in sch.get_producers(conv) if "pad" in sch.get(b).name_hint]
        for pb in prod:
            try:
                sch.compute_at(pb, outer, preserve_unit_loops=True)
                pls = sch.get_loops(pb)[1:]
                sch.vectorize(pls[-1]) if _extent(sch.get(pls[-1]).extent) <= 256 else None
                skip.append(sch.get(pb).name_hint)
            except Exception:  # noqa: BLE001 - stays a separate pass
                pass
    # 7. The rest (padding left at the root, the weight copy): parallel rows, vectorized.
    for b in _blocks(sch):
        st2 = sch.get(b)
        if st2.name_hint in (sch.get(out).name_hint, sch.get(conv).name_hint, sch.get(init).name_hint,
                             *([] if pool is None else [sch.get(pool).name_hint, sch.get(pinit).name_hint]), *skip):
            continue
        if len(sch.get_loops(b)) >= 2 and "R" not in _iter_kinds(st2):
            _parallel_vectorize(sch, b, spec)
    return True


# ----------------------------------------------------------- conv as dot products


# (im2col floats) above which the dot-product rule is not used: the patch matrix of a
# layer it is meant for (few output positions) is a few KiB (the LSTM VAD's STFT conv: 3 x 256)
DOT_MAX_PATCH = 64 * 1024
# output positions per weight up to which the weights' per-call repack of the channel-
# vectorized tile costs more than it saves (the LSTM VAD's convs have 1-3 positions)
DOT_MAX_POSITIONS = 16


def _dot_width(red_len: int, lanes: int) -> int:
    """Vector width along the fused reduction: the widest power of two, at least 4, not
    above the target's lanes, that divides it (0 if none: the rule does not apply)."""
    w = lanes
    while w >= 4:
        if red_len % w == 0:
            return w
        w //= 2
    return 0


def float_conv_dot_rule(sch, spec: VectorSpec) -> bool:
    """A convolution with few output positions (a strided STFT-as-Conv front end, the convs of
    a recurrent VAD after it: 1-3 positions per frame) as dot products along its reduction.

    The channel-vectorized tile of `float_conv_rule` repacks the weights on every call, which
    for n positions costs about as much as n MACs per weight; here the weights are read in
    their own [F, C*KH*KW] layout, contiguous along the reduction, and the input is gathered
    once into an im2col patch matrix [positions, C*KH*KW] (a few KiB). Per tile of F_t output
    channels x P_t positions the F_t*P_t accumulators are vectors along the reduction (one
    weight load and one patch load per F_t + P_t vectors, F_t*P_t FMAs), summed across lanes
    once at the end. LSTM VAD STFT conv (1->258, 256 taps, stride 128, 3 positions) on Zen 4:
    0.61 -> 0.010 ms (generic rule before, as 258 is not a multiple of 16)."""
    blocks = _blocks(sch)
    found = _find_conv(sch, blocks)
    if found is None or spec.isa == "scalar" or os.environ.get("NRQC_NO_CONV_DOT"):
        # (C code for Cortex-M: no vector registers to accumulate lanes in)
        return False
    conv, w_idx, d_idx, ns = found
    if ns == 4 and _pool_after(sch, conv, blocks) is not None:
        return False
    epi = _epilogue_chain(sch, conv, blocks)
    if epi is None:
        return False
    st = sch.get(conv)
    dom = [_extent(iv.dom.extent) for iv in st.iter_vars]
    if any(d is None for d in dom) or dom[0] != 1:
        return False
    n_f = dom[1]
    positions = 1
    for d in dom[2:ns]:
        positions *= d
    red_len = 1
    for d in dom[ns:]:
        red_len *= d
    width = _dot_width(red_len, spec.lanes)
    if not width or positions * red_len > DOT_MAX_PATCH:
        return False
    # few positions per weight, or channel counts the channel-vectorized tile does not take
    if positions > DOT_MAX_POSITIONS and n_f % spec.lanes == 0:
        return False
    out = _output_stage(sch, conv, epi, ns)
    if out is None:
        return False
    # im2col: the patch matrix indexed by the block's variables that the input read uses
    # ([n, (y,) x, c, (ky,) kx]), the padding computed into it
    col = sch.reindex(conv, ("read", d_idx))
    for pb in sch.get_producers(col):
        if "pad" in sch.get(pb).name_hint:
            try:
                sch.compute_inline(pb)
            except Exception:  # noqa: BLE001 - padding stays a pass of its own
                pass
    # the conv's reduction loops fused into one, split by the vector width, and the vector
    # part factored out: rf[n, f, (y,) x, lane] partial sums, then the sum over lanes
    loops = sch.get_loops(conv)
    red = sch.fuse(*loops[ns:]) if len(loops) > ns + 1 else loops[ns]
    _, lane = sch.split(red, [None, width])
    rf = sch.rfactor(lane, factor_axis=ns)
    sch.set_scope(rf, 0, "local")
    sch.set_scope(conv, 0, "local")
    budget = spec.acc_budget
    p_tile = _largest_divisor_le(dom[ns - 1], max(1, min(budget // 2, 6)))
    f_tile = _largest_divisor_le(n_f, max(1, budget // p_tile))
    ol = sch.get_loops(out)
    n, f, x = ol[0], ol[1], ol[-1]
    fo, fi = sch.split(f, [None, f_tile])
    xo, xi = sch.split(x, [None, p_tile])
    sch.reorder(n, fo, *ol[2:-1], xo, fi, xi)
    sch.parallel(sch.fuse(n, fo))
    sch.unroll(fi)
    sch.unroll(xi)
    sch.compute_at(conv, xo, preserve_unit_loops=True)
    sch.compute_at(rf, xo, preserve_unit_loops=True)
    k = len(sch.get_loops(out)) - 2
    rl = sch.get_loops(rf)[k:]  # lane, n, f, [y], x, reduction loops (rfactor's order)
    ln, spl, ro = rl[0], rl[1:ns + 1], rl[ns + 1:]
    sch.reorder(*ro, *spl, ln)
    for lp in spl:
        sch.unroll(lp)
    sch.vectorize(ln)
    init = sch.decompose_reduction(rf, ro[0])
    il = sch.get_loops(init)[k:]
    for lp in il[:-1]:
        sch.unroll(lp)
    sch.vectorize(il[-1])
    cl = sch.get_loops(conv)[k:]  # lane, n, f, [y], x
    sch.reorder(*cl[1:], cl[0])
    for lp in cl:
        sch.unroll(lp)
    # the patch matrix: one pass before the tiles, innermost (kernel taps) vectorized
    _parallel_vectorize(sch, col, spec)
    for b in _blocks(sch):
        if "pad" in sch.get(b).name_hint:
            _parallel_vectorize(sch, b, spec)
    return True


# ------------------------------------------------------------------- generic rules


def _parallel_vectorize(sch, block, spec: VectorSpec, max_vec: int = 64) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = [_extent(sch.get(lp).extent) for lp in loops]
    if any(e is None for e in ext):
        return
    inner = loops[-1]
    if ext[-1] > max_vec:
        f = _largest_divisor_le(ext[-1], max(spec.lanes * 2, 1))
        if f > 1:
            _, inner = sch.split(inner, [None, f])
    elif len(loops) == 1:
        sch.vectorize(inner)
        return
    outer_loops = sch.get_loops(block)[:-1]
    if outer_loops:
        sch.parallel(sch.fuse(*outer_loops) if len(outer_loops) > 1 else outer_loops[0])
    if _extent(sch.get(inner).extent) > 1:
        sch.vectorize(inner)


def pool_rule(sch, spec: VectorSpec) -> bool:
    """Pooling (SSSS + RR window): parallel over rows, window unrolled, columns vectorized."""
    blocks = _blocks(sch)
    for b in blocks:
        st = sch.get(b)
        kinds = _iter_kinds(st)
        if kinds not in ("SSSSRR", "SSSR") or len(st.reads) != 1:
            continue
        pos = [sch.get(x).name_hint for x in blocks].index(st.name_hint)
        loops = sch.get_loops(b)
        ns = kinds.count("S")
        sp, rd = loops[:ns], loops[ns:]
        x = sp[-1]
        nx = _extent(sch.get(x).extent)
        if nx is None:
            return False
        sch.reorder(*sp[:-1], *rd, x)
        outer = sch.fuse(*sp[:-1])
        sch.parallel(outer)
        for r in rd:
            sch.unroll(r)
        sch.vectorize(x)  # before decompose_reduction (compact dataflow)
        init = sch.decompose_reduction(b, rd[0])
        sch.vectorize(sch.get_loops(init)[-1])
        # Blocks before the pool produce its input (padding, or the broadcast + stack the ONNX
        # frontend makes of Max/Min): each is computed per row under `outer`, nearest first.
        # Moving a producer with reverse_compute_at is accepted by TVM but places it after its
        # consumer in the row loop, which then reads a buffer not yet written (Max(1e-12, x)
        # came out with garbage rows). Blocks after the pool consume its output.
        for other in reversed(blocks[:pos]):
            if "R" in _iter_kinds(sch.get(other)):
                continue
            try:
                sch.compute_at(other, outer, preserve_unit_loops=True)
                inner = sch.get_loops(other)[-1]
                if (_extent(sch.get(inner).extent) or 0) > 1:
                    sch.vectorize(inner)
            except Exception:  # noqa: BLE001 - stays at the root, before the pool
                _parallel_vectorize(sch, other, spec)
        for other in blocks[pos + 1:]:
            if "R" not in _iter_kinds(sch.get(other)):
                try:
                    sch.reverse_compute_at(other, outer)
                except Exception:  # noqa: BLE001 - leave it at the root
                    _parallel_vectorize(sch, other, spec)
        return True
    return False


def dense_rule(sch, spec: VectorSpec) -> bool:
    """Matmul/dense (S..SR): output columns vectorized, reduction outside, rows parallel."""
    blocks = _blocks(sch)
    for b in blocks:
        st = sch.get(b)
        kinds = _iter_kinds(st)
        if not (kinds.endswith("SSR") and kinds.count("R") == 1 and len(st.reads) == 2):
            continue
        dom = [_extent(iv.dom.extent) for iv in st.iter_vars]
        if any(d is None for d in dom):
            return False
        after = blocks[[sch.get(x).name_hint == st.name_hint for x in blocks].index(True) + 1:]
        if any("R" in _iter_kinds(sch.get(x)) for x in after):
            return False
        for x in after[:-1]:
            sch.compute_inline(x)
        n_col = dom[-2]
        col_tile = _largest_divisor_le(n_col, spec.lanes * 4)
        if after:
            out = after[-1]
            sch.set_scope(b, 0, "global")
            lo = sch.get_loops(out)
            co, ci = sch.split(lo[-1], [None, col_tile])
            rows = lo[:-1]
            if rows:
                outer = sch.fuse(*rows, co) if rows else co
            else:
                outer = co
            sch.parallel(outer)
            sch.compute_at(b, outer, preserve_unit_loops=True)
            sch.vectorize(ci)
        cl = sch.get_loops(b)
        if after:
            k = len(sch.get_loops(after[-1])) - 1
            tile = cl[k:]
        else:
            tile = cl
            *rows, c, r = tile
            co, ci = sch.split(c, [None, col_tile])
            if rows:
                sch.parallel(sch.fuse(*rows, co))
            tile = [ci, r]
        r = tile[-1]
        c = tile[-2]
        sch.reorder(r, c)
        sch.vectorize(c)
        init = sch.decompose_reduction(b, r)
        sch.vectorize(sch.get_loops(init)[-1])
        return True
    return False


def _vector_reduce(sch, block, kinds: str, spec: VectorSpec) -> bool:
    """A reduction whose innermost spatial axis is also innermost in its input (a global
    max/mean over NHWC: model_v8's head, 64 channels x 1680 pixels): reductions outside,
    that axis vectorized (contiguous loads) instead of one strided scalar chain per output."""
    st = sch.get(block)
    ivs = [iv.var for iv in st.iter_vars]
    ext = [_extent(iv.dom.extent) for iv in st.iter_vars]
    if any(e is None for e in ext) or not st.init or len(st.reads) != 1:
        return False
    s_last = max(i for i, k in enumerate(kinds) if k == "S")
    if s_last != kinds.index("R") - 1 or ext[s_last] % spec.lanes:
        return False
    idx = [r.min for r in st.reads[0].region]
    if not idx or not idx[-1].same_as(ivs[s_last]):
        return False
    loops = sch.get_loops(block)
    if len(loops) != len(kinds):
        return False
    sp, rd = loops[:s_last + 1], loops[s_last + 1:]
    sch.reorder(*sp[:-1], *rd, sp[-1])
    sch.vectorize(sp[-1])
    init = sch.decompose_reduction(block, rd[0])
    sch.vectorize(sch.get_loops(init)[-1])
    return True


def generic_rule(sch, spec: VectorSpec) -> bool:
    """Every block: outer loops fused and parallel, inner loop vectorized when spatial."""
    done = False
    for b in _blocks(sch):
        st = sch.get(b)
        kinds = _iter_kinds(st)
        if "O" in kinds:
            continue
        loops = sch.get_loops(b)
        if not loops:
            continue
        try:
            if "R" in kinds and _vector_reduce(sch, b, kinds, spec):
                done = True
            elif "R" in kinds:
                # reduction: parallel over the leading spatial loops only
                lead = []
                for lp, kind in zip(loops, kinds):
                    if kind != "S":
                        break
                    lead.append(lp)
                if len(lead) == len(loops[:kinds.index("R")]) and lead:
                    sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])
                    done = True
            else:
                _parallel_vectorize(sch, b, spec)
                done = True
        except Exception:  # noqa: BLE001 - a block we cannot transform stays as is
            continue
    return done


RULES = (("conv_dot", float_conv_dot_rule), ("conv", float_conv_rule), ("pool", pool_rule), ("dense", dense_rule), ("generic", generic_rule))


def schedule_primfunc(func, spec: VectorSpec):
    """(rule name, scheduled PrimFunc) for the first rule that applies, else (None, None)."""
    import tvm
    from tvm import s_tir

    if not _static(func):
        return None, None
    for name, rule in RULES:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            ok = rule(sch, spec)
        except Exception:  # noqa: BLE001 - a rule that does not fit this kernel
            ok = False
        if ok:
            return name, sch.mod["main"]
    return None, None
