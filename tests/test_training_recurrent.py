"""The reparameterized GRU: slicing is exact, the cost is the closed form, K gets gradients."""
import pytest
import torch

from nrqc.training.recurrent import GatedGRU


def test_sliced_gru_matches_gated_gru_in_eval():
    torch.manual_seed(0)
    g = GatedGRU(10, 12)
    g.width.k.data.fill_(6.4)  # keeps 7 units
    g.eval()
    x = torch.randn(3, 20, 10)
    with torch.no_grad():
        ref = g(x)
        small = g.sliced()
        got, _ = small(x)
    assert small.hidden_size == 7
    assert torch.equal(ref[..., 7:], torch.zeros_like(ref[..., 7:]))
    torch.testing.assert_close(got, ref[..., :7], atol=1e-6, rtol=1e-5)


def test_gru_cost_and_gradient():
    g = GatedGRU(10, 12)
    g.width.k.data.fill_(6.5)
    c = g.cost(steps=100)
    assert float(c["macs"].detach()) == pytest.approx(100 * 3 * (10 * 6.5 + 6.5 ** 2))
    c["macs"].backward()
    assert g.width.k.grad.item() == pytest.approx(100 * 3 * (10 + 2 * 6.5))
    full = sum(p.numel() for p in torch.nn.GRU(10, 7).parameters())
    g.width.k.data.fill_(7.0)
    assert float(g.cost(1)["params"].detach()) == full
    g.width.k.data.fill_(6.5)  # (at an exact integer λ = 0 is clamped and the task gradient is 0)
    g.train()
    g.zero_grad()
    g(torch.randn(4, 5, 10)).pow(2).mean().backward()
    assert g.width.k.grad is not None and g.width.k.grad.abs().item() > 0
