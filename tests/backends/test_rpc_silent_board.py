"""A board that stops answering in the middle of `nrqc profile --rpc` gives a message and a
non-zero exit within the --rpc-timeout, not a hang.

Between nrqc and TVM's real RPC server (127.0.0.1) sits a proxy that forwards every byte
until the client asks for the timed runs (TVM's `RPCTimeEvaluator`), then goes silent in
both directions with the connections left open: the board is alive on the network, its
runtime no longer answers. nrqc runs in a fresh process, as a user runs it.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model
from tests.rpc_helpers import local_rpc_server

MARKER = b"RPCTimeEvaluator"


class SilencingProxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:target that stops forwarding (both ways) once
    the client has sent MARKER; `silenced` tells whether that happened."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.silenced = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool):
        tail = b""
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            if from_client and MARKER in tail + data:
                self.silenced.set()
            if self.silenced.is_set():
                continue  # swallow: the board has gone quiet
            tail = data[-len(MARKER):]
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        with contextlib.suppress(OSError):
            self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.mark.slow
def test_board_silent_during_timed_runs_gives_a_message_not_a_hang(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    run_cli("compile", model, "-o", tmp_path / "o", "--no-check")
    with local_rpc_server() as port:
        proxy = SilencingProxy(port)
        try:
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "nrqc", "profile", str(tmp_path / "o"), "--rpc",
                                   f"127.0.0.1:{proxy.port}", "--rpc-timeout", "3", "--repeat", "2",
                                   "--no-instructions"],
                                  capture_output=True, text=True, timeout=300)
            took = time.monotonic() - t0
        finally:
            proxy.close()
    assert proxy.silenced.is_set(), f"the timed runs were never requested: {proc.stdout[-500:]} {proc.stderr[-500:]}"
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1000:])
    err = proc.stderr.strip().splitlines()
    assert err and "no answer within" in err[-1] and f"127.0.0.1:{proxy.port}" in err[-1], proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr
    # the deadline covers the warm-up and each timed run (3 s each here), plus start-up and upload
    assert took < 120, took
