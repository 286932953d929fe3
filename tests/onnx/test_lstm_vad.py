"""An LSTM VAD of the shape users bring (issue 19 item 6), built with onnx.helper (no node
names, opset 16): a scalar `sr` input with `If` on it, pads computed from `Shape`/`Gather`,
the STFT as a Conv1d (258 filters, stride 128), 4 convs, an LSTM with 128 units whose
state [2, 1, 128] is an input and an output (two outputs: a tuple).

Compiled with `--const sr=16000` (the `If` folds to its taken branch, `sr` leaves the
signature), run frame by frame from disk in a fresh process carrying the state, and
compared with onnxruntime on the source model (sr fed) within 1e-5 on every frame.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nrqc.compiler import CompileOptions, compile_model
from nrqc.reference import ort_session

FRAME, CONTEXT, HIDDEN = 512, 64, 128
TOL = 1e-5


def lstm_vad(seed: int = 0):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def init(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    def weight(name, shape, scale):
        return init(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    # sample-rate handling: 16 kHz frames pass through, 8 kHz ones would be scaled (If on sr)
    node("Equal", ["sr", init("sr16k", np.int64(16000))], ["is16k"])
    then_g = helper.make_graph([helper.make_node("Identity", ["input"], ["x_then"])], "then", [],
                               [helper.make_tensor_value_info("x_then", TensorProto.FLOAT, [1, FRAME])])
    else_g = helper.make_graph([helper.make_node("Mul", ["input", "half"], ["x_else"])], "else", [],
                               [helper.make_tensor_value_info("x_else", TensorProto.FLOAT, [1, FRAME])],
                               [numpy_helper.from_array(np.float32(0.5), "half")])
    node("If", ["is16k"], ["x"], then_branch=then_g, else_branch=else_g)
    # right pad to FRAME + CONTEXT, the amount computed from the input's shape
    n = node("Gather", [node("Shape", ["x"], ["x_shape"]), init("one_i", np.int64(1))], ["n"], axis=0)
    pad_r = node("Sub", [init("padded_len", np.int64(FRAME + CONTEXT)), n], ["pad_r"])
    pads = node("Concat", [init("pads_head", np.zeros(3, np.int64)),
                           node("Unsqueeze", [pad_r, init("axis0", np.array([0], np.int64))], ["pad_r1"])],
                ["pads"], axis=0)
    xp = node("Pad", ["x", pads], ["x_padded"], mode="reflect")
    x3 = node("Unsqueeze", [xp, init("axis1", np.array([1], np.int64))], ["x3"])
    # STFT as a Conv1d: 258 filters (129 real, 129 imaginary), window 256, stride 128
    spec = node("Conv", [x3, weight("stft_w", (258, 1, 256), 0.05)], ["spec"], strides=[128])
    re = node("Slice", [spec, init("s0", np.array([0], np.int64)), init("s129", np.array([129], np.int64)),
                        init("ax1", np.array([1], np.int64))], ["re"])
    im = node("Slice", [spec, "s129", init("s258", np.array([258], np.int64)), "ax1"], ["im"])
    mag = node("Sqrt", [node("Add", [node("Mul", [re, re], ["re2"]), node("Mul", [im, im], ["im2"])], ["pow"])],
               ["mag"])
    # 4 convs: [1, 129, 3] -> [1, 128, 1]
    h = mag
    for k, (ci, co, stride) in enumerate(((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))):
        h = node("Conv", [h, weight(f"c{k}_w", (co, ci, 3), 1.0 / np.sqrt(3 * ci)), weight(f"c{k}_b", (co,), 0.1)],
                 [f"conv{k}"], pads=[1, 1], strides=[stride])
        h = node("Relu", [h], [f"r{k}"])
    seq = node("Transpose", [h], ["seq"], perm=[2, 0, 1])  # [T=1, B=1, 128]
    h0 = node("Gather", ["state", init("i0", np.array([0], np.int64))], ["h0"], axis=0)
    c0 = node("Gather", ["state", init("i1", np.array([1], np.int64))], ["c0"], axis=0)
    node("LSTM", [seq, weight("lstm_w", (1, 4 * HIDDEN, 128), 0.08), weight("lstm_r", (1, 4 * HIDDEN, HIDDEN), 0.08),
                  weight("lstm_b", (1, 8 * HIDDEN), 0.1), "", h0, c0], ["y", "y_h", "y_c"], hidden_size=HIDDEN)
    node("Concat", ["y_h", "y_c"], ["stateN"], axis=0)
    y = node("Reshape", ["y", init("y_shape", np.array([1, HIDDEN, 1], np.int64))], ["y3"])
    logit = node("Conv", [node("Relu", [y], ["y_relu"]), weight("head_w", (1, HIDDEN, 1), 0.1),
                          weight("head_b", (1,), 0.1)], ["logit"])
    node("Sigmoid", [node("Reshape", [logit, init("out_shape", np.array([1, 1], np.int64))], ["logit2"])], ["output"])
    graph = helper.make_graph(
        nodes, "lstm_vad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, FRAME]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, HIDDEN]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    onnx.checker.check_model(model)
    return model


_STREAM = r"""
import json, sys
import numpy as np
from nrqc.runtime import ArtifactSession
out, frames = sys.argv[1], np.load(sys.argv[2])
s = ArtifactSession(out)
state = np.zeros((2, 1, 128), np.float32)
probs, states = [], []
for f in frames:
    prob, state = s.run({"input": f[None], "state": state})
    probs.append(np.asarray(prob)); states.append(np.asarray(state))
np.savez(sys.argv[3], probs=np.stack(probs), states=np.stack(states))
"""


def stream_reference(path, frames):
    sess = ort_session(path)
    state = np.zeros((2, 1, HIDDEN), np.float32)
    probs, states = [], []
    for f in frames:
        prob, state = sess.run(None, {"input": f[None], "state": state, "sr": np.array(16000, np.int64)})
        probs.append(prob)
        states.append(state)
    return np.stack(probs), np.stack(states)


def _compile_and_stream(tmp_path, target):
    path = tmp_path / "lstm_vad.onnx"
    onnx.save(lstm_vad(), str(path))
    out = compile_model(path, target, tmp_path / f"vad-{target}",
                        CompileOptions(constants={"sr": "16000"}, atol=TOL, rtol=TOL), log=lambda *a: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["input", "state"]  # sr left the signature
    assert manifest["constants"]["sr"]["value"] == [16000]
    assert [o["name"] for o in manifest["outputs"]] == ["output", "stateN"]
    assert manifest["check"]["ran"] and manifest["check"]["passed"], manifest["check"]["summary"]
    assert "LSTM" in [layer["op"] for layer in manifest["layers"]]
    return path, out, manifest


@pytest.mark.slow  # ~25 s of CPU (the 258x256 STFT conv and the 128-unit LSTM kernel build)
def test_lstm_vad_x86_streams_like_onnxruntime(tmp_path):
    path, out, _ = _compile_and_stream(tmp_path, "x86")
    frames = np.random.default_rng(3).standard_normal((6, FRAME)).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    subprocess.run([sys.executable, "-c", _STREAM, str(out), str(tmp_path / "frames.npy"), str(tmp_path / "got.npz")],
                   check=True, timeout=300)
    got = np.load(tmp_path / "got.npz")
    probs, states = stream_reference(path, frames)
    np.testing.assert_allclose(got["probs"], probs, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got["states"], states, atol=TOL, rtol=TOL)
    assert np.abs(states[-1]).max() > 0.01  # the state really carries something


def test_lstm_vad_folds_if_and_shape_arithmetic():
    """What reaches the import: no If, no Shape chain, the pads and the branch constant."""
    from nrqc.onnx_model import load_model

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "lstm_vad.onnx"
        onnx.save(lstm_vad(), str(path))
        m = load_model(path, {}, {"sr": "16000"})
    ops = [n.op_type for n in m.onnx_model.graph.node]
    assert "If" not in ops and "Shape" not in ops and "Gather" in ops  # the state's Gathers stay
    pad = next(n for n in m.onnx_model.graph.node if n.op_type == "Pad")
    pads = next(i for i in m.onnx_model.graph.initializer if i.name == pad.input[1])
    assert numpy_helper.to_array(pads).tolist() == [0, 0, 0, CONTEXT]
    assert any("then branch inlined" in r for r in m.rewrites)
    assert [s.name for s in m.inputs] == ["input", "state"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm_cpu", "cortex-m7"])
def test_lstm_vad_on_boards(tmp_path, target):
    """arm_cpu: checked on the emulated Pi (cortex-a72); cortex-m7: the firmware in QEMU
    (two outputs through the bare-metal caller)."""
    _compile_and_stream(tmp_path, target)
