"""Slicing: turn a trained reparameterized :class:`SeqNet` into the smaller dense model.

Every gated block keeps its first ⌈K⌉ output units (weights, bias, BatchNorm statistics)
and the next block keeps the matching input channels; the input band gate shrinks the
model input to its first ⌈K⌉ bands.  In eval mode a gate zeroes the units beyond ⌈K⌉,
and zero inputs contribute nothing to the next layer, so the sliced model computes
exactly the same outputs (int8 scales are taken over the kept inputs in both).
A GRU keeps ⌈K⌉ hidden units (the dense ``nn.GRU``; its gate zeroes the rest inside the
recurrence, so they never feed back); a residual's two sides share one gate, so the skip
and the second block keep the same channels.
"""
from __future__ import annotations

import copy

import torch

from nrqc.training.net import Block, Residual, SeqNet
from nrqc.training.recurrent import GRUBlock


def _slice_block(b: Block, keep_in: int | None, keep_out: int | None) -> Block:
    keep_in = b.c_in if keep_in is None else keep_in
    keep_out = b.c_out if keep_out is None else keep_out
    nb = copy.deepcopy(b)
    with torch.no_grad():
        w = b.layer.weight[:keep_out, :keep_in].clone()
        nb.layer.weight = torch.nn.Parameter(w)
        nb.layer.bias = torch.nn.Parameter(b.layer.bias[:keep_out].clone())
        if b.kind == "linear":
            nb.layer.in_features, nb.layer.out_features = keep_in, keep_out
        else:
            nb.layer.in_channels, nb.layer.out_channels = keep_in, keep_out
        if b.bn is not None:
            for name in ("weight", "bias"):
                setattr(nb.bn, name, torch.nn.Parameter(getattr(b.bn, name)[:keep_out].clone()))
            nb.bn.running_mean = b.bn.running_mean[:keep_out].clone()
            nb.bn.running_var = b.bn.running_var[:keep_out].clone()
            nb.bn.num_features = keep_out
    nb.c_in, nb.c_out, nb.gate = keep_in, keep_out, None
    return nb


def slice_net(net: SeqNet) -> SeqNet:
    """A new SeqNet without gates, every layer cut to ⌈K⌉ units."""
    layers = []
    for i, m in enumerate(net.layers):
        if isinstance(m, Block):
            layers.append(_slice_block(m, net.kept(net.in_gates[i]), net.kept(m.gate)))
        elif isinstance(m, GRUBlock):
            layers.append(m.sliced(net.kept(net.in_gates[i]), net.kept(m.gate)))
        elif isinstance(m, Residual):
            body = [_slice_block(b, net.kept(net.in_gates[f"{i}.{j}"]), net.kept(b.gate)) for j, b in enumerate(m.body)]
            layers.append(Residual(*body, act=m.act))
        else:
            layers.append(copy.deepcopy(m))
    meta = dict(net.meta)
    if net.input_gate is not None:
        key = "features" if net.layout == "features" else "bands"
        meta[key] = net.kept(net.input_gate)
        meta["input_bands_of"] = net.gates[net.input_gate].n
    meta["widths"] = {n: g.kept() for n, g in net.gates.items()}
    out = SeqNet(layers, {}, net.layout, None, net.squeeze_output, meta, quantize_input=net.input_quant is not None)
    if net.input_quant is not None:  # its scale was calibrated over the kept bands already
        out.input_quant.scale.copy_(net.input_quant.scale)
    out.train(net.training)
    return out


def slice_input(net: SeqNet, x: torch.Tensor) -> torch.Tensor:
    """The input the sliced model expects: the first ⌈K⌉ bands / features."""
    if net.input_gate is None:
        return x
    return x[..., : net.kept(net.input_gate)]
