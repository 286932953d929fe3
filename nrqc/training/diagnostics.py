"""Dead and saturated binary maps: how often each binary layer's units fire on some data.

A channel of a binary map that never fires (always off) or fires at every position of
every example (always on) carries no information; for the layer whose map is globally
max-pooled into the head, what the head sees is one bit per channel and clip, so a
channel whose pooled bit is the same for every clip is a constant input to the head.
These counts are what :func:`nrqc.training.calibrate.calibrate_thresholds` tries to
prevent, and what `nrqc train` writes as ``binary_units`` in metrics.json.
"""
from __future__ import annotations

import torch

from nrqc.training.calibrate import pooled_binary_layers
from nrqc.training.net import Block, SeqNet


def layer_name(i: int, block: Block) -> str:
    """'conv2d@0': kind and index in ``net.layers``."""
    return f"{block.kind}@{i}"


@torch.no_grad()
def binary_unit_stats(net: SeqNet, x: torch.Tensor, batch: int = 64) -> dict:
    """{layer: {channels, firing_rate, always_on, always_off[, pooled_always_on]}} for
    every top-level binary block, fractions of its channels over the examples in x (with a
    learned width: of the ⌈K⌉ channels export keeps, not of the gated-off ones)."""
    binary = {i: m for i, m in enumerate(net.layers) if isinstance(m, Block) and m.binary is not None}
    pooled = pooled_binary_layers(net)
    fired = {i: [] for i in binary}  # per batch: [B, C, positions] bits

    def hook(i):
        return lambda mod, inp, out: fired[i].append(out.detach().reshape(out.shape[0], out.shape[1], -1) > 0)

    hooks = [m.register_forward_hook(hook(i)) for i, m in binary.items()]
    was = net.training
    try:
        net.eval()
        for s in range(0, len(x), batch):
            net(x[s: s + batch])
    finally:
        net.train(was)
        for h in hooks:
            h.remove()
    out = {}
    for i, m in binary.items():
        bits = torch.cat(fired[i])  # [N, C, P]
        kept = net.kept(m.gate)
        if kept is not None:  # units beyond ⌈K⌉ are zeroed by the gate and removed at export
            bits = bits[:, :kept]
        per_channel = bits.float().mean(dim=(0, 2))
        r = {"channels": int(bits.shape[1]), "firing_rate": round(float(per_channel.mean()), 4),
             "always_on": round(float((per_channel == 1).float().mean()), 4),
             "always_off": round(float((per_channel == 0).float().mean()), 4)}
        if i in pooled:
            # the head's input bit of each channel: does it fire anywhere in the clip?
            r["pooled_always_on"] = round(float(bits.any(dim=2).all(dim=0).float().mean()), 4)
        out[layer_name(i, m)] = r
    return out
