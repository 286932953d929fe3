"""The reciprocal form of QuantizeLinear's x / scale (targets/kernels/quantize_reciprocal.py)
against numpy's float32 division, without a board: every float32 within a window of each
rounding boundary, for many scales; the check that admits a scale refuses the plain
multiply by the reciprocal. The kernels built with it run on the emulated Pi in
tests/emulated/test_neon_quantize.py."""
from __future__ import annotations

import numpy as np

from nrqc.targets.kernels import quantize_reciprocal as qr


def _boundary_neighbours(s: np.float32, lo: int, hi: int, n: int) -> np.ndarray:
    """float32 x within n ulps of (k + 0.5) * s for every code boundary lo-1..hi, both signs."""
    centers = ((np.arange(lo - 1, hi + 1) + 0.5) * float(s)).astype(np.float32)
    u = centers.view(np.uint32).astype(np.int64)
    mag = (u & 0x7FFFFFFF)[:, None] + np.arange(-n, n + 1)[None, :]  # sign | magnitude stepped
    return ((u & 0x80000000)[:, None] | mag).astype(np.uint32).view(np.float32).ravel()


def test_reciprocal_form_rounds_as_the_division_near_every_boundary():
    rng = np.random.default_rng(5)
    scales = np.concatenate([rng.uniform(1e-3, 3, 30), 2.0 ** rng.uniform(-20, 10, 10)]).astype(np.float32)
    for s in scales:
        assert qr.exact_for(float(s), -128, 127)
        r = np.float32(np.float32(1) / s)
        x = _boundary_neighbours(s, -128, 127, 40)  # wider than the admission check's window
        np.testing.assert_array_equal(np.rint(qr.quotient(x, s, r)), np.rint(x / s), err_msg=f"scale {s!r}")
        y = (rng.standard_normal(20000) * 60 * s).astype(np.float32)
        np.testing.assert_array_equal(np.rint(qr.quotient(y, s, r)), np.rint(y / s))


def test_admission_check_refuses_the_plain_reciprocal_multiply(monkeypatch):
    """With the fma correction taken away, the check finds a boundary where x * (1/s) rounds
    otherwise than x / s (it would for nearly every scale), so it does test something."""
    monkeypatch.setattr(qr, "quotient", lambda x, s, r: (np.asarray(x, np.float32) * r).astype(np.float32))
    qr.exact_for.cache_clear()
    try:
        scales = np.random.default_rng(6).uniform(1e-3, 3, 10).astype(np.float32)
        assert not any(qr.exact_for(float(s), -128, 127) for s in scales)
    finally:
        qr.exact_for.cache_clear()


def test_unusable_scales_keep_the_division():
    assert not qr.exact_for(0.0, -128, 127)
    assert not qr.exact_for(float("inf"), -128, 127)
    assert not qr.exact_for(1e38, -128, 127)  # the clamp's ends (x 4) would overflow
