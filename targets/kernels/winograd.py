"""Winograd F(2x2, 3x3) convolution for float 3x3 / stride-1 / pad-1 layers on SIMD CPUs.

A direct 3x3 conv is FMA-bound (DNSMOS conv2 runs at ~100 GFLOP/s, the FMA ports' limit on
the AVX-512 host), so only fewer multiplications make it faster: per 2x2 output tile,
Winograd needs 16 products per (input, output) channel pair instead of 36 (2.25x fewer).

Stages, all per block of XB tiles of one tile row (their working set stays in L1):
  Xp  zero-padded input rows the block reads (4 rows per tile row)
  V   input transform  V[e, c, ty, tx] = (B^T d B)[e]        (adds only, 4x4 patch d)
  M   16 GEMMs          M[e, ty, tx, k] = sum_c V[e, c, ty, tx] * U[e, c, k]
  Y   output transform  (A^T M A) + bias, ReLU, and when the layer is followed by a 2x2 /
      stride-2 max pool, the max over the tile (a tile *is* a pool window)
U = G g G^T is computed once at compile time from the constant weights ([16, C, K]; 16/9
of the weight bytes). Float error vs the direct conv is a few ulps of the sum (tested).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tvm import te, tirx

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


@dataclasses.dataclass(frozen=True)
class WinogradConv:
    c_in: int
    c_out: int
    h: int  # input = conv output size (pad 1, stride 1)
    w: int
    pool: bool  # fused 2x2 / stride-2 max pool (floor mode)
    relu: bool

    @property
    def tiles(self) -> tuple[int, int]:
        if self.pool:
            return self.h // 2, self.w // 2
        return (self.h + 1) // 2, (self.w + 1) // 2

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        th, tw = self.tiles
        return (1, self.c_out, th, tw) if self.pool else (1, self.c_out, self.h, self.w)


def transform_weights(w: np.ndarray) -> np.ndarray:
    """U[e, c, k] = (G g G^T)[e // 4, e % 4] for OIHW weights g (float64, then float32)."""
    u = np.einsum("ai,kcij,bj->abck", _G, np.asarray(w, np.float64), _G)
    return np.ascontiguousarray(u.reshape(16, w.shape[1], w.shape[0])).astype(np.float32)


def _input_transform(d):
    """B^T d B for a 4x4 patch (list of lists of expressions), as 16 expressions."""
    r = [[None] * 4 for _ in range(4)]
    for j in range(4):
        r[0][j] = d[0][j] - d[2][j]
        r[1][j] = d[1][j] + d[2][j]
        r[2][j] = d[2][j] - d[1][j]
        r[3][j] = d[1][j] - d[3][j]
    out = []
    for a in range(4):
        out += [r[a][0] - r[a][2], r[a][1] + r[a][2], r[a][2] - r[a][1], r[a][1] - r[a][3]]
    return out


def _output_transform(m):
    """A^T m A for a 4x4 tile of products: the 2x2 outputs [y00, y01, y10, y11]."""
    s = [[m[0][j] + m[1][j] + m[2][j] for j in range(4)], [m[1][j] - m[2][j] - m[3][j] for j in range(4)]]
    out = []
    for a in range(2):
        out += [s[a][0] + s[a][1] + s[a][2], s[a][1] - s[a][2] - s[a][3]]
    return out


def _select(e, values):
    """values[e] for a loop variable e (the schedule unrolls e, so this folds away)."""
    out = values[-1]
    for i in range(len(values) - 2, -1, -1):
        out = tirx.Select(e == i, values[i], out)
    return out


def winograd_conv(g: WinogradConv):
    """PrimFunc (X float32 [1, C, H, W], U float32 [16, C, K], B float32 [K], Y)."""
    C, K, H, W = g.c_in, g.c_out, g.h, g.w
    th, tw = g.tiles
    X = te.placeholder((1, C, H, W), "float32", name="X")
    U = te.placeholder((16, C, K), "float32", name="U")
    B = te.placeholder((K,), "float32", name="B")
    zero = tirx.const(0.0, "float32")

    def pad(c, y, x):
        # A guarded load (if_then_else evaluates only the taken branch), not Select(in bounds,
        # X[clamped], 0): Select evaluates both operands, and the simplifier, knowing the
        # condition holds in the true operand, drops the clamp, so the vectorized row read
        # X[y - 1, -1 .. W] in full (rows -1 and H too) and masked it afterwards: a read
        # outside X that faulted whenever X ended or began at an unmapped page.
        yy, xx = y - 1, x - 1
        return tirx.if_then_else(tirx.all(yy >= 0, yy < H, xx >= 0, xx < W), X[0, c, yy, xx], zero)

    xp = te.compute((C, 2 * th + 2, 2 * tw + 2), pad, name="Xp")

    def v_(e, c, ty, tx):
        d = [[xp[c, 2 * ty + i, 2 * tx + j] for j in range(4)] for i in range(4)]
        return _select(e, _input_transform(d))

    V = te.compute((16, C, th, tw), v_, name="V")
    rc = te.reduce_axis((0, C), "rc")
    M = te.compute((16, th, tw, K), lambda e, ty, tx, k: te.sum(V[e, rc, ty, tx] * U[e, rc, k], axis=[rc]),
                   name="M")

    def tile_outputs(ty, tx, k):
        m = [[M[4 * i + j, ty, tx, k] for j in range(4)] for i in range(4)]
        return _output_transform(m)

    def act(v, k):
        v = v + B[k]
        return tirx.max(v, zero) if g.relu else v

    if g.pool:
        def y_(n, k, ty, tx):
            y = tile_outputs(ty, tx, k)
            # bias and ReLU are monotonic per channel: max first, then the epilogue once
            return act(tirx.max(tirx.max(y[0], y[1]), tirx.max(y[2], y[3])), k)
    else:
        def y_(n, k, y, x):
            vals = tile_outputs(y // 2, x // 2, k)
            return act(_select((y % 2) * 2 + x % 2, vals), k)

    Y = te.compute(g.out_shape, y_, name="Y")
    return te.create_prim_func([X, U, B, Y])


def _tiles_per_block(tw: int, vectors: int, registers: int) -> int:
    """Tiles per block: the accumulators (tiles x vectors) fit the register file with a
    few to spare, at most 6 (measured on conv2 of DNSMOS: 3-6 equal, 8+ slower)."""
    cap = max(1, min(6, (registers - 4) // max(vectors, 1)))
    return max(d for d in range(1, min(cap, tw) + 1) if tw % d == 0)


def schedule(func, g: WinogradConv, lanes: int, registers: int):
    from tvm import s_tir

    K = g.c_out
    th, tw = g.tiles
    vec_block = max(1, min(K // lanes, 4))  # output-channel vectors per register tile
    xb = _tiles_per_block(tw, vec_block, registers)
    sch = s_tir.Schedule(func)
    y, m, v, xp = (sch.get_sblock(n) for n in ("Y", "M", "V", "Xp"))
    n, k, yy, xx = sch.get_loops(y)
    if g.pool:
        ty, tx = yy, xx
        txo, txi = sch.split(tx, [None, xb])
        sch.reorder(n, ty, txo, txi, k)
        _, ki = sch.split(k, [None, lanes])
        sch.vectorize(ki)
    else:
        ty, yi = sch.split(yy, [None, 2])
        tx, xi = sch.split(xx, [None, 2])
        txo, txi = sch.split(tx, [None, xb])
        sch.reorder(n, ty, txo, k, yi, txi, xi)
        sch.unroll(yi)
        sch.unroll(xi)
    # Keep unit loops, so that M and V get one loop per axis whatever the extents: with one
    # tile per block (xb == 1, e.g. AVX2's 16 registers and a prime tile count) compute_at
    # dropped the tile loop, and loops picked by position reached past the block into txo
    # ("loops are not in a chain" in reorder). The one-row ty axis is a unit loop then too.
    sch.compute_at(m, txo, preserve_unit_loops=True)
    e, _, mtx, mk, mc = sch.get_loops(m)[-5:]  # e, ty (one row), tx, k, rc
    mko, mkv, mki = sch.split(mk, [None, vec_block, lanes])
    sch.reorder(e, mko, mc, mtx, mkv, mki)
    sch.vectorize(mki)
    sch.unroll(mkv)
    sch.unroll(mtx)
    sch.decompose_reduction(m, mc)
    sch.compute_at(v, txo, preserve_unit_loops=True)
    ve, vc, _, vtx = sch.get_loops(v)[-4:]  # e, c, ty (one row), tx
    sch.reorder(vc, ve, vtx)
    sch.unroll(ve)
    sch.vectorize(vtx)
    sch.compute_at(xp, ty, preserve_unit_loops=True)
    # Xp's columns: the left zero column, the W columns copied from X (a contiguous vector
    # read, its column guard provably true there and simplified away; the row guard is one
    # branch per row), and the zero columns on the right. Vectorizing the whole row instead
    # would vectorize the guard per lane, which TVM scalarizes (safe, but a load per element).
    cols = 2 * tw + 2
    parts = sch.loop_partition(sch.get_loops(xp)[-1], [1, g.w, None] if cols > g.w + 1 else [1, None])
    sch.vectorize(parts[1])
    return sch.mod["main"]
