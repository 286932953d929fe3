"""ONNX QuantizeLinear's ``x / scale`` without a divide, bit-exact, for one known scale.

A vector divide is the slowest instruction a kernel's load can hold (llvm-mca -mcpu=cortex-a72:
``fdiv v.4s`` 34 cycles each; on the zoo VAD BAM's first conv the 100 x 80 input quantized
in the kernel was 69,800 of its 190,454 estimated cycles). With r = RN(1/s) (float32):

    y = RN(x * r)            within ~1 ulp of x / s
    e = fma(-y, s, x)        the exact residual x - y*s (one rounding, exact here)
    q = fma(e, r, y)         one Newton step: RN(x / s) (Markstein's correction)

so q equals the division's float32 result, and its round-half-even integer (all that
QuantizeLinear keeps) equals the division's. That integer can only depend on q's last
bits where x / s lies within a few ulps of a half-integer k + 0.5: `exact_for(scale, lo,
hi)` checks every float32 x within WINDOW ulps of each such boundary in the range the
clamp keeps (exact rational arithmetic, the fma's single rounding emulated exactly), so a
scale is used only when the three steps give the division's integer there, and elsewhere
q is within ~1 ulp of x / s, too far from a half-integer to round differently. x is first
clamped to the codes' range [lo * s, hi * s] (`rounded`), where both forms saturate: x * r
cannot overflow (an infinite y would make e and q NaN, where the division gives +-inf), and
the code needs no clamp after the rounding (each of the 4 clamps costs a Q-form FP op).
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from tvm import tirx
from tvm.tirx.op import fma

WINDOW = 16  # float32 neighbours checked on each side of a half-integer boundary's x


def _round32_exact(v: Fraction) -> np.float32:
    """An exact rational rounded once to float32 (to nearest, ties to an even significand)."""
    f = np.float32(float(v))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    return min(cands, key=lambda c: (abs(Fraction(float(c)) - v), int(np.float32(c).view(np.uint32)) & 1))


def quotient(x: np.ndarray, s: np.float32, r: np.float32) -> np.ndarray:
    """The three steps on float32 values (numpy model of the kernel's arithmetic, each fma
    rounded once). In float64, y*s and e*r are exact (24 x 24 bits) and so is x - y*s (x and
    y*s agree to within 2 ulps: at most 49 significant bits), so e is one rounding; e*r + y
    may round in float64 first, which changes its float32 rounding only where the double
    lands on a float32 midpoint: those values are redone in exact rationals."""
    x = np.asarray(x, np.float32)
    y = (x * r).astype(np.float32)
    e = (x.astype(np.float64) - y.astype(np.float64) * np.float64(s)).astype(np.float32)
    t = e.astype(np.float64) * np.float64(r) + y.astype(np.float64)
    q = t.astype(np.float32)
    lo = np.where(q.astype(np.float64) > t, np.nextafter(q, np.float32(-np.inf)), q)
    hi = np.nextafter(lo, np.float32(np.inf))
    mid = (lo.astype(np.float64) + hi.astype(np.float64)) / 2 == t
    for i in np.flatnonzero(mid):
        q[i] = _round32_exact(Fraction(float(e[i])) * Fraction(float(r)) + Fraction(float(y[i])))
    return q


@functools.lru_cache(maxsize=64)
def exact_for(scale: float, lo: int, hi: int) -> bool:
    """Whether the reciprocal form rounds to the division's integer for every float32 x near
    the boundaries between the codes lo..hi (offsets from the zero point, before the clamp)."""
    s = np.float32(scale)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        r = np.float32(np.float32(1) / s)
        if not (np.isfinite(s) and s > 0 and np.isfinite(r) and np.isfinite(s * np.float32(max(abs(lo), abs(hi)) + 1) * 4)):
            return False
        centers = (np.arange(lo - 1, hi + 1, dtype=np.float64) + 0.5) * np.float64(s)
        u = centers.astype(np.float32).view(np.uint32).astype(np.int64)
        # float32 neighbours by bit pattern: sign | magnitude, the magnitude stepped (monotone
        # within a sign; no window reaches 0: its center is at least s / 2 from it)
        mag = (u & 0x7FFFFFFF)[:, None] + np.arange(-WINDOW, WINDOW + 1)[None, :]
        nb = ((u & 0x80000000)[:, None] | mag).astype(np.uint32).view(np.float32).ravel()
        ref = np.rint((nb / s).astype(np.float32))
        ends = np.array([lo * float(s), hi * float(s)], np.float32)  # `rounded`'s clamp: lo and hi exactly
        return bool(np.array_equal(ref, np.rint(quotient(nb, s, r)))
                    and np.array_equal(np.rint(quotient(ends, s, r)), [lo, hi]))


def rounded(v, scale: float, lo: int, hi: int):
    """round_half_even(v / scale) clamped to [lo, hi] as the kernel computes it with the
    reciprocal form (a tirx float32 expression), or None where `exact_for` does not hold.
    v is clamped to [lo * s, hi * s] first: those ends quotient to lo and hi (within an ulp
    of an integer), so the code needs no clamp after the rounding, and x * r cannot overflow."""
    s32 = np.float32(scale)
    if not exact_for(float(s32), lo, hi):
        return None
    s = tirx.const(s32, "float32")
    r = tirx.const(np.float32(np.float32(1) / s32), "float32")
    xc = tirx.max(tirx.min(v, tirx.const(np.float32(hi * float(s32)), "float32")),
                  tirx.const(np.float32(lo * float(s32)), "float32"))
    y = xc * r
    e = fma(-y, s, xc)
    return tirx.nearbyint(fma(e, r, y))
