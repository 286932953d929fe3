"""The aarch64 path under emulation: arm_cpu builds run on an emulated Raspberry Pi (Debian
arm64 + the official aarch64 TVM wheel under qemu-aarch64-static) through TVM RPC, and
match onnxruntime on this host.

Slow (the first run builds the cached root file system, ~30 s plus downloads; each board
start pays an emulated `import tvm`, ~15 s). Skipped, with the reason, when the host has
no qemu-aarch64-static or cannot build the root file system.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import run_cli
from tests.rpc_helpers import free_port

pytestmark = pytest.mark.slow


def _skip_without_emulator():
    from nrqc.emulator.board import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def board():
    """One emulated board for the whole session: (host, port)."""
    _skip_without_emulator()
    from nrqc.emulator.board import EmulatedBoard, board_info

    b = EmulatedBoard(echo_log=False)
    t0 = time.monotonic()
    host, port = b.start()
    print(f"\nemulated board up in {time.monotonic() - t0:.1f} s (emulated import tvm {b.import_seconds:.1f} s)",
          file=sys.stderr)
    try:
        assert board_info(host, port)["machine"] == "aarch64"
        yield host, port
    finally:
        b.stop()


def _zoo_onnx(path, arch="bam4", **kw):
    from nrqc.models import zoo
    from nrqc.training.onnx_export import to_onnx

    model, _ = to_onnx(zoo.build(arch, "float", **kw))
    onnx.save(model, str(path))
    return path


def _deploy_and_check(tmp_path, model, board, name):
    host, port = board
    out = tmp_path / name
    run_cli("compile", model, "--target", "arm_cpu", "-o", out, "--no-check")
    assert (out / "DEPLOY.md").exists() and (out / "model.so").read_bytes()[:4] == b"\x7fELF"
    assert (out / "model.so").read_bytes()[18] == 183  # e_machine EM_AARCH64
    t0 = time.monotonic()
    res = json.loads(run_cli("deploy", out, "--rpc", f"{host}:{port}", "--json").stdout)
    print(f"\n{name}: nrqc deploy {time.monotonic() - t0:.1f} s, board run {res['board_run_seconds']} s, "
          f"max abs error {res['max_abs_error']:.3g}", file=sys.stderr)
    assert res["passed"] and res["board"]["emulated"] is True and res["board"]["machine"] == "aarch64"
    # Independently of `nrqc deploy`: run on the board with a chosen input, compare here.
    sess = ort.InferenceSession(str(model))
    spec = json.loads((out / "manifest.json").read_text())["inputs"][0]
    x = np.random.default_rng(7).standard_normal(spec["shape"]).astype(np.float32)
    np.save(tmp_path / f"{name}-x.npy", x)
    run_cli("run", out, "--input", f"{spec['name']}={tmp_path / f'{name}-x.npy'}", "-o", tmp_path / f"{name}-y.npy",
            "--rpc", f"{host}:{port}")
    ref = sess.run(None, {spec["name"]: x})[0]
    got = np.load(tmp_path / f"{name}-y.npy")
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) <= 1e-4 + 1e-4 * np.max(np.abs(ref))
    return out, res


def test_zoo_model_runs_on_emulated_board_and_matches_onnxruntime(tmp_path, board):
    _deploy_and_check(tmp_path, _zoo_onnx(tmp_path / "bam4.onnx"), board, "bam4")


def test_dnsmos_runs_on_emulated_board_and_matches_onnxruntime(tmp_path, board, dnsmos_path):
    out, res = _deploy_and_check(tmp_path, dnsmos_path, board, "dnsmos")
    assert res["outputs"]["Identity:0"]["max_abs_error"] < 1e-4
    # the four 32-channel 3x3 convs run as NEON Winograd kernels (32->32 @225x30 among them,
    # the layer whose out-of-bounds row read crashed this board before the kernel was fixed)
    convs = [layer for layer in json.loads((out / "manifest.json").read_text())["layers"] if layer["op"] == "Conv"]
    assert [str(layer["kernel"]).startswith("nrqc:nrqc_winograd") for layer in convs] == [False] + [True] * 4


def test_deploy_exits_1_when_the_board_disagrees(tmp_path, board):
    host, port = board
    import torch

    torch.manual_seed(1)
    model = _zoo_onnx(tmp_path / "a.onnx", "bam4", frames=48)
    out = tmp_path / "bam4-48"
    run_cli("compile", model, "--target", "arm_cpu", "-o", out, "--no-check")
    # Same architecture, different weights: the reference disagrees with what the board runs.
    torch.manual_seed(2)
    other = _zoo_onnx(tmp_path / "b.onnx", "bam4", frames=48)
    p = run_cli("deploy", out, "--rpc", f"{host}:{port}", "--model", other, check_exit=1)
    assert "MISMATCH" in p.stdout


def test_profile_on_emulated_board_is_labelled_emulated(tmp_path, board):
    """The board says it is emulated (a registered RPC function); `nrqc profile --rpc` labels it."""
    from tvm import rpc

    from nrqc.emulator.board import remote_board_info

    info = remote_board_info(rpc.connect(*board))
    assert info["emulated"] is True and "qemu" in info["emulator"] and "not a Raspberry Pi latency" in info["label"]
    host, port = board
    out = tmp_path / "bam4-prof"
    run_cli("compile", _zoo_onnx(tmp_path / "p.onnx", "bam4", frames=48), "--target", "arm_cpu", "-o", out,
            "--no-check")
    p = json.loads(run_cli("profile", out, "--rpc", f"{host}:{port}", "--repeat", "2", "--json").stdout)
    assert p["emulated"] is True and p["latency_ms"]["median"] > 0
    # On an emulated board the stable measure comes by default, of a run that matches onnxruntime.
    assert p["instructions"] > 0 and p["instructions_check"]["passed"]
    # The board's own thread pool (qemu user mode: the host's 2 cores) was asked for 1 worker.
    assert p["threads"] == 1 and p["threads_requested"] == 1
    text = run_cli("profile", out, "--rpc", f"{host}:{port}", "--repeat", "1", "--no-instructions").stdout
    assert "EMULATED" in text and "not a device latency" in text and "instructions per inference" not in text


def test_profile_without_board_gives_the_emulated_instruction_count(tmp_path):
    """`nrqc profile ARM_OUT` with no board: the count of the cached emulator, no latency."""
    _skip_without_emulator()
    from nrqc.emulator.icount import measure_instructions

    import torch

    torch.manual_seed(0)
    out = tmp_path / "bam4-48"
    run_cli("compile", _zoo_onnx(tmp_path / "m.onnx", "bam4", frames=48), "--target", "arm_cpu", "-o", out,
            "--no-check")
    p = run_cli("profile", out, "--json")
    r = json.loads(p.stdout)
    assert r["emulated"] is True and r["latency_ms"] is None and r["where"] == "no board"
    assert r["instructions_check"]["passed"] and r["instructions_check"]["max_abs_error"] < 1e-4
    # Deterministic: the count measured directly (another qemu run) is the same number.
    assert r["instructions"] == measure_instructions(out)["instructions"]
    assert r["instructions_per_mac"] == pytest.approx(r["instructions"] / r["macs"])
    assert "counting" in p.stderr  # progress
    print(f"\nbam4 frames=48 no board: {r['instructions']:,} instructions, "
          f"{r['instructions_per_mac']:.3f} per MAC", file=sys.stderr)


def test_compile_checks_arm_on_the_emulated_board(tmp_path, board):
    """`nrqc compile --target arm_cpu`: with --rpc on that board; without, on the cached emulator."""
    from nrqc.emulator.guest_run import unavailable_reason

    host, port = board
    model = _zoo_onnx(tmp_path / "m.onnx", "bam4", frames=48)
    run_cli("compile", model, "--target", "arm_cpu", "-o", tmp_path / "rpc", "--rpc", f"{host}:{port}")
    c = json.loads((tmp_path / "rpc" / "manifest.json").read_text())["check"]
    assert c["ran"] and c["passed"] and c["where"] == "board" and c["emulated"] is True
    assert c["board"]["machine"] == "aarch64" and c["max_abs_error"] < 1e-4
    assert "EMULATED" in (tmp_path / "rpc" / "report.txt").read_text()
    assert unavailable_reason() is None  # the board fixture built the root file system
    run_cli("compile", model, "--target", "arm_cpu", "-o", tmp_path / "emu")
    e = json.loads((tmp_path / "emu" / "manifest.json").read_text())["check"]
    assert e["ran"] and e["passed"] and e["where"] == "emulated" and e["emulated"] is True
    # The same library on the same emulated CPU and input: the same outputs as through RPC.
    assert e["max_abs_error"] == c["max_abs_error"]
    assert "emulated aarch64 board" in (tmp_path / "emu" / "report.txt").read_text()


def test_instruction_count_is_stable_and_scales_with_the_work(tmp_path):
    """The emulated instruction count: same build twice -> same count; twice the frames -> ~twice
    the count (bam4's convolutions scale with the frames); and the counted run's output matches onnxruntime."""
    _skip_without_emulator()
    from nrqc.emulator.icount import measure_instructions
    from nrqc.onnx_model import TensorSpec, random_inputs

    import torch

    counts = {}
    for frames in (48, 96):
        torch.manual_seed(0)  # fixed weights: counts comparable across sessions
        model = _zoo_onnx(tmp_path / f"bam4-{frames}.onnx", "bam4", frames=frames)
        out = tmp_path / f"bam4-{frames}"
        run_cli("compile", model, "--target", "arm_cpu", "-o", out, "--no-check")
        r = measure_instructions(out)
        manifest = json.loads((out / "manifest.json").read_text())
        x = random_inputs([TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["inputs"]], 0)
        ref = ort.InferenceSession(str(model)).run(None, x)[0]
        assert np.max(np.abs(r["outputs"][0] - ref)) < 1e-4
        counts[frames] = r["instructions"]
        if frames == 48:
            again = measure_instructions(out)
            assert again["instructions"] == r["instructions"] and again["tb_executions"] == r["tb_executions"]
        print(f"\nbam4 frames={frames}: {r['instructions']} instructions ({r['seconds']} s)", file=sys.stderr)
    ratio = counts[96] / counts[48]
    assert 1.7 < ratio < 2.3, counts


def test_nrqc_emulate_serves_until_sigterm_and_cleans_up(tmp_path):
    _skip_without_emulator()
    from nrqc.emulator.board import board_info

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nrqc", "emulate", "arm_cpu", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # printed once it listens
        assert line.strip() == f"arm_cpu emulated board: TVM RPC server listening on 127.0.0.1:{port}", line
        assert board_info("127.0.0.1", port)["emulated"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        # Nothing of the board is left: its process group is gone and the port is free.
        time.sleep(1)
        leftovers = subprocess.run(["pgrep", "-f", f"guest_server.py --host 127.0.0.1 --port {port}"],
                                   capture_output=True, text=True).stdout.split()
        assert leftovers == []
        import socket

        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_board_registers_to_a_tracker(tmp_path):
    _skip_without_emulator()
    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado on the host: pip install tornado")
    from tvm import rpc

    from nrqc.emulator.board import EmulatedBoard, remote_board_info

    tport = free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(tport), "--port-end", str(tport + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    board = EmulatedBoard(tracker=f"127.0.0.1:{tport}", key="rasp4b-emu", echo_log=False)
    try:
        board.start()
        client = rpc.connect_tracker("127.0.0.1", tport)
        deadline = time.monotonic() + 30
        while "rasp4b-emu" not in client.text_summary() and time.monotonic() < deadline:
            time.sleep(0.5)
        remote = client.request("rasp4b-emu", session_timeout=60)
        assert remote_board_info(remote)["machine"] == "aarch64"
    finally:
        board.stop()
        os.killpg(tracker.pid, signal.SIGKILL)
        tracker.wait()
