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


# --- the GRU as a SeqNet layer: whole-model cost, slicing, ONNX export -------------------

def _gru_net(bands=12, conv=10, hidden=9, frames=20):
    """bands gate -> conv1d (gated) -> GRU (gated) -> 1x1 head; one logit per frame."""
    from nrqc.training import Block, SeqNet
    from nrqc.training.recurrent import GRUBlock
    from nrqc.training.reparam import DynamicWidth

    gates = {"bands": DynamicWidth(bands, dim=-1), "conv": DynamicWidth(conv), "gru": DynamicWidth(hidden)}
    layers = [Block("conv1d", bands, conv, 3, gate="conv"), GRUBlock(conv, hidden, gate="gru"),
              Block("conv1d", hidden, 1, 1, act="none")]
    return SeqNet(layers, gates, "bands_as_channels", "bands", True, {"frames": frames, "bands": bands})


def _widths(net, kb=7.3, kc=6.5, kh=4.2):
    for name, k in zip(("bands", "conv", "gru"), (kb, kc, kh)):
        net.gates[name].k.data.fill_(k)


def test_seqnet_gru_cost_is_the_hand_count():
    from nrqc.training.complexity import model_cost

    torch.manual_seed(0)
    net = _gru_net()
    _widths(net)
    kb, kc, kh, T = 7.3, 6.5, 4.2, 20
    c = model_cost(net, "soft")
    conv = kb * kc * 3 * T
    gru = T * 3 * (kc * kh + kh * kh)
    head = kh * 1 * 1 * T
    assert float(c["macs"].detach()) == pytest.approx(conv + gru + head, rel=1e-6)
    assert float(c["params"].detach()) == pytest.approx(
        (kb * kc * 3 + kc) + 3 * (kc * kh + kh * kh + 2 * kh) + (kh + 1), rel=1e-6)
    c["macs"].backward()  # d MACs / d K_gru = T·3·(kc + 2·kh) + T (the head's input)
    assert net.gates["gru"].k.grad.item() == pytest.approx(T * 3 * (kc + 2 * kh) + T, rel=1e-6)
    assert net.gates["conv"].k.grad.item() == pytest.approx(kb * 3 * T + T * 3 * kh, rel=1e-6)
    # 'kept' parameters = numel of the sliced PyTorch modules (an independent count)
    from nrqc.training.slicing import slice_net

    small = slice_net(net)
    kept = model_cost(net, "kept")
    assert float(kept["params"]) == sum(p.numel() for p in small.parameters())
    gru = small.layers[1].gru
    assert isinstance(gru, torch.nn.GRU) and gru.hidden_size == 5 and gru.input_size == 7
    assert small.layers[2].layer.in_channels == 5  # the next layer's inputs follow


def test_seqnet_gru_slicing_keeps_outputs():
    from nrqc.training.slicing import slice_input, slice_net

    torch.manual_seed(0)
    net = _gru_net().eval()
    _widths(net)
    x = torch.randn(3, 20, 12)
    with torch.no_grad():
        ref = net(x)
        got = slice_net(net).eval()(slice_input(net, x))
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
        # removed hidden units carry no signal: changing their weights changes nothing
        g = net.layers[1].gru
        for w in (g.weight_ih_l0, g.weight_hh_l0, g.bias_hh_l0):
            w.view(3, 9, -1)[:, 5:] += 3.0
        assert torch.equal(net(x), ref)
    net.train()  # and in training the task gradient reaches the recurrent K
    net(x).pow(2).mean().backward()
    assert net.gates["gru"].k.grad.abs().item() > 0


@pytest.mark.parametrize("gated", [True, False])
def test_seqnet_gru_onnx_export_parity(gated):
    import numpy as np
    import onnx

    from nrqc.training.onnx_export import run_onnx, to_onnx
    from nrqc.training.slicing import slice_input

    torch.manual_seed(1)
    net = _gru_net().eval()
    if gated:
        _widths(net)
    model, small = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    gru = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(gru) == 1
    attrs = {a.name: a.i for a in gru[0].attribute}
    assert attrs == {"hidden_size": 5 if gated else 9, "linear_before_reset": 1}
    for seed in range(3):
        x = torch.randn(1, 20, 12, generator=torch.Generator().manual_seed(seed)) * 2
        with torch.no_grad():
            ref = net(x).numpy()
        got = run_onnx(model, slice_input(net, x).numpy())
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
