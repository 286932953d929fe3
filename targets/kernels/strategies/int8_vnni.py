"""Int8-input conv on AVX-512 VNNI (``vpdpbusd``, u8 x s8): the s8 input is shifted to u8
(x_s8 + 128, i.e. q ^ 0x80 for int8 q, q itself for uint8 q) while the rows one output row
reads are loaded (and quantized, for a float source), and the offset comes back out in the
per-channel correction, -(pad_s8 + 128) * sum(w_c). The loop nest, weight layout
([kh, kw, C4/4, Co16, 4]) and register-blocked schedule are the binary VNNI strategy's
(strategies/vnni.py): 16 output channels of a pixel per vpdpbusd, 4 input channels deep."""
from __future__ import annotations

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import vnni
from nrqc.targets.kernels.strategies.estimates import int8_macs_per_cycle, taps

NAME = "int8_vnni"
U8_OFFSET = 128


def available(target) -> bool:
    return vnni.available(target)


def supports(g) -> bool:
    return g.conv.groups == 1


def cost(g, target) -> float:
    c = g.conv
    c4 = pk.vnni_padded_channels(c.c_in, c.c_out)[0]
    # vpdpbusd at the int8 peak, plus loading (and quantizing) kh padded input rows per output row
    return taps(c) * c4 / int8_macs_per_cycle(target) + c.n * c.ho * c.kh * c.w * c4 / 16


def weight_args(g, wq):
    return [pk.vnni_weights(wq), ic.s8_correction(g, wq, U8_OFFSET)]


def build(g, out: str, target, pool=None, strict: bool = False):
    return vnni.schedule(dot4_conv(g, out, pool, U8_OFFSET, "uint8"), g.conv, out, target, pool, strict)


def dot4_conv(g, out: str, pool, offset: int, dtype: str):
    """The unscheduled 4-deep dot-product form (also the AVX2 strategy's, with s8 operands)."""
    c = g.conv
    c4, co16 = pk.vnni_padded_channels(c.c_in, c.c_out)
    return ic.int8_conv(g, lambda g_, X, W: ic.acc_dot4(g_, X, W, offset, dtype), [(c.kh, c.kw, c4 // 4, co16, 4)],
                        out, pool)
