"""A full-precision two-layer 1x1 head on a packed binary map, in one kernel.

The VAD's head (and any model ending the same way) reads the last binary map with a float
1x1 conv + bias + ReLU and then a second float 1x1 conv + bias. Run as separate kernels,
the packed map is unpacked to a float32 map (or read by a select-add kernel) and the
hidden layer's float32 map is stored whole before the second conv reads it: for the VAD
[32, 100] + [16, 100] float32 = 19.2 kB of activations, more than every binary map of the
model together. Here each pixel's hidden vector lives in registers only:

    h[j] = ReLU(B1[j] + sum_k bit_k(X) W1[k, j])     (bit in {0,1}, or {-1,+1} signed)
    Y[o] = B2[o] + sum_j W2[o, j] h[j]

in the order the separate kernels add (the conv's sum from 0, then the bias), so the result
matches them. Scratch: the hidden vector and one output accumulator. ReLU keeps a NaN as the model's ReLU does (nrqc.passes.nan_semantics).
W1 is stored [C, O1] so the select-add over a pixel's bits is a contiguous vector per bit.
"""
from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from nrqc.targets.kernels.binary_ops import describe, hand_written
from nrqc.targets.kernels.packing import WORD, n_words


def bits_head(n: int, c: int, h: int, w: int, o1: int, o2: int, signed_input: bool = False,
              out_shape: tuple[int, ...] | None = None):
    """Params (X uint32 [N, H, W, ceil(C/32)], W1 float32 [C, O1], B1 float32 [O1],
    W2 float32 [O2, O1], B2 float32 [O2], Y float32 [N, O2, H, W]); `out_shape`: Y's shape
    when the model reshapes the head's output (the same elements in the same order, e.g. the
    VAD's [1, frames]), so no reshape kernel copies it."""
    wc = n_words(c)
    out_shape = tuple(out_shape or (n, o2, h, w))
    if len(out_shape) == 0 or int(np.prod(out_shape)) != n * o2 * h * w:
        raise ValueError(f"bits_head: output shape {out_shape} does not hold {n}x{o2}x{h}x{w} values")

    @T.prim_func(s_tir=False)
    def kernel(X: T.Buffer((n, h, w, wc), "uint32"), W1: T.Buffer((c, o1), "float32"),
               B1: T.Buffer((o1,), "float32"), W2: T.Buffer((o2, o1), "float32"),
               B2: T.Buffer((o2,), "float32"), Yd: T.Buffer(out_shape, "float32")):
        T.func_attr({"tirx.noalias": True})
        hid = T.alloc_buffer((o1,), "float32", scope="local")
        acc = T.alloc_buffer((1,), "float32", scope="local")
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    for j in T.vectorized(o1):
                        hid[j] = T.float32(0)
                    for k in range(c):
                        for j in T.vectorized(o1):
                            hid[j] = hid[j] + T.Select(
                                T.bitwise_and(T.shift_right(X[i, y, x, k // WORD], T.Cast("uint32", k % WORD)),
                                              T.uint32(1)) == T.uint32(1),
                                W1[k, j], -W1[k, j] if signed_input else T.float32(0))
                    for j in T.vectorized(o1):
                        hid[j] = hid[j] + B1[j]
                        hid[j] = T.Select(T.isnan(hid[j]), hid[j], T.max(hid[j], T.float32(0)))
                    for o in range(o2):
                        acc[0] = T.float32(0)
                        for j in range(o1):
                            acc[0] = acc[0] + W2[o, j] * hid[j]
                        Yd[_at(((i * o2 + o) * h + y) * w + x, out_shape)] = acc[0] + B2[o]

    return describe(hand_written(kernel), "bits_head", n=n, c=c, h=h, w=w, o1=o1, o2=o2,
                    signed_input=signed_input)


def _at(flat, shape):
    """The index of row-major element `flat` in a buffer of `shape` (Y written in the model's
    own output shape; a buffer view would be counted as scratch by the memory plan)."""
    idx = []
    for d in reversed(shape[1:]):
        idx.append(flat % d)
        flat = flat // d
    return tuple([flat] + idx[::-1])
