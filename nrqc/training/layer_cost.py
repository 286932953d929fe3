"""Closed-form cost of one layer: MACs, parameters and bytes.

Counted as a profiler counts them (one multiply-accumulate per weight tap per output
position); every width may be a tensor (the continuous K of a learned width), so the
counts stay differentiable.  Kept apart from :mod:`nrqc.training.complexity` (which walks
a whole :class:`~nrqc.training.net.SeqNet`) because the layers themselves need these
formulas (:class:`~nrqc.training.recurrent.GatedGRU.cost`), and a layer module importing the
network walker would make an import cycle.
"""
from __future__ import annotations


def conv_cost(k_in, k_out, taps: int, positions: int, int8: bool = False) -> dict:
    weights = k_in * k_out * taps
    macs = weights * positions
    params = weights + k_out
    nbytes = weights * 1 + 8 * k_out if int8 else 4 * params
    return {"macs": macs, "params": params, "bytes": nbytes}


def linear_cost(k_in, k_out, int8: bool = False) -> dict:
    return conv_cost(k_in, k_out, 1, 1, int8)


def rnn_cost(k_in, hidden, steps: int, gates: int = 3) -> dict:
    """GRU (gates=3) or LSTM (gates=4) with input width k_in and hidden width `hidden`."""
    per_step = gates * (k_in * hidden + hidden * hidden)
    params = gates * (k_in * hidden + hidden * hidden + 2 * hidden)
    return {"macs": per_step * steps, "params": params, "bytes": 4 * params}
