"""The model zoo: architectures, variants and sizes against independent references."""

import numpy as np
import pytest
import torch

from nrqc.models import ARCHS, VARIANTS, build
from nrqc.shared_data import dnsmos_model
from nrqc.training import Block
from nrqc.training.complexity import model_cost

DNSMOS = dnsmos_model()


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_model_runs_and_trains(arch, variant):
    torch.manual_seed(0)
    net = build(arch, variant)
    x = torch.randn(net.input_shape(3))
    y = net(x)
    expected = (3, net.meta["frames"]) if net.meta["task"] == "vad" else (3, 1)
    assert tuple(y.shape) == expected
    y.sum().backward()
    first = net.blocks()[0][1].layer.weight
    assert first.grad is not None and first.grad.abs().sum() > 0  # gradients reach the first layer
    if variant.endswith("reparam"):
        assert len(net.gates) > 0 and all(g.k.grad is not None for g in net.gates.values())


def test_bam_layer_choices_follow_the_paper():
    net = build("bam4", "bam")
    blocks = [b for _, b in net.blocks()]
    assert [b.c_out for b in blocks] == [32, 32, 32, 64, 64, 64, 1]
    assert [b.kind for b in blocks] == ["conv2d"] * 4 + ["linear"] * 3
    # all-integer by default: the first conv reads int8 features with int8 weights
    assert [b.weight_mode for b in blocks] == ["int8", "int8", "int8", "int8", "float", "float", "float"]
    assert net.input_quant is not None and net.meta["first_layer"] == "int8"
    assert [b.act for b in blocks] == ["heaviside"] * 4 + ["relu", "relu", "none"]
    assert all(b.kernel == 3 for b in blocks[:4])
    x = torch.randn(1, 200, 64)
    maps = []
    hooks = [b.register_forward_hook(lambda m, i, o: maps.append(o)) for b in blocks[:4]]
    net.eval()(x)
    for h in hooks:
        h.remove()
    for m in maps:  # binary activation maps
        assert set(torch.unique(m).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("arch", ["bam4", "dnsmos", "vad_tiny", "vad_gru", "antispoof_cnn", "synthetic_mlp"])
def test_first_layer_option(arch):
    """first_layer='float' keeps the paper's float first layer on float features; 'int8'
    (the BAM default) is refused for the float variants, which are the float twins."""
    for variant in ("bam", "bam-reparam"):
        net = build(arch, variant, first_layer="float")
        assert net.input_quant is None and net.meta["first_layer"] == "float"
        assert [b.weight_mode for _, b in net.blocks()][0] == "float"
        assert build(arch, variant).input_quant is not None
    assert build(arch, "float").input_quant is None and build(arch, "reparam").meta["first_layer"] == "float"
    with pytest.raises(ValueError, match="first_layer 'int8' needs a BAM variant"):
        build(arch, "float", first_layer="int8")
    with pytest.raises(ValueError, match="first_layer must be"):
        build(arch, "bam", first_layer="int4")


def test_binary_head_option():
    """head_kind='binary': every layer fed by a binary map (the head too: the global max of
    a binary map is binary) has int8 weights, hidden outputs are binary."""
    blocks = [b for _, b in build("bam4", "bam", head_kind="binary").blocks()]
    assert [b.weight_mode for b in blocks] == ["int8"] * 7
    assert [b.act for b in blocks] == ["heaviside"] * 6 + ["none"]
    vad = [b for _, b in build("vad_tiny", "bam", head_kind="binary").blocks()]
    assert [(b.weight_mode, b.act) for b in vad[3:]] == [("int8", "heaviside"), ("int8", "none")]
    float_head = [b for _, b in build("dnsmos", "float", head_kind="binary").blocks()]
    assert all(b.weight_mode == "float" for b in float_head)  # float variants ignore it
    with pytest.raises(ValueError, match="head_kind"):
        build("bam4", "bam", head_kind="int4")


def test_dnsmos_architecture_matches_the_published_model():
    net = build("dnsmos", "float", frames=900, bands=120)
    ours = sorted(tuple(p.shape) for p in net.parameters())
    if DNSMOS.is_file():
        import onnx

        m = onnx.load(str(DNSMOS))
        theirs = []
        for init in m.graph.initializer:
            s = tuple(init.dims)
            theirs.append(s[::-1] if len(s) == 2 else s)  # keras MatMul weights are [in, out]
        assert sorted(theirs) == ours
    assert sum(p.numel() for p in net.parameters()) == 54_945
    # README: "about 435 M multiply-accumulates per 9 s clip"
    assert abs(float(model_cost(net, "full")["macs"]) - 435e6) / 435e6 < 0.01


def test_vad_fits_a_cortex_m():
    net = build("vad", "bam")
    c = model_cost(net, "full")
    assert float(c["params"]) < 50_000
    assert float(c["bytes"]) < 64 * 1024  # well inside 256 KB flash
    assert net.meta["bands"] == 80 and "bands" in build("vad", "reparam").gates
