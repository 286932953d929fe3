"""Residual stacks sharing one K: forward, whole-model cost, slicing and ONNX export."""
import numpy as np
import onnx
import pytest
import torch

from nrqc.training import Block, GlobalMaxPool, SeqNet
from nrqc.training.complexity import model_cost
from nrqc.training.net import Residual
from nrqc.training.onnx_export import run_onnx, to_onnx
from nrqc.training.reparam import DynamicWidth
from nrqc.training.slicing import slice_net

F, B, C, M = 10, 12, 8, 6  # frames, bands, residual stream channels, inner channels


def _res_net(bn=False, widths=(5.4, 3.7, 4.2)):
    """stem conv (gate s) -> 2 residuals whose second conv shares s -> global max -> dense."""
    gates = {"s": DynamicWidth(C), "r1": DynamicWidth(M), "r2": DynamicWidth(M)}
    for g, k in zip(gates.values(), widths):
        g.k.data.fill_(k)
    res = [Residual(Block("conv2d", C, M, 3, bn=bn, gate=f"r{i}"), Block("conv2d", M, C, 3, act="none", bn=bn, gate="s"))
           for i in (1, 2)]
    layers = [Block("conv2d", 1, C, 3, bn=bn, gate="s"), *res, GlobalMaxPool(), Block("linear", C, 1, act="none")]
    return SeqNet(layers, gates, "image", meta={"frames": F, "bands": B})


def _randomize_bn(net):
    with torch.no_grad():
        for _, b in net.blocks():
            if b.bn is not None:
                b.bn.running_mean.uniform_(-1, 1)
                b.bn.running_var.uniform_(0.5, 2)
                b.bn.weight.uniform_(-1.5, 1.5)
                b.bn.bias.uniform_(-0.5, 0.5)


def test_forward_shares_one_gate():
    torch.manual_seed(0)
    net = _res_net()
    assert sum(1 for n, _ in net.named_parameters() if n.startswith("gates.")) == 3  # s is one parameter
    streams = []
    hooks = [m.register_forward_hook(lambda mod, i, o: streams.append(o)) for m in net.layers[1:3]]
    x = torch.randn(2, F, B)
    net.eval()(x)
    for h in hooks:
        h.remove()
    for s in streams:  # both sides of each sum keep ⌈K_s⌉ = 6 channels, the rest are zero
        assert s.shape[1] == C and torch.equal(s[:, 6:], torch.zeros_like(s[:, 6:])) and s[:, :6].abs().sum() > 0
    net.train()
    net(x).pow(2).mean().backward()
    assert all(g.k.grad is not None and g.k.grad.abs().item() > 0 for g in net.gates.values())
    with pytest.raises(ValueError, match="share the gate"):
        SeqNet([Block("conv2d", 1, C, 3, gate="s"), Residual(Block("conv2d", C, M, 3), Block("conv2d", M, C, 3))],
               {"s": DynamicWidth(C)}, "image", meta={"frames": F, "bands": B})


def test_cost_is_the_hand_count():
    net = _res_net()
    ks, k1, k2 = 5.4, 3.7, 4.2
    P = F * B  # 'same' padding keeps every position
    stem = 1 * ks * 9 * P
    res = (ks * k1 * 9 + k1 * ks * 9 + ks * k2 * 9 + k2 * ks * 9) * P
    c = model_cost(net, "soft")
    assert float(c["macs"].detach()) == pytest.approx(stem + res + ks * 1, rel=1e-6)
    params = (ks * 9 + ks) + (ks * k1 * 9 + k1) + (k1 * ks * 9 + ks) + (ks * k2 * 9 + k2) + (k2 * ks * 9 + ks) + (ks + 1)
    assert float(c["params"].detach()) == pytest.approx(params, rel=1e-6)
    c["macs"].backward()  # the shared K is counted in every layer that names it or reads it
    d_ks = 9 * P + (k1 * 9 * 2 + k2 * 9 * 2) * P + 1
    assert net.gates["s"].k.grad.item() == pytest.approx(d_ks, rel=1e-6)
    assert float(model_cost(net, "kept")["params"]) == sum(p.numel() for p in slice_net(net).parameters())


@pytest.mark.parametrize("bn", [False, True])
def test_sliced_equals_masked_eval_model(bn):
    torch.manual_seed(0)
    net = _res_net(bn)
    _randomize_bn(net)
    net.eval()
    small = slice_net(net).eval()
    widths = [b.c_out for _, b in small.blocks()]
    assert widths == [6, 4, 6, 5, 6, 1] and small.layers[1].body[0].c_in == 6
    x = torch.randn(3, F, B)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bn", [False, True])
def test_export_parity(bn):
    torch.manual_seed(1)
    net = _res_net(bn)
    _randomize_bn(net)
    net.eval()
    model, _ = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Add") == 3 and ops.count("Conv") == 5  # 2 skips + the dense bias
    for seed in range(3):
        x = torch.randn(1, F, B, generator=torch.Generator().manual_seed(seed)) * 2
        with torch.no_grad():
            ref = net(x).numpy()
        np.testing.assert_allclose(run_onnx(model, x.numpy()), ref, rtol=1e-4, atol=1e-5)


def test_activation_peak_counts_the_skip():
    from nrqc.training.complexity import activation_peak_bytes

    net = slice_net(_res_net())  # stream 6 channels, inner 4 and 5, on 10 x 12 positions
    P = F * B
    # the largest: the second residual's second conv, its input (5 ch), output and held skip (6 ch each)
    assert activation_peak_bytes(net) == 4 * max(P * (1 + 6), P * (6 + 6), P * (4 + 6 + 6), P * (5 + 6 + 6))
