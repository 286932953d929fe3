"""The NEON int8 first-layer kernels' fused QuantizeLinear (x / scale by a reciprocal and an
fma, targets/kernels/quantize_reciprocal.py) on the emulated Raspberry Pi, bit-exact against
numpy's float32 division: every float32 within 12 ulps of each code boundary (both signs,
ties included), saturation and infinities, for an int8 and a uint8 (zero point 120) input.

A 1x1 conv with identity weights on 4 channels makes the kernel's output q - zp itself; the
kernel is built for its Pi, written to disk and run in a fresh guest process under
``qemu-aarch64 -cpu`` that core (tests/emulated/test_neon_kernels.py's board helper)."""
from __future__ import annotations

import numpy as np
import pytest

from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import int8_conv as ic
from tests.emulated.test_neon_kernels import INT8_STRATEGIES, _on_board
from tests.kernels.test_neon_quantize import _boundary_neighbours

SCALE = 0.0371


def _case(q_dtype: str, zp: int):
    lo, hi = (-128, 127) if q_dtype == "int8" else (0, 255)
    x = _boundary_neighbours(np.float32(SCALE), lo - zp, hi - zp, 12)
    x = np.concatenate([x, np.array([0.0, -0.0, 1e30, -1e30, np.inf, -np.inf, 3e-39, -3e-39], np.float32)])
    x = np.pad(x, (0, (-len(x)) % 4))
    pixels = len(x) // 4
    g = ic.Int8ConvGeom(bo.ConvGeom(1, 4, 1, pixels, 16, 1, 1, (1, 1), (0, 0, 0, 0)), (1, 4, 1, pixels), None,
                        "float32", q_dtype, SCALE, zp, False)
    wq = np.zeros((16, 4, 1, 1), np.int8)
    wq[np.arange(4), np.arange(4)] = 1
    src = x.reshape(1, 4, 1, pixels)
    want = ic.ref_quantize(src, SCALE, zp, q_dtype).astype(np.int64) - zp
    return g, wq, src, want


@pytest.mark.slow  # a guest process on the emulated board (~20 s)
@pytest.mark.parametrize("name", sorted(INT8_STRATEGIES))
def test_fused_quantize_matches_the_division_on_the_pi(name):
    from nrqc.targets.kernels import strategies

    s = strategies.int8_input_lookup(name)
    target = get_target(INT8_STRATEGIES[name])
    kernels, wants = [], []
    for q_dtype, zp in (("int8", 0), ("uint8", 120)):
        g, wq, src, want = _case(q_dtype, zp)
        kernels.append((s.build(g, "float", target, strict=True),
                        [src, *s.weight_args(g, wq), np.ones(16, np.float32)], (1, 16, 1, g.conv.wo), np.float32))
        wants.append(want)
    for y, want in zip(_on_board(target, kernels, f"nrqc-quant-{name}-"), wants):
        np.testing.assert_array_equal(y[:, :4].astype(np.int64), want)
        assert not y[:, 4:].any()
