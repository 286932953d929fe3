"""The AVX2 XNOR-popcount strategy (vpshufb nibble popcount, byte accumulation): built for
haswell, written to disk and loaded back, run on this host, bit-exact against numpy's
integer conv of {-1,+1} maps and +-1 weights (zero padding contributes 0) on odd
geometries, grouped convs and fused pools; chosen per layer against the TE XNOR kernel."""
from __future__ import annotations

import re

import numpy as np
import pytest

from nrqc.targets import get_target, x86
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels import select
from nrqc.targets.kernels.strategies import avx2_xnor as strategy
from tests.kernels.test_avx2_lut import HASWELL, POOLS, _run_from_disk, check_float
from tests.kernels.test_binary_targets import _AVX512, _source

GEOMS = [
    # n, c_in, h, w, c_out, kh, kw, stride, pad (t, l, b, r), dilation, groups
    bo.ConvGeom(1, 13, 9, 11, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # c_in under a word
    bo.ConvGeom(2, 45, 8, 7, 40, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)),       # stride, dilation, c_out 40
]
SLOW_GEOMS = [
    bo.ConvGeom(1, 70, 6, 5, 66, 1, 3, (1, 2), (0, 1, 0, 1), groups=2),     # groups: the mask M
    bo.ConvGeom(1, 600, 4, 5, 16, 3, 3, (1, 1), (1, 1, 1, 1)),              # 171 steps: 6 byte chunks
    bo.ConvGeom(1, 33, 7, 6, 33, 3, 3, (1, 1), (1, 1, 1, 1), groups=33),    # depthwise
]


def _case(g, seed):
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((g.n, g.c_in, g.h, g.w)) < 0.5, -1, 1)
    w = np.where(rng.random((g.c_out, g.cg, g.kh, g.kw)) < 0.5, -1, 1).astype(np.int8)
    w[0] = 1  # a channel agreeing with an all-ones patch: every byte count 8
    x[:, :, :2, :] = 1
    return x, w, rng


def _check_float(g, seed, tmp_path):
    return check_float(g, seed, tmp_path, strategy, _case)


@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_float_output_exact_on_haswell_build(gi, tmp_path):
    lib = _check_float(GEOMS[gi], gi, tmp_path)
    if gi == 0:  # the nibble popcount, and nothing of AVX-512 (no vpopcnt)
        asm = _source(lib, "asm")
        assert re.search(r"\bvpshufb\b.*%ymm", asm) and re.search(r"\bvpmaddubsw\b.*%ymm", asm)
        assert not sorted({m.group(0) for m in _AVX512.finditer(asm)})


@pytest.mark.slow
@pytest.mark.parametrize("gi", range(len(SLOW_GEOMS)))
def test_float_output_exact_more_geometries(gi, tmp_path):
    _check_float(SLOW_GEOMS[gi], 10 + gi, tmp_path)


@pytest.mark.parametrize("pi", [pytest.param(0, marks=pytest.mark.slow), 1, pytest.param(2, marks=pytest.mark.slow)])
def test_packed_output_with_fused_pool_exact_on_haswell_build(pi, tmp_path):
    g = bo.ConvGeom(1, 40, 9, 10, 72, 3, 3, (1, 1), (1, 1, 1, 1))
    x, w, rng = _case(g, 30 + pi)
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation)
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-30, 30, g.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * acc >= t[None, :, None, None]).astype(np.uint8)
    pool = POOLS[pi]
    ref = bits if pool is None else pk.ref_or_pool(bits, *pool)
    _, got = _run_from_disk(strategy.build(g, "pack", HASWELL, pool),
                            [pk.pack_nchw(x), *strategy.weight_args(g, w), sigma, t],
                            (g.n, ref.shape[2], ref.shape[3], g.words_out), np.uint32, tmp_path)
    np.testing.assert_array_equal(pk.unpack_channels(got, g.c_out), np.moveaxis(ref, 1, -1))


def test_offered_for_pm1_maps_where_avx2_lacks_vpopcnt():
    assert strategy.available(HASWELL) and strategy.available(x86.describe("znver2"))
    assert not strategy.available(x86.describe("icelake-server"))  # vpopcntd: the TE kernel's
    assert not strategy.available(x86.describe("x86-64-v2"))
    assert not strategy.available(get_target("arm_cpu"))
    g = bo.ConvGeom(1, 32, 8, 8, 32, 3, 3, pad=(1, 1, 1, 1))
    assert select.strategies_for(g, HASWELL, "pm1") == ("xnor", "avx2_xnor")
    assert select.strategies_for(g, HASWELL, "01") == ("and",)
    only = select.choose_int8_strategy(g, HASWELL, encoding="01")
    assert only["strategy"] == "and" and "only kernel" in only["method"]
    # 18432 taps / 8 lanes x 1 word x 8 ops / 3 per cycle
    assert strategy.cost(g, HASWELL) == pytest.approx(8 * 8 * 32 * 9 / 8 * 8 / 3)


@pytest.mark.slow
def test_whole_pm1_model_on_haswell_build_uses_it_and_matches_onnxruntime(tmp_path):
    """A {-1,+1} model (Sign activations, +-1 weights) compiled for haswell: the XNOR layer
    reading a {-1,+1} map gets avx2_xnor (the cost model decides below the timing threshold:
    8 ops per 256 binary MACs against the scalar popcount), and the artifact, run from disk
    in a fresh process by the compile's check, matches onnxruntime."""
    import json

    from nrqc.compiler import CompileOptions, compile_model
    from tests import binary_models as bm

    layers = [dict(c_out=40, c_first=33, weights="binary", act="sign"),
              dict(c_out=36, weights="binary", act="sign", input_sign=True, stride=2)]
    path = bm.chain_model(tmp_path / "pm1.onnx", layers, x_shape=(1, 1, 12, 11), seed=1, first_act="greater")
    out = compile_model(path, "x86", tmp_path / "out", CompileOptions(check=True, mcpu="haswell"), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"], manifest["check"]
    chosen = [(layer.get("strategy") or {}).get("strategy") for layer in manifest["layers"]]
    assert "avx2_xnor" in chosen, json.dumps(manifest["layers"], indent=1)
