"""The complexity model against hand counts, and its gradient with respect to K."""
import pytest
import torch
from torch import nn

from nrqc.training import Block, DynamicWidth, GlobalMaxPool, MaxPool, SeqNet
from nrqc.training.complexity import model_cost, rnn_cost, summary
from nrqc.training.slicing import slice_net


def small_net(gated: bool, int8: bool = False):
    gates = {"g1": DynamicWidth(4, 1, 2.5), "g2": DynamicWidth(6, 1, 3.2), "g3": DynamicWidth(3, 1, 1.5)} if gated else {}
    name = (lambda n: n) if gated else (lambda n: None)
    layers = [Block("conv2d", 1, 4, 3, gate=name("g1")), MaxPool("conv2d", 2),
              Block("conv2d", 4, 6, 3, weight="int8" if int8 else "float", gate=name("g2")), GlobalMaxPool(),
              Block("linear", 6, 3, gate=name("g3")), Block("linear", 3, 1, act="none")]
    return SeqNet(layers, gates, "image", meta={"frames": 8, "bands": 6})


def test_full_counts_equal_hand_count_and_torch_numel():
    net = small_net(False)
    c = model_cost(net, "full")
    # conv1: 1·4·9 taps at 8×6 positions; conv2: 4·6·9 at 4×3; dense 6·3 and 3·1.
    assert float(c["macs"]) == 1 * 4 * 9 * 48 + 4 * 6 * 9 * 12 + 6 * 3 + 3 * 1 == 4341
    assert float(c["params"]) == sum(p.numel() for p in net.parameters()) == 287
    assert float(c["bytes"]) == 4 * 287


def test_int8_bytes():
    net = small_net(False, int8=True)
    # conv2 stores 216 int8 weights + a float32 scale and bias per output channel.
    assert float(model_cost(net, "full")["bytes"]) == 4 * (287 - 222) + 216 + 8 * 6


def test_soft_counts_are_polynomial_in_k_with_right_gradient():
    net = small_net(True)
    c = model_cost(net, "soft")
    assert float(c["macs"].detach()) == pytest.approx(2.5 * 432 + 2.5 * 3.2 * 108 + 3.2 * 1.5 + 1.5 * 1)
    c["macs"].backward()
    assert net.gates["g1"].k.grad.item() == pytest.approx(432 + 3.2 * 108)
    assert net.gates["g2"].k.grad.item() == pytest.approx(2.5 * 108 + 1.5)
    assert net.gates["g3"].k.grad.item() == pytest.approx(3.2 + 1)


def test_kept_counts_match_the_sliced_model():
    net = small_net(True)
    c = model_cost(net, "kept")  # ⌈K⌉ = 3, 4, 2
    assert float(c["macs"]) == 3 * 432 + 3 * 4 * 108 + 4 * 2 + 2 * 1
    small = slice_net(net)
    assert float(c["params"]) == sum(p.numel() for p in small.parameters()) == 155
    assert float(model_cost(small, "full")["macs"]) == float(c["macs"])
    assert summary(net)["widths"] == {"g1": 3, "g2": 4, "g3": 2}


def test_shared_width_counts_once_per_layer():
    g = DynamicWidth(8, 1, 5.5)
    layers = [Block("linear", 4, 8, gate="s"), Block("linear", 8, 8, gate="s"), Block("linear", 8, 1, act="none")]
    net = SeqNet(layers, {"s": g}, "features", meta={"features": 4})
    c = model_cost(net, "soft")
    assert float(c["macs"].detach()) == pytest.approx(4 * 5.5 + 5.5 * 5.5 + 5.5)
    c["macs"].backward()
    assert g.k.grad.item() == pytest.approx(4 + 2 * 5.5 + 1)
    assert list(dict(net.named_parameters()).keys()).count("gates.s.k") == 1


def test_rnn_closed_forms_match_torch():
    for cls, gates in ((nn.GRU, 3), (nn.LSTM, 4)):
        rnn = cls(10, 7, batch_first=True)
        c = rnn_cost(10, 7, steps=50, gates=gates)
        assert c["params"] == sum(p.numel() for p in rnn.parameters())
        assert c["macs"] == 50 * gates * (10 * 7 + 7 * 7)


def test_zoo_vad_hand_count():
    from nrqc.models import build

    net = build("vad", "float")  # 100 frames, 80 bands, 32 channels
    full = model_cost(net, "full")
    assert float(full["macs"]) == 100 * (80 * 32 * 3 + 2 * 32 * 32 * 3 + 32 * 16 + 16)
    assert float(full["params"]) == sum(p.numel() for p in net.parameters()) < 50_000
