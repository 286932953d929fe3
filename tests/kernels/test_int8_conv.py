"""Int8-input conv strategies (the all-integer first layer, ``kernels/int8_conv.py``):
every registered strategy available on an x86 level this host runs, built for that level
(x86-64-v2, haswell, the host's AVX-512 VNNI) and run here, bit-exact against numpy's
integer conv of (q - zp) * w on odd geometries; float sources with the quantize fused
(round half to even, saturation), int8 sources, uint8 sources with a non-zero zero point;
both epilogues (threshold + pack with sigma -1/0/+1 and a fused OR-pool, int32 -> float)."""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from nrqc.targets import get_target, x86
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels import strategies

LEVELS = ["x86-64-v2", "haswell"] + ([x86.host_mcpu()] if "avx512_vnni" in x86.host_cpu_flags() else [])


def _cases():
    """(level, strategy name): each strategy at the oldest level it exists (default suite)
    and at the host's level (-m slow)."""
    out = []
    for s in strategies.INT8_INPUT_REGISTRY:
        levels = [lv for lv in LEVELS if s.available(get_target("x86", lv))]
        if levels:
            out.append((levels[0], s.NAME))
        if len(levels) > 1:
            out.append(pytest.param(levels[-1], s.NAME, marks=pytest.mark.slow))
    return out


GEOMS = [
    # conv geometry, source: (dtype, q dtype, zero point), source shape / transpose (None: NCHW)
    (bo.ConvGeom(1, 1, 11, 13, 13, 3, 3, (1, 1), (1, 1, 1, 1)), ("float32", "int8", 0), None, None),
    (bo.ConvGeom(1, 3, 9, 10, 16, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2)), ("uint8", "uint8", 131), None, None),
    (bo.ConvGeom(1, 7, 1, 17, 20, 1, 3, (1, 1), (0, 1, 0, 1)), ("float32", "uint8", 120), (1, 17, 7), (0, 2, 1)),
    (bo.ConvGeom(1, 1, 12, 9, 32, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)), ("int8", "int8", -7), (1, 12, 9), None),
    # a kernel row's taps on the reduction axis (int8_conv.row_taps): 2 channels x 3 taps =
    # 6 bytes -> two 4-byte groups, stride 2 across the row, 1 channel x 5 taps (the first
    # layer's 1 x 3x3 is geometry 0)
    (bo.ConvGeom(1, 2, 9, 15, 20, 3, 3, (2, 2), (1, 1, 1, 1)), ("uint8", "uint8", 100), None, None),
    (bo.ConvGeom(1, 1, 7, 12, 17, 2, 5, (1, 1), (0, 2, 1, 2)), ("float32", "int8", 3), (1, 7, 12), None),
]


def _geom(gi, wq):
    c, (src, qd, zp), shape, perm = GEOMS[gi]
    shape = shape or (c.n, c.c_in, c.h, c.w)
    return ic.Int8ConvGeom(c, shape, perm, src, qd, 0.05, zp, bool(np.any(wq == -128)))


def _inputs(gi, seed):
    c, (src, qd, zp), shape, perm = GEOMS[gi]
    rng = np.random.default_rng(seed)
    shape = shape or (c.n, c.c_in, c.h, c.w)
    xf = (rng.standard_normal(shape) * 4).astype(np.float32)
    xf.flat[:4] = [0.025, -0.075, 1e6, -1e6]  # ties to even, saturation both ways
    wq = rng.integers(-127, 128, (c.c_out, c.cg, c.kh, c.kw)).astype(np.int8)
    q = ic.ref_quantize(xf, 0.05, zp, qd)
    view = q if perm is None else np.transpose(q, perm)
    ref = ic.ref_int8_conv_acc(view.reshape(c.n, c.c_in, c.h, c.w), zp, wq, c)
    return (xf if src == "float32" else q), wq, ref, rng


def _run(func, target, arrays, out_shape, out_dtype):
    lib = tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm())
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype), dev)
    lib["k"](*[tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays], out)
    return out.numpy()


@pytest.mark.parametrize("level,name", _cases())
@pytest.mark.parametrize("gi", [2] + [pytest.param(i, marks=pytest.mark.slow) for i in (0, 1, 3, 4, 5)])
def test_float_epilogue_exact(level, name, gi):
    s = strategies.int8_input_lookup(name)
    target = get_target("x86", level)
    x, wq, ref, _ = _inputs(gi, gi)
    g = _geom(gi, wq)
    if not s.supports(g):
        pytest.skip(f"{name} does not take this geometry (supports() is False): nothing to run")
    c = g.conv
    got = _run(s.build(g, "float", target, strict=True), target,
               [x, *s.weight_args(g, wq), np.ones(c.c_out, np.float32)], (c.n, c.c_out, c.ho, c.wo), np.float32)
    np.testing.assert_array_equal(got.astype(np.int64), ref)


@pytest.mark.parametrize("level,name", _cases())
@pytest.mark.parametrize("gi,pool", [(3, ((2, 2), (2, 2), (0, 0, 0, 0)))] + [
    pytest.param(gi, pool, marks=pytest.mark.slow) for gi, pool in ((3, None), (0, ((2, 2), (2, 2), (0, 0, 0, 0))),
                                                                   (2, ((1, 3), (1, 2), (0, 1, 0, 1))), (1, None),
                                                                   (4, ((2, 2), (2, 2), (0, 0, 0, 0))), (5, None))])
def test_packed_epilogue_with_pool_exact(level, name, gi, pool):
    s = strategies.int8_input_lookup(name)
    target = get_target("x86", level)
    x, wq, ref, rng = _inputs(gi, 11)
    g = _geom(gi, wq)
    c = g.conv
    sigma = rng.choice([-1, 0, 1], c.c_out).astype(np.int32)
    t = rng.integers(-3000, 3000, c.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * ref >= t[None, :, None, None]).astype(np.uint8)
    want = bits if pool is None else pk.ref_or_pool(bits, *pool)
    # an overlapping pool is beyond the dot-product schedules' tensorize: plain loops, still exact
    overlapping = pool is not None and pool[0] != pool[1]
    got = _run(s.build(g, "pack", target, pool, strict=not overlapping), target, [x, *s.weight_args(g, wq), sigma, t],
               (1, want.shape[2], want.shape[3], c.words_out), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got, c.c_out), np.moveaxis(want, 1, -1))


def test_generic_strategy_is_offered_everywhere():
    g = _geom(0, np.zeros((13, 1, 3, 3), np.int8))
    for name in ("x86", "arm_cpu", "cortex-m4"):
        assert "int8_generic" in [s.NAME for s in strategies.int8_input_for_layer(g, get_target(name))]


def _asm(func, target):
    lib = tvm.tirx.build(bo.as_kernel(func, "k"), target=target.tvm())
    return lib.inspect_source("asm") if hasattr(lib, "inspect_source") else lib.get_source("asm")


def test_dot_product_strategies_use_their_instructions():
    import re

    from tests.kernels.test_binary_targets import _AVX512

    wq = np.zeros((32, 1, 3, 3), np.int8)
    g = _geom(3, wq)
    haswell = get_target("x86", "haswell")
    asm = _asm(strategies.int8_input_lookup("int8_avx2").build(g, "pack", haswell, strict=True), haswell)
    assert re.search(r"\bvpmaddubsw\b", asm) and re.search(r"\bvpsignb\b", asm) and re.search(r"\bvpmaddwd\b", asm)
    assert not sorted({m.group(0) for m in _AVX512.finditer(asm)})
    if "avx512_vnni" in x86.host_cpu_flags():
        host = get_target("x86")
        asm = _asm(strategies.int8_input_lookup("int8_vnni").build(g, "pack", host, strict=True), host)
        assert re.search(r"\bvpdpbusd\b", asm)


def test_avx2_strategy_refuses_a_minus_128_weight():
    """|w| <= 127 keeps sign(x) * w an int8 (vpsignb of -128 wraps): a -128 weight goes to
    another strategy."""
    wq = np.zeros((32, 1, 3, 3), np.int8)
    assert strategies.int8_input_lookup("int8_avx2").supports(_geom(3, wq))
    wq[3, 0, 1, 1] = -128
    assert not strategies.int8_input_lookup("int8_avx2").supports(_geom(3, wq))


@pytest.mark.parametrize("gi", [0, 2, 4, 5])
def test_row_tap_layout_is_the_conv(gi):
    """The row-tap weight layout (int8_conv.row_tap_weights) with the flattened padded rows
    acc_row4 reads gives numpy's conv: checked in numpy, independent of TVM."""
    c = GEOMS[gi][0]
    rng = np.random.default_rng(gi)
    wq = rng.integers(-127, 128, (c.c_out, c.c_in, c.kh, c.kw)).astype(np.int8)
    x = rng.integers(-128, 128, (1, c.c_in, c.h, c.w)).astype(np.int64)
    k4 = ic.row_taps(_geom(gi, wq))
    assert k4 == (c.kw * c.c_in + 3) // 4 * 4
    w4 = ic.row_tap_weights(wq).astype(np.int64)  # [kh, K4/4, Co16, 4]
    assert w4.shape == (c.kh, k4 // 4, (c.c_out + 15) // 16 * 16, 4)
    xp = np.pad(x, ((0, 0), (0, 0), (c.pad[0], c.pad[2]), (c.pad[1], c.pad[3])))
    rows = np.moveaxis(xp[0], 0, -1).reshape(xp.shape[2], -1)  # U[y, x * C + ci]
    rows = np.pad(rows, ((0, 0), (0, k4)))
    got = np.zeros((c.c_out, c.ho, c.wo), np.int64)
    for oh in range(c.ho):
        for ow in range(c.wo):
            for r in range(c.kh):
                j = ow * c.stride[1] * c.c_in
                seg = rows[oh * c.stride[0] + r * c.dilation[0], j:j + k4]
                got[:, oh, ow] += (w4[r].transpose(1, 0, 2).reshape(-1, k4) @ seg)[:c.c_out]
    np.testing.assert_array_equal(got[None], ic.ref_int8_conv_acc(x, 0, wq, c))
