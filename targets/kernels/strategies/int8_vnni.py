"""Int8-input conv on AVX-512 VNNI (``vpdpbusd``, u8 x s8): the s8 input is shifted to u8
(x_s8 + 128, i.e. q ^ 0x80 for int8 q, q itself for uint8 q) while the rows one output row
reads are loaded (and quantized, for a float source), and the offset comes back out in the
per-channel correction, -(pad_s8 + 128) * sum(w_c). The loop nest, weight layout
([kh, kw, C4/4, Co16, 4]) and register-blocked schedule are the binary VNNI strategy's
(strategies/vnni.py): 16 output channels of a pixel per vpdpbusd, 4 input channels deep;
or, when the input channels are not a multiple of 4 (the first layer's single channel), 4
bytes of a kernel row's taps x channels deep (``dot4_form``: int8_conv.acc_row4)."""
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
    # vpdpbusd at the int8 peak, plus loading (and quantizing) kh padded input rows per output row
    return taps(c) * dot4_depth(g) / int8_macs_per_cycle(target) + c.n * c.ho * c.kh * c.w * max(c.c_in, 4) / 16


def weight_args(g, wq):
    return [dot4_weights(g, wq), ic.s8_correction(g, wq, U8_OFFSET)]


def build(g, out: str, target, pool=None, strict: bool = False):
    func, how = dot4_form(g, out, pool, U8_OFFSET, "uint8")
    return vnni.schedule(func, g.conv, out, target, pool, strict, **how)


def dot4_depth(g) -> float:
    """Dot-product bytes per (output pixel, channel, tap) of the layout dot4_form picks."""
    c = g.conv
    k4 = ic.row_taps(g)
    return k4 / c.kw if k4 is not None else pk.vnni_padded_channels(c.c_in, c.c_out)[0]


def dot4_weights(g, wq):
    """The weight layout of dot4_form: row taps [kh, K4/4, Co16, 4] or channels [kh, kw, C4/4, Co16, 4]."""
    return ic.row_tap_weights(wq) if ic.row_taps(g) is not None else pk.vnni_weights(wq)


def dot4_form(g, out: str, pool, offset: int, dtype: str):
    """(unscheduled PrimFunc, vnni.schedule keywords) of the x86 dot-product strategies:
    a kernel row's taps on the reduction axis where the input channels are not a multiple
    of 4 (int8_conv.row_taps; measured on the DNSMOS-like first layer, 1 channel x 3x3),
    else the channel-deep dot4_conv."""
    k4 = ic.row_taps(g)
    if k4 is None:
        return dot4_conv(g, out, pool, offset, dtype), {}
    c = g.conv
    co16 = pk.vnni_padded_channels(c.c_in, c.c_out)[1]
    func = ic.int8_conv(g, lambda g_, X, W: ic.acc_row4(g_, X, W, offset, dtype), [(c.kh, k4 // 4, co16, 4)],
                        out, pool)
    return func, {"reduction": (("r", c.kh), ("cq", k4 // 4), ("ci", 4)), "unroll_taps": True}


def dot4_conv(g, out: str, pool, offset: int, dtype: str):
    """The unscheduled 4-deep dot-product form (also the AVX2 strategy's, with s8 operands)."""
    c = g.conv
    c4, co16 = pk.vnni_padded_channels(c.c_in, c.c_out)
    return ic.int8_conv(g, lambda g_, X, W: ic.acc_dot4(g_, X, W, offset, dtype), [(c.kh, c.kw, c4 // 4, co16, 4)],
                        out, pool)
