"""The kernel-strategy registry: every strategy module registered once, availability from
capabilities per target and x86 CPU, weight layouts that round-trip to the int8 weights
(unpacked here with plain numpy, from each layout's documented byte order), and the
op-count estimates worked out by hand."""
from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

from nrqc.errors import NrqcError
from nrqc.targets import get_target, x86
from nrqc.targets.kernels import amx as amx_kernel
from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import lut as lut_kernel
from nrqc.targets.kernels import select, strategies

INTERFACE = ("NAME", "WEIGHTS", "available", "supports", "cost", "weight_args", "build")


def test_every_strategy_module_is_registered_once():
    mods = []
    for info in pkgutil.iter_modules(strategies.__path__):
        mod = importlib.import_module(f"{strategies.__name__}.{info.name}")
        if hasattr(mod, "NAME"):  # helpers (shared estimates) have no NAME
            mods.append(mod)
    registered = strategies.REGISTRY + strategies.INT8_INPUT_REGISTRY  # binary-input and int8-input convs
    assert set(mods) == set(registered) and len(mods) == len(registered)
    for s in strategies.INT8_INPUT_REGISTRY:
        assert all(hasattr(s, a) for a in INTERFACE if a != "WEIGHTS"), s.__name__
        assert strategies.int8_input_lookup(s.NAME) is s
    keys = [(s.WEIGHTS, s.NAME) for s in strategies.REGISTRY]
    assert len(set(keys)) == len(keys)
    for s in strategies.REGISTRY:
        assert all(hasattr(s, a) for a in INTERFACE), s.__name__
        assert s.WEIGHTS in ("int8", "binary")
        assert strategies.lookup(s.WEIGHTS, s.NAME) is s
    with pytest.raises(NrqcError, match="no kernel strategy 'sdot'"):
        strategies.lookup("int8", "sdot")


def _names(target, g=None):
    g = g or bo.ConvGeom(1, 32, 8, 8, 32, 3, 3)
    return select.strategies_for(g, target)


@pytest.fixture
def amx_allowed(monkeypatch):
    monkeypatch.delenv("NRQC_NO_AMX", raising=False)


def test_available_per_x86_cpu(amx_allowed):
    assert _names(x86.describe("x86-64-v2")) == ("bitserial", "masked")
    avx2 = ("bitserial", "masked", "avx2_maddubs")  # no VNNI on AVX2 cores: vpmaddubsw
    assert _names(x86.describe("haswell")) == (*avx2, "avx2_lut")  # and vpshufb nibble tables
    assert _names(x86.describe("x86-64-v4")) == (*avx2, "avx2_lut")  # AVX-512 without VNNI
    assert _names(x86.describe("cascadelake")) == (*avx2, "avx2_lut", "vnni")  # VNNI without VBMI: no lut
    # with VBMI + VNNI the 64-byte vpermb tables replace the 16-byte vpshufb ones
    assert _names(x86.describe("icelake-server")) == (*avx2, "vnni", "lut")
    assert _names(x86.describe("sapphirerapids")) == (*avx2, "vnni", "lut", "amx")
    # grouped convs: the dot-product strategies need groups == 1
    assert _names(x86.describe("sapphirerapids"), bo.ConvGeom(1, 32, 8, 8, 32, 3, 3, groups=2)) == ("bitserial", "masked")


def test_amx_only_with_amx_int8(monkeypatch):
    monkeypatch.setenv("NRQC_NO_AMX", "1")
    assert "amx" not in _names(x86.describe("sapphirerapids"))
    assert strategies.amx.available(x86.describe()) == x86.amx_usable()


@pytest.mark.parametrize("name", ["arm_cpu", "armv7", "cortex-m4", "cortex-m7"])
def test_available_on_arm_and_cortex_m(name):
    t = get_target(name)
    # the NEON unpack-to-bytes kernel on the 64-bit Pi (tests/kernels/test_neon_strategies.py)
    neon = ["neon_sadalp"] if name == "arm_cpu" else []
    assert [s.NAME for s in strategies.for_target(t)] == ["bitserial", "masked", *neon]
    # and the NEON +-1 x +-1 popcount kernels there (tests/kernels/test_neon_popcount.py)
    pm1 = ["neon_and", "neon_xnor"] if name == "arm_cpu" else []
    assert [s.NAME for s in strategies.for_target(t, "binary")] == ["and", "xnor", *pm1]


def test_binary_strategies_on_x86():
    # the AVX2 nibble-popcount XNOR where there is no vpopcnt
    assert [s.NAME for s in strategies.for_target(x86.describe("haswell"), "binary")] == ["and", "xnor", "avx2_xnor"]
    assert [s.NAME for s in strategies.for_target(x86.describe("icelake-server"), "binary")] == ["and", "xnor"]


# ------------------------------------------------------------------ weight layouts

def _bit(words, c):
    """Bit c of packed words [..., W] (bit c % 32 of word c // 32)."""
    return (words[..., c // 32] >> np.uint32(c % 32)) & np.uint32(1)


def _from_bitplanes(lay, g):
    co, kh, kw = lay.shape[1:4]
    out = np.zeros((co, g.cg, kh, kw), np.int64)
    for o in range(co):
        base = (o // g.og) * g.cg
        for c in range(g.cg):
            u = np.zeros((kh, kw), np.int64)
            for b in range(8):
                u += _bit(lay[b, o], base + c).astype(np.int64) << b
            out[o, c] = np.where(u >= 128, u - 256, u)  # two's complement
    return out


def _from_masked(lay, g):
    return np.transpose(lay, (3, 2, 0, 1))  # [kh, kw, Cg, Co] -> [Co, Cg, kh, kw]


def _from_vnni(lay, g):
    # [kh, kw, C4/4, Co16, 4]: weight (o, c, r, s) at [r, s, c // 4, o, c % 4]
    o, c, r, s = np.meshgrid(np.arange(g.c_out), np.arange(g.c_in), np.arange(g.kh), np.arange(g.kw), indexing="ij")
    return lay[r, s, c // 4, o, c % 4]


def _from_lut(lay, g):
    # [kh*kw*nh, Cop, 16]: weight (o, c, r, s) at [(r*kw + s)*nh + c // 16, o, c % 16]
    nh = (g.c_in + 15) // 16
    o, c, r, s = np.meshgrid(np.arange(g.c_out), np.arange(g.c_in), np.arange(g.kh), np.arange(g.kw), indexing="ij")
    return lay[(r * g.kw + s) * nh + c // 16, o, c % 16]


def _from_amx(lay, g):
    # [kh, kwg, nq, cc/4, Cop, 4]: byte k = (tap in group) * C4 + c of tap group s // m,
    # in chunk k // cc, row (k % cc) // 4, column k % 4
    p = amx_kernel.amx_plan(g)
    o, c, r, s = np.meshgrid(np.arange(g.c_out), np.arange(g.c_in), np.arange(g.kh), np.arange(g.kw), indexing="ij")
    k = (s % p.m) * p.c4 + c
    return lay[r, s // p.m, k // p.cc, (k % p.cc) // 4, o, k % 4]


def _from_binary(wp, m, g):
    out = np.zeros((g.c_out, g.cg, g.kh, g.kw), np.int64)
    for o in range(g.c_out):
        base = (o // g.og) * g.cg
        for c in range(g.c_in):
            assert int(_bit(m[o], c)) == (base <= c < base + g.cg)  # group mask
        for c in range(g.cg):
            out[o, c] = np.where(_bit(wp[o], base + c) == 1, 1, -1)
    return out


UNPACK = {"bitserial": _from_bitplanes, "masked": _from_masked, "vnni": _from_vnni, "lut": _from_lut,
          "avx2_lut": _from_lut, "amx": _from_amx}

LAYOUT_GEOMS = [
    bo.ConvGeom(1, 37, 9, 11, 35, 3, 3, (1, 1), (1, 1, 1, 1)),        # odd channels, 2 words
    bo.ConvGeom(1, 100, 6, 9, 20, 3, 2, (2, 2), (1, 0, 1, 1)),         # AMX: 2 channel chunks
    bo.ConvGeom(1, 16, 5, 40, 17, 1, 5, (1, 1), (0, 2, 0, 2)),         # AMX: 4 taps per tile row
    bo.ConvGeom(1, 70, 6, 5, 66, 1, 3, (1, 2), (0, 1, 0, 1), groups=2),
    bo.ConvGeom(1, 33, 7, 6, 33, 3, 3, (1, 1), (1, 1, 1, 1), groups=33),  # depthwise
]


@pytest.mark.parametrize("name, gi", [(n, gi) for n in UNPACK for gi, g in enumerate(LAYOUT_GEOMS)
                                      if strategies.lookup("int8", n).supports(g)])
def test_int8_weight_layout_round_trips(name, gi):
    g = LAYOUT_GEOMS[gi]
    wq = np.random.default_rng(gi).integers(-128, 128, (g.c_out, g.cg, g.kh, g.kw)).astype(np.int8)
    wq[0, 0, 0, 0] = -128
    (lay,) = strategies.lookup("int8", name).weight_args(g, wq)
    np.testing.assert_array_equal(UNPACK[name](lay, g), wq)
    # everything past the real weights (channel padding, other groups' channels) is zero:
    # the layout holds exactly the weights' set bits
    assert np.unpackbits(np.ascontiguousarray(lay).view(np.uint8)).sum() == np.unpackbits(wq.view(np.uint8)).sum()


@pytest.mark.parametrize("name", ["and", "xnor"])
@pytest.mark.parametrize("gi", [0, 3, 4])
def test_binary_weight_layout_round_trips(name, gi):
    g = LAYOUT_GEOMS[gi]
    w = np.where(np.random.default_rng(gi).random((g.c_out, g.cg, g.kh, g.kw)) < 0.5, -1, 1).astype(np.int8)
    wp, m = strategies.lookup("binary", name).weight_args(g, w)
    np.testing.assert_array_equal(_from_binary(wp, m, g), w)


# ------------------------------------------------------------------ estimates

def test_cost_estimates_worked_by_hand():
    """The BAM conv (32 -> 32, 3x3, 20 x 12 output) on the Pi 4: 69,120 tap visits; the
    aarch64 figures are measured llvm-mca cycles per unit of work (strategies/neon_unpacked.py
    MEASURED_ON): bit-serial 8 planes x 1 word x 2.66, masked 32 channels x 0.895, neon_sadalp
    69,120 / 16 x 32 / 4 = 34,560 16x4 updates x 9.1.
    Cortex-M4 (popcount 32/12 bits per cycle): bit-serial 8 x (12 + 3) = 120 per visit,
    masked 32 x 7 = 224."""
    g = bo.ConvGeom(1, 32, 20, 12, 32, 3, 3, (1, 1), (1, 1, 1, 1))
    assert select.cost_model(g, get_target("arm_cpu")) == pytest.approx(
        {"bitserial": 69120 * 8 * 2.66, "masked": 69120 * 32 * 0.895, "neon_sadalp": 34560 * 9.1})
    m4 = select.cost_model(g, get_target("cortex-m4"))
    assert m4 == pytest.approx({"bitserial": 69120 * 120, "masked": 69120 * 224})
    # the LUT plan of this layer: 2 quads of 16 channels, one 16-lane block per row, 32 channels
    p = lut_kernel.lut_plan(g)
    assert (p.nh, p.nkb, p.cop) == (2, 1, 32)
    assert strategies.lut.cost(g, None) == 20 * 1 * 32 * (9 * 2 * 2 + 20 / 16)
