"""Threshold calibration of BN-free binary layers."""
import torch

from nrqc.models import build
from nrqc.training.calibrate import calibrate_thresholds


def test_calibration_sets_firing_rates():
    torch.manual_seed(0)
    net = build("bam4", "bam", bn=False, frames=96, bands=32).eval()
    x = torch.randn(48, 96, 32)
    assert calibrate_thresholds(net, x, p=0.2) == 4
    maps = []
    hooks = [b.register_forward_hook(lambda m, i, o: maps.append(o)) for _, b in net.blocks()[:4]]
    net(x)
    for h in hooks:
        h.remove()
    for m in maps[:3]:
        assert abs(m.mean().item() - 0.2) < 0.01  # a fraction p of units fire
    pooled = maps[3].flatten(2).amax(dim=2)  # the last binary layer, after the global max-pool
    assert abs(pooled.mean().item() - 0.5) < 0.05  # each channel's bit is on for about half the clips
