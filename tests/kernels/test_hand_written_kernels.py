"""The hand-written TIR binary x int8 convs, bit-exact against numpy: AMX (tdpbusd tiles)
and LUT (vpermb table lookups + vpdpbusd), on the geometries their plans branch on
(AMX: adjacent taps merged into one 64-byte row or not, channel chunks above 64, 1 or 2
pixel tiles and 1-3 channel tiles per step; LUT: 1 or 2 pixel vectors per register block,
channels not a multiple of 16, column phases from stride x pool stride, pool padding;
both: output widths that are not a multiple of 16), with the OR-pool fused or not,
packed or float output. Each runs where its instructions exist."""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from nrqc.targets import get_target
from nrqc.targets.kernels import amx, lut
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import build as kbuild
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels import strategies

TARGET = get_target("x86")
STRATEGIES = ["amx", "lut"]


def _offered(strategy):
    if strategy == "amx" and not strategies.amx.available(TARGET):
        pytest.skip("this host has no usable AMX (amx_int8 + OS permission)")
    if strategy == "lut" and not strategies.lut.available(TARGET):
        pytest.skip("this host has no AVX-512 VBMI + VNNI (vpermb, vpdpbusd)")

GEOMS = [
    # n, c_in, h, w, c_out, kh, kw, stride, pad(t,l,b,r), dilation
    bo.ConvGeom(1, 32, 12, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),    # 2 taps per row, 2x2 tiles
    bo.ConvGeom(1, 32, 9, 8, 64, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # Wo 8 < 16 (ACC rows unread)
    bo.ConvGeom(1, 16, 7, 21, 48, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # 4 taps per row, 3 N tiles
    bo.ConvGeom(2, 100, 6, 9, 20, 3, 2, (2, 2), (1, 0, 1, 1), (1, 1)),     # 2 channel chunks, stride 2
    bo.ConvGeom(1, 37, 8, 18, 35, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),     # dilation: no merge
    bo.ConvGeom(1, 64, 5, 40, 17, 1, 5, (1, 1), (0, 2, 0, 2), (1, 1)),     # Conv1d-like 1x5, 64 ch
    bo.ConvGeom(1, 5, 4, 37, 3, 3, 3, (1, 3), (1, 2, 1, 0), (1, 1)),       # 5 ch in, 3 out, stride 3
]
POOLS = [None, ((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1)), ((1, 2), (1, 2), (0, 0, 0, 1))]


def _case(g, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (g.c_out, g.c_in, g.kh, g.kw)).astype(np.int8)
    w[0, 0, 0, 0] = -128
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    # thresholds at random quantiles of each channel's own accumulators: every map (even
    # OR-pooled over 3x3 windows of a small fan-in) keeps both 0 and 1 bits
    acc = sigma[None, :, None, None] * pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, 1)
    t = np.array([np.quantile(acc[:, o], rng.uniform(0.3, 0.97)) for o in range(g.c_out)]).astype(np.int32)
    return x, w, sigma, t


def _run(func, arrays, out_shape, out_dtype):
    lib = tvm.tirx.build(func, target=TARGET.tvm())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype))
    lib(*args, out)
    return out.numpy()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("pi", range(len(POOLS)))
@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_conv_pack_exact(gi, pi, strategy):
    _offered(strategy)
    g, pool = GEOMS[gi], POOLS[pi]
    x, w, sigma, t = _case(g, 10 * gi + pi)
    bits = (sigma[None, :, None, None] * pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, 1)
            >= t[None, :, None, None]).astype(np.uint8)
    if pool is not None:
        if min(bo.pool_out(g.ho, g.wo, *pool)) < 1:
            pytest.skip("pool window larger than this map")
        bits = pk.ref_or_pool(bits, *pool)
    func, wargs = kbuild.build_conv(g, "int8", strategy, "pack", w, TARGET, pool)
    got = _run(func, [pk.pack_nchw(x), *wargs, sigma, t], (g.n, bits.shape[2], bits.shape[3], g.words_out), np.uint32)
    np.testing.assert_array_equal(got, pk.pack_channels(np.moveaxis(bits, 1, -1)))
    assert 0.02 < bits.mean() < 0.98


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_conv_float_exact(gi, strategy):
    _offered(strategy)
    g = GEOMS[gi]
    x, w, _, _ = _case(g, 100 + gi)
    scale = np.random.default_rng(gi).uniform(0.5, 2.0, g.c_out).astype(np.float32)
    ref = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, 1) * scale[None, :, None, None].astype(np.float64)
    func, wargs = kbuild.build_conv(g, "int8", strategy, "float", w, TARGET)
    got = _run(func, [pk.pack_nchw(x), *wargs, scale], (g.n, g.c_out, g.ho, g.wo), np.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)


def test_amx_plan_merges_adjacent_taps_only_at_unit_stride():
    _offered("amx")
    merged = amx.amx_plan(GEOMS[0])
    assert (merged.m, merged.kwg, merged.cc) == (2, 2, 64)  # taps (0,1) and (2, zero) per row
    assert amx.amx_plan(GEOMS[3]).m == 1 and amx.amx_plan(GEOMS[3]).nq == 2  # stride 2; 128 ch in 2 chunks
    assert amx.amx_plan(GEOMS[4]).m == 1  # dilation 2: taps are not adjacent


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tuning_skips_hand_written_kernel(strategy):
    _offered(strategy)
    g = GEOMS[0]
    func, _ = kbuild.build_conv(g, "int8", strategy, "pack", np.zeros((32, 32, 3, 3), np.int8), TARGET)
    kernel = bo.as_kernel(func, "k", TARGET)
    assert bo.kernel_workload(kernel) is None and bo.HAND_WRITTEN_ATTR in kernel.attrs


def test_lut_weight_layout():
    """Byte 4j + k of (tap, quad h, o) is the weight of channel 16h + 4j + k (0 past C_in, C_out)."""
    g = bo.ConvGeom(1, 20, 3, 3, 5, 1, 2)
    w = np.random.default_rng(3).integers(-128, 128, (5, 20, 1, 2)).astype(np.int8)
    p = lut.lut_plan(g)
    lay = pk.lut_weights(w, p)
    assert (p.nh, p.cop) == (2, 16) and lay.shape == (2 * 2, 16, 16)
    for q in range(4):
        tap, h = divmod(q, p.nh)
        for o in range(16):
            for b in range(16):
                c = 16 * h + b
                assert lay[q, o, b] == (w[o, c, 0, tap] if o < 5 and c < 20 else 0)
