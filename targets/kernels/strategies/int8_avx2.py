"""Int8-input conv on AVX2 (``vpmaddubsw`` + ``vpmaddwd``; Haswell, Zen 2: no VNNI).

vpmaddubsw multiplies u8 by s8 and adds pairs into s16 with saturation: with u8 inputs up
to 255 a pair reaches 2 x 255 x 127 = 64770 > 32767. So the sign of the input moves onto the
weight: |x_s8| (at most 128) is the u8 operand and ``vpsignb`` gives sign(x_s8) * w, so a
pair is at most 2 x 128 x 127 = 32512: exact. That needs |w| <= 127: a layer with a -128
weight is not supported (psign(-128) wraps; exporters write symmetric [-127, 127]). Per 8
output channels x 4 input channels: 2 vpsignb, vpmaddubsw, vpmaddwd by ones, vpaddd.
The loop nest and weight layout are the VNNI strategy's (strategies/int8_vnni.py), on the
s8 input itself (no offset, correction -pad_s8 * sum(w_c))."""
from __future__ import annotations

import functools

from tvm.script import tirx as T

from nrqc.targets.kernels import int8_conv as ic
from nrqc.targets.kernels import intrin
from nrqc.targets.kernels.strategies import int8_vnni, vnni
from nrqc.targets.kernels.strategies.estimates import taps

NAME = "int8_avx2"


def available(target) -> bool:
    return target is not None and target.caps.has("avx2")


def supports(g) -> bool:
    return g.conv.groups == 1 and not g.full_range_weights


def cost(g, target) -> float:
    """5 instructions per 32 MACs, vpmaddubsw/vpmaddwd on one port on Haswell (2 cycles per
    32 MACs, as strategies/avx2_maddubs.py), 256-bit whatever the target's width; plus the
    input rows' load (and quantize)."""
    c = g.conv
    return taps(c) * int8_vnni.dot4_depth(g) / 14 + c.n * c.ho * c.kh * c.w * max(c.c_in, 4) / 8


def weight_args(g, wq):
    return [int8_vnni.dot4_weights(g, wq), ic.s8_correction(g, wq)]


def build(g, out: str, target, pool=None, strict: bool = False):
    func, how = int8_vnni.dot4_form(g, out, pool, 0, "int8")
    return vnni.schedule(func, g.conv, out, target, pool, strict, dot_16x4=signed_16x4(), **how)


@T.macro
def _signed_update(A, B, C):
    # the 4 input bytes in every dword; |a| as the u8 operand, sign(a) moved onto the weights
    a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 8), dtype="int8x32")
    abs_a = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.psign.b"), a, a, dtype="int8x32")
    ones = T.broadcast(T.int16(1), 16)
    for h in T.unroll(2):
        C[T.ramp(h * 8, 1, 8)] = C.vload([h * 8], "int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), abs_a,
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.psign.b"),
                                        B.vload([h * 8, 0], "int8x32"), a, dtype="int8x32"),
                dtype="int16x16"),
            ones, dtype="int32x8")


_impl = intrin.dot_16x4_func("int8", _signed_update)


SIGNED_16x4 = "nrqc_dot_16x4_i8i8i32_avx2"


@functools.lru_cache(maxsize=1)
def signed_16x4() -> str:
    """The AVX2 s8 x s8 16x4 dot product (sign moved onto the weights), registered once."""
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(SIGNED_16x4, intrin.dot_16x4_desc("int8"), _impl, override=True)
    return SIGNED_16x4
