"""int8 weight fake-quantization: symmetric, per output channel, straight-through estimator.

scale_c = max|W_c| / 127 and W_q = clamp(round(W / scale), −127, 127).  Symmetric with a
zero point of 0 so that the exported `DequantizeLinear(W_q, scale, 0)` reproduces exactly
the weights used in training, and so that negating a channel (BatchNorm folding with
γ < 0) stays representable.
"""
from __future__ import annotations

import torch

QMAX = 127


def _scale(w: torch.Tensor, axis: int) -> torch.Tensor:
    dims = [d for d in range(w.dim()) if d != axis % w.dim()]
    amax = w.detach().abs().amax(dim=dims, keepdim=True) if dims else w.detach().abs()
    # An all-zero channel would divide by zero; any positive scale represents it exactly.
    return torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))


def channel_scale(w: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Per-channel symmetric scale max|W_c| / 127, shape [w.shape[axis]]."""
    return _scale(w, axis).reshape(-1)


def _broadcast_scale(w: torch.Tensor, axis: int, scale: torch.Tensor | None) -> torch.Tensor:
    """The per-channel scale shaped to broadcast against w: the given one, or max|W_c|/127."""
    if scale is None:
        return _scale(w, axis)
    shape = [1] * w.dim()
    shape[axis % w.dim()] = -1
    return scale.detach().reshape(shape)


def quantize_int8(w: torch.Tensor, axis: int = 0, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_q int8, scale float32 of shape [w.shape[axis]])."""
    s = _broadcast_scale(w, axis, scale)
    q = torch.clamp(torch.round(w.detach() / s), -QMAX, QMAX).to(torch.int8)
    return q, s.reshape(-1).to(torch.float32)


def fake_quant_int8(w: torch.Tensor, axis: int = 0, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Forward: dequantized int8 weights. Backward: identity (straight-through).

    ``scale`` (shape [w.shape[axis]]) overrides the per-channel max, e.g. to take the max
    over the input channels a pruned model keeps, so that training and export agree.
    """
    s = _broadcast_scale(w, axis, scale)
    wq = torch.clamp(torch.round(w / s), -QMAX, QMAX) * s
    return w + (wq - w).detach()
