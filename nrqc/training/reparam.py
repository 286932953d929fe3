"""Noise reparameterization of a layer's width (Gómez & Bäckström, arXiv 2601.13704).

A layer of N units, kept in a fixed order, gets one continuous learned width K in
[K_min, N].  Writing c = ⌈K⌉ (the number of units export keeps):

- units 0 … c−2 pass unchanged;
- the boundary unit c−1 becomes η = sqrt(1−λ)·ξ + sqrt(λ)·σ·ν with ν ~ N(0, 1),
  σ the unit's standard deviation (so its variance is kept) and λ = c − K ∈ [0, 1);
- units c … N−1 are zero.

Convention check: with K = m + f (0 < f ≤ 1) the boundary unit is m and carries a
fraction 1 − λ = f of its information, so the information m + f grows linearly and
continuously with K: as K ↓ m, unit m fades to pure noise, and at K = m it is dropped
while unit m−1 is clean (λ = 0).  Using ⌊K⌋ for the boundary instead would jump.

In eval mode there is no noise: units below c pass and the rest are zero, which is
exactly the model that export produces by slicing to c units.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# sqrt(λ) and sqrt(1−λ) have infinite slope at λ ∈ {0, 1}; clamping keeps dη/dK finite.
# Consequence: at an exactly integer K (λ = 0, e.g. the initial K = N) the task gradient on
# K is 0; the complexity term moves K off the integer, after which both act.
_LAMBDA_EPS = 1e-4


class DynamicWidth(nn.Module):
    """A learned width K over ``n`` units along ``dim`` (1 = channels for NC… tensors,
    −1 = features for [B, …, F] tensors).  One instance may be shared by several layers
    (e.g. a residual stack) so that they keep the same number of units."""

    def __init__(self, n: int, k_min: float = 1.0, k_init: float | None = None, dim: int = 1):
        super().__init__()
        if not 1 <= k_min <= n:
            raise ValueError(f"k_min must be in [1, {n}], got {k_min}")
        self.n = int(n)
        self.k_min = float(k_min)
        self.dim = dim
        self.k = nn.Parameter(torch.tensor(float(n if k_init is None else k_init)))

    def clamp_(self):
        """Project K back into [K_min, N] (call after each optimizer step)."""
        with torch.no_grad():
            self.k.clamp_(self.k_min, self.n)

    def width(self) -> torch.Tensor:
        """K as a differentiable tensor, clamped to its range (for the complexity model)."""
        return self.k.clamp(self.k_min, self.n)

    def kept(self) -> int:
        """Number of units export keeps: ⌈K⌉."""
        return int(math.ceil(float(self.k.detach().clamp(self.k_min, self.n)) - 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.dim()
        if x.shape[dim] != self.n:
            raise ValueError(f"DynamicWidth over {self.n} units got a tensor with {x.shape[dim]} on dim {dim}")
        shape = [1] * x.dim()
        shape[dim] = self.n
        idx = torch.arange(self.n, device=x.device).reshape(shape)
        c = self.kept()
        if not self.training:
            return x * (idx < c).to(x.dtype)
        k = self.width()
        lam = (c - k).clamp(_LAMBDA_EPS, 1 - _LAMBDA_EPS)  # carries the gradient to K
        red = [d for d in range(x.dim()) if d != dim]
        sigma = x.detach().std(dim=red, keepdim=True, unbiased=False)
        noisy = torch.sqrt(1 - lam) * x + torch.sqrt(lam) * sigma * torch.randn_like(x)
        clean = (idx < c - 1).to(x.dtype)
        boundary = (idx == c - 1).to(x.dtype)
        return x * clean + noisy * boundary

    def extra_repr(self):
        return f"n={self.n}, k_min={self.k_min}, k={float(self.k):.3f}, dim={self.dim}"
