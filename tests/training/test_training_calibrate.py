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


def test_calibration_with_batchnorm_moves_only_the_pooled_layer():
    torch.manual_seed(0)
    net = build("antispoof_cnn", "bam", frames=64, bands=32).eval()  # BN by default in BAM models
    x = torch.randn(48, 64, 32) * 3 + 1
    betas = [b.bn.bias.clone() for _, b in net.blocks()[:3]]
    assert calibrate_thresholds(net, x) == 1
    assert torch.equal(net.blocks()[0][1].bn.bias, betas[0]) and torch.equal(net.blocks()[1][1].bn.bias, betas[1])
    bn0 = net.blocks()[0][1].bn
    assert torch.allclose(bn0.running_mean, torch.zeros_like(bn0.running_mean))  # untouched layers keep their stats
    maps = []
    hooks = [b.register_forward_hook(lambda m, i, o: maps.append(o)) for _, b in net.blocks()[:3]]
    net(x)
    for h in hooks:
        h.remove()
    pooled = maps[2].flatten(2).amax(dim=2)
    assert abs(pooled.mean().item() - 0.5) < 0.05
