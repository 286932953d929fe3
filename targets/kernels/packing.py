"""Host-side (compile-time) packing of weights and activations, and plain numpy references
for every packed operator (the tests' independent ground truth)."""
from __future__ import annotations

import numpy as np

# The one word size of packed maps and packed weights: bit c % WORD of word c // WORD.
# uint32, not uint64: the C back end's popcount is 32-bit (Cortex-M has no 64-bit
# registers) and every x86/Arm vector popcount has 32-bit lanes.
WORD = 32
# Input channels of one table-lookup quad (4 nibbles x 16 entries = one 64-byte vpermb
# table; kernels/lut.py).
LUT_QUAD = 16


def n_words(c: int) -> int:
    return (c + WORD - 1) // WORD


def pack_channels(bits: np.ndarray) -> np.ndarray:
    """bool/0-1 array [..., C] -> uint32 [..., ceil(C/32)], bit c%32 of word c//32."""
    bits = np.asarray(bits).astype(bool)
    c = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (n_words(c) * WORD,), bool)
    padded[..., :c] = bits
    grouped = padded.reshape(bits.shape[:-1] + (n_words(c), WORD)).astype(np.uint64)
    return (grouped << np.arange(WORD, dtype=np.uint64)).sum(-1).astype(np.uint32)


def unpack_channels(words: np.ndarray, c: int) -> np.ndarray:
    w = np.asarray(words, np.uint32)[..., None] >> np.arange(WORD, dtype=np.uint32)
    return (w & 1).reshape(words.shape[:-1] + (-1,))[..., :c].astype(np.uint8)


def pack_nchw(x: np.ndarray) -> np.ndarray:
    """{0,1} (or >0 for +1) NCHW map -> packed NHWC words."""
    return pack_channels(np.moveaxis(np.asarray(x) > 0, 1, -1))


def _full_channel(w: np.ndarray, groups: int) -> np.ndarray:
    """[Co, Cg, kh, kw] -> [Co, kh, kw, C_in] with zeros outside each output's group."""
    co, cg, kh, kw = w.shape
    og = co // groups
    full = np.zeros((co, kh, kw, cg * groups), w.dtype)
    for o in range(co):
        g = o // og
        full[o, :, :, g * cg:(g + 1) * cg] = np.moveaxis(w[o], 0, -1)
    return full


def bitplanes_int8(wq: np.ndarray, groups: int = 1) -> np.ndarray:
    """int8 [Co,Cg,kh,kw] -> uint32 [8, Co, kh, kw, Wi] two's-complement bit-planes."""
    full = _full_channel(wq.astype(np.int8), groups).view(np.uint8)
    return np.stack([pack_channels((full >> b) & 1) for b in range(8)])


def masked_weights(wq: np.ndarray) -> np.ndarray:
    """int8 [Co,Cg,kh,kw] -> int8 [kh, kw, Cg, Co] (the masked-add kernel's layout)."""
    return np.ascontiguousarray(np.transpose(wq.astype(np.int8), (2, 3, 1, 0)))


def binary_weights(wsign: np.ndarray, groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """+-1 [Co,Cg,kh,kw] -> (Wp uint32 [Co,kh,kw,Wi] bit=1 for +1, group mask M [Co, Wi])."""
    full = _full_channel((wsign > 0).astype(np.uint8), groups)
    mask = _full_channel(np.ones_like(wsign, np.uint8), groups)[:, 0, 0, :]
    return pack_channels(full), pack_channels(mask)


# ------------------------------------------------------------------ numpy references


def ref_conv_acc(x: np.ndarray, w: np.ndarray, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Exact integer conv: x int [N,C,H,W], w int [Co,Cg,kh,kw] -> int64 [N,Co,Ho,Wo]."""
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + pad[0] + pad[2], wd + pad[1] + pad[3]), np.int64)
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    ho = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, co, ho, wo), np.int64)
    og = co // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og].astype(np.int64)
        for r in range(kh):
            for s in range(kw):
                patch = xs[:, :, r * dilation[0]:r * dilation[0] + stride[0] * (ho - 1) + 1:stride[0],
                           s * dilation[1]:s * dilation[1] + stride[1] * (wo - 1) + 1:stride[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, r, s])
    return out


def ref_or_pool(x01: np.ndarray, kernel, stride, pad) -> np.ndarray:
    """Max-pool of a {0,1} NCHW map (padding never wins: pads with 0)."""
    n, c, h, w = x01.shape
    xp = np.zeros((n, c, h + pad[0] + pad[2], w + pad[1] + pad[3]), x01.dtype)
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x01
    ho = (xp.shape[2] - kernel[0]) // stride[0] + 1
    wo = (xp.shape[3] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, c, ho, wo), x01.dtype)
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            out = np.maximum(out, xp[:, :, r:r + stride[0] * (ho - 1) + 1:stride[0], s:s + stride[1] * (wo - 1) + 1:stride[1]])
    return out


def vnni_padded_channels(c_in: int, c_out: int) -> tuple[int, int]:
    """(input channels rounded up to 4, output channels rounded up to 16): one vpdpbusd
    reads 4 u8 per int32 lane and has 16 lanes."""
    return (c_in + 3) // 4 * 4, (c_out + 15) // 16 * 16


def vnni_weights(wq: np.ndarray) -> np.ndarray:
    """int8 [Co,C,kh,kw] (groups 1) -> int8 [kh, kw, C4/4, Co16, 4], zero-padded."""
    co, c, kh, kw = wq.shape
    c4, co16 = vnni_padded_channels(c, co)
    w = np.zeros((co16, c4, kh, kw), np.int8)
    w[:co, :c] = wq
    return np.ascontiguousarray(np.transpose(w.reshape(co16, c4 // 4, 4, kh, kw), (3, 4, 1, 0, 2)))


def amx_weights(wq: np.ndarray, plan) -> np.ndarray:
    """int8 [Co,C,kh,kw] (groups 1) -> int8 [kh, kwg, nq, cc/4, Cop, 4]: per kernel row,
    group of plan.m adjacent taps and channel chunk, one AMX B tile (cc/4 rows of 16 output
    channels x 4 bytes; byte k of a row pair is (tap k // C4, channel k % C4) of the group)."""
    co, c, kh, kw = wq.shape
    c4, m, kwg, cop = plan.c4, plan.m, plan.kwg, plan.cop
    w = np.zeros((cop, c4, kh, kwg * m), np.int8)
    w[:co, :c, :, :kw] = wq
    w = np.transpose(w.reshape(cop, c4, kh, kwg, m), (2, 3, 4, 1, 0))  # kh, kwg, m, c4, cop
    w = w.reshape(kh, kwg, plan.nq, plan.cc // 4, 4, cop)  # m * C4 = nq * cc bytes per group
    return np.ascontiguousarray(np.transpose(w, (0, 1, 2, 3, 5, 4)))


def lut_weights(wq: np.ndarray, plan) -> np.ndarray:
    """int8 [Co, C, kh, kw] (groups 1) -> int8 [kh*kw*nh, Cop, 16]: per tap and quad of 16
    input channels, output channel o's 16 weights (zero past C_in and C_out), channel
    4j + k of the quad in byte 4j + k: the dword j is the weights of table j's nibble."""
    co, c, kh, kw = wq.shape
    w = np.zeros((plan.cop, kh, kw, plan.nh * LUT_QUAD), np.int8)
    w[:co, :, :, :c] = np.transpose(wq.astype(np.int8), (0, 2, 3, 1))
    w = w.reshape(plan.cop, kh, kw, plan.nh, LUT_QUAD)
    return np.ascontiguousarray(np.transpose(w, (1, 2, 3, 0, 4)).reshape(kh * kw * plan.nh, plan.cop, LUT_QUAD))
