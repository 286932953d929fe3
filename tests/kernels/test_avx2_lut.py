"""The AVX2 vpshufb nibble-table strategy: built for haswell (an AVX2-only CPU), written to
disk and loaded back, run on this host (x86 CPUs with AVX-512 run AVX2 code), bit-exact
against numpy's integer conv on odd geometries; available where AVX2 is and the AVX-512
vpermb tables are not."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from nrqc.targets import get_target, x86
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import avx2_lut as strategy
from tests.kernels.test_binary_targets import _AVX512, _source

HASWELL = get_target("x86", "haswell")

# n, c_in, h, w, c_out, kh, kw, stride, pad (t, l, b, r), dilation
FLOAT_GEOMS = [
    bo.ConvGeom(1, 13, 9, 11, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),   # c_in not a multiple of 4
    bo.ConvGeom(2, 45, 8, 37, 24, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)),   # stride, dilation, 3 pixel blocks
]
SLOW_FLOAT_GEOMS = [
    bo.ConvGeom(1, 70, 5, 9, 40, 1, 3, (1, 2), (0, 1, 0, 1), (1, 1)),    # 1-D-like, c_out 40
    bo.ConvGeom(1, 300, 5, 9, 48, 3, 3, (1, 2), (1, 1, 1, 1), (1, 1)),   # 675 steps: 11 int16 chunks
    bo.ConvGeom(1, 32, 7, 6, 16, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),    # dilation 2 both ways
]
POOLS = [None, ((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1))]


def _case(g, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    # the extreme sums: 4 weights of -128 (S = -512) and of 127 under set bits, so the
    # int16 lanes see the largest steps, and the table's HI plane is negative and positive
    w[: g.c_out // 2, :8] = -128
    w[g.c_out // 2:, :8] = 127
    x[:, :8] = 1
    return x, w, rng


def _run_from_disk(func, arrays, out_shape, out_dtype, tmp_path):
    """(the built module, for its assembly; the output of the library loaded from disk)"""
    path = str(tmp_path / "k.so")
    built = tvm.tirx.build(bo.as_kernel(func, "k"), target=HASWELL.tvm())
    built.export_library(path)
    lib = tvm.runtime.load_module(path)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype), dev)
    lib["k"](*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays], out)
    return built, out.numpy()


def check_float(g, seed, tmp_path, kernels=strategy, case=_case):
    """The float-output kernel of strategy module `kernels` against numpy (returns the built module)."""
    x, w, _ = case(g, seed)
    ref = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, g.groups)
    lib, got = _run_from_disk(kernels.build(g, "float", HASWELL),
                              [pk.pack_nchw(x), *kernels.weight_args(g, w), np.ones(g.c_out, np.float32)],
                              (g.n, g.c_out, g.ho, g.wo), np.float32, tmp_path)
    np.testing.assert_array_equal(got.astype(np.int64), ref)
    return lib


@pytest.mark.parametrize("gi", range(len(FLOAT_GEOMS)))
def test_float_output_exact_on_haswell_build(gi, tmp_path):
    lib = check_float(FLOAT_GEOMS[gi], gi, tmp_path)
    if gi == 0:  # the instruction it is named after, and nothing of AVX-512
        asm = _source(lib, "asm")
        assert re.search(r"\bvpshufb\b.*%ymm", asm)
        assert not sorted({m.group(0) for m in _AVX512.finditer(asm)})


@pytest.mark.slow
@pytest.mark.parametrize("gi", range(len(SLOW_FLOAT_GEOMS)))
def test_float_output_exact_more_geometries(gi, tmp_path):
    check_float(SLOW_FLOAT_GEOMS[gi], 10 + gi, tmp_path)


def _check_packed(g, pool, seed, tmp_path):
    x, w, rng = _case(g, seed)
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation)
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-400, 400, g.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * acc >= t[None, :, None, None]).astype(np.uint8)
    ref = bits if pool is None else pk.ref_or_pool(bits, *pool)
    _, got = _run_from_disk(strategy.build(g, "pack", HASWELL, pool),
                            [pk.pack_nchw(x), *strategy.weight_args(g, w), sigma, t],
                            (g.n, ref.shape[2], ref.shape[3], g.words_out), np.uint32, tmp_path)
    np.testing.assert_array_equal(pk.unpack_channels(got, g.c_out), np.moveaxis(ref, 1, -1))


@pytest.mark.parametrize("pi", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_packed_output_with_fused_pool_exact_on_haswell_build(pi, tmp_path):
    """Threshold (sigma -1, 0, +1) + pack with the OR-pool fused; 40 output channels (a
    word and a part, not a multiple of the 16-channel padding), 37 input channels."""
    _check_packed(bo.ConvGeom(1, 37, 9, 21, 40, 3, 3, (1, 1), (1, 1, 1, 1)), POOLS[pi], pi, tmp_path)


@pytest.mark.parametrize("pi", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_packed_narrow_map_rows_share_a_register(pi, tmp_path):
    """A map of at most 16 columns: two output rows share each index register (A: row 2i,
    B: row 2i + 1); 11 rows, so the last register has no B, and with a 2x2 pool the last
    conv row is in no window."""
    _check_packed(bo.ConvGeom(1, 13, 11, 14, 20, 3, 3, (1, 1), (1, 1, 1, 1)), POOLS[pi], 30 + pi, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("pi", range(len(POOLS)))
def test_packed_output_strided_dilated_batch(pi, tmp_path):
    _check_packed(bo.ConvGeom(2, 45, 8, 37, 40, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)), POOLS[pi], 20 + pi, tmp_path)


def test_available_where_avx2_is_and_vpermb_is_not():
    assert strategy.available(HASWELL)
    assert strategy.available(x86.describe("x86-64-v4"))  # AVX-512 without VBMI
    assert not strategy.available(x86.describe("icelake-server"))  # vpermb: the `lut` strategy
    assert not strategy.available(x86.describe("x86-64-v2"))
    for name in ("arm_cpu", "cortex-m4"):
        assert not strategy.available(get_target(name))
    assert not strategy.supports(bo.ConvGeom(1, 32, 8, 8, 32, 3, 3, groups=2))
    assert strategy.supports(bo.ConvGeom(1, 32, 8, 8, 24, 3, 3))  # any c_out (padded to 16)


def test_cost_and_peak_figure():
    # haswell: vpshufb on port 5 only, 2 per 128 MACs (a pixel per byte); Zen: two shuffle pipes
    assert HASWELL.figure("peak_lut_int8_macs_per_cycle") == 64
    assert x86.describe("znver2").figure("peak_lut_int8_macs_per_cycle") == 128
    # 32 in x 32 out, 3x3, 8x8 output: one 16-lane block per row (a pair of them per register,
    # half used), 8 rows, 32 channels, 9 taps x 8 nibbles = 72 steps of 128 MACs at 64 MAC/cycle,
    # + epilogue + 72 x 32 table rows
    g = bo.ConvGeom(1, 32, 10, 10, 32, 3, 3)
    vectors, pairs = 8 * 1 * 32, 8 * 1 * 32
    assert strategy.cost(g, HASWELL) == pytest.approx(pairs * 72 * 2 + vectors * 20 / 16 + 72 * 32 * 12)
