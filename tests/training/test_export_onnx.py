"""ONNX export: the BAM contract's ops, BatchNorm folding, onnx.checker and onnxruntime parity."""
import numpy as np
import onnx
import pytest
import torch

from nrqc.models import build
from nrqc.training.onnx_export import run_onnx, to_onnx
from nrqc.training.slicing import slice_input


def _dyadic_(net, seed=0, no_ties=False):
    """Make every float weight, bias and int8 scale a small multiple of a power of two, so
    every sum in PyTorch and onnxruntime is exact whatever the order: then binary maps
    (comparisons with thresholds) must agree bit for bit.  no_ties: biases are odd
    multiples of 2⁻⁸ while weighted sums are multiples of 2⁻⁷, so no pre-activation equals
    its threshold (where ONNX's Sign(0) = 0 and PyTorch's ±1 step gives −1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if net.input_quant is not None:  # int8 input steps of 2⁻⁵ (±4): dyadic too
            net.input_quant.scale.fill_(2.0 ** -5)
        for _, b in net.blocks():
            if b.kind == "gru":  # float GRU: sigmoid/tanh are not exact anyway
                continue
            w = b.layer.weight
            if b.weight_mode == "int8":
                q = torch.randint(-127, 128, w.shape, generator=gen).float()
                q.view(w.shape[0], -1)[:, 0] = 127  # per-channel max 127 -> scale exactly 2^-7
                w.copy_(q / 128)
            else:
                w.copy_(torch.randint(-8, 9, w.shape, generator=gen).float() / 16)
            if no_ties:
                b.layer.bias.copy_((2 * torch.randint(-64, 65, b.layer.bias.shape, generator=gen) + 1).float() / 256)
            else:
                b.layer.bias.copy_(torch.randint(-16, 17, b.layer.bias.shape, generator=gen).float() / 32)
            if b.bn is not None:
                c = b.bn.num_features
                b.bn.eps = 0.0
                b.bn.running_var.copy_(torch.tensor([0.25, 4.0, 1.0, 16.0]).repeat(c)[:c])
                b.bn.running_mean.copy_(torch.randint(-8, 9, (c,), generator=gen).float() / 8)
                b.bn.weight.copy_(torch.tensor([0.5, -2.0, 1.0, -0.25, 0.0]).repeat(c)[:c])  # γ < 0 and γ = 0
                b.bn.bias.copy_(torch.randint(-8, 9, (c,), generator=gen).float() / 8)


def _dyadic_input(net, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-32, 33, net.input_shape(1), generator=gen).float() / 8


@pytest.mark.parametrize("arch,variant", [
    ("bam4", "bam"), ("vad_tiny", "bam"), ("vad_tiny", "bam-reparam"), ("antispoof_cnn", "bam-reparam"),
    ("synthetic_mlp", "bam"), ("dnsmos", "bam"), ("dnsmos", "bam-binary-head"), ("vad_tiny", "bam-float-first"),
    ("bam4", "bam-reparam-float-first"),
])
def test_bam_export_is_bit_exact_on_exact_arithmetic(arch, variant):
    """BAM variants with their default all-integer first layer (int8 input and weights),
    and with --first-layer float (-float-first)."""
    kw = {"head_kind": "binary"} if variant.endswith("binary-head") else {}
    if variant.endswith("-float-first"):
        kw["first_layer"] = "float"
    net = build(arch, variant.removesuffix("-binary-head").removesuffix("-float-first"), bn=True, **kw).eval()
    assert (net.input_quant is None) == variant.endswith("-float-first")
    for g in net.gates.values():
        g.k.data.fill_(g.n * 0.55 + 0.3)
    _dyadic_(net)
    model, small = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    for seed in range(3):
        x = _dyadic_input(net, seed)
        with torch.no_grad():
            ref = net(x).numpy()
        got = run_onnx(model, slice_input(net, x).numpy())
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("first_layer", ["int8", "float"])
def test_contract_ops_and_shapes(first_layer):
    net = build("bam4", "bam", bn=True, first_layer=first_layer).eval()
    model, _ = to_onnx(net)
    ops = [n.op_type for n in model.graph.node]
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].name == "logmel"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 200, 64]
    assert model.graph.output[0].name == "output"
    int8_first = first_layer == "int8"  # input Q/DQ, then an int8 first conv (contract section 7)
    assert ops[:3] == (["QuantizeLinear", "DequantizeLinear", "Unsqueeze"] if int8_first else ["Unsqueeze", "Conv", "Greater"])
    assert ops.count("Greater") == 4 and ops.count("Cast") == 4 and ops.count("DequantizeLinear") == 3 + 2 * int8_first
    meta = {p.key for p in model.metadata_props if p.key.startswith("nrqc.input.")}
    assert meta == ({"nrqc.input.logmel.dtype", "nrqc.input.logmel.scale", "nrqc.input.logmel.zero_point"}
                    if int8_first else set())
    assert ops.count("Relu") == 2 and "GlobalMaxPool" in ops and ops.count("MaxPool") == 4
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "Greater":
            conv = nodes[n.input[0]]
            assert conv.op_type == "Conv" and len(conv.input) == 2  # no bias
            t = onnx.numpy_helper.to_array(inits[n.input[1]])
            assert t.dtype == np.float32 and t.shape[1:] == (1, 1)
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:  # weights (the input's pair: its own test)
            wq, sc, zp = (onnx.numpy_helper.to_array(inits[i]) for i in n.input)
            assert wq.dtype == np.int8 and sc.dtype == np.float32 and zp.dtype == np.int8
            assert sc.shape == zp.shape == (wq.shape[0],) and not zp.any()
            assert {a.name: a.i for a in n.attribute}["axis"] == 0


def test_threshold_is_negated_bias_without_bn():
    net = build("vad_tiny", "bam").eval()
    model, _ = to_onnx(net)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    greater = [n for n in model.graph.node if n.op_type == "Greater"][0]
    np.testing.assert_array_equal(inits[greater.input[1]].reshape(-1), -net.layers[0].layer.bias.detach().numpy())


def test_dense_int8_uses_axis_1():
    from nrqc.training import Block, SeqNet

    net = SeqNet([Block("linear", 6, 5, act="heaviside"), Block("linear", 5, 4, weight="int8", act="heaviside"),
                  Block("linear", 4, 1, act="none")], layout="features", meta={"features": 6}).eval()
    model, _ = to_onnx(net)
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][0]
    assert {a.name: a.i for a in dq.attribute}["axis"] == 1
    x = torch.randn(1, 6)
    np.testing.assert_allclose(run_onnx(model, x.numpy()), net(x).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("arch", ["bam4", "dnsmos", "vad_tiny", "vad_gru", "antispoof_cnn", "synthetic_mlp"])
@pytest.mark.parametrize("variant", ["float", "reparam"])
def test_float_export_parity(arch, variant):
    torch.manual_seed(0)
    net = build(arch, variant, bn=True).eval()
    for _, b in net.blocks():  # non-trivial BN statistics, including negative gammas
        if b.bn is not None:
            with torch.no_grad():
                b.bn.running_mean.uniform_(-1, 1)
                b.bn.running_var.uniform_(0.5, 2)
                b.bn.weight.uniform_(-1.5, 1.5)
                b.bn.bias.uniform_(-0.5, 0.5)
    for g in net.gates.values():
        g.k.data.fill_(g.n * 0.5 + 0.2)
    model, small = to_onnx(net)
    x = torch.randn(net.input_shape(1)) * 2
    with torch.no_grad():
        ref = net(x).numpy()
    got = run_onnx(model, slice_input(net, x).numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def _sign_net(kind, bn):
    """A ±1 (sign) activation model: float first layer, int8 second, pooled, dense head."""
    from nrqc.training import Block, GlobalMaxPool, MaxPool, SeqNet

    layout = "image" if kind == "conv2d" else "bands_as_channels"
    c0 = 1 if kind == "conv2d" else 12
    layers = [Block(kind, c0, 8, 3, act="sign", bn=bn), MaxPool(kind, 2),
              Block(kind, 8, 8, 3, weight="int8", act="sign", bn=bn), GlobalMaxPool(),
              Block("linear", 8, 4), Block("linear", 4, 1, act="none")]
    return SeqNet(layers, layout=layout, meta={"frames": 16, "bands": 12}).eval()


@pytest.mark.parametrize("kind", ["conv2d", "conv1d"])
@pytest.mark.parametrize("bn", [False, True])
def test_sign_activation_export(kind, bn):
    net = _sign_net(kind, bn)
    _dyadic_(net, no_ties=True)
    model, _ = to_onnx(net)
    onnx.checker.check_model(model, full_check=True)
    # the ±1 head is Sign(Sub(y, T)) on a bias-free Conv, the form the compiler recognizes
    nodes = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    signs = [n for n in model.graph.node if n.op_type == "Sign"]
    assert len(signs) == 2 and not any(n.op_type in ("Greater", "Cast", "Mul") for n in model.graph.node)
    for n in signs:
        sub = nodes[n.input[0]]
        assert sub.op_type == "Sub" and nodes[sub.input[0]].op_type == "Conv" and len(nodes[sub.input[0]].input) == 2
        assert inits[sub.input[1]].shape == ((8, 1, 1) if kind == "conv2d" else (8, 1))
    if not bn:  # T = −b
        t = inits[nodes[signs[0].input[0]].input[1]].reshape(-1)
        np.testing.assert_array_equal(t, -net.layers[0].layer.bias.detach().numpy())
    maps = []
    hook = net.layers[2].register_forward_hook(lambda m, i, o: maps.append(o))
    for seed in range(3):
        x = _dyadic_input(net, seed)
        with torch.no_grad():
            ref = net(x).numpy()
        np.testing.assert_array_equal(run_onnx(model, x.numpy()), ref)
    hook.remove()
    assert set(torch.cat(maps).unique().tolist()) == {-1.0, 1.0}  # the maps really are ±1


@pytest.mark.parametrize("arch", ["vad_gru", "vad_crnn"])
@pytest.mark.parametrize("variant", ["bam", "bam-reparam"])
def test_recurrent_vad_bam_export(arch, variant):
    # binary convs (exact on dyadic numbers) feeding a float GRU: parity to float rounding
    net = build(arch, variant).eval()
    for g in net.gates.values():
        g.k.data.fill_(g.n * 0.55 + 0.3)
    _dyadic_(net)
    model, small = to_onnx(net)
    ops = [n.op_type for n in model.graph.node]
    assert ops[:6] == ["QuantizeLinear", "DequantizeLinear", "Transpose", "DequantizeLinear", "Conv", "Greater"]
    assert "GRU" in ops and ops.count("Greater") == (2 if arch == "vad_crnn" else 1)
    gru = next(m for m in small.layers if hasattr(m, "gru")).gru
    assert gru.hidden_size == (net.kept("gru") if net.gates else 32)
    for seed in range(2):
        x = _dyadic_input(net, seed)
        with torch.no_grad():
            ref = net(x).numpy()
        np.testing.assert_allclose(run_onnx(model, slice_input(net, x).numpy()), ref, rtol=1e-4, atol=1e-5)
