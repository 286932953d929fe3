"""The AVX2 vpmaddubsw strategy: built for haswell (an AVX2-only CPU) and run on this
host (x86 CPUs with AVX-512 run AVX2 code), bit-exact against numpy's integer conv on odd
geometries; available exactly where AVX2 is."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from nrqc.targets import get_target, x86
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import avx2_maddubs as strategy
from tests.kernels.test_binary_targets import _AVX512, _source

HASWELL = get_target("x86", "haswell")

GEOMS = [
    # n, c_in, h, w, c_out, kh, kw, stride, pad (t, l, b, r), dilation
    bo.ConvGeom(1, 13, 9, 11, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),   # c_in not a multiple of 4
    bo.ConvGeom(2, 45, 8, 7, 32, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)),    # stride 2, dilation 2, 2 words
    bo.ConvGeom(1, 70, 5, 9, 48, 1, 3, (1, 2), (0, 1, 0, 1), (1, 1)),    # 1-D-like, 3 words
    bo.ConvGeom(1, 32, 7, 6, 16, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),    # dilation 2 both ways
]


def _case(g, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    w[:, :2] = -128  # pairs of extreme weights under set bits: vpmaddubsw must not saturate
    x[:, :2] = 1
    return x, w, rng


def _run(func, arrays, out_shape, out_dtype):
    lib = tvm.tirx.build(bo.as_kernel(func, "k"), target=HASWELL.tvm())
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype), dev)
    lib["k"](*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays], out)
    return lib, out.numpy()


@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_float_output_exact_on_haswell_build(gi):
    g = GEOMS[gi]
    assert strategy.supports(g)
    x, w, _ = _case(g, gi)
    ref = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation)
    lib, got = _run(strategy.build(g, "float", HASWELL, strict=True),
                    [pk.pack_nchw(x), *strategy.weight_args(g, w), np.ones(g.c_out, np.float32)],
                    (g.n, g.c_out, g.ho, g.wo), np.float32)
    np.testing.assert_array_equal(got.astype(np.int64), ref)
    if gi == 0:  # the instructions it is named after, and nothing of AVX-512
        asm = _source(lib, "asm")
        assert re.search(r"\bvpmaddubsw\b.*%ymm", asm) and re.search(r"\bvpmaddwd\b.*%ymm", asm)
        assert not sorted({m.group(0) for m in _AVX512.finditer(asm)})


@pytest.mark.parametrize("pool", [None, ((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1))])
def test_packed_output_with_fused_pool_exact_on_haswell_build(pool):
    """Threshold (sigma -1, 0, +1) + pack, and the OR-pool fused into the same kernel. A
    3x3 stride-2 padded pool is beyond the (VNNI) schedule's tensorize: that kernel runs
    as plain loops, still exact, and says so (the compile report's note)."""
    overlapping = pool is not None and pool[0] != pool[1]
    g = bo.ConvGeom(1, 40, 9, 10, 32, 3, 3, (1, 1), (1, 1, 1, 1))
    x, w, rng = _case(g, 7)
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad)
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-400, 400, g.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * acc >= t[None, :, None, None]).astype(np.uint8)
    ref = bits if pool is None else pk.ref_or_pool(bits, *pool)
    func = strategy.build(g, "pack", HASWELL, pool, strict=not overlapping)
    assert (bo.FALLBACK_ATTR in func.attrs) == overlapping
    _, got = _run(func,
                  [pk.pack_nchw(x), *strategy.weight_args(g, w), sigma, t],
                  (1, ref.shape[2], ref.shape[3], g.words_out), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got, g.c_out), np.moveaxis(ref, 1, -1))


def test_the_vnni_and_avx2_intrinsics_are_registered_apart():
    """An AVX2 build tensorizes with its own intrinsic; the VNNI one stays vpdpbusd."""
    from tvm.s_tir import TensorIntrin

    from nrqc.targets.kernels import intrin

    strategy.build(GEOMS[0], "float", HASWELL, strict=True)
    vnni_impl = TensorIntrin.get(intrin.vnni_16x4()).impl.script()
    avx2_impl = TensorIntrin.get(strategy.maddubs_16x4()).impl.script()
    assert "vpdpbusd" in vnni_impl and "pmadd" not in vnni_impl
    assert "pmadd.ub.sw" in avx2_impl and "vpdpbusd" not in avx2_impl


def test_available_where_avx2_is():
    assert strategy.available(HASWELL)
    assert strategy.available(x86.describe("icelake-server"))  # measured against lut/vnni there
    assert not strategy.available(x86.describe("x86-64-v2"))
    for name in ("arm_cpu", "cortex-m4"):
        assert not strategy.available(get_target(name))


def test_supports_and_cost():
    assert not strategy.supports(bo.ConvGeom(1, 32, 8, 8, 32, 3, 3, groups=2))
    assert not strategy.supports(bo.ConvGeom(1, 32, 8, 8, 24, 3, 3))  # the schedule needs 16 | c_out
    # 32 in x 32 out, 3x3, 8x8 output: 18432 taps x 32 channels / 16 MAC/cycle + the unpack
    # of 3 rows of 8 x 32 bits per output row (/ 32 per vector)
    g = bo.ConvGeom(1, 32, 10, 10, 32, 3, 3)
    assert strategy.cost(g, HASWELL) == pytest.approx(8 * 8 * 32 * 9 * 32 / 16 + 8 * 3 * 10 * 32 / 32)
