"""Heaviside / SuperSpike surrogate, int8 fake-quant, and the noise-reparameterized width."""
import math

import pytest
import torch

from nrqc.training import DynamicWidth, Heaviside, fake_quant_int8, heaviside, quantize_int8, sign_spike


def test_heaviside_forward_and_superspike_gradient():
    x = torch.tensor([-1.0, -0.2, 0.0, 0.3, 2.0], requires_grad=True)
    y = heaviside(x, beta=5.0)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # Θ(0) = 0, like ONNX Greater
    y.sum().backward()
    expected = [1 / (5 * 1.0 + 1) ** 2, 1 / (5 * 0.2 + 1) ** 2, 1.0, 1 / (5 * 0.3 + 1) ** 2, 1 / (5 * 2 + 1) ** 2]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-6)


def test_sign_variant_and_per_layer_beta():
    x = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
    y = sign_spike(x, beta=2.0)
    assert y.tolist() == [-1.0, -1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == pytest.approx([2 / (2 * 0.5 + 1) ** 2, 2.0, 2 / (2 * 0.5 + 1) ** 2])
    # Two layers, two betas: each layer's gradient uses its own beta (no global state).
    a, b = Heaviside(beta=1.0), Heaviside(beta=10.0)
    xa = torch.tensor([0.4], requires_grad=True)
    xb = torch.tensor([0.4], requires_grad=True)
    a(xa).sum().backward()
    b(xb).sum().backward()
    assert xa.grad.item() == pytest.approx(1 / 1.4 ** 2)
    assert xb.grad.item() == pytest.approx(1 / 5.0 ** 2)


def test_fake_quant_round_trip_and_ste():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3) * torch.tensor([0.01, 1.0, 5.0, 0.3]).reshape(4, 1, 1, 1)
    w[2, 0, 0, 0] = -60.0  # channel 2's max is negative: must map to -127
    q, s = quantize_int8(w, axis=0)
    assert q.dtype == torch.int8 and s.shape == (4,)
    assert int(q.abs().max()) == 127 and q[2, 0, 0, 0].item() == -127
    assert torch.allclose(s, w.abs().amax(dim=(1, 2, 3)) / 127)
    deq = q.float() * s.reshape(4, 1, 1, 1)
    wf = w.clone().requires_grad_(True)
    fq = fake_quant_int8(wf, axis=0)
    assert torch.equal(fq.detach(), deq)  # fake-quant forward == int8 dequantized, exactly
    assert ((fq.detach() - w).abs() <= s.reshape(4, 1, 1, 1) / 2 + 1e-7).all()
    # idempotent: quantizing the dequantized weights gives the same int8 values back
    q2, s2 = quantize_int8(deq, axis=0)
    assert torch.equal(q2, q) and torch.allclose(s2, s)
    # straight-through: d(sum fq)/dw = 1
    fq.sum().backward()
    assert torch.equal(wf.grad, torch.ones_like(w))


def test_fake_quant_linear_axis():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])  # Linear weight [out, in]
    q, s = quantize_int8(w, axis=0)
    assert s.tolist() == pytest.approx([2 / 127, 0.5 / 127])
    assert q.tolist() == [[64, -127], [127, 64]]  # round(63.5)=64 (half to even gives 64)


def test_dynamic_width_eval_mask_and_ceil_convention():
    g = DynamicWidth(6, k_min=1, k_init=3.4, dim=1).eval()
    assert g.kept() == 4  # ⌈3.4⌉
    x = torch.randn(5, 6)
    y = g(x)
    assert torch.equal(y[:, :4], x[:, :4]) and torch.equal(y[:, 4:], torch.zeros(5, 2))
    g.k.data.fill_(3.0)
    assert g.kept() == 3
    g.k.data.fill_(99.0)  # out of range is clamped to N
    assert g.kept() == 6


def test_dynamic_width_noise_mixing_keeps_variance_and_scales_information():
    torch.manual_seed(0)
    g = DynamicWidth(4, k_min=1, k_init=2.3, dim=1).train()  # boundary unit 2, λ = 0.7
    x = torch.randn(200_000, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = g(x)
    assert torch.equal(y[:, :2], x[:, :2])
    assert torch.equal(y[:, 3], torch.zeros(200_000))
    b, xb = y[:, 2], x[:, 2]
    assert b.std().item() == pytest.approx(3.0, rel=0.01)  # variance kept
    corr2 = torch.corrcoef(torch.stack([b, xb]))[0, 1].item() ** 2
    assert corr2 == pytest.approx(0.3, abs=0.01)  # information fraction 1 − λ = K − ⌊K⌋
    # dη/dK reaches K
    g.zero_grad()
    (y[:, 2] * x[:, 2]).mean().backward()
    assert g.k.grad is not None and g.k.grad.item() > 0  # more K -> more signal -> larger correlation


def test_information_is_continuous_and_monotone_in_k():
    torch.manual_seed(1)
    x = torch.randn(100_000, 5)
    infos = []
    for k in [1.0, 1.25, 1.5, 1.75, 1.999, 2.0, 2.001, 2.5, 3.0]:
        g = DynamicWidth(5, k_min=1, k_init=k, dim=1).train()
        y = g(x)
        corr2 = [torch.corrcoef(torch.stack([y[:, i], x[:, i]]))[0, 1].item() ** 2 if y[:, i].std() > 0 else 0.0
                 for i in range(5)]
        infos.append(sum(corr2))
    assert infos == sorted(infos)
    ks = [1.0, 1.25, 1.5, 1.75, 1.999, 2.0, 2.001, 2.5, 3.0]
    assert infos == pytest.approx(ks, abs=0.02)  # information ≈ K, continuous at integers
