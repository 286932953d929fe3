"""Unpack to u8 + ``vpmaddubsw``/``vpmaddwd`` on AVX2 (Haswell, Zen 2: no AVX-512, no VNNI).

The workload, weight layout and schedule are the VNNI strategy's (strategies/vnni.py): the
u8 {0,1} rows an output row reads are unpacked from the packed words, and 16 output
channels of a pixel are updated per (tap, 4 input channels). Only the 16x4 dot product
differs: per 8 output channels one ``vpmaddubsw`` (u8 x s8, pairs summed to s16: at most
2 x 128 in magnitude for {0,1} inputs, so never saturating) and one ``vpmaddwd`` by ones
(pairs of s16 summed to s32), then ``vpaddd``: 3 instructions per 32 MACs where VNNI has
one ``vpdpbusd``."""
from __future__ import annotations

import functools

from tvm.script import tirx as T

from nrqc.targets.kernels import binary_ops as bo
from nrqc.targets.kernels import intrin
from nrqc.targets.kernels import packing as pk
from nrqc.targets.kernels.strategies import vnni
from nrqc.targets.kernels.strategies.estimates import taps

NAME = "avx2_maddubs"
WEIGHTS = "int8"


def available(target) -> bool:
    return target is not None and target.caps.has("avx2")


def supports(g) -> bool:
    # the VNNI schedule's loop nest: groups == 1, and output channels a multiple of 16
    # (other counts fail its tensorize: measured on c_out = 24, where it would fall back
    # to plain loops). A fused pool is not known here: a 3x3 stride-2 padded one is beyond
    # the tensorize too and runs as plain loops, exact, with a note in the compile report
    # (as for vnni); the zoo models' 2x2 stride-2 pools are tensorized.
    return g.groups == 1 and g.c_out % 16 == 0


def cost(g, target) -> float:
    """vpmaddubsw + vpmaddwd + vpaddd per 8 output channels x 4 input channels (32 MACs),
    always 256-bit (the AVX2 intrinsics), whatever the target's vector width. Haswell issues
    vpmaddubsw and vpmaddwd on port 0 only (uops.info: p0 on HSW, p01 on SKL and Zen 2), so
    2 cycles per 32 MACs: 16 MAC/cycle, a quarter of the haswell description's
    ``peak_int8_macs_per_cycle`` (64, which counts 2 ports); Zen 4 running the haswell build
    measured 31-37. Plus the u8 unpack of kh input rows per output row (32 channels per
    256-bit vector)."""
    c4 = pk.vnni_padded_channels(g.c_in, g.c_out)[0]
    return taps(g) * c4 / 16 + g.n * g.ho * g.kh * g.w * g.c_in / 32


def weight_args(g, wq):
    return vnni.weight_args(g, wq)


def build(g, out: str, target, pool=None, strict: bool = False):
    return vnni.schedule(bo.binary_conv(g, WEIGHTS, "vnni", out, pool), g, out, target, pool, strict,
                         dot_16x4=maddubs_16x4())


@T.prim_func(s_tir=True)
def _maddubs(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        # the 4 input bytes in every dword: u8 pair (4i+2k, 4i+2k+1) meets B[i, 2k:2k+2]
        a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="int8x32")
        ones = T.broadcast(T.int16(1), 16)
        for h in T.unroll(2):
            C[T.ramp(h * 8, 1, 8)] = C.vload([h * 8], "int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), a,
                                        B.vload([h * 8, 0], "int8x32"), dtype="int16x16"),
                ones, dtype="int32x8")


MADDUBS_16x4 = "nrqc_dot_16x4_u8i8i32_avx2"


@functools.lru_cache(maxsize=1)
def maddubs_16x4() -> str:
    """The AVX2 16x4 dot product, registered under its own name (the description is the
    VNNI one, so the same schedule tensorizes with either)."""
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(MADDUBS_16x4, intrin._desc, _maddubs, override=True)
    return MADDUBS_16x4
