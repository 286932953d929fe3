"""`nrqc run --rpc` and `nrqc profile --rpc` against TVM's RPC server on 127.0.0.1."""
import json

import numpy as np
import onnxruntime as ort

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
