"""GRUs whose hidden size is a learned width (noise reparameterization inside the recurrence).

Masking a GRU's output is not enough: removed units would still feed the recurrence.  Here
the gate is applied to the hidden state at every step, so units beyond ⌈K⌉ are zero inside
the recurrence too, and the sliced model (a plain ``nn.GRU`` with ⌈K⌉ units) computes
exactly the same outputs in eval mode.  Cost: ``layer_cost.rnn_cost(k_in, K, steps)``.

- :class:`GatedGRU`: standalone [B, T, F] -> [B, T, H] module owning its width;
- :class:`GRUBlock`: the :class:`~nrqc.training.net.SeqNet` layer (width named in
  ``SeqNet.gates``), reading the NCL map [B, C, T] of the ``bands_as_channels`` layout as a
  sequence of T frames of C features and writing [B, H, T].
"""
from __future__ import annotations

import torch
from torch import nn

from nrqc.training.layer_cost import rnn_cost
from nrqc.training.reparam import DynamicWidth


def gated_scan(x: torch.Tensor, w_ih, w_hh, b_ih, b_hh, gate: DynamicWidth | None) -> torch.Tensor:
    """[B, T, F] -> [B, T, H], the gate applied to h after every step (PyTorch GRU math)."""
    h = x.new_zeros(x.shape[0], w_hh.shape[1])
    outs = []
    for t in range(x.shape[1]):
        h = torch.gru_cell(x[:, t], h, w_ih, w_hh, b_ih, b_hh)
        if gate is not None:
            h = gate(h)
        outs.append(h)
    return torch.stack(outs, dim=1)


def _slice_gru_weights(w_ih, w_hh, b_ih, b_hh, keep_in: int, keep: int):
    """Rows of the kept units in each of the 3 gates (order r, z, n), kept input columns."""
    n = w_hh.shape[1]
    rows = torch.cat([torch.arange(g * n, g * n + keep) for g in range(3)])
    return (w_ih[rows][:, :keep_in], w_hh[rows][:, :keep], b_ih[rows], b_hh[rows])


class GatedGRU(nn.Module):
    """[B, T, F] -> [B, T, H] single-layer GRU (batch first) with a learned hidden width."""

    def __init__(self, input_size: int, hidden_size: int, k_min: float = 1.0):
        super().__init__()
        self.cell = nn.GRUCell(input_size, hidden_size)
        self.width = DynamicWidth(hidden_size, k_min=k_min, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cell
        return gated_scan(x, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh, self.width)

    def cost(self, steps: int, k_in=None) -> dict:
        """MACs over `steps` frames and parameters, differentiable in K (and in k_in)."""
        return rnn_cost(self.cell.input_size if k_in is None else k_in, self.width.width(), steps, gates=3)

    @torch.no_grad()
    def sliced(self) -> nn.GRU:
        """The dense nn.GRU with ⌈K⌉ hidden units (gate order r, z, n in PyTorch)."""
        c, cell = self.width.kept(), self.cell
        gru = nn.GRU(cell.input_size, c, batch_first=True)
        w = _slice_gru_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, cell.input_size, c)
        for p, v in zip((gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0), w):
            p.copy_(v)
        return gru


class GRUBlock(nn.Module):
    """SeqNet layer: nn.GRU over frames, NCL in and out ([B, C, T] -> [B, H, T]).

    gate: name of the :class:`DynamicWidth` over the hidden units (applied inside the
    recurrence).  Full precision; the attributes below let the rest of the library treat
    it like a :class:`~nrqc.training.net.Block` (no binary activation, no BatchNorm).
    """

    kind = "gru"
    act = "gru"
    weight_mode = "float"
    bn = None
    binary = None

    def __init__(self, c_in: int, hidden: int, gate: str | None = None):
        super().__init__()
        self.c_in, self.c_out, self.gate = int(c_in), int(hidden), gate
        self.gru = nn.GRU(self.c_in, self.c_out, batch_first=True)

    def weights(self):
        g = self.gru
        return g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0

    def forward(self, x, gate: DynamicWidth | None = None, in_kept: int | None = None):
        seq = x.transpose(1, 2)
        if gate is None:
            y, _ = self.gru(seq)  # the fused kernel; no gate, nothing to mask
        else:
            y = gated_scan(seq, *self.weights(), gate)
        return y.transpose(1, 2)

    @torch.no_grad()
    def sliced(self, keep_in: int | None, keep: int | None) -> "GRUBlock":
        """The dense GRU with `keep` hidden units reading the first `keep_in` inputs."""
        keep_in = self.c_in if keep_in is None else keep_in
        keep = self.c_out if keep is None else keep
        nb = GRUBlock(keep_in, keep, None)
        for p, v in zip(nb.weights(), _slice_gru_weights(*self.weights(), keep_in, keep)):
            p.copy_(v)
        return nb.train(self.training)

    def extra_repr(self):
        return f"gru {self.c_in}->{self.c_out}, gate={self.gate}"
