"""What the register-blocked +-1 x +-1 popcount convs share (``strategies/avx2_xnor.py`` on
x86, ``strategies/neon_popcount.py`` on aarch64): the weight layout with the output
channels contiguous, the loop plan (channel blocks of vectors, byte-count chunks of at most
``steps_per_widen`` steps, the fused pool's window), and the per-pixel TIR pieces around the
ISA-specific inner loop (extremes reset, in-bounds tap count, threshold + pack or float
scale). The inner loop (which popcount, which widening) stays with each strategy.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.binary_ops import WORD, ConvGeom
from nrqc.targets.kernels.strategies.avx2_lut import _in_map

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def padded_channels(g: ConvGeom, lanes: int) -> int:
    """The output channels rounded up to whole vectors of `lanes`."""
    return (g.c_out + lanes - 1) // lanes * lanes


def channels_last(a, c: int):
    """[Co, kh, kw, Wi] -> [kh, kw, Wi, c] uint32, the padded channels all zero."""
    full = np.zeros((c, *a.shape[1:]), np.uint32)
    full[:a.shape[0]] = a
    return np.ascontiguousarray(np.transpose(full, (1, 2, 3, 0)))


def xnor_weights(g: ConvGeom, wq, c: int):
    """The XNOR kernels' weights: ~Wp [kh, kw, Wi, c], the group mask M [Wi, c] and
    popcount(M) per channel (int32 [c]), from the +-1 weights."""
    wp, m = pk.binary_weights(wq, g.groups)  # [Co, kh, kw, Wi], [Co, Wi]
    mk = np.zeros((c, g.words_in), np.uint32)
    mk[:g.c_out] = m
    popm = np.array([sum(bin(int(v)).count("1") for v in row) for row in mk], np.int32)
    return [channels_last(~wp, c), np.ascontiguousarray(mk.T), popm]


class Plan(NamedTuple):
    """The loop plan of a register-blocked popcount conv (the names its kernels use)."""
    N: int
    H: int
    Wd: int
    Wi: int
    Co: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    ho: int
    wo: int
    wout: int
    cp: int  # channels padded to whole vectors
    nob: int  # vectors per channel block
    nblk: int  # channel blocks
    cpb: int  # channels padded to whole blocks (the loads clamp to cp)
    nsteps: int  # (tap, input word) steps
    chunk: int  # steps per byte-count chunk
    nchunk: int
    nr: int  # the fused pool's window
    nc: int
    ps: tuple
    pp: tuple
    pho: int  # output rows/columns (pooled when a pool is fused)
    pwo: int
    pack: bool
    y_shape: tuple
    y_dtype: str


def plan(g: ConvGeom, out: str, pool, lanes: int, block: int, steps_per_widen: int) -> Plan:
    pk_, ps, pp, pho, pwo = bo.pooled_output(g, pool)
    cp = padded_channels(g, lanes)
    nob = min(block, cp // lanes)
    nblk = (cp // lanes + nob - 1) // nob
    nsteps = g.kh * g.kw * g.words_in
    chunk = min(steps_per_widen, nsteps)
    wout = pk.n_words(g.c_out)
    pack = out == "pack"
    return Plan(g.n, g.h, g.w, g.words_in, g.c_out, g.kh, g.kw, *g.stride, *g.dilation, g.pad[0], g.pad[1],
                g.ho, g.wo, wout, cp, nob, nblk, nblk * nob * lanes, nsteps, chunk, (nsteps + chunk - 1) // chunk,
                pk_[0], pk_[1], ps, pp, pho, pwo, pack,
                (g.n, pho, pwo, wout) if pack else (g.n, g.c_out, g.ho, g.wo), "uint32" if pack else "float32")


def inside(oh, ow, r, s, sh, sw, dh, dw, pt, pl, H, Wd):
    """Whether tap (r, s) of output pixel (oh, ow) reads the map (not its zero padding)."""
    return _in_map(oh * sh + r * dh - pt, ow * sw + s * dw - pl, H, Wd)


@T.macro
def reset_extremes(mx, mn, cpb):
    for i in T.vectorized(cpb):
        mx[i] = INT32_MIN
        mn[i] = INT32_MAX


@T.macro
def count_taps_inside(nin, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, H, Wd):
    # taps inside the map (each subtracts popcount(M) once)
    for tp in range(kh * kw):
        if inside(oh, ow, tp // kw, tp % kw, sh, sw, dh, dw, pt, pl, H, Wd):
            nin[0] = nin[0] + 1


@T.macro
def write_pixel(Y, E0, E1, mx, mn, n, py, px, Co, wout, pack):
    # pack: bit = sigma * acc >= t, acc the window's max (sigma >= 0) or min; else float scale
    if pack:
        for wd in range(wout):
            Y[n, py, px, wd] = T.uint32(0)
            for j in range(T.min(WORD, Co - wd * WORD)):
                Y[n, py, px, wd] = T.bitwise_or(Y[n, py, px, wd], T.Select(
                    E0[wd * WORD + j] * T.Select(E0[wd * WORD + j] >= 0, mx[wd * WORD + j], mn[wd * WORD + j])
                    >= E1[wd * WORD + j], T.shift_left(T.uint32(1), T.Cast("uint32", j)), T.uint32(0)))
    else:
        for o in range(Co):
            Y[n, o, py, px] = T.Cast("float32", mx[o]) * E0[o]
