"""Streaming on the boards (issue 19 item 3): the Cortex-M C API's state buffers (nrqc_model.h's
state pairs, nrqc_step holding the state in the library, in place or ping-pong), the arm_cpu
deploy bundle's stream_model.py, and `nrqc run/profile --stream` on both emulated boards.

Default: the in-place decision and the generated C API on hand-made caller plans (no build).
Slow: a GRU with its state as an input and an output (onnx.helper, no node names) compiled for
cortex-m4 and arm_cpu, streamed from disk in a fresh process by `nrqc run --stream` (QEMU
firmware; the emulated aarch64 board running the bundle's own runner, and through --rpc), equal to onnxruntime's
state-carried stream on every frame within 1e-5; `nrqc profile --stream` per-frame counts.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nrqc.cortex_m.emit import Buf, CallerPlan
from nrqc.cortex_m.stream_api import StateSlot, in_place_safe, stream_api
from nrqc.onnx_model import TensorSpec
from tests.conftest import run_cli

TOL = 1e-5
STEPS, FEATS, HIDDEN = 4, 8, 16


def gru_stream(seed: int = 0):
    """x [4, 1, 8] (4 time steps) + state [1, 1, 16] -> prob [1, 1] + stateN [1, 1, 16]."""
    rng = np.random.default_rng(seed)

    def w(name, shape, scale=0.4):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [w("W", (1, 3 * HIDDEN, FEATS)), w("R", (1, 3 * HIDDEN, HIDDEN)), w("B", (1, 6 * HIDDEN), 0.1),
             w("V", (HIDDEN, 1)), numpy_helper.from_array(np.array([1, HIDDEN], np.int64), "shape2")]
    nodes = [helper.make_node("GRU", ["x", "W", "R", "B", "", "state"], ["Y", "stateN"], hidden_size=HIDDEN,
                              linear_before_reset=1),
             helper.make_node("Reshape", ["stateN", "shape2"], ["h2"]),
             helper.make_node("MatMul", ["h2", "V"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["prob"])]
    g = helper.make_graph(nodes, "gru_stream",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [STEPS, 1, FEATS]),
                           helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 1, HIDDEN])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1]),
                           helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, 1, HIDDEN])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def mixing_cell():
    """state_out = tanh(x + 0.5 state), y = state_out * state: the next state is written by the
    kernel that still reads the state, so the state cannot be updated in place (ping-pong)."""
    half = numpy_helper.from_array(np.full((1, 8), 0.5, np.float32), "half")
    nodes = [helper.make_node("Mul", ["state", "half"], ["a"]), helper.make_node("Add", ["x", "a"], ["b"]),
             helper.make_node("Tanh", ["b"], ["state_out"]), helper.make_node("Mul", ["state_out", "state"], ["y"])]
    g = helper.make_graph(nodes, "cell", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                                          helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
                           helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, 8])], [half])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def ort_stream(path, frames, state, stream="x", state_in="state"):
    from nrqc.reference import ort_session

    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    got = {n: [] for n in names}
    for f in frames:
        outs = dict(zip(names, sess.run(None, {stream: f, state_in: state})))
        for n in names:
            got[n].append(outs[n])
        state = outs[[n for n in names if n.startswith(state_in)][0]]
    return {n: np.stack(v) for n, v in got.items()}


def _plan(calls, copies=()):
    return CallerPlan(calls=calls, weights=[], storage_bytes=0, copies=list(copies))


def test_in_place_only_when_every_read_of_the_state_precedes_the_first_write():
    s_in, s_out = Buf("input", 1, (1, 8), "float32"), Buf("output", 1, (1, 8), "float32")
    x, y, t = Buf("input", 0, (1, 8), "float32"), Buf("output", 0, (1, 1), "float32"), Buf("arena", 0, (1, 8), "float32")
    # the scan reads the state, a later slice writes the next state: in place
    assert in_place_safe(_plan([("scan", [x, s_in, t]), ("slice", [t, s_out]), ("head", [t, y])]), 1, 1)
    # one kernel reads the state and writes the next one: two buffers
    assert not in_place_safe(_plan([("cell", [x, s_in, s_out]), ("head", [s_out, y])]), 1, 1)
    # the state read again after the next state is written
    assert not in_place_safe(_plan([("cell", [x, s_in, s_out]), ("mix", [s_out, s_in, y])]), 1, 1)
    # the next state copied out at the end (memcpy after every call): in place
    assert in_place_safe(_plan([("cell", [x, s_in, t])], [(t, 1, 32)]), 1, 1)
    # the state passed through unchanged (memcpy from the input itself): not in place
    assert not in_place_safe(_plan([("head", [x, y])], [(s_in, 1, 32)]), 1, 1)


def test_stream_api_header_and_step():
    ins = [TensorSpec("x", (1, 8), "float32"), TensorSpec("state", (1, 8), "float32")]
    outs = [TensorSpec("y", (1, 1), "float32"), TensorSpec("state_out", (1, 8), "float32")]
    plan = _plan([])
    slots = [StateSlot("state", "state_out", 1, 1, 8, "float32", False)]
    header, source = stream_api(slots, [("nrqc_run", plan, ins), ("nrqc_run_int8", plan, ins)], outs)
    for line in ("#define NRQC_NUM_STATES 1", "#define NRQC_STATE0_INPUT 1", "#define NRQC_STATE0_OUTPUT 1",
                 "#define NRQC_STATE0_ELEMS 8u", "#define NRQC_STATE0_IN_PLACE 0",
                 "int nrqc_step(const float *in0, float *out0);", "int nrqc_step_int8(const float *in0, float *out0);"):
        assert line in header, header
    assert "static float nrqc_state0[2][8]" in source  # ping-pong: two halves, the flag flips per call
    assert "nrqc_run(in0, nrqc_state0[c], out0, nrqc_state0[c ^ 1])" in source
    _h, in_place = stream_api([StateSlot("state", "state_out", 1, 1, 8, "float32", True)],
                              [("nrqc_run", plan, ins)], outs)
    assert "static float nrqc_state0[1][8]" in in_place and "nrqc_run(in0, nrqc_state0[0], out0, nrqc_state0[0])" in in_place
    assert stream_api([], [("nrqc_run", plan, ins)], outs) == ("", "")


def test_stream_api_compiles_and_ping_pongs(tmp_path):
    """The generated C, with a stand-in nrqc_run (next state = state + x), compiled by the host's
    C compiler with warnings as errors and run: nrqc_step carries the state through both halves."""
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no host C compiler (cc/gcc) for the generated C API")
    ins = [TensorSpec("x", (1, 4), "float32"), TensorSpec("state", (1, 4), "float32")]
    outs = [TensorSpec("y", (1, 1), "float32"), TensorSpec("state_out", (1, 4), "float32")]
    header, source = stream_api([StateSlot("state", "state_out", 1, 1, 4, "float32", False)],
                                [("nrqc_run", _plan([]), ins)], outs)
    (tmp_path / "nrqc_model.h").write_text(header)
    (tmp_path / "main.c").write_text(
        "#include <stdio.h>\n#include <string.h>\n#include \"nrqc_model.h\"\n"
        "int nrqc_run(const float *in0, const float *in1, float *out0, float *out1) {\n"
        "  out0[0] = 0; for (int i = 0; i < 4; i++) { out1[i] = in1[i] + in0[i]; out0[0] += out1[i]; } return 0; }\n"
        + source +
        "int main(void) {\n  float x[4] = {1, 2, 3, 4}, y[1];\n  nrqc_stream_reset();\n"
        "  ((float *)nrqc_stream_state(0))[0] = 10;\n"
        "  for (int f = 0; f < 3; f++) { if (nrqc_step(x, y)) return 1; printf(\"%g \", y[0]); }\n"
        "  printf(\"%g\\n\", ((float *)nrqc_stream_state(0))[0]);\n  return 0; }\n")
    exe = tmp_path / "step"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-I", str(tmp_path), str(tmp_path / "main.c"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=60)
    # sums of the state after frames 1..3 (state0 = [10, 0, 0, 0], + x each frame), then state[0]
    assert subprocess.run([str(exe)], capture_output=True, text=True, timeout=10).stdout.split() == [
        "20", "30", "40", "13"]


def _saved_stream(tmp_path, seed: int, k: int):
    """(rng, k GRU frames saved as frames.npy, a non-zero first state saved as start.npy)."""
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((k, STEPS, 1, FEATS)).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    start = (rng.standard_normal((1, 1, HIDDEN)) * 0.3).astype(np.float32)
    np.save(tmp_path / "start.npy", start)
    return rng, frames, start


def _check_frames(got, ref, names):
    for n in names:
        assert got[n].shape == ref[n].shape, (n, got[n].shape, ref[n].shape)
        for k in range(len(ref[n])):  # frame by frame
            np.testing.assert_allclose(got[n][k], ref[n][k], atol=TOL, rtol=TOL, err_msg=f"{n} frame {k}")


@pytest.mark.slow  # ~100 s here under load: two cortex-m4 builds with their QEMU checks, 4 QEMU stream runs
def test_cortex_m_streams_through_the_c_api(tmp_path):
    path = tmp_path / "gru.onnx"
    onnx.save(gru_stream(), str(path))
    out = tmp_path / "gru-m4"
    run_cli("compile", path, "-t", "cortex-m4", "-o", out)
    header = (out / "nrqc_model.h").read_text()
    for line in ("#define NRQC_STATE0_INPUT 1", "#define NRQC_STATE0_OUTPUT 1", f"#define NRQC_STATE0_ELEMS {HIDDEN}u",
                 "#define NRQC_STATE0_IN_PLACE 1", "int nrqc_step(const float *in0, float *out0);"):
        assert line in header, header
    assert json.loads((out / "manifest.json").read_text())["streaming"]["states"][0]["in_place"] is True
    rng, frames, start = _saved_stream(tmp_path, seed=3, k=6)
    ref = ort_stream(path, frames, start)
    assert np.abs(ref["stateN"][-1] - ref["stateN"][0]).max() > 0.05  # the state moves

    # nrqc_step (state held in the library), then nrqc_run with the state double-buffered by the
    # caller (the same artifact with its manifest's streaming entry removed)
    plain = tmp_path / "gru-m4-plain"
    shutil.copytree(out, plain)
    m = json.loads((plain / "manifest.json").read_text())
    m["streaming"] = None
    (plain / "manifest.json").write_text(json.dumps(m))
    for art, entry in ((out, "nrqc_step"), (plain, "nrqc_run")):
        run_cli("run", art, "--stream", tmp_path / "frames.npy", "--initial-state", f"state={tmp_path / 'start.npy'}",
                "-o", tmp_path / "got.npz", timeout=600)
        _check_frames(np.load(tmp_path / "got.npz"), ref, ["prob", "stateN"])

    p = json.loads(run_cli("profile", out, "--stream", "5", "--frame-ms", "40", "--json", timeout=900).stdout)
    assert p["frames"] == 5 and p["entry"] == "nrqc_step" and p["stream_check"]["passed"], p
    ins = p["instructions_per_frame"]
    assert len(ins["each"]) == 5 and 10_000 < ins["median"] < 500_000 and ins["max"] - ins["min"] < 0.05 * ins["median"]
    cyc = p["estimated_cycles_per_frame"]
    assert cyc["cpu"] == "cortex-m4" and cyc["median"] > ins["median"] / 4
    est = p["estimated_ms_per_frame"]
    assert est["ms"] == pytest.approx(cyc["median"] / 168e3) and est["real_time_factor"] == pytest.approx(est["ms"] / 40)

    # a state that cannot be updated in place: nrqc_step ping-pongs between two buffers
    cell = tmp_path / "cell.onnx"
    onnx.save(mixing_cell(), str(cell))
    run_cli("compile", cell, "-t", "cortex-m4", "-o", tmp_path / "cell-m4")
    header = (tmp_path / "cell-m4" / "nrqc_model.h").read_text()
    assert "#define NRQC_STATE0_IN_PLACE 0" in header and "int nrqc_step(const float *in0, float *out0);" in header
    xs = rng.standard_normal((5, 1, 8)).astype(np.float32)
    np.save(tmp_path / "xs.npy", xs)
    proc = run_cli("run", tmp_path / "cell-m4", "--stream", tmp_path / "xs.npy", "-o", tmp_path / "cell.npz",
                   timeout=600)
    assert "state: state <- state_out [1, 8]; 5 frame(s)" in proc.stderr, proc.stderr
    _check_frames(np.load(tmp_path / "cell.npz"), ort_stream(cell, xs, np.zeros((1, 8), np.float32)), ["y", "state_out"])


@pytest.mark.slow  # ~10 min here under load: an arm_cpu build checked on the emulated board, 2 emulated streams
# (one counted), an emulated RPC board started for a third
def test_arm_cpu_streams_on_the_emulated_board_through_the_bundle_runner(tmp_path):
    from nrqc.emulator.guest_run import unavailable_reason

    if unavailable_reason():
        pytest.skip(f"no emulated board: {unavailable_reason()}")
    path = tmp_path / "gru.onnx"
    onnx.save(gru_stream(), str(path))
    out = tmp_path / "gru-a72"
    run_cli("compile", path, "-t", "arm_cpu", "-o", out)
    deploy = (out / "DEPLOY.md").read_text()
    assert (out / "stream_model.py").is_file() and "stream_model.py frames.npy out.npz --state state=stateN" in deploy
    _rng, frames, start = _saved_stream(tmp_path, seed=5, k=5)
    run_cli("run", out, "--stream", tmp_path / "frames.npy", "--initial-state", f"state={tmp_path / 'start.npy'}",
            "-o", tmp_path / "got.npz", timeout=900)
    _check_frames(np.load(tmp_path / "got.npz"), ort_stream(path, frames, start), ["prob", "stateN"])

    # the same through TVM RPC on a board (a tuple result stays on the board: the state tensors
    # come back through the VM's stateful calls and are passed back without leaving it)
    from nrqc.emulator.board import EmulatedBoard

    b = EmulatedBoard(echo_log=False)
    host, port = b.start()
    try:
        run_cli("run", out, "--stream", tmp_path / "frames.npy", "--initial-state", f"state={tmp_path / 'start.npy'}",
                "--rpc", f"{host}:{port}", "-o", tmp_path / "got_rpc.npz", timeout=900)
    finally:
        b.stop()
    _check_frames(np.load(tmp_path / "got_rpc.npz"), ort_stream(path, frames, start), ["prob", "stateN"])

    p = json.loads(run_cli("profile", out, "--stream", "3", "--frame-ms", "40", "--json", timeout=1800).stdout)
    assert p["stream_check"]["passed"] and p["where"] == "emulated board, qemu-aarch64 -cpu cortex-a72", p
    ins = p["instructions_per_frame"]
    assert len(ins["each"]) == 3 and 1_000 < ins["median"] < 1_000_000
    assert ins["max"] - ins["min"] < 0.05 * ins["median"]  # the same work every frame
    cyc = p["estimated_cycles_per_frame"]
    assert cyc["cpu"] == "cortex-a72" and cyc["median"] > 0
    assert p["estimated_ms_per_frame"]["real_time_factor"] == pytest.approx(p["estimated_ms_per_frame"]["ms"] / 40)
