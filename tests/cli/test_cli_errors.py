"""Bad input: one line naming the culprit, exit code 2, no traceback, no output left behind."""
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model


def _fails(*args, match: str, out=None):
    proc = run_cli(*args, check_exit=2)
    assert "Traceback" not in proc.stderr
    assert match in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    if out is not None:
        assert not out.exists()
        assert not any(p.name.startswith(f".{out.name}.tmp") for p in out.parent.iterdir())
    return proc


def test_missing_file(tmp_path):
    _fails("compile", tmp_path / "nope.onnx", "-o", tmp_path / "o", match="nope.onnx: no such file",
           out=tmp_path / "o")


def test_not_onnx(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01 this is not protobuf \xff" * 10)
    _fails("compile", bad, "-o", tmp_path / "o", match="garbage.onnx: not an ONNX model", out=tmp_path / "o")


def test_unsupported_op_names_op_and_node(tmp_path):
    model = small_conv_model(tmp_path / "celu.onnx", op_after="Celu")
    _fails("compile", model, "-o", tmp_path / "o", match="unsupported op Celu at node 'act0'", out=tmp_path / "o")


def test_unknown_target_lists_valid_ones(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    p = _fails("compile", model, "--target", "vax", match="unknown target 'vax'")
    assert "x86" in p.stderr and "arm_cpu" in p.stderr and "cortex-m4" in p.stderr


@pytest.mark.parametrize("shape", ["x", "x=", "=1,2", "x=1,a,3", "x=1,-1,16,20"])
def test_malformed_shape(tmp_path, shape):
    model = small_conv_model(tmp_path / "m.onnx")
    _fails("compile", model, "--shape", shape, "-o", tmp_path / "o", match="malformed --shape", out=tmp_path / "o")


def test_shape_not_matching_model(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    _fails("compile", model, "--shape", "x=1,1,16,21", "-o", tmp_path / "o", match="dimension 3", out=tmp_path / "o")
    _fails("compile", model, "--shape", "x=1,16,20", "-o", tmp_path / "o", match="rank 4", out=tmp_path / "o")
    _fails("compile", model, "--shape", "y=1,1,16,20", "-o", tmp_path / "o", match="unknown input(s) y",
           out=tmp_path / "o")


def test_symbolic_batch_defaults_to_one_and_shape_option_works(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    run_cli("compile", model, "--shape", "x=2,1,16,20", "-o", tmp_path / "o2")
    import json

    m = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert m["inputs"][0]["shape"] == [2, 1, 16, 20] and m["outputs"][0]["shape"] == [2, 3]
    assert m["check"]["passed"]


def test_run_errors(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "o"
    run_cli("compile", model, "-o", out)
    _fails("run", tmp_path / "missing-dir", "--input", "x.npy", match="not a compiled artifact directory")
    _fails("run", out, "--input", f"x={tmp_path / 'none.npy'}", match="none.npy: no such file")
    np.save(tmp_path / "wrong.npy", np.zeros((1, 1, 16, 19), np.float32))
    _fails("run", out, "--input", f"x={tmp_path / 'wrong.npy'}", match="compiled for [1, 1, 16, 20]")
    _fails("run", out, "--input", f"q={tmp_path / 'wrong.npy'}", match="no input 'q'")
    _fails("run", out, "--input", f"x={tmp_path / 'wrong.npy'}", "--rpc", "nohostport", match="malformed --rpc")


def test_failed_check_exits_1_and_leaves_nothing(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "o"
    # An impossible tolerance: float32 kernels reorder sums, so errors are nonzero but tiny.
    proc = run_cli("compile", model, "-o", out, "--atol", "0", "--rtol", "0", check_exit=None)
    if proc.returncode == 0:
        pytest.skip("TVM and onnxruntime happened to agree bit for bit on this model")
    assert proc.returncode == 1 and "max abs error" in proc.stderr and not out.exists()


def test_no_check_skips_the_check(tmp_path):
    import json

    model = small_conv_model(tmp_path / "m.onnx")
    run_cli("compile", model, "-o", tmp_path / "o", "--no-check")
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["check"] == {"ran": False, "reason": "--no-check"}


# --- internal errors, bad tuning databases, bad --data, silent boards ---------------------------

_CRASHING_STEP = """
import sys
import nrqc.pipeline as pipeline
from nrqc.pipeline import Step

real = pipeline.build_pipeline


def crash(mod, ctx):
    raise RuntimeError("injected fault\\nsecond line of the cause")


def with_crash():
    steps = real()
    return steps[:2] + [Step("test.Crash", "relax", crash)] + steps[2:]


pipeline.build_pipeline = with_crash
from nrqc.cli import main
sys.argv = ["nrqc", *sys.argv[1:]]
main()
"""


def test_pipeline_crash_is_an_internal_error_naming_the_step(tmp_path):
    """A crash inside a pass on a valid model is nrqc's bug: exit 3 with the step and cause, not exit 2."""
    import subprocess
    import sys

    model = small_conv_model(tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-c", _CRASHING_STEP, "compile", str(model), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nrqc: internal error: ") and "compile step 'test.Crash' crashed" in last, last
    assert "RuntimeError: second line of the cause" in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_output_path_that_is_a_file_fails_before_the_build(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    (tmp_path / "afile").write_text("x")
    _fails("compile", model, "-o", tmp_path / "afile", match=f"-o {tmp_path / 'afile'}: exists and is not a directory")
    _fails("compile", model, "-o", tmp_path / "afile" / "o", match=f"-o {tmp_path / 'afile' / 'o'}: cannot create")


def _tuned_db_dir(tmp_path):
    """A database directory keyed for this host's x86 target (as `nrqc tune` lays it out)."""
    from nrqc.targets import get_target
    from nrqc.tuning.database import open_for_target, target_dir

    db = tmp_path / "db"
    target = get_target("x86")
    open_for_target(db, target, create=True)
    return db, target_dir(db, target)


def _fails_after_progress(*args, match: str, out=None):
    """Like _fails, for errors found once the build has begun: progress lines may precede
    the one error line, which comes last."""
    proc = run_cli(*args, check_exit=2)
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert last.startswith("nrqc: error: ") and match in last, proc.stderr
    assert sum(ln.startswith("nrqc: ") for ln in proc.stderr.splitlines()) == 1, proc.stderr
    if out is not None:
        assert not out.exists()
        assert not any(p.name.startswith(f".{out.name}.tmp") for p in out.parent.iterdir())
    return proc


@pytest.mark.slow
def test_bad_tuning_database_is_named(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    (tmp_path / "dbfile").write_text("{}")
    _fails_after_progress("compile", model, "-o", tmp_path / "o", "--db", tmp_path / "dbfile",
           match=f"--db {tmp_path / 'dbfile'}: is a file, not a tuning database directory", out=tmp_path / "o")

    db, sub = _tuned_db_dir(tmp_path)
    records = sub / "database_tuning_record.json"
    records.write_text('[0, [[], []], [1e-3], null, null]\n[0, [[], [\n')
    _fails_after_progress("compile", model, "-o", tmp_path / "o", "--db", db, match=f"{records}:2: corrupt tuning record",
           out=tmp_path / "o")
    records.unlink()
    (sub / "key.json").write_text('{"kind": "llvm", ')
    _fails_after_progress("compile", model, "-o", tmp_path / "o", "--db", db, match=f"{sub / 'key.json'}: corrupt tuning database file",
           out=tmp_path / "o")


def test_train_with_a_missing_data_folder_is_an_error(tmp_path):
    out = tmp_path / "run"
    _fails("train", "vad", "--data", tmp_path / "no-such-corpus", "--epochs", "1", "--out", out,
           match=f"--data {tmp_path / 'no-such-corpus'}: no such folder")
    assert not out.exists() and not (tmp_path / "no-such-corpus").exists()


class _SilentServer:
    """Loopback TCP server that accepts connections and never sends a byte (a hung board)."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        import socket

        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.accepted.append(conn)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


class _GoesSilentProxy:
    """Loopback proxy to a real TVM RPC server that relays the handshake, then stops relaying
    the server's answers once the client has sent `after` bytes (a board that hangs mid-upload)."""

    def __init__(self, server_port: int, after: int):
        import socket
        import threading

        self.server_port, self.after = server_port, after
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.server_port))
            self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, from_client):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    return
                if from_client:
                    self.sent += len(data)
                elif self.sent > self.after:
                    continue  # the board has gone quiet
                dst.sendall(data)
        except OSError:
            return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(scope="module")
def x86_artifact(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("art")
    model = small_conv_model(tmp / "m.onnx")
    run_cli("compile", model, "-o", tmp / "o", "--no-check")
    np.save(tmp / "x.npy", np.random.default_rng(0).standard_normal((1, 1, 16, 20)).astype(np.float32))
    return tmp / "o", tmp / "x.npy"


@pytest.mark.parametrize("cmd", ["run", "deploy"])
def test_rpc_to_a_server_that_never_answers_times_out(x86_artifact, cmd):
    import time

    out, x = x86_artifact
    server = _SilentServer()
    try:
        t0 = time.monotonic()
        proc = _fails(cmd, out, "--input", f"x={x}", "--rpc", f"127.0.0.1:{server.port}", "--rpc-timeout", "2",
                      match=f"--rpc 127.0.0.1:{server.port}: no answer within 2 s while connecting") \
            if cmd == "run" else \
            run_cli(cmd, out, "--input", f"x={x}", "--rpc", f"127.0.0.1:{server.port}", "--rpc-timeout", "2",
                    check_exit=2, timeout=120)
        elapsed = time.monotonic() - t0
        last = proc.stderr.strip().splitlines()[-1]
        assert last == (f"nrqc: error: --rpc 127.0.0.1:{server.port}: no answer within 2 s while connecting (is a "
                        f"TVM RPC server running there, and is the board alive? raise --rpc-timeout if it is just "
                        f"slow)"), proc.stderr
        assert server.accepted, "the client never reached the server"
        assert elapsed < 60, elapsed  # 2 s plus the start-up of Python and TVM
    finally:
        server.close()


def test_rpc_board_that_stops_answering_mid_session_times_out(x86_artifact):
    from tests.rpc_helpers import local_rpc_server

    out, x = x86_artifact
    with local_rpc_server() as port:
        proxy = _GoesSilentProxy(port, after=4096)  # the handshake is smaller; the library upload is not
        try:
            proc = _fails("run", out, "--input", f"x={x}", "--rpc", f"127.0.0.1:{proxy.port}", "--rpc-timeout", "3",
                          match=f"no answer within 3 s while uploading and loading model.so")
        finally:
            proxy.close()
    assert proc.returncode == 2
