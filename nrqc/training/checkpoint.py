"""Checkpoints: everything needed to rebuild the zoo model, resume training and export.

A checkpoint is a dict saved with torch.save (written atomically):
format, arch, variant, build_kwargs, meta, state_dict, and for resumption optimizer,
epoch, best, history, train_config.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from nrqc.errors import NrqcError

FORMAT = "nrqc-checkpoint-1"


def save_checkpoint(path: str | Path, net, arch: str, variant: str, build_kwargs: dict, **extra) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "arch": arch, "variant": variant, "build_kwargs": dict(build_kwargs),
             "meta": dict(net.meta), "state_dict": net.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise NrqcError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt or not a torch file
        raise NrqcError(f"checkpoint '{path}' is not a readable PyTorch file ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise NrqcError(f"checkpoint '{path}' was not written by `nrqc train` (no '{FORMAT}' format tag)")
    return state


def model_from_checkpoint(state: dict):
    from nrqc.models import build

    kwargs = dict(state["build_kwargs"])
    if "first_layer" not in kwargs and not any(k.startswith("input_quant.") for k in state["state_dict"]):
        kwargs["first_layer"] = "float"  # written before BAM models had an all-integer first layer
    net = build(state["arch"], state["variant"], **kwargs)
    net.load_state_dict(state["state_dict"])
    net.meta.update(state.get("meta", {}))
    return net.eval()
