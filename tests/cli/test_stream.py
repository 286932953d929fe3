"""`nrqc run --stream` / `nrqc profile --stream` (issue 19 item 3): a model with state inputs
and outputs run frame by frame, the state carried between calls.

Default tests: the plan (state pairs, stream input, chunking) on hand-written manifests, and
the one-line refusals through the CLI. Slow: the LSTM VAD of tests/onnx/test_lstm_vad.py
compiled for x86 with --const sr=16000, streamed from disk by `nrqc run --stream` in a fresh
process, against onnxruntime streaming the source model with the same state carrying.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from nrqc.errors import NrqcError
from nrqc.streaming import frames_of, plan_stream
from tests.conftest import run_cli


def _spec(name, shape, dtype="float32"):
    return {"name": name, "shape": list(shape), "dtype": dtype}


def _manifest(inputs, outputs):
    return {"target": "x86", "inputs": [_spec(*i) for i in inputs], "outputs": [_spec(*o) for o in outputs]}


VAD = _manifest([("input", (1, 512)), ("state", (2, 1, 128))], [("output", (1, 1)), ("stateN", (2, 1, 128))])


def test_state_pairs_by_name_and_shape():
    plan = plan_stream(VAD)
    assert plan.stream_input == "input" and plan.time_axis == 1 and plan.chunk == 512
    assert [(p.input, p.output) for p in plan.states] == [("state", "stateN")]
    # h0/c0 -> hn/cn, x_in -> x_out, new_*; an output of another shape is no state
    m = _manifest([("feats", (1, 10, 40)), ("h0", (1, 1, 16)), ("c0", (1, 1, 16)), ("cache_in", (1, 8, 3))],
                  [("prob", (1, 10)), ("hn", (1, 1, 16)), ("new_c0", (1, 1, 16)), ("cache_out", (1, 8, 3))])
    plan = plan_stream(m)
    assert plan.stream_input == "feats" and plan.time_axis == 1 and plan.chunk == 10
    assert sorted((p.input, p.output) for p in plan.states) == [("c0", "new_c0"), ("cache_in", "cache_out"),
                                                                ("h0", "hn")]


def test_ambiguous_or_missing_pairs_refused():
    two = _manifest([("input", (1, 512)), ("state", (2, 1, 128))],
                    [("state_out", (2, 1, 128)), ("new_state", (2, 1, 128))])
    with pytest.raises(NrqcError, match="several outputs \\(state_out, new_state\\).*--state state=OUTPUT"):
        plan_stream(two)
    assert [(p.input, p.output) for p in plan_stream(two, explicit=("state=new_state",)).states] == [
        ("state", "new_state")]
    # no output named after `mem`: two inputs left, neither fixed nor state
    odd = _manifest([("input", (1, 512)), ("mem", (1, 4))], [("y", (1, 4))])
    with pytest.raises(NrqcError, match="cannot tell which input to stream: input, mem"):
        plan_stream(odd)
    assert plan_stream(odd, explicit=("mem=y",)).stream_input == "input"
    with pytest.raises(NrqcError, match="input 'state' is \\[2, 1, 128\\] float32 but output 'output' is"):
        plan_stream(VAD, explicit=("state=output",))


def test_frames_cut_along_the_time_axis():
    plan = plan_stream(VAD)
    signal = np.arange(3 * 512 + 7, dtype=np.float32)
    frames, left = frames_of(signal, plan, "x")
    assert frames.shape == (3, 1, 512) and left == 7
    np.testing.assert_array_equal(frames[2, 0], signal[1024:1536])
    framed, left = frames_of(signal[:1536].reshape(3, 512), plan, "x")
    assert left == 0 and np.array_equal(framed, frames)
    # features [1, 10, 40] with time on axis 1: a [T, 40] matrix is cut every 10 rows
    feats = plan_stream(_manifest([("f", (1, 10, 40))], [("y", (1, 2))]))
    mat = np.random.default_rng(0).standard_normal((25, 40)).astype(np.float32)
    got, left = frames_of(mat, feats, "x")
    assert got.shape == (2, 1, 10, 40) and left == 5
    np.testing.assert_array_equal(got[1, 0], mat[10:20])
    with pytest.raises(NrqcError, match="shape \\[25, 41\\] is neither frames"):
        frames_of(np.zeros((25, 41), np.float32), feats, "x")


def test_cli_refusals_are_one_line(tmp_path):
    """Refused before anything is loaded: a wav for a model that records no frontend, an
    ambiguous state, a missing stream file."""
    out = tmp_path / "art"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(VAD))
    np.save(tmp_path / "x.npy", np.zeros((2, 512), np.float32))
    (tmp_path / "a.wav").write_bytes(b"RIFF")

    def fails(*args, match):
        proc = run_cli("run", out, *args, check_exit=2)
        assert match in proc.stderr and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, \
            proc.stderr
    fails("--stream", tmp_path / "a.wav", match="the model does not record how to turn audio into its input 'input'")
    fails("--stream", tmp_path / "x.npy", "--state", "state=output",
          match="--state state=output: input 'state' is [2, 1, 128] float32 but output 'output' is [1, 1] float32")
    fails("--stream", tmp_path / "nope.npy", match="--stream")
    np.save(tmp_path / "short.npy", np.zeros(300, np.float32))
    fails("--stream", tmp_path / "short.npy", match="300 time step(s), fewer than one chunk of 512 along axis 1")
    fails("--initial-state", "state=x.npy", match="--state, --initial-state and --time-axis go with --stream")


@pytest.mark.slow  # 97 s here under load: compiling the LSTM VAD (STFT conv, 128-unit LSTM), its check, 3 CLI runs
def test_lstm_vad_streams_from_disk_like_onnxruntime(tmp_path):
    from tests.onnx.test_lstm_vad import HIDDEN, TOL, lstm_vad

    from nrqc.reference import ort_session

    model = tmp_path / "lstm_vad.onnx"
    onnx.save(lstm_vad(), str(model))
    out = tmp_path / "vad"
    run_cli("compile", model, "-t", "x86", "--const", "sr=16000", "-o", out)
    rng = np.random.default_rng(7)
    K = 9
    signal = rng.standard_normal(K * 512 + 100).astype(np.float32)  # one long signal, 100 samples left over
    np.save(tmp_path / "signal.npy", signal)
    start = (rng.standard_normal((2, 1, HIDDEN)) * 0.3).astype(np.float32)
    np.save(tmp_path / "start.npy", start)

    def onnxruntime_stream(state):
        sess, probs, states = ort_session(model), [], []
        for k in range(K):
            prob, state = sess.run(None, {"input": signal[None, k * 512:(k + 1) * 512], "state": state,
                                          "sr": np.array(16000, np.int64)})
            probs.append(prob)
            states.append(state)
        return np.stack(probs), np.stack(states)

    for extra, state0 in (((), np.zeros((2, 1, HIDDEN), np.float32)),
                          (("--initial-state", f"state={tmp_path / 'start.npy'}"), start)):
        proc = run_cli("run", out, "--stream", tmp_path / "signal.npy", *extra, "-o", tmp_path / "got.npz",
                       timeout=300)
        assert f"{K} frame(s) from {tmp_path / 'signal.npy'} (100 trailing step(s)" in proc.stderr, proc.stderr
        got = np.load(tmp_path / "got.npz")
        probs, states = onnxruntime_stream(state0)
        assert got["output"].shape == (K, 1, 1) and got["stateN"].shape == (K, 2, 1, HIDDEN)
        for k in range(K):  # frame by frame
            np.testing.assert_allclose(got["output"][k], probs[k], atol=TOL, rtol=TOL, err_msg=f"frame {k}")
            np.testing.assert_allclose(got["stateN"][k], states[k], atol=TOL, rtol=TOL, err_msg=f"frame {k}")
        assert np.abs(states[-1] - states[0]).max() > 0.01  # the state really moves from frame to frame

    prof = run_cli("profile", out, "--stream", "20", "--hop-ms", "0.0625", "--json", timeout=300)
    p = json.loads(prof.stdout)
    assert p["frames"] == 20 and p["frame_ms"] == pytest.approx(32.0) and p["states"] == [
        {"input": "state", "output": "stateN"}]
    assert p["stream_check"]["passed"], p["stream_check"]
    for key in ("latency_ms", "onnxruntime_latency_ms"):
        assert p[key]["runs"] == 20
        assert p[key]["real_time_factor"] == pytest.approx(p[key]["median"] / 32.0)


@pytest.mark.slow  # 80 s here under load: compiling a small model, streaming a .wav through its recorded frontend
def test_wav_through_the_recorded_frontend(tmp_path):
    """A model whose ONNX metadata records its log-mel frontend (as `nrqc export` writes it)
    streams a .wav: features computed as recorded, cut into windows of the model's 10 frames,
    each window equal to onnxruntime on the same features."""
    from onnx import TensorProto, helper, numpy_helper

    from nrqc.data.audio import write_wav
    from nrqc.data.features import FRONTEND, log_mel
    from nrqc.reference import ort_session

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array((rng.standard_normal((40, 3)) * 0.2).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["logmel", "w"], ["y"]), helper.make_node("Tanh", ["y"], ["output"])], "g",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, [1, 10, 40])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key="nrqc.frontend",
                             value=json.dumps({**FRONTEND, "n_mels": 40, "bands_kept": 40, "frames": 10}))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "art"
    run_cli("compile", path, "-t", "x86", "-o", out)
    audio = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio)
    proc = run_cli("run", out, "--stream", tmp_path / "a.wav", "-o", tmp_path / "got.npy", timeout=300)
    feats = log_mel(np.round(audio * 32768).clip(-32768, 32767).astype(np.float32) / 32768, 40)  # the wav's PCM
    k = len(feats) // 10
    assert f"{k} frame(s)" in proc.stderr and k == 9
    got = np.load(tmp_path / "got.npy")
    sess = ort_session(path)
    assert got.shape == (k, 1, 10, 3)
    for i in range(k):
        ref = sess.run(None, {"logmel": feats[None, i * 10:(i + 1) * 10]})[0]
        np.testing.assert_allclose(got[i], ref, atol=1e-5, rtol=1e-5, err_msg=f"window {i}")
    # the real-time factor comes from the recorded frontend: 10 frames x 10 ms
    p = json.loads(run_cli("profile", out, "--stream", "5", "--json", timeout=300).stdout)
    assert p["frame_ms"] == pytest.approx(100.0) and p["stream_check"]["passed"]


@pytest.mark.slow  # 34 s here: a cortex-m4 build and its check, then one QEMU run for the stream
def test_cortex_m_rnn_cell_streams_in_one_qemu_run(tmp_path):
    """The Cortex-M firmware streams every frame in one QEMU run, the state held by the
    library's nrqc_step: a small RNN cell (h -> h_out by name) equal to onnxruntime's
    state-carried stream."""
    from onnx import TensorProto, helper, numpy_helper

    from nrqc.reference import ort_session

    rng = np.random.default_rng(0)
    w = {k: numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), k)
         for k, s in (("W", (4, 8)), ("U", (8, 8)), ("V", (8, 2)))}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("MatMul", ["h", "U"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Tanh", ["c"], ["h_out"]),
             helper.make_node("MatMul", ["h_out", "V"], ["y"])]
    graph = helper.make_graph(
        nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                       helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 8])], list(w.values()))
    path = tmp_path / "rnn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    out = tmp_path / "rnn-m4"
    run_cli("compile", path, "-t", "cortex-m4", "-o", out)
    frames = rng.standard_normal((4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", frames)
    proc = run_cli("run", out, "--stream", tmp_path / "x.npy", "-o", tmp_path / "got.npz", timeout=600)
    assert "state: h <- h_out [1, 8]; 4 frame(s)" in proc.stderr, proc.stderr
    assert "cortex-m stream: 4 frame(s) in one QEMU run, each one nrqc_step call" in proc.stderr, proc.stderr
    got = np.load(tmp_path / "got.npz")
    sess, h = ort_session(path), np.zeros((1, 8), np.float32)
    for k, f in enumerate(frames):
        y, h = sess.run(None, {"x": f[None], "h": h})
        np.testing.assert_allclose(got["y"][k], y, atol=1e-5, rtol=1e-5, err_msg=f"frame {k}")
        np.testing.assert_allclose(got["h_out"][k], h, atol=1e-5, rtol=1e-5, err_msg=f"frame {k}")
