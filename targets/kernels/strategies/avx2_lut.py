"""Table lookup on AVX2 (``vpshufb``): {0,1} x int8 without AVX-512 (Haswell, Zen 2).

A nibble of input bits (4 channels of one tap) selects one of the 16 sums of the 4
matching int8 weights, so one byte lookup does 4 multiply-accumulates, as in the AVX-512
``lut`` strategy (kernels/lut.py), but with AVX2's in-lane 16-entry ``vpshufb``: one
instruction looks up 32 bytes in the same 16-byte table (repeated in both 128-bit lanes).

Every byte of a lookup is a pixel: the index register holds the nibbles of two 16-pixel
vectors A and B, A's in the even bytes and B's in the odd ones. A sum S of 4 int8 weights
needs 10 bits, so the tables come in two planes, LO = S & 31 (0..31) and HI = S >> 5
(-16..15), each summed in bytes for 8 steps (at most 248 and -128..120: no overflow; a
step is one tap x one nibble):

    2 vpshufb + 2 vpaddb per 32 pixels x 4 MACs of one output channel,

twice the pixels per shuffle of int16 lanes. Every 8 steps the byte sums widen into int16
accumulators of A and B (LO of the low/high byte + HI x 32, by and/shift), which take 56
steps (56 x 512 < 2^15) before they are widened into int32.

Haswell issues vpshufb on port 5 only: 2 cycles per 128 MACs, 64 MAC/cycle, 4x the port-0
vpmaddubsw rate of ``avx2_maddubs``; Zen 2/3/4 have two shuffle pipes.

The tables (16 sums per 4 weights, two planes, both 128-bit lanes: 16 bytes per weight)
are built from the stored int8 weights at each call (the stored weights stay 1 byte each,
the AVX-512 ``lut`` layout), one block of 4 output channels at a time, so a block's tables
(2 x 32 bytes per step and channel) stay in L1 while the whole map is swept.

Loop order: per image, the nibbles of every input row and from them the interleaved index
registers of every (row, nibble, kernel column, pair of 16-pixel vectors: one load per
step); then per block of 4 output channels its tables, and per pooled output row the
steps of each pair of vectors; int32 results go to ACC [pool rows, window columns, 4,
16k], and the epilogue (window extreme, sigma * acc >= t, OR-ed into the packed word; or
acc * scale) runs over pooled columns as vector lanes. A fused OR-pool uses the AVX-512
lut plan's column phases (kernels/lut.py): a vector (window column, 16 pooled columns) of
any tap is one contiguous load of nibbles.
"""
from __future__ import annotations

import dataclasses

from tvm import tirx
from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import lut
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.binary_ops import WORD, ConvGeom, drop_param

NAME = "avx2_lut"
WEIGHTS = "int8"

# byte sums: 8 steps of LO (0..31) <= 248 and of HI (-16..15) in -128..120
BYTE_STEPS = 8
# int16 accumulation steps before widening: 56 x 512 (the largest |sum of 4 int8|) < 2^15,
# whole byte chunks
STEPS_PER_WIDEN = 56
BLOCK_CHANNELS = 4  # output channels per register block: 8 byte-sum ymm + 1 index of 16


def available(target) -> bool:
    # where AVX-512 VBMI + VNNI exist, the ``lut`` strategy looks up 64 bytes per vpermb
    # (4x this): not offered there, so a compile does not build and time a sure loser
    return target is not None and target.caps.has("avx2") and not target.caps.has("avx512vbmi", "avx512_vnni")


def supports(g) -> bool:
    return g.groups == 1


def plan(g: ConvGeom, pool=None) -> lut.LutPlan:
    """The AVX-512 lut plan (16-lane blocks of pooled columns, column phases), two 16-lane
    vectors per register, ``BLOCK_CHANNELS`` output channels per register block."""
    p = lut.lut_plan(g, pool)
    return dataclasses.replace(p, no=BLOCK_CHANNELS, nb=2)


def nibbles(g: ConvGeom) -> int:
    return (g.c_in + 3) // 4


def cost(g, target) -> float:
    """2 vpshufb per (pair of 16-pixel vectors, output channel, tap x nibble), at the
    target's shuffle rate (``peak_lut_int8_macs_per_cycle``: 128 MACs per 2 shuffles), plus
    the epilogue (~20 vector ops per channel and 16 pixels) and the tables (~12 per entry row)."""
    p = plan(g)
    rate = (target.figure("peak_lut_int8_macs_per_cycle") if target is not None else None) or 64
    vectors = g.n * g.ho * p.nkb * p.cop
    pairs = g.n * g.ho * (p.nkb + 1) // 2 * p.cop
    steps = g.kh * g.kw * nibbles(g)
    return pairs * steps * 128 / rate + vectors * 20 / 16 + steps * p.cop * 12


def weight_args(g, wq):
    # the AVX-512 lut layout: per tap and quad of 16 input channels, 16 weights per output
    # channel, channel 4j + k in byte 4j + k (nibble j's weights are dword j)
    return [pk.lut_weights(wq, plan(g))]


def build(g, out: str, target, pool=None, strict: bool = False):
    return bo.hand_written(lut_conv(g, out, pool))


def lut_conv(g: ConvGeom, out: str, pool=None):
    """Params as ``binary_ops.binary_conv`` with W int8 [kh*kw*nh, Cop, 16] (``weight_args``):
    out "pack": (X, W, sigma, t, Y uint32 [N, Ho', Wo', Wo32]) (Ho', Wo' pooled when pool);
    out "float": (X, W, scale float32 [Co], Y float32 [N, Co, Ho, Wo])."""
    if g.groups != 1:
        raise ValueError("the AVX2 LUT strategy needs groups == 1")
    if out == "float" and pool is not None:
        raise ValueError("a pooled LUT conv has a packed output")
    p = plan(g, pool)
    pk_, ps, pp, pho, pwo = bo.pooled_output(g, pool)
    N, H, Wd, Co, kh, kw = g.n, g.h, g.w, g.c_out, g.kh, g.kw
    sh, sw = g.stride
    dh, dw = g.dilation
    pt, pl = g.pad[0], g.pad[1]
    ho, wo, wout = g.ho, g.wo, pk.n_words(Co)
    nh, cop, no = p.nh, p.cop, p.no
    lanes = lane_plan(g)
    nkb, rowpair, npair, du, nog = lanes.nkb, lanes.rowpair, lanes.npair, lanes.du, lanes.groups
    big_p = sw  # column phases of the conv stride: a 16-column vector of any tap is contiguous
    kn = nkb * 16 + (kw - 1) * dw // big_p + 1
    nq = nibbles(g)
    nsteps = kh * kw * nq
    ntaps = kh * kw
    # byte chunks: tb whole taps (nq <= 8) or qb nibbles of one tap; int16 chunks: cpw of them
    qb = min(nq, BYTE_STEPS)
    nqb = (nq + qb - 1) // qb
    tb = max(1, BYTE_STEPS // nq)
    nbc = (ntaps + tb - 1) // tb * nqb
    cpw = STEPS_PER_WIDEN // BYTE_STEPS
    n16 = (nbc + cpw - 1) // cpw
    nr, nc = pk_[0], pk_[1]
    pw16 = (pwo + 15) // 16 * 16
    rows_a = (ho - 1) * sh + (kh - 1) * dh + 1  # input rows vector A reads, from row -pt
    # conv results per output-channel block, columns split by the pool's column phase
    # (column ow + pp1 at phase (ow + pp1) % ps1, index (ow + pp1) // ps1), so the epilogue
    # reads each window column of 16 pooled columns as one contiguous vector
    ps1, pp1 = ps[1], pp[1]
    jx = max((nkb * 16 + pp1 + ps1 - 1) // ps1, pw16 + (nc - 1) // ps1 + 1)
    lo, hi = -(2 ** 31), 2 ** 31 - 1
    pack = out == "pack"
    ws = (kh * kw * nh, cop, pk.LUT_QUAD)
    y_shape = (N, pho, pwo, wout) if pack else (N, Co, ho, wo)
    y_dtype = "uint32" if pack else "float32"

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((N, H, Wd, g.words_in), "uint32"), Wt: T.Buffer(ws, "int8"),
               E0: T.Buffer((Co,), "int32" if pack else "float32"), E1: T.Buffer((Co,), "int32"),
               Y: T.Buffer(y_shape, y_dtype)):
        T.func_attr({"tirx.noalias": True})
        TAB = T.alloc_buffer((2, nsteps, no, 32), "int8")
        NIB = T.alloc_buffer((rows_a + du, nq, big_p, kn), "uint16")
        IX = T.alloc_buffer((rows_a, nq, kw, npair, 16), "uint16")
        ACC = T.alloc_buffer((no, ho, ps1, jx), "int32")
        a8 = T.alloc_buffer((2 * no * 32,), "uint8", scope="local")    # byte sums: LO planes, then HI
        a16 = T.alloc_buffer((2 * no * 16,), "int16", scope="local")  # pixel vectors A, B per channel
        a32 = T.alloc_buffer((2 * no * 16,), "int32", scope="local")
        mx = T.alloc_buffer((pw16,), "int32", scope="local")
        mn = T.alloc_buffer((pw16,), "int32", scope="local")
        yw = T.alloc_buffer((pw16,), "uint32", scope="local")
        for n in range(N):
            # the nibbles of every input row the map reads (0 outside the map): row u is input
            # row u - pt, columns by phase of the conv stride; built once per image
            for u in range(rows_a + du):
                for q in range(nq):
                    for ph in range(big_p):
                        for kk in T.vectorized(kn):
                            NIB[u, q, ph, kk] = _nibble(X, n, u - pt, kk * big_p + ph - pl, q, H, Wd)
            # the index registers of every (input row, nibble, kernel column, pair): A's 16
            # nibbles in the low bytes, B's in the high bytes (B: the next 16 columns of the
            # row, or with a row of at most 16 columns the same columns of the next output row)
            for u in range(rows_a):
                for q in range(nq):
                    for s in range(kw):
                        for vp in range(npair):
                            IX[u, q, s, vp, T.ramp(0, 1, 16)] = T.bitwise_or(
                                _nib_vector(NIB, u, q, s * dw, lanes.vector_a(vp), big_p),
                                T.shift_left(_nib_vector(NIB, u + du, q, s * dw, lanes.vector_b(vp), big_p),
                                             T.broadcast(T.uint16(8), 16)))
            # one block of `no` output channels at a time over the whole map, so its tables
            # (2 x 32 bytes per step and channel) stay in L1 while the map is swept
            for oc in range(cop // no):
                # entry e of step (tap, nibble q) for channel o is S, the sum of the weights of
                # the bits set in e, as LO = S & 31 and HI = S >> 5, in both 128-bit lanes
                for st in range(nsteps):
                    for o in range(no):
                        sums = _nibble_sums(Wt, (st // nq) * nh + st % nq // 4, oc * no + o, st % nq % 4)
                        for half in T.unroll(2):
                            TAB[0, st, o, T.ramp(16 * half, 1, 16)] = T.Cast("int8x16", T.bitwise_and(sums, T.broadcast(T.int16(31), 16)))
                            TAB[1, st, o, T.ramp(16 * half, 1, 16)] = T.Cast("int8x16", T.shift_right(sums, T.broadcast(T.int16(5), 16)))
                for og in range(nog):
                    for vp in range(npair):
                        for i in T.vectorized(2 * no * 16):
                            a32[i] = 0
                        for c16 in range(n16):
                            for i in T.vectorized(2 * no * 16):
                                a16[i] = T.int16(0)
                            for c8 in range(T.min(cpw, nbc - c16 * cpw)):
                                for i in T.vectorized(2 * no * 32):
                                    a8[i] = T.uint8(0)
                                for tt in range(T.min(tb, ntaps - (c16 * cpw + c8) // nqb * tb)):
                                    for q in range((c16 * cpw + c8) % nqb * qb, T.min((c16 * cpw + c8) % nqb * qb + qb, nq)):
                                        for o in T.unroll(no):
                                            for plane in T.unroll(2):
                                                a8[T.ramp((plane * no + o) * 32, 1, 32)] = a8.vload(
                                                    [(plane * no + o) * 32], "uint8x32") + _lookup8(TAB.vload(
                                                        [plane, ((c16 * cpw + c8) // nqb * tb + tt) * nq + q, o, 0],
                                                        "int8x32"), IX.vload(
                                                        [lanes.row(og) * sh + ((c16 * cpw + c8) // nqb * tb + tt) // kw * dh, q,
                                                         ((c16 * cpw + c8) // nqb * tb + tt) % kw, vp, 0], "uint16x16"))
                                # bytes -> int16: A's sums in the low bytes, B's in the high bytes,
                                # S = LO + 32 HI (LO unsigned, HI signed)
                                for o in T.unroll(no):
                                    a16[T.ramp(o * 16, 1, 16)] = a16.vload([o * 16], "int16x16") + _widen(
                                        a8.vload([o * 32], "uint8x32"), a8.vload([(no + o) * 32], "uint8x32"), 0)
                                    a16[T.ramp((no + o) * 16, 1, 16)] = a16.vload([(no + o) * 16], "int16x16") + _widen(
                                        a8.vload([o * 32], "uint8x32"), a8.vload([(no + o) * 32], "uint8x32"), 1)
                            for i in T.vectorized(2 * no * 16):
                                a32[i] = a32[i] + T.Cast("int32", a16[i])
                        # A's and B's conv results into ACC (B only where it exists)
                        for ab in T.unroll(2):
                            if lanes.stored(og, vp, ab, ho):
                                for o in T.unroll(no):
                                    if ps1 == 1:
                                        ACC[o, lanes.row(og) + ab * lanes.b_row_step, 0,
                                            T.ramp(lanes.vector(vp, ab) * 16 + pp1, 1, 16)] = a32.vload([(ab * no + o) * 16], "int32x16")
                                    else:
                                        for l in T.unroll(16):
                                            ACC[o, lanes.row(og) + ab * lanes.b_row_step, (lanes.vector(vp, ab) * 16 + l + pp1) % ps1,
                                                (lanes.vector(vp, ab) * 16 + l + pp1) // ps1] = a32[(ab * no + o) * 16 + l]
                for py in range(pho):
                    if pack:
                        for k in T.vectorized(pw16):
                            yw[k] = T.uint32(0)
                        for o in range(no):
                            oi = T.min(oc * no + o, Co - 1)
                            for k in T.vectorized(pw16):
                                mx[k] = lo
                                mn[k] = hi
                            for rr in T.unroll(nr):
                                for ss in T.unroll(nc):
                                    for k in T.vectorized(pw16):
                                        # (rr, ss) of pooled column k's window inside the conv output
                                        mx[k] = T.Select(_in_map(py * ps[0] + rr - pp[0], k * ps1 + ss - pp1, ho, wo),
                                                         T.max(mx[k], ACC[o, T.max(T.min(py * ps[0] + rr - pp[0], ho - 1), 0),
                                                                          ss % ps1, k + ss // ps1]), mx[k])
                                        mn[k] = T.Select(_in_map(py * ps[0] + rr - pp[0], k * ps1 + ss - pp1, ho, wo),
                                                         T.min(mn[k], ACC[o, T.max(T.min(py * ps[0] + rr - pp[0], ho - 1), 0),
                                                                          ss % ps1, k + ss // ps1]), mn[k])
                            for k in T.vectorized(pw16):
                                yw[k] = T.bitwise_or(yw[k], T.Select(
                                    oc * no + o < Co and E0[oi] * T.Select(E0[oi] >= 0, mx[k], mn[k]) >= E1[oi],
                                    T.shift_left(T.uint32(1), T.Cast("uint32", (oc * no + o) % WORD)), T.uint32(0)))
                        # the first block of a word writes it, the others add their bits
                        for k in range(pwo):
                            Y[n, py, k, oc * no // WORD] = T.bitwise_or(
                                T.Select(oc * no % WORD == 0, T.uint32(0), Y[n, py, k, oc * no // WORD]), yw[k])
                    else:
                        for o in range(no):
                            if oc * no + o < Co:
                                for x in T.vectorized(wo):
                                    Y[n, T.min(oc * no + o, Co - 1), py, x] = T.Cast("float32", ACC[o, py, 0, x]) * E0[T.min(oc * no + o, Co - 1)]

    if not pack:  # float epilogue: (X, W, scale, Y) -- E1 is not a parameter
        kernel = drop_param(kernel, 3)
    return kernel


@dataclasses.dataclass(frozen=True)
class LanePlan:
    """Which conv output pixels share an index register: 16 output columns per vector
    (nkb vectors per row); two vectors of one row (A = 2vp, B = 2vp + 1, or A again when
    none), or, when a row has one vector (at most 16 columns), the same vector of two
    output rows (A: row 2 og, B: row 2 og + 1), so no byte lane idles on narrow maps."""
    nkb: int      # 16-column vectors per output row
    rowpair: bool  # A and B on consecutive output rows
    npair: int    # registers per row group
    du: int       # B's input rows below A's (the conv stride when rowpair)
    groups: int   # row groups (output rows, or pairs of them)
    b_row_step: int  # B's output row after A's (1 when rowpair, else 0)

    def row(self, og):
        return og * 2 if self.rowpair else og

    def vector_a(self, vp):
        return 0 if self.rowpair else 2 * vp

    def vector_b(self, vp):
        return 0 if self.rowpair else T.min(2 * vp + 1, self.nkb - 1)

    def vector(self, vp, ab):
        """vector_a (ab 0) or vector_b (ab 1), ab a loop variable"""
        return 0 if self.rowpair else T.min(2 * vp + ab, self.nkb - 1)

    def stored(self, og, vp, ab, ho):
        """A's results always exist; B's unless its row or vector is past the map"""
        return tirx.Or(ab == 0, og * 2 + 1 < ho if self.rowpair else 2 * vp + 1 < self.nkb)


def lane_plan(g: ConvGeom) -> LanePlan:
    nkb = (g.wo + 15) // 16
    if nkb == 1:
        return LanePlan(1, True, 1, g.stride[0], (g.ho + 1) // 2, 1)
    return LanePlan(nkb, False, (nkb + 1) // 2, 0, g.ho, 0)


def _in_map(y, x, h, w):
    return tirx.all(y >= 0, y < h, x >= 0, x < w)


def _nibble(X, n, ih, iw, q, H, Wd):
    """uint16: input channels 4q..4q+3 of pixel (ih, iw) as a nibble (0 outside the map)."""
    return T.Cast("uint16", T.Select(
        _in_map(ih, iw, H, Wd),
        T.bitwise_and(T.shift_right(X[n, T.max(T.min(ih, H - 1), 0), T.max(T.min(iw, Wd - 1), 0), q // 8],
                                    T.Cast("uint32", 4 * (q % 8))), T.uint32(15)),
        T.uint32(0)))


def _nibble_sums(Wt, quad, o, j):
    """int16x16: lane e = sum of the weights Wt[quad, o, 4j + k] for the bits k set in e."""
    lane = T.ramp(T.int16(0), T.int16(1), 16)
    total = T.broadcast(T.int16(0), 16)
    for k in range(4):
        total = total + T.Select(T.bitwise_and(T.shift_right(lane, T.broadcast(T.int16(k), 16)), T.broadcast(T.int16(1), 16))
                                 == T.broadcast(T.int16(1), 16),
                                 T.broadcast(T.Cast("int16", Wt[quad, o, 4 * j + k]), 16), T.broadcast(T.int16(0), 16))
    return total


def _nib_vector(NIB, row, q, c0, v, big_p):
    """uint16x16: nibble q of the 16 pixels of input row `row` at column offset c0 (the
    kernel column's s * dw) for the output columns of vector v (16 v .. 16 v + 15)."""
    return NIB.vload([row, q, c0 % big_p, v * 16 + c0 // big_p], "uint16x16")


def _lookup8(table, index):
    """uint8x32: vpshufb of the 32-byte table by the 32 index bytes (nibbles)."""
    return T.reinterpret(T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pshuf.b"), table,
                                                 T.reinterpret(index, dtype="int8x32"), dtype="int8x32"),
                         dtype="uint8x32")


def _widen(lo8, hi8, half):
    """int16x16: LO + 32 HI of the byte sums of vector A (half 0: the low byte of each
    int16 lane) or B (half 1: the high byte); LO is unsigned, HI signed."""
    lo16 = T.reinterpret(lo8, dtype="uint16x16")
    hi16 = T.reinterpret(hi8, dtype="uint16x16")
    if half == 0:
        lo16 = T.bitwise_and(lo16, T.broadcast(T.uint16(0xFF), 16))
        hi16 = T.shift_left(hi16, T.broadcast(T.uint16(8), 16))
    else:
        lo16 = T.shift_right(lo16, T.broadcast(T.uint16(8), 16))
        hi16 = T.bitwise_and(hi16, T.broadcast(T.uint16(0xFF00), 16))
    # HI in the high byte, as int16, is HI * 256: an arithmetic shift by 3 makes it HI * 32
    return T.reinterpret(lo16, dtype="int16x16") + T.shift_right(T.reinterpret(hi16, dtype="int16x16"),
                                                                 T.broadcast(T.int16(3), 16))
