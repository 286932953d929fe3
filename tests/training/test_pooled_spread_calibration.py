"""Pooled-layer thresholds at spread quantiles, and re-calibration of dead channels."""
import pytest
import torch

from nrqc.models import build
from nrqc.training.calibrate import calibrate_thresholds, pooled_quantiles, recalibrate_constant_pooled


def _pooled_bits(net, x):
    maps = []
    b = net.blocks()[2][1]  # antispoof_cnn: the third conv feeds the global max-pool
    h = b.register_forward_hook(lambda m, i, o: maps.append(o))
    net(x)
    h.remove()
    return maps[0].flatten(2).amax(dim=2)  # [B, C]


def test_spread_quantiles_cover_the_range_evenly():
    q = pooled_quantiles(8, "spread")
    assert sorted(q.tolist()) == pytest.approx([0.1 + 0.8 * (k + 0.5) / 8 for k in range(8)])
    assert torch.equal(pooled_quantiles(8, "median"), torch.full((8,), 0.5))
    with pytest.raises(ValueError, match="median, spread"):
        pooled_quantiles(8, "mean")


def test_spread_calibration_gives_each_channel_its_on_fraction():
    torch.manual_seed(0)
    net = build("antispoof_cnn", "bam", frames=64, bands=32).eval()
    x = torch.randn(80, 64, 32) * 3 + 1
    assert calibrate_thresholds(net, x, pooled="spread") == 1
    on = _pooled_bits(net, x).mean(dim=0)
    target = 1 - pooled_quantiles(on.numel(), "spread")
    assert (on - target).abs().max() < 2.5 / 80  # nearest-rank quantile of 80 clips


def test_dead_and_saturated_pooled_channels_are_recalibrated():
    torch.manual_seed(1)
    net = build("antispoof_cnn", "bam", frames=64, bands=32).eval()
    x = torch.randn(64, 64, 32)
    calibrate_thresholds(net, x, pooled="spread")
    bn = net.blocks()[2][1].bn
    with torch.no_grad():
        bn.bias[3] -= 1000.0  # dead: never fires
        bn.bias[5] += 1000.0  # saturated: fires everywhere
    bits = _pooled_bits(net, x)
    assert bits[:, 3].max() == 0 and bits[:, 5].min() == 1
    assert recalibrate_constant_pooled(net, x) == 2
    bits = _pooled_bits(net, x)
    on = bits.mean(dim=0)
    q = pooled_quantiles(bits.shape[1], "spread")
    for c in (3, 5):
        assert abs(on[c] - (1 - q[c])) < 2.5 / 64
    assert recalibrate_constant_pooled(net, x) == 0  # nothing constant left
