"""Tensor intrinsics for the unpack-to-u8 + int8 dot-product strategy.

AVX-512 VNNI ``vpdpbusd``: 16 int32 lanes, each += 4 u8 x 4 s8 products. The description
and implementation are TVM's own (tvm/s_tir/tensor_intrin/x86.py); they are registered
here under nrqc's name because importing ``tvm.s_tir.tensor_intrin`` loads every
target's intrinsics (30-50 s on these machines).
"""
from __future__ import annotations

import functools

from tvm.script import tirx as T

VNNI_16x4 = "nrqc_dot_16x4_u8i8i32_vnni"


def dot_16x4_desc(a_dtype: str):
    """The 16x4 dot product's description: 16 int32 lanes, each += 4 `a_dtype` x 4 s8
    products ("uint8": vpdpbusd's u8 x s8; "int8": the int8-input strategies' s8 x s8)."""

    @T.macro
    def update(A, B, C):
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return dot_16x4_func(a_dtype, update)


def dot_16x4_func(a_dtype: str, update):
    """A 16x4 PrimFunc on `a_dtype` x s8 -> s32 (the description, or an implementation of
    it): the buffers and the root block each declares, around `update(A, B, C)` (a
    ``T.macro``: the reference loop nest or an ISA's instructions)."""

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), a_dtype, offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            update(A, B, C)

    return impl


_desc = dot_16x4_desc("uint8")


@T.macro
def _vnni_update(A, B, C):
    A_u8x4 = A.vload([0], "uint8x4")
    A_i32 = T.reinterpret(A_u8x4, dtype="int32")
    B_i8x64 = B.vload([0, 0], dtype="int8x64")
    C_i32x16 = C.vload([0], dtype="int32x16")
    # LLVM >= 20 declares vpdpbusd on <64 x i8> operands (older LLVM: <16 x i32>)
    C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
        C_i32x16, T.reinterpret(T.broadcast(A_i32, 16), dtype="int8x64"), B_i8x64, dtype="int32x16")


_vnni = dot_16x4_func("uint8", _vnni_update)


@functools.lru_cache(maxsize=1)
def vnni_16x4() -> str:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(VNNI_16x4, _desc, _vnni, override=True)
    return VNNI_16x4
