"""`nrqc run --rpc` and `nrqc profile --rpc` against TVM's RPC server on 127.0.0.1."""
import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model
from tests.rpc_helpers import local_rpc_server


def test_run_and_profile_through_rpc_match_onnxruntime(tmp_path, dnsmos_path):
    out = tmp_path / "dns"
    run_cli("compile", dnsmos_path, "-o", out, "--no-check")
    x = np.random.default_rng(3).uniform(-1, 1, (1, 900, 120)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with local_rpc_server() as port:
        run_cli("run", out, "--input", f"input_1={tmp_path / 'x.npy'}", "-o", tmp_path / "y.npy",
                "--rpc", f"127.0.0.1:{port}")
        p = json.loads(run_cli("profile", out, "--repeat", "2", "--json", "--rpc", f"127.0.0.1:{port}").stdout)
    ref = ort.InferenceSession(str(dnsmos_path)).run(None, {"input_1": x})[0]
    assert np.max(np.abs(np.load(tmp_path / "y.npy") - ref)) < 1e-4
    assert p["where"] == f"board at 127.0.0.1:{port}" and p["latency_ms"]["median"] > 0


def test_rpc_connection_refused_is_a_clear_error(tmp_path):
    from tests.rpc_helpers import free_port

    model = small_conv_model(tmp_path / "m.onnx")
    run_cli("compile", model, "-o", tmp_path / "o", "--no-check")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 16, 20), np.float32))
    proc = run_cli("run", tmp_path / "o", "--input", f"x={tmp_path / 'x.npy'}", "--rpc", f"127.0.0.1:{free_port()}",
                   check_exit=2)
    assert "cannot connect to a TVM RPC server" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # ~30 s: a second RPC server and two profiles; the default suite keeps run/profile over RPC
def test_profile_rpc_threads_configure_the_boards_pool(tmp_path, monkeypatch):
    """--threads sizes the board's TVM thread pool through RPC and reports what the board
    uses: the pool cannot grow beyond the rpc_server's TVM_NUM_THREADS (set to 2 here)."""
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "o"
    run_cli("compile", model, "-o", out, "--shape", "x=1,1,16,20", "--no-check")
    monkeypatch.setenv("TVM_NUM_THREADS", "2")  # inherited by the rpc_server started below
    with local_rpc_server() as port:
        got = {n: json.loads(run_cli("profile", out, "--repeat", "1", "--json", "--threads", str(n),
                                     "--rpc", f"127.0.0.1:{port}").stdout) for n in (1, 2, 4)}
    assert [got[n]["threads"] for n in (1, 2, 4)] == [1, 2, 2]
    assert got[1]["threads_note"] is None and got[2]["threads_note"] is None
    assert got[4]["threads_requested"] == 4 and "has 2 worker(s), not 4" in got[4]["threads_note"]
