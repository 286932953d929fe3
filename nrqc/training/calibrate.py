"""Data-dependent initial thresholds for binary activation maps.

A binary map whose bits are almost all 1 carries no information, and after a global
max-pool over hundreds of positions a freshly initialized Heaviside layer gives 1 for
every clip, so the head sees a constant and the surrogate gradient has nothing to work
with.  Before training, each binary layer's bias (its threshold) is set, in order, so that
a fraction ``p`` of its units fire on a batch of training data, and the last binary layer
before a global max-pool so that each channel's pooled bit is 1 for about half the clips.
Layers with BatchNorm keep its centring; only the pooled layer's BN shift is moved.
"""
from __future__ import annotations

import torch

from nrqc.training.net import Block, GlobalMaxPool, SeqNet


def pooled_binary_layers(net: SeqNet) -> set[int]:
    """Indices of the binary blocks whose map reaches a global max-pool (through max-pools
    only): each of their channels becomes one bit of the head's input."""
    pooled, last_binary = set(), None
    for i, m in enumerate(net.layers):
        if isinstance(m, Block) and m.binary is not None:
            last_binary = i
        if isinstance(m, GlobalMaxPool) and last_binary is not None:
            pooled.add(last_binary)
    return pooled


@torch.no_grad()
def calibrate_thresholds(net: SeqNet, x: torch.Tensor, p: float = 0.2) -> int:
    """Adjust the biases of binary blocks in place; returns how many were set."""
    was = net.training
    net.eval()
    pooled_after = pooled_binary_layers(net)
    count = 0
    h = x
    if net.input_gate is not None:
        h = net.gates[net.input_gate](h)
    h = h.unsqueeze(1) if net.layout == "image" else h.transpose(1, 2) if net.layout == "bands_as_channels" else h
    for i, m in enumerate(net.layers):
        if isinstance(m, Block) and m.binary is not None and (m.bn is None or i in pooled_after):
            if m.bn is not None:
                # BatchNorm already centres each channel (about half fire); start its running
                # statistics from this batch and move its shift (beta), which is the threshold.
                m.bn.eval()
                bn, m.bn = m.bn, None
                z = m.pre_activation(h, net.kept(net.in_gates[i]))
                m.bn = bn
                dims = [d for d in range(z.dim()) if d != 1]
                bn.running_mean.copy_(z.mean(dim=dims))
                bn.running_var.copy_(z.var(dim=dims, unbiased=False))
            y = m.pre_activation(h, net.kept(net.in_gates[i]))  # includes the current bias
            per_channel = y.transpose(0, 1).reshape(y.shape[1], y.shape[0], -1)  # [C, B, positions]
            if i in pooled_after:
                level = per_channel.amax(dim=2).median(dim=1).values  # pooled bit on for half the clips
            else:
                level = torch.quantile(per_channel.reshape(y.shape[1], -1), 1 - p, dim=1)
            if m.bn is not None:
                m.bn.bias -= level
            else:
                m.layer.bias -= level
            count += 1
        h = net.apply_layer(i, m, h)
    net.train(was)
    return count
