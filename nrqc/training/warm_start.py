"""Warm start: begin a model's training from another checkpoint's weights.

The use case is a binary (bam) model started from the float model of the same
architecture: the float convolutions already extract the features the task needs, and the
binary model only has to learn where to threshold them, instead of finding features
through the surrogate gradient from a random start.  Every weighted layer whose weight
and bias have the same shapes in both models is copied; BatchNorm layers the source does
not have keep their initialization (the thresholds are calibrated on data afterwards, see
:mod:`nrqc.training.calibrate`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from nrqc.errors import NrqcError
from nrqc.training.checkpoint import load_checkpoint, model_from_checkpoint
from nrqc.training.net import SeqNet


@torch.no_grad()
def copy_weights(dst: SeqNet, src: SeqNet) -> list[str]:
    """Copy weight and bias of every matching block (same key, kind and shapes); returns
    the keys copied.  Learned widths, BatchNorm and GRU blocks are not touched."""
    src_blocks = dict(src.blocks())
    copied = []
    for key, b in dst.blocks():
        s = src_blocks.get(key)
        if s is None or getattr(s, "layer", None) is None or getattr(b, "layer", None) is None:
            continue
        if s.kind != b.kind or s.layer.weight.shape != b.layer.weight.shape:
            continue
        b.layer.weight.copy_(s.layer.weight)
        b.layer.bias.copy_(s.layer.bias)
        copied.append(str(key))
    return copied


def load_init(checkpoint: str | Path, arch: str, task: str) -> dict:
    """The checkpoint to start from; refuses another task or architecture (checked before
    any data is read or synthesized)."""
    state = load_checkpoint(checkpoint)
    if state["arch"] != arch or state.get("train_config", {}).get("task", task) != task:
        raise NrqcError(f"--init {checkpoint}: a {state['arch']} model, not {arch} ({task}); "
                        f"warm start needs the same architecture")
    return state


def warm_start(net: SeqNet, state: dict, checkpoint: str | Path) -> list[str]:
    """Copy the weights of a :func:`load_init` state into net; returns the keys copied."""
    copied = copy_weights(net, model_from_checkpoint(state))
    if not copied:
        raise NrqcError(f"--init {checkpoint}: no layer of it matches this model's shapes")
    return copied
