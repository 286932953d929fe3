"""A GRU whose hidden size is a learned width (noise reparameterization inside the recurrence).

Masking a GRU's output is not enough: removed units would still feed the recurrence.  Here
the gate is applied to the hidden state at every step, so units beyond ⌈K⌉ are zero inside
the recurrence too, and :meth:`GatedGRU.sliced` (a plain ``nn.GRU`` with ⌈K⌉ units)
computes exactly the same outputs in eval mode.  Cost: ``complexity.rnn_cost(k_in, K, steps)``.
"""
from __future__ import annotations

import torch
from torch import nn

from nrqc.training.complexity import rnn_cost
from nrqc.training.reparam import DynamicWidth


class GatedGRU(nn.Module):
    """[B, T, F] -> [B, T, H] single-layer GRU (batch first) with a learned hidden width."""

    def __init__(self, input_size: int, hidden_size: int, k_min: float = 1.0):
        super().__init__()
        self.cell = nn.GRUCell(input_size, hidden_size)
        self.width = DynamicWidth(hidden_size, k_min=k_min, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        outs = []
        for t in range(x.shape[1]):
            h = self.width(self.cell(x[:, t], h))
            outs.append(h)
        return torch.stack(outs, dim=1)

    def cost(self, steps: int, k_in=None) -> dict:
        """MACs over `steps` frames and parameters, differentiable in K (and in k_in)."""
        return rnn_cost(self.cell.input_size if k_in is None else k_in, self.width.width(), steps, gates=3)

    @torch.no_grad()
    def sliced(self) -> nn.GRU:
        """The dense nn.GRU with ⌈K⌉ hidden units (gate order r, z, n in PyTorch)."""
        c, n = self.width.kept(), self.cell.hidden_size
        rows = torch.cat([torch.arange(g * n, g * n + c) for g in range(3)])
        gru = nn.GRU(self.cell.input_size, c, batch_first=True)
        gru.weight_ih_l0.copy_(self.cell.weight_ih[rows])
        gru.weight_hh_l0.copy_(self.cell.weight_hh[rows][:, :c])
        gru.bias_ih_l0.copy_(self.cell.bias_ih[rows])
        gru.bias_hh_l0.copy_(self.cell.bias_hh[rows])
        return gru
