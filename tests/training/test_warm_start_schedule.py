"""Warm start (--init) copies the weights of matching layers; the cosine schedule is the
closed form; bad input is one NrqcError."""
import math

import pytest
import torch

from nrqc.errors import NrqcError
from nrqc.models import build
from nrqc.training.checkpoint import load_checkpoint
from nrqc.training.trainer import TrainConfig, lr_at, train
from nrqc.training.warm_start import copy_weights


def test_copy_weights_from_float_to_bam_keeps_batchnorm():
    kw = dict(frames=16, bands=16, channels=(4, 4, 4, 8), head=8)
    torch.manual_seed(0)
    src, dst = build("bam4", "float", **kw), build("bam4", "bam", **kw)
    bn_before = [b.bn.weight.clone() for _, b in dst.blocks() if b.bn is not None]
    copied = copy_weights(dst, src)
    assert len(copied) == 7  # 4 convs + 3 dense
    for (_, s), (_, d) in zip(src.blocks(), dst.blocks()):
        assert torch.equal(s.layer.weight, d.layer.weight) and torch.equal(s.layer.bias, d.layer.bias)
    assert all(torch.equal(a, b.bn.weight) for a, b in zip(bn_before, [b for _, b in dst.blocks() if b.bn is not None]))
    assert copy_weights(build("bam4", "bam", frames=16, bands=16, channels=(2, 2, 2, 2), head=4), src) == []


def test_train_with_init_starts_from_the_checkpoint(tmp_path):
    train(TrainConfig("synthetic", "float", epochs=2, samples=256), tmp_path / "f", progress=False)
    # lr 0: nothing moves, so the bam checkpoint holds the float weights (no pooled layer to calibrate)
    train(TrainConfig("synthetic", "bam", epochs=1, samples=256, lr=0.0, init=str(tmp_path / "f" / "checkpoint.pt")),
          tmp_path / "b", progress=False)
    f = load_checkpoint(tmp_path / "f" / "checkpoint.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["state_dict"]
    for k in ("layers.0.layer.weight", "layers.0.layer.bias", "layers.1.layer.weight"):
        assert torch.equal(f[k], b[k]), k
    with pytest.raises(NrqcError, match="same architecture"):
        train(TrainConfig("quality", "bam", epochs=1, init=str(tmp_path / "f" / "checkpoint.pt")),
              tmp_path / "q", data_dir=tmp_path / "f", progress=False)


def test_cosine_schedule():
    cfg = TrainConfig("synthetic", lr=0.01, epochs=10, lr_schedule="cosine")
    assert [lr_at(cfg, e) for e in (0, 5)] == pytest.approx([0.01, 0.005])
    assert lr_at(cfg, 9) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert lr_at(TrainConfig("synthetic", lr=0.01, epochs=10), 9) == 0.01
    with pytest.raises(NrqcError, match="lr-schedule"):
        TrainConfig("synthetic", lr_schedule="step").resolved()
