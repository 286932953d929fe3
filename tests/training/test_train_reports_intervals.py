"""`nrqc train` reports bootstrap intervals, per-seed metrics and their spread, and the
always-on / always-off units of every binary layer (checked against numpy by hand)."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nrqc.cli import main
from nrqc.training.diagnostics import binary_unit_stats
from nrqc.training.net import Block, GlobalMaxPool, MaxPool, SeqNet


def test_cli_seeds_report_intervals_and_spread(tmp_path):
    r = CliRunner().invoke(main, ["train", "synthetic", "--variant", "bam", "--epochs", "2", "--samples", "256",
                                  "--seeds", "2", "--seed", "4", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "seed 4" in r.output and "seed 5" in r.output and "mean ± std" in r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["seeds"] == [4, 5]
    mses = []
    for s in m["per_seed"]:
        one = json.loads((tmp_path / "run" / f"seed{s['seed']}" / "metrics.json").read_text())
        npz = np.load(tmp_path / "run" / f"seed{s['seed']}" / "test_predictions.npz")
        pred, y = npz["pred"], npz["label"]
        assert one["bootstrap"]["examples"] == len(y) == 26  # 10 % of 256
        assert one["test"]["mse"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)
        assert one["test"]["pearson"] == pytest.approx(np.corrcoef(pred, y)[0, 1], rel=1e-5)
        for k, (lo, hi) in one["test_ci"].items():
            assert lo <= one["test"][k] <= hi, k
        assert one["binary_units"]["linear@0"]["channels"] == 32
        mses.append(s["test"]["mse"])
    assert m["test"]["mse"]["mean"] == pytest.approx(np.mean(mses))
    assert m["test"]["mse"]["std"] == pytest.approx(np.std(mses, ddof=1))
    assert m["test"]["mse"]["min"] == min(mses) and m["test"]["mse"]["max"] == max(mses)


def test_single_run_prints_intervals(tmp_path):
    r = CliRunner().invoke(main, ["train", "synthetic", "--variant", "bam", "--epochs", "2", "--samples", "256",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "95 % bootstrap interval" in r.output and "always on / always off" in r.output
    line = next(s for s in r.output.splitlines() if "test (" in s)
    assert line.count("[") == 5  # the header's and one per metric (pearson, spearman, mse, r2)


def test_binary_unit_stats_count_dead_and_saturated_channels():
    # conv 1 -> 4 channels, bias +100 (always on), -100 (always off), 0 and 0 on x >= 0 / x < 0
    conv = Block("conv2d", 1, 4, kernel=1, act="heaviside")
    with torch.no_grad():
        conv.layer.weight.copy_(torch.tensor([0.0, 0.0, 1.0, -1.0]).reshape(4, 1, 1, 1))
        conv.layer.bias.copy_(torch.tensor([100.0, -100.0, 0.0, 0.0]))
    head = Block("linear", 4, 1, act="none")
    net = SeqNet([conv, MaxPool("conv2d", 2), GlobalMaxPool(), head], layout="image",
                 meta={"frames": 4, "bands": 4})
    x = torch.randn(10, 4, 4)
    x[0] = 1.0  # clip 0 is positive everywhere: channel 3 never fires in it
    s = binary_unit_stats(net, x, batch=3)["conv2d@0"]
    bits = torch.stack([torch.ones_like(x), torch.zeros_like(x), x > 0, -x > 0], dim=1).float()
    assert s["channels"] == 4
    assert s["always_on"] == 0.25 and s["always_off"] == 0.25
    assert s["firing_rate"] == pytest.approx(float(bits.mean()), abs=1e-4)
    # pooled bits constant-on: channel 0, and channel 2 (clip 0 and the random clips have x > 0 somewhere)
    assert s["pooled_always_on"] == pytest.approx(float(bits.flatten(2).amax(2).min(0).values.mean()))
