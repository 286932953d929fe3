"""The all-integer first layer (issue 15 items 1-2, docs/bam-onnx-contract.md section 7):
BAM models quantize their input features to int8 with a calibrated per-tensor scale and
train the first layer's weights as int8; the exported QuantizeLinear/DequantizeLinear
pair computes what training computed, checked against onnxruntime on the file on disk."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from nrqc.cli import main
from nrqc.data.corpus import load_corpus, write_corpus
from nrqc.models import build
from nrqc.training.checkpoint import load_checkpoint, model_from_checkpoint
from nrqc.training.quant import InputQuant, fake_quant_input
from tests.conftest import run_cli


def _cli(args, exit_code=0):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == exit_code, r.output
    return r


def _ort_session(model_or_path):
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def test_fake_quant_is_onnx_quantize_linear():
    """torch's fake quantizer and onnxruntime's QuantizeLinear -> DequantizeLinear agree bit
    for bit, at exact half steps (round half to even) and beyond the int8 range (clip)."""
    s = np.float32(0.03125 * 0.75)
    k = np.arange(-140, 140, dtype=np.float32)
    x = np.concatenate([k * s, (k + np.float32(0.5)) * s, np.random.default_rng(0).normal(0, 2, 500).astype(np.float32)])
    qdq = onnx.helper.make_graph(
        [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [x.size])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [x.size]),
         onnx.helper.make_tensor_value_info("q", onnx.TensorProto.INT8, [x.size])],
        [onnx.numpy_helper.from_array(np.array(s), "s"), onnx.numpy_helper.from_array(np.array(0, np.int8), "z")])
    model = onnx.helper.make_model(qdq, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    y, q = _ort_session(model).run(None, {"x": x})
    np.testing.assert_array_equal(fake_quant_input(torch.from_numpy(x), torch.tensor(s)).numpy(), y)
    # the contract's formula for a device that feeds int8 directly
    np.testing.assert_array_equal(np.clip(np.round(x / s), -128, 127).astype(np.int8), q)
    assert q.min() == -128 and q.max() == 127  # the range was exercised


def test_calibration_is_a_percentile_over_the_kept_bands():
    rng = np.random.default_rng(1)
    x = torch.from_numpy((rng.standard_t(3, size=(30, 40, 12)) * np.linspace(0.5, 2, 12)).astype(np.float32))
    q = InputQuant()
    s = q.calibrate(x)
    assert s == np.float32(np.percentile(np.abs(x.numpy()), 99.99) / 127)
    net = build("vad_tiny", "bam-reparam", frames=40, bands=12)
    net.gates["bands"].k.data.fill_(5.3)  # keeps 6 bands: the scale covers those only
    assert net.calibrate_input(x) == np.float32(np.percentile(np.abs(x[..., :6].numpy()), 99.99) / 127)
    assert float(net.input_quant.scale) < s
    assert build("vad_tiny", "bam", first_layer="float").calibrate_input(x) is None


def _corpus(path, task, n=40, frames=24, bands=16, seed=0):
    """A learnable tiny corpus in log-mel units (standardized; silence near −1.95)."""
    rng = np.random.default_rng(seed)
    feats = np.clip(rng.normal(-0.5, 0.8, size=(n, frames, bands)), -1.95, None).astype(np.float32)
    split = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2] * (n // 10), np.int8)
    if task == "vad":
        labels = (feats[:, :, :4].mean(axis=2) > -0.5).astype(np.uint8)
    elif task == "antispoof":
        labels = (np.arange(n) % 2).astype(np.float32)
        feats[labels == 1, :, :4] += 1.5
    else:
        labels = (1 + 3.5 * (feats[:, :, :4].mean(axis=(1, 2)) - feats[:, :, :4].mean() + 1) / 2).astype(np.float32)
    write_corpus(path, task, feats, labels, split, {"kind": "real", "labels": "test"})
    return path


@pytest.mark.parametrize("task,variant,first_layer", [
    ("vad", "bam", "int8"), ("vad", "bam-reparam", "int8"), ("quality", "bam", "int8"),
    ("antispoof", "bam", "int8"),
    # the float first layer's export is also checked bit-exact in test_export_onnx.py
    pytest.param("quality", "bam", "float", marks=pytest.mark.slow),
])
def test_trained_model_exports_its_first_layer_and_onnxruntime_agrees(tmp_path, task, variant, first_layer):
    """Train one epoch, export with `nrqc export` (once in a fresh process), run the file
    from disk in onnxruntime on the test split: the first binary map bit for bit as the
    PyTorch checkpoint (fake-quant) model's, outputs within float32 rounding (1e-5)."""
    data = _corpus(tmp_path / "corpus", task, frames=40 if task == "vad" else 24)
    out = tmp_path / "run"
    args = ["train", task, "--variant", variant, "--data", data, "--epochs", "1", "--batch-size", "8", "--out", out]
    if variant == "bam-reparam":
        args += ["--complexity-weight", "2", "--lr-k", "2"]  # moves the band width off its maximum in one epoch
    _cli(args + (["--first-layer", first_layer] if first_layer == "float" else []))  # int8: the default
    m = json.loads((out / "metrics.json").read_text())
    state = load_checkpoint(out / "checkpoint.pt")
    net = model_from_checkpoint(state)
    assert m["first_layer"] == state["build_kwargs"]["first_layer"] == net.meta["first_layer"] == first_layer
    c = load_corpus(data)
    tr = torch.from_numpy(c["features"][c["split"] == 0])
    if first_layer == "int8":
        kept = net.kept(net.input_gate) or tr.shape[-1]
        expect = np.float32(np.percentile(np.abs(tr[..., :kept].numpy()), 99.99) / 127)
        assert m["input_quant"]["scale"] == float(state["state_dict"]["input_quant.scale"]) == expect
        assert m["input_quant"]["bands"] == kept and m["history"][-1]["input_scale"] == m["input_quant"]["scale"]
        if variant == "bam-reparam":
            assert kept < tr.shape[-1]  # the band gate did cut bands: the scale is over the kept ones
    else:
        assert net.input_quant is None and "input_quant" not in m and "input_quant.scale" not in state["state_dict"]
    if (task, variant, first_layer) == ("vad", "bam", "int8"):
        run_cli("export", out / "checkpoint.pt", "-o", tmp_path / "m.onnx")  # as a user runs it: a fresh process
    else:
        _cli(["export", out / "checkpoint.pt", "-o", tmp_path / "m.onnx"])
    model = onnx.load(str(tmp_path / "m.onnx"))
    ops = [n.op_type for n in model.graph.node]
    meta = {p.key: p.value for p in model.metadata_props}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    name = model.graph.input[0].name
    if first_layer == "int8":
        q, dq = model.graph.node[:2]
        assert (q.op_type, dq.op_type, q.input[0]) == ("QuantizeLinear", "DequantizeLinear", name)
        assert list(dq.input) == [q.output[0], q.input[1], q.input[2]]
        s_in, zp = inits[q.input[1]], inits[q.input[2]]
        assert s_in.dtype == np.float32 and s_in.shape == () and zp.dtype == np.int8 and zp.shape == () and zp == 0
        assert np.float32(float(meta[f"nrqc.input.{name}.scale"])) == s_in == np.float32(m["input_quant"]["scale"])
        assert meta[f"nrqc.input.{name}.zero_point"] == "0" and meta[f"nrqc.input.{name}.dtype"] == "int8"
        conv = next(n for n in model.graph.node if n.op_type in ("Conv", "MatMul"))
        wdq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
        assert wdq.op_type == "DequantizeLinear" and inits[wdq.input[0]].dtype == np.int8
        assert inits[wdq.input[1]].shape == (inits[wdq.input[0]].shape[0],)  # per output channel
    else:
        assert "QuantizeLinear" not in ops and not any(k.startswith("nrqc.input.") for k in meta)
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        assert inits[conv.input[1]].dtype == np.float32  # today's float first layer
    # onnxruntime on the written file vs the PyTorch model; the first binary map too (the
    # same graph with that map as an extra output)
    x = torch.from_numpy(c["features"][c["split"] == 2])
    kept = net.kept(net.input_gate) or x.shape[-1]
    feed = [{name: xi[None, :, :kept].numpy()} for xi in x]
    got = np.concatenate([_ort_session(str(tmp_path / "m.onnx")).run(None, f)[0] for f in feed])
    first_map = next(n for n in model.graph.node if n.op_type == "Cast").output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(first_map, onnx.TensorProto.FLOAT, None))
    with_map = _ort_session(model)
    onnx_map = np.concatenate([with_map.run([first_map], f)[0] for f in feed])
    maps = []
    hook = net.layers[0].register_forward_hook(lambda mod, i, o: maps.append(o))
    with torch.no_grad():
        ref = net(x).numpy()
    hook.remove()
    assert 0 < onnx_map.mean() < 1  # a binary map with both values
    np.testing.assert_array_equal(onnx_map, maps[0].numpy()[:, : onnx_map.shape[1]])  # the kept channels
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)
