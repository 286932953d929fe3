"""Slicing to ⌈K⌉ units keeps the outputs of the eval-mode reparameterized model."""
import pytest
import torch

from nrqc.models import build
from nrqc.training.slicing import slice_input, slice_net


def _set_widths(net, seed):
    gen = torch.Generator().manual_seed(seed)
    for g in net.gates.values():
        g.k.data.fill_(float(g.k_min + (g.n - g.k_min) * torch.rand((), generator=gen) * 0.8))


@pytest.mark.parametrize("arch", ["bam4", "dnsmos", "vad_tiny", "vad_gru", "antispoof_cnn", "synthetic_mlp"])
def test_slicing_float_reparam_is_exact(arch):
    torch.manual_seed(0)
    net = build(arch, "reparam").eval()
    _set_widths(net, 1)
    x = torch.randn(net.input_shape(2))
    small = slice_net(net).eval()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for n, p in net.named_parameters() if "gates" not in n)
    with torch.no_grad():
        ref, got = net(x), small(slice_input(net, x))
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)


def test_slicing_removed_units_carry_no_signal():
    # Changing the weights of removed units must not change the eval output at all.
    torch.manual_seed(0)
    net = build("vad_tiny", "reparam").eval()
    _set_widths(net, 2)
    x = torch.randn(net.input_shape(1))
    with torch.no_grad():
        ref = net(x)
        c = net.kept("conv1")
        net.layers[0].layer.weight[c:] += 100.0
        net.layers[0].layer.bias[c:] -= 100.0
        assert torch.equal(net(x), ref)


@pytest.mark.parametrize("arch", ["bam4", "vad_tiny", "vad_gru", "vad_crnn", "antispoof_cnn"])
def test_slicing_bam_reparam(arch):
    torch.manual_seed(0)
    net = build(arch, "bam-reparam").eval()
    _set_widths(net, 3)
    x = torch.randn(net.input_shape(4))
    small = slice_net(net).eval()
    with torch.no_grad():
        ref, got = net(x), small(slice_input(net, x))
    # Same int8 weights (scales over kept inputs); binary maps agree unless a pre-activation
    # lies within float rounding of its threshold, which these random inputs do not hit.
    assert torch.allclose(got, ref, atol=1e-5)
