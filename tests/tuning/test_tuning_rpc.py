"""Tuning through TVM's RPC tracker: a tracker and two rpc_servers on 127.0.0.1."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli
from tests.rpc_helpers import free_port, wait_for_port
from tests.tuning.test_tuning_db import _dense_model

KEY = "nrqc-test-board"


def _start(args):
    # own session => own process group: the server's forked worker child is killed with it
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _stop(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process we started (server + its worker)
    proc.wait(timeout=10)


def _wait_registered(tport, servers, n, timeout=90.0):
    from nrqc.tuning.build import tracker_devices

    deadline = time.time() + timeout
    while time.time() < deadline:
        for s in servers:
            if s.poll() is not None:
                raise RuntimeError(f"rpc server exited with {s.returncode}: {s.stdout.read()}")
        if tracker_devices("127.0.0.1", tport, KEY) == n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the tracker saw {tracker_devices('127.0.0.1', tport, KEY)} of {n} boards after {timeout} s")


@pytest.fixture
def tracker_with_two_boards():
    tport = free_port()
    procs = []
    try:
        tracker = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport),
                          "--port-end", str(tport + 1)])
        procs.append(tracker)
        wait_for_port(tport, tracker)
        servers = []
        for _ in range(2):
            sport = free_port()
            servers.append(_start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport),
                                   "--port-end", str(sport + 1), "--tracker", f"127.0.0.1:{tport}", "--key", KEY]))
            procs.append(servers[-1])
        # Wait on the tracker, not on the servers' ports: a probe connection that closes
        # without the RPC magic makes TVM's server drop and re-open its tracker connection,
        # and a count taken in that window sees one board (CI failed so).
        _wait_registered(tport, servers, 2)
        yield f"127.0.0.1:{tport}"
    finally:
        for p in reversed(procs):
            _stop(p)


def test_tracker_sees_both_boards(tracker_with_two_boards):
    from nrqc.tuning.build import make_rpc_runner, tracker_devices

    host, port = tracker_with_two_boards.split(":")
    assert tracker_devices(host, int(port), KEY) == 2
    runner, n = make_rpc_runner(tracker_with_two_boards, KEY)
    assert n == 2 and runner is not None
    from nrqc.errors import NrqcError

    with pytest.raises(NrqcError, match="no device registered with key 'nobody'"):
        make_rpc_runner(tracker_with_two_boards, "nobody")


@pytest.mark.slow  # 2-5 min on a loaded 2-core machine
def test_tune_through_tracker_on_two_servers(tmp_path, tracker_with_two_boards):
    _dense_model(tmp_path / "d.onnx")
    db = tmp_path / "db"
    proc = run_cli("tune", tmp_path / "d.onnx", "--trials", "4", "--min-trials", "4", "--trials-per-batch", "4",
                   "--db", db, "--rpc-tracker", tracker_with_two_boards, "--device-key", KEY, timeout=900)
    assert f"measuring on 2 device(s) with key '{KEY}'" in proc.stderr, proc.stderr[-2000:]
    (sub,) = [p for p in db.iterdir() if p.is_dir()]
    (task,) = json.loads((sub / "progress.json").read_text())["tasks"].values()
    assert task["trials"] >= 4 and task["best_ms"] is not None and task["best_ms"] > 0
    assert task["shipped_ms"] is not None and task["shipped_ms"] > 0  # measured on a board too
    run_cli("compile", tmp_path / "d.onnx", "-o", tmp_path / "out", "--db", db)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["tuning"]["tuned"] and man["check"]["passed"]
