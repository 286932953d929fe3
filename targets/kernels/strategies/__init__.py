"""Kernel strategies for binary-activation convolutions: one module per strategy, one
ordered registry.

Every strategy module exposes the same small interface:

    NAME                      the strategy's name (manifest "strategy", kernel names)
    WEIGHTS                   "int8" (a candidate chosen per layer by `select`) or "binary"
                              (+-1 weights; the input encoding decides between them)
    available(target) -> bool  from ``target.caps`` only (never target strings)
    supports(g) -> bool        the layer geometry it handles (e.g. groups == 1)
    cost(g, target) -> float   op-count estimate in cycles, used when timing is impossible
    weight_args(g, wq)         its weight layout (``packing.py``), from int8 [Co, Cg, kh, kw]
    build(g, out, target, pool=None, strict=False)   the scheduled PrimFunc

Adding a strategy (NEON sdot on aarch64 A76, AVX2 vpshufb/vpmaddubsw, Cortex-M DSP
SMLAD, ...) is one new module in this folder and one line in ``REGISTRY`` below: `select`
then offers, times or estimates it on every target whose capabilities make `available`
true, and `kernels.build` builds it. The order of ``REGISTRY`` is the order candidates are
listed (and the tie-break when two estimates are equal).
"""
from __future__ import annotations

from nrqc.errors import NrqcError
from nrqc.targets.kernels.strategies import amx, and_popcount, avx2_lut, avx2_maddubs, avx2_xnor, bitserial, cortex_m_smlad, int8_avx2, int8_generic, \
    int8_neon_sdot, int8_neon_smull, int8_vnni, lut, masked, neon_and, neon_sadalp, neon_sdot, neon_xnor, vnni, xnor_popcount

REGISTRY = (bitserial, masked, avx2_maddubs, avx2_lut, neon_sadalp, neon_sdot, vnni, lut, amx, and_popcount, xnor_popcount, avx2_xnor, neon_and, neon_xnor)

# Int8-input convolutions (int8/uint8 activations x int8 weights: the all-integer first
# layer, ``kernels/int8_conv.py``). Same interface, with `g` an ``int8_conv.Int8ConvGeom``
# and build's kernel parameters as int8_conv.py lists them (weight_args ends with the
# per-channel int32 correction of the zero point). See docs/architecture.md, "An int8 strategy".
INT8_INPUT_REGISTRY = (int8_generic, int8_neon_smull, int8_neon_sdot, int8_avx2, int8_vnni, cortex_m_smlad)


def for_target(target, weights: str = "int8") -> tuple:
    """The strategies for `weights` whose capabilities the target has, in registry order."""
    return tuple(s for s in REGISTRY if s.WEIGHTS == weights and s.available(target))


def for_layer(g, target, weights: str = "int8") -> tuple:
    """The strategies that exist for this layer on this target."""
    return tuple(s for s in for_target(target, weights) if s.supports(g))


def lookup(weights: str, name: str):
    """The strategy module named `name` for `weights`."""
    for s in REGISTRY:
        if s.WEIGHTS == weights and s.NAME == name:
            return s
    known = ", ".join(f"{s.WEIGHTS}/{s.NAME}" for s in REGISTRY)
    raise NrqcError(f"no kernel strategy '{name}' for {weights} weights (known: {known})")


def int8_input_for_layer(g, target) -> tuple:
    """The int8-input conv strategies that exist for this layer (an Int8ConvGeom) on this target."""
    return tuple(s for s in INT8_INPUT_REGISTRY if s.available(target) and s.supports(g))


def int8_input_lookup(name: str):
    for s in INT8_INPUT_REGISTRY:
        if s.NAME == name:
            return s
    known = ", ".join(s.NAME for s in INT8_INPUT_REGISTRY)
    raise NrqcError(f"no int8-input conv strategy '{name}' (known: {known})")
