"""Every bit-packed integer kernel is bit-exact against plain numpy on random shapes (odd
channel counts not divisible by 32, strides, padding, dilation, groups, depthwise)."""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from nrqc.passes.binary_patterns import LayerPlan
from nrqc.passes.binary_thresholds import accumulator_bound, integer_threshold, min_signed_bits
from nrqc.targets import get_target
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import build as kbuild
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels import pixelwise, select, strategies

TARGET = get_target("x86")


def _run(func, arrays, out_shape, out_dtype):
    lib = tvm.tirx.build(func, target=TARGET.tvm())
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in arrays]
    out = tvm.runtime.tensor(np.zeros(out_shape, out_dtype), dev)
    lib(*args, out)
    return out.numpy()


GEOMS = [
    # n, c_in, h, w, c_out, kh, kw, stride, pad(t,l,b,r), dilation, groups
    bo.ConvGeom(1, 37, 9, 11, 35, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    bo.ConvGeom(2, 45, 8, 7, 33, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2), 1),
    bo.ConvGeom(1, 70, 6, 5, 66, 1, 3, (1, 2), (0, 1, 0, 1), (1, 1), 2),    # groups=2, 2-3 words
    bo.ConvGeom(1, 33, 7, 6, 33, 3, 3, (1, 1), (1, 1, 1, 1), (2, 1), 33),  # depthwise, dilation
]


def _int8_case(g, rng):
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    w[0, 0, 0, 0] = -128  # the two's-complement sign plane must be exact at the extreme
    return x, w


def _offered(strategy, g=None):
    if strategy == "amx" and not strategies.amx.available(TARGET):
        pytest.skip("this host has no usable AMX (amx_int8 + OS permission): the amx strategy is not offered")
    if strategy == "lut" and not strategies.lut.available(TARGET):
        pytest.skip("this host has no AVX-512 VBMI + VNNI: the lut strategy is not offered")
    if strategy in ("vnni", "amx", "lut") and g is not None and g.groups != 1:
        pytest.skip(f"the {strategy} strategy is offered for groups == 1 only (select.strategies_for)")


@pytest.mark.parametrize("strategy", ["bitserial", "masked", "vnni", "lut", "amx"])
@pytest.mark.parametrize("gi", range(len(GEOMS)))
def test_int8_conv_float_epilogue_exact(gi, strategy):
    g = GEOMS[gi]
    _offered(strategy, g)
    rng = np.random.default_rng(gi)
    x, w = _int8_case(g, rng)
    ref = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, g.groups)
    func, wargs = kbuild.build_conv(g, "int8", strategy, "float", w, TARGET)
    got = _run(func, [pk.pack_nchw(x), *wargs, np.ones(g.c_out, np.float32)], (g.n, g.c_out, g.ho, g.wo), np.float32)
    assert ref.shape == got.shape
    np.testing.assert_array_equal(got.astype(np.int64), ref)  # |acc| < 2^24: exact in float32


@pytest.mark.parametrize("strategy", ["bitserial", "masked", "vnni", "lut", "amx"])
def test_int8_conv_pack_epilogue_exact(strategy):
    g = GEOMS[1]
    _offered(strategy, g)
    rng = np.random.default_rng(7)
    x, w = _int8_case(g, rng)
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, g.groups)
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-300, 300, g.c_out).astype(np.int32)
    ref_bits = sigma[None, :, None, None] * acc >= t[None, :, None, None]
    func, wargs = kbuild.build_conv(g, "int8", strategy, "pack", w, TARGET)
    got = _run(func, [pk.pack_nchw(x), *wargs, sigma, t], (g.n, g.ho, g.wo, g.words_out), np.uint32)
    np.testing.assert_array_equal(got, pk.pack_channels(np.moveaxis(ref_bits, 1, -1)))
    assert 0.05 < ref_bits.mean() < 0.95


@pytest.mark.parametrize("mode", ["and", "xnor"])
@pytest.mark.parametrize("gi", [0, 2, 3])
def test_binary_weight_conv_exact(gi, mode):
    g = GEOMS[gi]
    rng = np.random.default_rng(10 + gi)
    bits = rng.random((g.n, g.c_in, g.h, g.w)) < 0.5
    x = bits.astype(np.int64) if mode == "and" else np.where(bits, 1, -1)  # zero padding stays 0 in the ref
    w = rng.choice([-1, 1], (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    ref = pk.ref_conv_acc(x, w, g.stride, g.pad, g.dilation, g.groups)
    func, wargs = kbuild.build_conv(g, "binary", mode, "float", w, TARGET)
    got = _run(func, [pk.pack_nchw(bits), *wargs, np.ones(g.c_out, np.float32)], (g.n, g.c_out, g.ho, g.wo),
               np.float32)
    np.testing.assert_array_equal(got.astype(np.int64), ref)


@pytest.mark.parametrize("kernel,stride,pad", [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 1), (1, 1, 1, 1))])
def test_or_pool_exact(kernel, stride, pad):
    rng = np.random.default_rng(3)
    n, c, h, w = 1, 41, 9, 10
    x = (rng.random((n, c, h, w)) < 0.2).astype(np.uint8)
    ref = pk.ref_or_pool(x, kernel, stride, pad)
    got = _run(kbuild.schedule_elementwise(bo.or_pool(n, h, w, c, kernel, stride, pad), TARGET), [pk.pack_nchw(x)],
               (n, ref.shape[2], ref.shape[3], bo.n_words(c)), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got, c), np.moveaxis(ref, 1, -1))


def test_global_or_and_binary_dense_exact():
    rng = np.random.default_rng(4)
    n, c, h, w, o = 2, 67, 5, 3, 19
    x = (rng.random((n, c, h, w)) < 0.03).astype(np.uint8)
    ref = x.max(axis=(2, 3))
    got = _run(bo.global_or(n, h, w, c), [pk.pack_nchw(x)], (n, 1, 1, bo.n_words(c)), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got[:, 0, 0], c), ref)
    wq = rng.integers(-128, 128, (c, o)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, o).astype(np.float32)
    y = _run(bo.binary_dense(n, c, o, "int8"), [got, wq, scale], (n, o), np.float32)
    acc = ref.astype(np.int64) @ wq.astype(np.int64)
    np.testing.assert_array_equal(y, acc.astype(np.float32) * scale)
    wf = rng.standard_normal((c, o)).astype(np.float32)
    yf = _run(bo.binary_dense(n, c, o, "float"), [got, wf], (n, o), np.float32)
    np.testing.assert_allclose(yf, ref.astype(np.float64) @ wf, rtol=1e-5, atol=1e-5)
    ys = _run(bo.binary_dense(n, c, o, "float", signed_input=True), [got, wf], (n, o), np.float32)
    np.testing.assert_allclose(ys, (2.0 * ref - 1) @ wf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w_layout", ["oihw", "ihwo"])
def test_float_conv_pack_and_unpack_exact(w_layout):
    rng = np.random.default_rng(5)
    g = bo.ConvGeom(1, 3, 10, 9, 37, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    x = rng.standard_normal((1, 3, 10, 9)).astype(np.float32)
    w = rng.integers(-3, 4, (37, 3, 3, 3)).astype(np.float32)  # small integers: float sums are exact
    x = np.round(x * 4) / 4
    m = rng.choice([-1.0, 1.0, 2.0], 37).astype(np.float32)
    k = rng.integers(-2, 3, 37).astype(np.float32)
    thr = (rng.integers(-4, 5, 37) + 0.125).astype(np.float32)
    y = pk.ref_conv_acc(x * 4, w, g.stride, g.pad).astype(np.float64) / 4
    ref = (y * m[None, :, None, None] + k[None, :, None, None]) > thr[None, :, None, None]
    func = kbuild.schedule_float_conv_pack(bo.float_conv_pack(g, w_layout=w_layout), g, TARGET)
    wl = w if w_layout == "oihw" else np.ascontiguousarray(w.transpose(1, 2, 3, 0))
    got = _run(func, [x, wl, m, k, thr], (1, g.ho, g.wo, g.words_out), np.uint32)
    np.testing.assert_array_equal(got, pk.pack_channels(np.moveaxis(ref, 1, -1)))
    un = _run(bo.unpack(1, 37, g.ho, g.wo, signed=True), [got], (1, 37, g.ho, g.wo), np.float32)
    np.testing.assert_array_equal(un, np.where(ref, 1.0, -1.0))


def test_integer_threshold_matches_float_comparison():
    """sigma*acc >= t reproduces a*acc > b (and >=) for every integer acc, all signs of a."""
    rng = np.random.default_rng(6)
    a = np.concatenate([rng.uniform(-2, 2, 200), [0.0, 0.0, 1.0, -1.0]])
    b = np.concatenate([rng.uniform(-50, 50, 200), [1.0, -1.0, 3.0, 3.0]])  # integer b: ties at acc = 3
    acc = np.arange(-120, 121)[:, None]
    for strict in (True, False):
        sigma, t = integer_threshold(a, b, strict)
        want = a * acc > b if strict else a * acc >= b
        np.testing.assert_array_equal(sigma * acc >= t, want)


def test_strategy_choice_is_measured_and_recorded():
    g = bo.ConvGeom(1, 32, 40, 16, 32, 3, 3, (1, 1), (1, 1, 1, 1))  # 5.9 M MACs: measured
    choice = select.choose_int8_strategy(g, TARGET)
    assert choice["method"].startswith("measured")
    assert set(choice["candidates_ms"]) == set(select.strategies_for(g, TARGET)) >= {"bitserial", "masked"}
    assert choice["strategy"] == min(choice["candidates_ms"], key=choice["candidates_ms"].get)
    cm = select.choose_int8_strategy(g, get_target("x86"), measure=False)
    assert cm["method"].startswith("cost model") and cm["strategy"] in select.strategies_for(g, TARGET)


@pytest.mark.skipif(not strategies.vnni.available(TARGET), reason="host has no AVX-512 VNNI")
def test_vnni_kernel_is_tensorized_and_fused_pool_exact():
    """The BAM conv shape with its 2x2 OR-pool fused: scheduled with vpdpbusd (strict: no
    silent fallback to plain loops), bit-exact."""
    g = bo.ConvGeom(1, 32, 20, 12, 32, 3, 3, (1, 1), (1, 1, 1, 1))
    pool = ((2, 2), (2, 2), (0, 0, 0, 0))
    rng = np.random.default_rng(8)
    x, w = _int8_case(g, rng)
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad)
    t = np.full(g.c_out, 150, np.int32)
    ref = pk.ref_or_pool((acc >= 150).astype(np.uint8), *pool)
    func = kbuild.schedule_binary_conv(bo.binary_conv(g, "int8", "vnni", "pack", pool), g, "pack", TARGET, pool, strict=True)
    assert "vpdpbusd" in func.script()
    got = _run(func, [pk.pack_nchw(x), *kbuild.weight_args(g, "int8", "vnni", w), np.ones(g.c_out, np.int32), t],
               (1, 10, 6, 1), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got, 32), np.moveaxis(ref, 1, -1))


def test_accumulator_width_is_checked_per_layer():
    """A 3x3x32 fan-in of int8 weights reaches 288 * 128 = 36864 > int16: the worst case
    is computed from the actual weights and needs 17 bits; int32 is used."""
    w = np.full((4, 32, 3, 3), -128, np.int8)
    p = LayerPlan(None, None, "conv2d", None, w.astype(np.float32), {}, weights="int8", wq=w)
    assert accumulator_bound(p) == 36864
    assert min_signed_bits(36864) == 17 > 16
    assert min_signed_bits(32767) == 16


@pytest.mark.parametrize("strategy", ["bitserial", "masked", "vnni"])
def test_fused_pool_with_padding_and_negative_scales_exact(strategy):
    """Conv + threshold + OR-pool (3x3, stride 2, pad 1) in one kernel, channels with
    sigma = -1, 0, +1: the window-extreme formulation must equal pooling the bits."""
    g = bo.ConvGeom(1, 40, 9, 10, 37, 3, 3, (1, 1), (1, 1, 1, 1))
    pool = ((3, 3), (2, 2), (1, 1, 1, 1))
    rng = np.random.default_rng(11)
    x, w = _int8_case(g, rng)
    acc = pk.ref_conv_acc(x, w, g.stride, g.pad)
    sigma = rng.choice([-1, 0, 1], g.c_out).astype(np.int32)
    t = rng.integers(-400, 400, g.c_out).astype(np.int32)
    bits = (sigma[None, :, None, None] * acc >= t[None, :, None, None]).astype(np.uint8)
    ref = pk.ref_or_pool(bits, *pool)
    func = kbuild.schedule_binary_conv(bo.binary_conv(g, "int8", strategy, "pack", pool), g, "pack", TARGET, pool)
    got = _run(func, [pk.pack_nchw(x), *kbuild.weight_args(g, "int8", strategy, w), sigma, t],
               (1, ref.shape[2], ref.shape[3], g.words_out), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got, g.c_out), np.moveaxis(ref, 1, -1))


def test_float_conv_fused_pool_negative_affine_exact():
    rng = np.random.default_rng(12)
    g = bo.ConvGeom(1, 2, 11, 9, 35, 3, 3, (1, 1), (1, 1, 1, 1))
    pool = ((2, 2), (2, 2), (0, 0, 0, 0))
    x = np.round(rng.standard_normal((1, 2, 11, 9)) * 4) / 4
    w = rng.integers(-3, 4, (35, 2, 3, 3)).astype(np.float32)
    m = rng.choice([-2.0, -1.0, 1.0, 0.5], 35).astype(np.float32)
    k = rng.integers(-2, 3, 35).astype(np.float32)
    thr = (rng.integers(-4, 5, 35) + 0.125).astype(np.float32)
    y = pk.ref_conv_acc(x * 4, w, g.stride, g.pad).astype(np.float64) / 4
    bits = ((y * m[None, :, None, None] + k[None, :, None, None]) > thr[None, :, None, None]).astype(np.uint8)
    ref = pk.ref_or_pool(bits, *pool)
    func = kbuild.schedule_float_conv_pack(bo.float_conv_pack(g, pool=pool), g, TARGET, pool)
    got = _run(func, [x.astype(np.float32), w, m, k, thr], (1, ref.shape[2], ref.shape[3], g.words_out), np.uint32)
    np.testing.assert_array_equal(pk.unpack_channels(got, 35), np.moveaxis(ref, 1, -1))


@pytest.mark.parametrize("sched_target", ["x86", "cortex-m4"])
def test_float_conv_pack_reads_through_transpose(sched_target):
    """Bands-as-channels Conv1d input ([1, frames, bands] transposed to NCW) read in place
    (src_perm), with the Cortex-M schedule (per-pixel receptive field, one channel's
    reduction innermost) as well as the host one; the TIR runs here through LLVM."""
    rng = np.random.default_rng(11)
    frames, bands, c_out = 21, 37, 35
    g = bo.ConvGeom(1, bands, 1, frames, c_out, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), 1)
    src = np.round(rng.standard_normal((1, frames, bands)) * 4).astype(np.float32) / 4
    w = rng.integers(-3, 4, (c_out, bands, 1, 3)).astype(np.float32)
    m = rng.choice([-1.0, 1.0, 2.0], c_out).astype(np.float32)
    k = rng.integers(-2, 3, c_out).astype(np.float32)
    thr = (rng.integers(-4, 5, c_out) + 0.125).astype(np.float32)
    xv = np.transpose(src, (0, 2, 1))[:, :, None, :]
    y = pk.ref_conv_acc(xv * 4, w, g.stride, g.pad).astype(np.float64) / 4
    ref = (y * m[None, :, None, None] + k[None, :, None, None]) > thr[None, :, None, None]
    func = bo.float_conv_pack(g, src_shape=(1, bands, frames), src_perm=(0, 2, 1))
    func = kbuild.schedule_float_conv_pack(func, g, get_target(sched_target))
    got = _run(func, [src, w, m, k, thr], (1, g.ho, g.wo, g.words_out), np.uint32)
    np.testing.assert_array_equal(got, pk.pack_channels(np.moveaxis(ref, 1, -1)))


@pytest.mark.parametrize("strategy", ["bitserial", "masked"])
def test_cortex_m_schedule_of_binary_conv_exact(strategy):
    """The scalar-C loop order (output channel outside its reduction) stays bit-exact."""
    rng = np.random.default_rng(12)
    g = bo.ConvGeom(1, 40, 1, 17, 33, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), 1)
    x = (rng.random((g.n, g.c_in, g.h, g.w)) < 0.4).astype(np.int64)
    w = rng.integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    acc = pk.ref_conv_acc(x, w.astype(np.int64), g.stride, g.pad, g.dilation, g.groups)
    sigma = rng.choice([-1, 1], g.c_out).astype(np.int32)
    t = rng.integers(-200, 200, g.c_out).astype(np.int32)
    ref = sigma[None, :, None, None] * acc >= t[None, :, None, None]
    func, wargs = kbuild.build_conv(g, "int8", strategy, "pack", w, get_target("cortex-m4"))
    got = _run(func, [pk.pack_channels(np.moveaxis(x, 1, -1).astype(bool)), *wargs, sigma, t],
               (1, g.ho, g.wo, g.words_out), np.uint32)
    np.testing.assert_array_equal(got, pk.pack_channels(np.moveaxis(ref, 1, -1)))


@pytest.mark.parametrize("signed", [False, True])
def test_binary_conv1x1_float_matches_numpy(signed):
    """Full-precision 1x1 conv on a packed map (the Cortex-M VAD head without an unpacked
    float copy) equals the float conv of the unpacked {0,1} / {-1,+1} map."""
    rng = np.random.default_rng(13)
    n, c, h, w, o = 1, 37, 2, 9, 5
    bits = rng.random((n, c, h, w)) < 0.5
    wf = rng.standard_normal((o, c)).astype(np.float32)
    xf = np.where(bits, 1.0, -1.0 if signed else 0.0)
    ref = np.einsum("nchw,oc->nohw", xf, wf.astype(np.float64))
    got = _run(bo.binary_conv1x1_float(n, c, h, w, o, signed_input=signed),
               [pk.pack_channels(np.moveaxis(bits, 1, -1)), wf], (n, o, h, w), np.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_failed_schedule_is_reported_not_silent(monkeypatch):
    """A kernel whose schedule fails still runs (plain loops), and says so in the notes."""
    g = bo.ConvGeom(1, 3, 6, 5, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    func = bo.float_conv_pack(g)
    real = pixelwise.schedule_pixelwise

    def failing(*a, **k):
        raise ValueError("no such block")

    monkeypatch.setattr(pixelwise, "schedule_pixelwise", failing)
    out = kbuild.schedule_float_conv_pack(func, g, TARGET)
    monkeypatch.setattr(pixelwise, "schedule_pixelwise", real)
    assert "schedule failed" in str(out.attrs[bo.FALLBACK_ATTR])
    notes = []
    kernel = bo.as_kernel(out, "nrqc_k", TARGET, notes)
    assert bo.FALLBACK_ATTR not in kernel.attrs
    assert len(notes) == 1 and "nrqc_k" in notes[0] and "unscheduled" in notes[0], notes
    ok = bo.as_kernel(kbuild.schedule_float_conv_pack(func, g, TARGET), "nrqc_ok", TARGET, notes)
    assert len(notes) == 1 and ok.attrs["tirx.is_scheduled"]
