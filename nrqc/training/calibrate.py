"""Data-dependent thresholds for binary activation maps.

A binary map whose bits are almost all 1 carries no information, and after a global
max-pool over hundreds of positions a freshly initialized Heaviside layer gives 1 for
every clip, so the head sees a constant and the surrogate gradient has nothing to work
with.  Before training, each binary layer's bias (its threshold) is set, in order, so that
a fraction ``p`` of its units fire on a batch of training data, and the last binary layer
before a global max-pool (the *pooled* layer: one bit per channel and clip reaches the
head) so that each channel's pooled bit is 1 for a chosen fraction of the clips.
Layers with BatchNorm keep its centring; only the pooled layer's BN shift is moved.

Pooled levels, ``pooled="median"``: every channel's bit is on for half the clips.
``pooled="spread"``: channel c's bit is on for a fraction 1 − q_c of the clips, the q_c
spread evenly over [0.1, 0.9] across channels (in a fixed random order), a thermometer
code of whatever each channel measures.  Measured on the quality task (issue 20,
docs/training.md): the float model's 64 pooled features cut to one bit at the median
predict MOS (ridge regression) with Pearson 0.729, cut at these spread quantiles 0.756,
close to the real-valued features (0.761).

During training the pooled channels die: a channel whose pre-activation stays below its
threshold everywhere gets almost no surrogate gradient (the global max routes it to one
position, where it is far from the threshold), and its bit is 0 for every clip (measured:
a third of the 64 channels by epoch 2).  :func:`recalibrate_constant_pooled` re-sets the
threshold of every pooled channel whose bit is constant over a batch of training clips,
between epochs.
"""
from __future__ import annotations

import torch

from nrqc.training.net import Block, GlobalMaxPool, SeqNet

POOLED_MODES = ("median", "spread")
SPREAD = (0.1, 0.9)


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


def pooled_quantiles(channels: int, mode: str) -> torch.Tensor:
    """q_c per channel: the fraction of clips whose pooled bit is to be 0."""
    if mode not in POOLED_MODES:
        raise ValueError(f"pooled calibration must be one of {', '.join(POOLED_MODES)}, not {mode!r}")
    if mode == "median":
        return torch.full((channels,), 0.5)
    lo, hi = SPREAD
    q = lo + (hi - lo) * (torch.arange(channels, dtype=torch.float32) + 0.5) / channels
    return q[torch.randperm(channels, generator=torch.Generator().manual_seed(0))]


def _pooled_levels(maxima: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per channel c the q_c quantile (nearest rank) of its per-clip maxima [C, B]."""
    s = maxima.sort(dim=1).values
    idx = (q * (maxima.shape[1] - 1)).round().long().clamp(0, maxima.shape[1] - 1)
    return s.gather(1, idx[:, None])[:, 0]


def _walk_binary(net: SeqNet, x: torch.Tensor):
    """Yield (index, block, its input) for every top-level binary block, running the
    layers in order (a consumer may change block i before the walk runs it)."""
    h = net.prepare_input(x)
    for i, m in enumerate(net.layers):
        if isinstance(m, Block) and m.binary is not None:
            yield i, m, h
        h = net.apply_layer(i, m, h)


def _shift(m: Block, level: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Move the threshold of the channels in mask (all if None) to `level`."""
    if mask is not None:
        level = torch.where(mask, level, torch.zeros_like(level))
    if m.bn is not None:
        m.bn.bias -= level
    else:
        m.layer.bias -= level


def _clip_maxima(y: torch.Tensor) -> torch.Tensor:
    """[B, C, ...] pre-activations -> [C, B] maximum over each clip's positions."""
    return y.transpose(0, 1).reshape(y.shape[1], y.shape[0], -1).amax(dim=2)


@torch.no_grad()
def calibrate_thresholds(net: SeqNet, x: torch.Tensor, p: float = 0.2, pooled: str = "median") -> int:
    """Adjust the biases of binary blocks in place; returns how many were set."""
    was = net.training
    net.eval()
    pooled_after = pooled_binary_layers(net)
    count = 0
    for i, m, h in _walk_binary(net, x):
        if m.bn is not None and i not in pooled_after:
            continue
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
        if i in pooled_after:
            level = _pooled_levels(_clip_maxima(y), pooled_quantiles(y.shape[1], pooled))
        else:
            level = torch.quantile(y.transpose(0, 1).reshape(y.shape[1], -1), 1 - p, dim=1)
        _shift(m, level)
        count += 1
    net.train(was)
    return count


@torch.no_grad()
def recalibrate_constant_pooled(net: SeqNet, x: torch.Tensor, pooled: str = "spread") -> int:
    """Re-set the threshold of every pooled channel whose bit is the same for every clip of
    x (dead or saturated) to its calibration level; returns how many channels moved."""
    was = net.training
    net.eval()
    pooled_after = pooled_binary_layers(net)
    moved = 0
    for i, m, h in _walk_binary(net, x):
        if i not in pooled_after:
            continue
        maxima = _clip_maxima(m.pre_activation(h, net.kept(net.in_gates[i])))
        constant = (maxima > 0).all(dim=1) | (maxima <= 0).all(dim=1)
        _shift(m, _pooled_levels(maxima, pooled_quantiles(maxima.shape[0], pooled)), constant)
        moved += int(constant.sum())
    net.train(was)
    return moved
