"""Fast checks of the board-side numerical check (`nrqc compile --rpc`), the board-free
profile of an arm_cpu artifact and their errors, through TVM's own RPC server on this host.
(The runs on the emulated aarch64 board are in test_arm_emulated.py, marked slow.)"""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model
from tests.rpc_helpers import free_port, local_rpc_server

SHAPE = ("--shape", "x=1,1,16,20")


@pytest.mark.slow
def test_compile_check_runs_on_the_rpc_board_and_matches_the_local_check(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    run_cli("compile", model, "-o", tmp_path / "local", *SHAPE)
    local = json.loads((tmp_path / "local" / "manifest.json").read_text())["check"]
    with local_rpc_server() as port:
        run_cli("compile", model, "-o", tmp_path / "remote", *SHAPE, "--rpc", f"127.0.0.1:{port}")
    remote = json.loads((tmp_path / "remote" / "manifest.json").read_text())["check"]
    assert remote["ran"] and remote["passed"] and remote["where"] == "board" and remote["emulated"] is False
    assert remote["rpc"] == f"127.0.0.1:{port}"
    # Same library, same seeded input, same CPU: the board's error is the local one.
    assert remote["max_abs_error"] == local["max_abs_error"] < 1e-4
    assert f"on the board at 127.0.0.1:{port}" in (tmp_path / "remote" / "report.txt").read_text()


def test_arm_check_not_run_says_why_and_how_without_board_or_cached_rootfs(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "arm"
    p = run_cli("compile", model, "--target", "arm_cpu", "-o", out, *SHAPE, env={"NRQC_CACHE": str(tmp_path / "c")})
    check = json.loads((out / "manifest.json").read_text())["check"]
    assert check["ran"] is False
    for words in ("root file system is not built", "nrqc emulate arm_cpu", "--rpc HOST:PORT", "nrqc deploy"):
        assert words in check["reason"]
    assert check["reason"] in (out / "report.txt").read_text() and "numerical check not run" in p.stderr
    assert not (tmp_path / "c").exists()  # compile never builds the emulator's root file system


def test_arm_library_on_an_x86_board_is_a_clear_error_and_leaves_nothing(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    with local_rpc_server() as port:
        p = run_cli("compile", model, "--target", "arm_cpu", "-o", tmp_path / "arm", *SHAPE,
                    "--rpc", f"127.0.0.1:{port}", check_exit=2)
    assert f"--rpc 127.0.0.1:{port}: the board" in p.stderr and "cannot load model.so built for arm_cpu" in p.stderr
    assert "Traceback" not in p.stderr and not list(tmp_path.glob("*arm*"))


def test_compile_rpc_usage_errors(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    p = run_cli("compile", model, "--target", "cortex-m4", "--rpc", "127.0.0.1:9090", *SHAPE, check_exit=2)
    assert "cortex-m4 is bare metal" in p.stderr
    p = run_cli("compile", model, "--rpc", "127.0.0.1:9090", "--no-check", *SHAPE, check_exit=2)
    assert "contradicts --no-check" in p.stderr
    p = run_cli("compile", model, "--rpc", "nowhere", *SHAPE, check_exit=2)
    assert "malformed --rpc 'nowhere'" in p.stderr
    p = run_cli("compile", model, "--target", "arm_cpu", "--rpc", f"127.0.0.1:{free_port()}", *SHAPE, check_exit=2)
    assert "cannot connect to a TVM RPC server" in p.stderr
    assert not [q for q in tmp_path.iterdir() if q.name != "m.onnx"]


@pytest.mark.slow
def test_profile_of_an_arm_artifact_without_board_needs_the_emulator_or_rpc(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    run_cli("compile", model, "--target", "arm_cpu", "-o", tmp_path / "arm", *SHAPE, "--no-check")
    p = run_cli("profile", tmp_path / "arm", "--no-instructions", check_exit=2)
    assert "use --rpc HOST:PORT" in p.stderr and "--instructions for the emulated instruction count" in p.stderr
    run_cli("compile", model, "-o", tmp_path / "x86", *SHAPE, "--no-check")
    p = run_cli("profile", tmp_path / "x86", "--instructions", "--repeat", "1", check_exit=2)
    assert "needs an aarch64 library" in p.stderr and "Traceback" not in p.stderr
