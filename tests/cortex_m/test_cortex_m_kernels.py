"""nrqc's hand-written Cortex-M kernels (nrqc/cortex_m/kernels/nrqc_dsp.h), each run in QEMU
(mps2-an386, Cortex-M4) by a throw-away firmware and compared bit for bit with numpy on odd
shapes (channels not multiples of 4/32, strides, padding, dilation, fused pools). A few
cases by default; the rest under -m slow."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from nrqc.cortex_m import dsp
from nrqc.targets.kernels import packing as pk

_MISSING = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm") if not shutil.which(t)]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"Cortex-M toolchain/emulator missing: {', '.join(_MISSING)}")


@pytest.fixture(scope="module")
def m4():
    from nrqc.targets import get_target

    return get_target("cortex-m4")


def _run(m4, call, inputs, outputs, scratch=None):
    from nrqc.cortex_m.microbench import run_call

    return run_call(m4, call, inputs, outputs, scratch)


def _ref_pool_ext(acc, sigma, pool):
    """Per channel the window max (sigma >= 0) or min of acc [N,Co,Ho,Wo] (windows skip padding)."""
    (kh, kw), (sh, sw), pad = pool
    n, co, ho, wo = acc.shape
    pho = (ho + pad[0] + pad[2] - kh) // sh + 1
    pwo = (wo + pad[1] + pad[3] - kw) // sw + 1
    out = np.zeros((n, co, pho, pwo), np.int64)
    for y in range(pho):
        for x in range(pwo):
            ys = [y * sh - pad[0] + a for a in range(kh) if 0 <= y * sh - pad[0] + a < ho]
            xs = [x * sw - pad[1] + b for b in range(kw) if 0 <= x * sw - pad[1] + b < wo]
            win = acc[:, :, ys][:, :, :, xs].reshape(n, co, -1)
            out[:, :, y, x] = np.where(sigma[None, :] >= 0, win.max(-1), win.min(-1))
    return out


# (n, c_in, h, w, c_out, kh, kw, stride, pad (t, l, b, r), dilation, pool or None)
_CONV_CASES = {
    "vad_layer": (1, 32, 1, 100, 32, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1), None),
    "odd_2d_stride2": (1, 37, 7, 9, 13, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), None),
    "odd_dilated": (2, 5, 6, 11, 7, 3, 2, (1, 2), (2, 0, 1, 1), (2, 1), None),
    "pooled": (1, 33, 8, 10, 19, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), ((2, 2), (2, 2), (0, 0, 0, 0))),
    "pooled_padded": (1, 9, 5, 7, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), ((3, 3), (2, 2), (1, 1, 1, 1))),
    "deep_flush": (1, 300, 3, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), None),  # 675 nibbles: lane flushes
}
_FAST = {"vad_layer", "odd_2d_stride2"}


def _conv_case(case, table, pairs, out, seed=0):
    rng = np.random.default_rng(seed)
    n, c, h, w, co, kh, kw, stride, pad, dil, pool = _CONV_CASES[case]
    x01 = (rng.random((n, c, h, w)) < 0.45).astype(np.int64)
    wq = rng.integers(-128, 128, (co, c, kh, kw)).astype(np.int8)
    if case == "deep_flush":
        wq[:] = 127  # every lane at its largest: a missing flush would carry into the next lane
        x01[:] = 1
    acc = pk.ref_conv_acc(x01, wq.astype(np.int64), stride, pad, dil)
    sigma = rng.choice([-1, 1], co).astype(np.int32)
    op = {"op": "binary_conv", "g": {"n": n, "c_in": c, "h": h, "w": w, "c_out": co, "kh": kh, "kw": kw,
                                     "stride": list(stride), "pad": list(pad), "dilation": list(dil), "groups": 1},
          "weights": "int8", "strategy": "masked", "out": out, "pool": pool}
    return x01, wq, acc, sigma, op


def _kernel_call(op, wq, config):
    """The weight array and the constant arguments the TIR wrapper passes (dsp.nibble_plan)."""
    plan = dsp.nibble_plan(op, wq, config)
    return plan.weights, list(plan.consts)


# the knob sweep (table placement, pairs per block: the C fallback for 1 and 3, LDRD asm for 2, 4, 8)
# on the fast shapes; one setting per slow shape
_KNOBS = [("arena", 4), ("flash", 2), ("arena", 1), ("arena", 8)]
_CONV_PARAMS = [pytest.param(c, t, p, marks=() if c in _FAST and (t, p) != ("arena", 8) else pytest.mark.slow)
                for c in _CONV_CASES for t, p in (_KNOBS if c in _FAST else _KNOBS[:1])]


@pytest.mark.parametrize("case,table,pairs", _CONV_PARAMS)
def test_nibble_conv_pack_bit_exact(m4, case, table, pairs):
    x01, wq, acc, sigma, op = _conv_case(case, table, pairs, "pack")
    n, co = acc.shape[:2]
    thr = np.random.default_rng(1).integers(-300, 300, co).astype(np.int32)
    ext = acc if op["pool"] is None else _ref_pool_ext(acc, sigma, op["pool"])
    want = pk.pack_channels(np.moveaxis(sigma[None, :, None, None] * ext >= thr[None, :, None, None], 1, -1))
    warr, consts = _kernel_call(op, wq, {"table": table, "pairs_per_block": pairs})
    flash = table == "flash"
    g = op["g"]
    q = g["kh"] * g["kw"] * dsp.nibble_groups(g["c_in"])
    xw = pk.pack_channels(np.moveaxis(x01, 1, -1))
    inputs = {"x": xw, "w": warr, "sg": sigma, "th": thr}
    call = (f"nrqc_b01_i8_conv(x, {'0' if flash else 'w'}, {'w' if flash else '0'}, {'0' if flash else 'tab'}, "
            f"sg, th, 0, y, {', '.join(map(str, consts))})")
    got = _run(m4, call, inputs, {"y": (want.shape, "uint32")},
               None if flash else {"tab": (q * 16 * min(pairs, (co + 1) // 2), "uint32")})
    np.testing.assert_array_equal(got.outputs["y"], want)


def test_nibble_conv_float_out_bit_exact(m4):
    x01, wq, acc, sigma, op = _conv_case("odd_2d_stride2", "arena", 4, "float")
    co = acc.shape[1]
    scale = np.random.default_rng(2).uniform(0.01, 0.1, co).astype(np.float32)
    want = (acc.astype(np.float32) * scale[None, :, None, None]).astype(np.float32)
    warr, consts = _kernel_call(op, wq, {"table": "arena", "pairs_per_block": 4})
    g = op["g"]
    q = g["kh"] * g["kw"] * dsp.nibble_groups(g["c_in"])
    call = f"nrqc_b01_i8_conv(x, w, 0, tab, 0, 0, sc, y, {', '.join(map(str, consts))})"
    got = _run(m4, call, {"x": pk.pack_channels(np.moveaxis(x01, 1, -1)), "w": warr, "sc": scale},
               {"y": (want.shape, "float32")}, {"tab": (q * 16 * 4, "uint32")})
    np.testing.assert_array_equal(got.outputs["y"], want)


@pytest.mark.parametrize("c,o,signed", [(32, 16, False), pytest.param(45, 7, True, marks=pytest.mark.slow),
                                        pytest.param(70, 21, False, marks=pytest.mark.slow)])
def test_bits_conv1x1_float(m4, c, o, signed):
    rng = np.random.default_rng(3)
    n, h, w = 1, 3, 11
    x01 = (rng.random((n, c, h, w)) < 0.5)
    wt = rng.standard_normal((o, c)).astype(np.float32)
    xv = np.where(x01, 1.0, -1.0 if signed else 0.0)
    want = np.einsum("nchw,oc->nohw", xv, wt.astype(np.float64))
    op = {"op": "binary_conv1x1_float", "n": n, "c": c, "h": h, "w": w, "o": o, "signed_input": signed}
    consts = dsp.head_consts(op, {"out_block": 16})
    got = _run(m4, f"nrqc_bits_conv1x1_f32(x, wt, y, {', '.join(map(str, consts))})",
               {"x": pk.pack_channels(np.moveaxis(x01, 1, -1)), "wt": wt}, {"y": ((n, o, h, w), "float32")})
    np.testing.assert_allclose(got.outputs["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,o,o2,signed", [(37, 5, 2, True), pytest.param(32, 16, 1, False, marks=pytest.mark.slow)])
def test_fused_float_head(m4, c, o, o2, signed):
    """nrqc_bits_head_f32: the 1x1 conv on the packed map, bias, NaN-keeping ReLU and the
    second 1x1 conv with bias, per pixel, against numpy in float64."""
    rng = np.random.default_rng(5)
    n, h, w = 1, 2, 9
    x01 = rng.random((n, c, h, w)) < 0.5
    wt = rng.standard_normal((o, c)).astype(np.float32)
    b1, w2, b2 = (rng.standard_normal(s).astype(np.float32) for s in ((o,), (o2, o), (o2,)))
    xv = np.where(x01, 1.0, -1.0 if signed else 0.0)
    hid = np.maximum(np.einsum("nchw,oc->nohw", xv, wt.astype(np.float64)) + b1[None, :, None, None], 0)
    want = np.einsum("nohw,po->nphw", hid, w2.astype(np.float64)) + b2[None, :, None, None]
    op = {"op": "binary_conv1x1_float", "n": n, "c": c, "h": h, "w": w, "o": o, "signed_input": signed}
    consts = dsp.fused_head_consts(op, o2)
    got = _run(m4, f"nrqc_bits_head_f32(x, wt, b1, w2, b2, y, {', '.join(map(str, consts))})",
               {"x": pk.pack_channels(np.moveaxis(x01, 1, -1)), "wt": wt, "b1": b1, "w2": w2, "b2": b2},
               {"y": ((n, o2, h, w), "float32")})
    np.testing.assert_allclose(got.outputs["y"], want, rtol=1e-5, atol=1e-5)


def test_popcount_is_inline_and_exact(m4):
    vals = np.array([0, 1, 0xFFFFFFFF, 0x80000000, 0x12345678, 0xF0F0F0F0, 0x7FFFFFFF, 0xDEADBEEF], np.uint32)
    call = "({ for (int i = 0; i < 8; i++) y[i] = nrqc_popcount32(v[i]); 0; })"
    got = _run(m4, call, {"v": vals}, {"y": ((8,), "int32")})
    np.testing.assert_array_equal(got.outputs["y"], [bin(int(v)).count("1") for v in vals])


# (src_shape, src_perm, conv geometry (n, c, h, w, co, kh, kw, stride, pad, dilation), src dtype, q dtype, zp, pool)
_S8_CASES = {
    "vad_first_float": ((1, 100, 80), (0, 2, 1), (1, 80, 1, 100, 32, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1)),
                        "float32", "int8", 0, None),
    "odd_2d_int8": ((1, 5, 9, 11), None, (1, 5, 9, 11, 7, 3, 3, (2, 1), (1, 1, 1, 0), (1, 2)), "int8", "int8", -3,
                    None),
    "uint8_zp_float": ((1, 3, 8, 7), None, (1, 3, 8, 7, 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)), "float32", "uint8",
                       131, None),
    "conv1d_uint8_k5_slide": ((1, 7, 1, 23), None, (1, 7, 1, 23, 6, 1, 5, (1, 1), (0, 2, 0, 1), (1, 1)), "uint8",
                              "uint8", 128, None),
    "uint8_source_pooled": ((1, 6, 8, 8), None, (1, 6, 8, 8, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)), "uint8", "uint8",
                            120, ((2, 2), (2, 2), (0, 0, 0, 0))),
    # int8 weights, time-blocked (cortex_m_smlad.time_block): odd C (even padding), a last
    # block shorter than TB; C 127 (TB limited to 4 by LDRD's offset range); a fused pool
    # (the int8 weights one pixel at a time)
    "conv1d_int8_tb_odd": ((1, 9, 1, 17), None, (1, 9, 1, 17, 11, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1)), "int8",
                           "int8", 5, None),
    "conv1d_float_tb4_c127": ((1, 1, 127, 10), (0, 2, 1, 3), (1, 127, 1, 10, 5, 1, 2, (1, 1), (0, 0, 0, 1), (1, 1)),
                              "float32", "int8", 0, None),
    # C 181: a time block of 3 at most, so int16 pairs and the per-pixel sliding window
    "conv1d_int16_slide_c181": ((1, 181, 1, 9), None, (1, 181, 1, 9, 5, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1)), "int8",
                                "int8", 0, None),
    "conv1d_int8_tb_pooled": ((1, 9, 1, 17), None, (1, 9, 1, 17, 11, 1, 3, (1, 1), (0, 1, 0, 1), (1, 1)), "int8",
                              "int8", 5, ((1, 2), (1, 2), (0, 0, 0, 0))),
}


# fused pools exist only for packed outputs
_S8_PARAMS = [pytest.param(c, o, marks=() if c in ("vad_first_float", "odd_2d_int8", "conv1d_int8_tb_odd") and
                           o == "pack" else
                           pytest.mark.slow)
              for c in _S8_CASES for o in ("pack", "float") if o == "pack" or _S8_CASES[c][-1] is None]


@pytest.mark.parametrize("case,out", _S8_PARAMS)
def test_smlad_int8_conv_bit_exact(m4, case, out):
    from nrqc.targets.kernels import binary_ops as bo
    from nrqc.targets.kernels import int8_conv as ic
    from nrqc.targets.kernels.strategies import cortex_m_smlad as sm

    src_shape, perm, geo, src_dtype, q_dtype, zp, pool = _S8_CASES[case]
    n, c, h, w, co, kh, kw, stride, pad, dil = geo
    g = ic.Int8ConvGeom(bo.ConvGeom(n, c, h, w, co, kh, kw, stride, pad, dil), src_shape, perm, src_dtype, q_dtype,
                        0.037, zp)
    rng = np.random.default_rng(4)
    if src_dtype == "float32":
        x = (rng.standard_normal(src_shape) * 3).astype(np.float32)
        x.flat[:4] = [0.0185, -0.0185, 1e9, -1e9]  # a rounding tie neighbour and saturation
        q = ic.ref_quantize(x, g.scale, zp, q_dtype)
    else:
        x = rng.integers(np.iinfo(src_dtype).min, np.iinfo(src_dtype).max + 1, src_shape).astype(src_dtype)
        q = x
    view = q if perm is None else np.transpose(q, perm)
    q_nchw = view.reshape(n, c, h, w)
    wq = rng.integers(-128, 128, (co, c, kh, kw)).astype(np.int8)
    acc = ic.ref_int8_conv_acc(q_nchw, zp, wq, g.conv)
    # the weight layout each case is meant to exercise: int8 time-blocked (TB) or int16 pairs (0)
    assert sm.time_block(g) == {"vad_first_float": 6, "conv1d_int8_tb_odd": 6, "conv1d_float_tb4_c127": 4,
                                "conv1d_uint8_k5_slide": 6,
                                "conv1d_int8_tb_pooled": 6}.get(case, 0)
    w4, corr = sm.weight_args(g, wq)
    consts = ", ".join(str(v) + ("u" if i == 1 else "") for i, v in enumerate(sm.call_consts(g, out, pool)))
    if out == "pack":
        sigma = rng.choice([-1, 1], co).astype(np.int32)
        thr = rng.integers(-2000, 2000, co).astype(np.int32)
        ext = acc if pool is None else _ref_pool_ext(acc, sigma, pool)
        want = pk.pack_channels(np.moveaxis(sigma[None, :, None, None] * ext >= thr[None, :, None, None], 1, -1))
        call = f"nrqc_s8_conv_smlad(x, w4, corr, sg, th, 0, y, {consts})"
        inputs = {"x": x, "w4": w4, "corr": corr, "sg": sigma, "th": thr}
        got = _run(m4, call, inputs, {"y": (want.shape, "uint32")})
        np.testing.assert_array_equal(got.outputs["y"], want)
    else:
        scale = rng.uniform(0.001, 0.01, co).astype(np.float32)
        want = (acc.astype(np.float32) * scale[None, :, None, None]).astype(np.float32)
        call = f"nrqc_s8_conv_smlad(x, w4, corr, 0, 0, sc, y, {consts})"
        got = _run(m4, call, {"x": x, "w4": w4, "corr": corr, "sc": scale}, {"y": (want.shape, "float32")})
        np.testing.assert_array_equal(got.outputs["y"], want)


# float conv (nrqc_f32_conv): x shape, weights (co, kh, kw), stride, pad (t, l, b, r), dilation, relu
_F32_CASES = {
    "odd_2d": ((1, 3, 9, 11), (7, 3, 3), (2, 1), (1, 1, 1, 0), (1, 2), 1),
    "conv1d_k5": ((1, 5, 1, 23), (6, 1, 5), (1, 1), (0, 2, 0, 1), (1, 1), 0),
    "wide_stride2_n2": ((2, 4, 6, 13), (9, 2, 3), (1, 2), (0, 1, 1, 1), (2, 1), 1),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c == "odd_2d" else pytest.mark.slow)
                                  for c in _F32_CASES])
def test_float_conv_matches_numpy(m4, case):
    """Float: no bit-exact reference (VFMA rounds once per step); numpy in float64 within
    float32 accumulation error, on odd channel counts (Co not a multiple of 4), borders on
    both sides, an odd number of interior pixels, stride, dilation, batch 2, ReLU on/off."""
    from nrqc.cortex_m import float_conv as fc

    x_shape, (co, kh, kw), stride, pad, dil, relu = _F32_CASES[case]
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((co, x_shape[1], kh, kw)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    geo = {"stride": stride, "pad": pad, "dilation": dil, "relu": relu}
    want = fc.ref_conv(x, w, b, geo)
    want = np.maximum(want, 0) if relu else want
    w4 = fc.conv_weights(w)
    bias = np.zeros(w4.shape[0] * 4, np.float32)
    bias[:co] = b
    consts = ", ".join(map(str, fc.call_consts(x_shape, co, kh, kw, want.shape, geo)))
    got = _run(m4, f"nrqc_f32_conv(x, w4, b, y, {consts})", {"x": x, "w4": w4, "b": bias},
               {"y": (want.shape, "float32")})
    np.testing.assert_allclose(got.outputs["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geo", [{"kernel": (3, 2), "stride": (2, 1), "pad": (1, 0, 1, 1)},
                                 pytest.param({"kernel": (2, 2), "stride": (2, 2), "pad": (0, 0, 1, 1)},
                                              marks=pytest.mark.slow)])
def test_float_maxpool_bit_exact_with_nan(m4, geo):
    """nrqc_f32_maxpool equals numpy's window max exactly, padding never wins, and a NaN in a
    window gives NaN (the model's NaN-propagating max)."""
    from nrqc.cortex_m import float_conv as fc

    x = np.random.default_rng(6).standard_normal((1, 3, 7, 9)).astype(np.float32)
    x[0, 1, 3, 4] = np.nan
    want = fc.ref_maxpool(np.nan_to_num(x, nan=np.inf), geo)
    want[np.isinf(want) & (want > 0)] = np.nan  # windows holding the NaN
    (kh, kw), (sh, sw), pad = geo["kernel"], geo["stride"], geo["pad"]
    consts = ", ".join(map(str, (3, 7, 9, kh, kw, sh, sw, pad[0], pad[1], want.shape[2], want.shape[3])))
    got = _run(m4, f"nrqc_f32_maxpool(x, y, {consts})", {"x": x}, {"y": (want.shape, "float32")})
    np.testing.assert_array_equal(got.outputs["y"], want)
    assert np.isnan(got.outputs["y"]).any()
