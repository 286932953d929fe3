"""Heaviside activation with the SuperSpike surrogate gradient.

Forward is the step Θ(x) = 1 for x > 0 else 0 (Θ(0) = 0, matching `Greater` in ONNX), or
the ±1 variant 2Θ(x) − 1.  Backward replaces the Dirac delta by the SuperSpike surrogate
1 / (β|x| + 1)² (Zenke & Ganguli 2018), as in Nilsson et al. 2024.  β is a property of each
layer: the authors' code keeps one global β for all layers, which makes it impossible to
tune per layer; here every :class:`Heaviside` owns its β.
"""
from __future__ import annotations

import torch
from torch import nn


def superspike_grad(x: torch.Tensor, beta: float) -> torch.Tensor:
    """d Θ / dx as the surrogate sees it: 1 / (β|x| + 1)²."""
    return 1.0 / (beta * x.abs() + 1.0) ** 2


class _HeavisideFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta: float, scale: float):
        ctx.save_for_backward(x)
        ctx.beta = beta
        ctx.scale = scale
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.scale * superspike_grad(x, ctx.beta), None, None


def heaviside(x: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """Θ(x) in {0, 1}; gradient 1/(β|x|+1)²."""
    return _HeavisideFn.apply(x, float(beta), 1.0)


def sign_spike(x: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """2Θ(x) − 1 in {−1, +1}; gradient 2/(β|x|+1)² (the derivative of 2Θ − 1)."""
    return 2.0 * _HeavisideFn.apply(x, float(beta), 1.0) - 1.0


class Heaviside(nn.Module):
    """Binary activation map. ``mode='binary'`` gives {0,1}, ``mode='sign'`` gives {−1,+1}.

    The threshold is the bias of the preceding layer: Θ(Wx + b) fires when Wx > −b.
    """

    def __init__(self, beta: float = 5.0, mode: str = "binary"):
        super().__init__()
        if mode not in ("binary", "sign"):
            raise ValueError(f"Heaviside mode must be 'binary' or 'sign', not {mode!r}")
        self.beta = float(beta)
        self.mode = mode

    def forward(self, x):
        return heaviside(x, self.beta) if self.mode == "binary" else sign_spike(x, self.beta)

    def extra_repr(self):
        return f"beta={self.beta}, mode={self.mode}"
