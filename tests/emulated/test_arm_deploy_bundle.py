"""Fast checks of the Raspberry Pi deploy path that need no emulator: DEPLOY.md (and the
script in it, run for real against a host build), `nrqc deploy` through TVM's own RPC
server on this host, and argument errors of `nrqc deploy` / `nrqc emulate`."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import numpy as np
import onnxruntime as ort

from nrqc.deploy_bundle import render_deploy_md, write_deploy_md
from tests.conftest import run_cli
from tests.onnx_builders import small_conv_model
from tests.rpc_helpers import local_rpc_server

MANIFEST = {
    "target": "arm_cpu",
    "target_kind": "linux-cross",
    "tvm_target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]},
    "nrqc_version": "0.1.0",
    "tvm_version": "0.27.0.post1",
    "source_model": "model_v8.onnx",
    "library": "model.so",
    "inputs": [{"name": "input_1", "shape": [1, 900, 120], "dtype": "float32"}],
    "outputs": [{"name": "Identity:0", "shape": [1, 1], "dtype": "float32"}],
}


def _script(md: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", md, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_deploy_md_has_exact_commands_and_the_manifest_io(tmp_path):
    path = write_deploy_md(tmp_path, MANIFEST)
    assert path == tmp_path / "DEPLOY.md"
    md = path.read_text()
    assert 'pip install "apache-tvm==0.27.0.post1" "apache-tvm-ffi==0.1.14.post1" numpy' in md
    assert "python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090" in md
    assert f"nrqc deploy {tmp_path.name} --rpc raspberrypi.local:9090" in md
    assert "`input_1` [1, 900, 120] float32" in md and "`Identity:0` [1, 1] float32" in md
    script = _script(md)
    compile(script, "run_model.py", "exec")
    assert "tvm.runtime.load_module" in script and "relax.VirtualMachine" in script
    assert "{'input_1': ((1, 900, 120), 'float32')}" in script
    assert "32-bit ARM" not in md
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_deploy_md_names_the_bundle_not_the_staging_dir(tmp_path):
    stage = tmp_path / ".dnsmos.tmp-abc123"
    stage.mkdir()
    md = write_deploy_md(stage, MANIFEST).read_text()
    assert "scp -r dnsmos pi@raspberrypi.local:~/dnsmos" in md


def test_deploy_md_warns_that_32bit_arm_has_no_tvm_wheel():
    m = dict(MANIFEST, target="armv7", tvm_target={"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf"})
    text = render_deploy_md(m)
    assert "there is no official TVM wheel" in text and "no armv7l `apache-tvm` / `apache-tvm-ffi` wheel" in text
    assert "build the TVM runtime" in text and "--target arm_cpu" in text  # the two ways out


def test_deploy_md_script_runs_a_real_library_with_only_the_runtime(tmp_path):
    """The script from DEPLOY.md, run as written, on a host (x86) build: same code path as on the Pi."""
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "bundle"
    run_cli("compile", model, "-o", out, "--shape", "x=1,1,16,20", "--no-check")
    manifest = json.loads((out / "manifest.json").read_text())
    md = write_deploy_md(out, manifest).read_text()
    (out / "run_model.py").write_text(_script(md))
    x = np.random.default_rng(1).standard_normal((1, 1, 16, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, str(out / "run_model.py"), f"x={tmp_path / 'x.npy'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    line = [l for l in proc.stdout.splitlines() if l.startswith("y ")][0]
    first = float(line.split("[", 1)[1].split()[0].rstrip("]"))
    assert abs(first - float(ref.ravel()[0])) < 1e-4 * (1 + abs(float(ref.ravel()[0])))


def test_deploy_through_tvm_rpc_server_matches_and_mismatches(tmp_path):
    """`nrqc deploy` against TVM's stock rpc_server here (a host build): exit 0 when the
    board matches onnxruntime, 1 when the reference is a different model."""
    model = small_conv_model(tmp_path / "m.onnx", seed=0)
    other = small_conv_model(tmp_path / "other.onnx", seed=1)
    out = tmp_path / "o"
    run_cli("compile", model, "-o", out, "--shape", "x=1,1,16,20", "--no-check")
    with local_rpc_server() as port:
        ok = run_cli("deploy", out, "--rpc", f"127.0.0.1:{port}", "--json")
        res = json.loads(ok.stdout)
        assert res["passed"] is True and res["max_abs_error"] < 1e-4
        assert res["board"] == {"emulated": False}  # a plain rpc_server does not claim to be emulated
        bad = run_cli("deploy", out, "--rpc", f"127.0.0.1:{port}", "--model", other, check_exit=1)
    assert "MISMATCH" in bad.stdout and "check failed" in bad.stderr
    err = float(re.search(r"max abs error (\S+) vs onnxruntime", bad.stdout).group(1))
    assert err > 1e-2


def test_deploy_argument_errors(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    out = tmp_path / "o"
    run_cli("compile", model, "-o", out, "--shape", "x=1,1,16,20", "--no-check")
    p = run_cli("deploy", out, check_exit=2)
    assert "--rpc" in p.stderr
    p = run_cli("deploy", out, "--rpc", "nohostport", check_exit=2)
    assert "malformed --rpc 'nohostport'" in p.stderr
    p = run_cli("deploy", tmp_path / "missing", "--rpc", "127.0.0.1:9", check_exit=2)
    assert "not a compiled artifact directory" in p.stderr
    p = run_cli("deploy", out, "--rpc", "127.0.0.1:9", "--model", tmp_path / "nope.onnx", check_exit=2)
    assert "nope.onnx" in p.stderr and "--model" in p.stderr
    p = run_cli("deploy", out, "--rpc", "127.0.0.1:9", "--input", "zz=a.npy", check_exit=2)
    assert "no input 'zz'" in p.stderr


def test_emulate_argument_errors():
    p = run_cli("emulate", "x86", check_exit=2)
    assert "only the 64-bit Raspberry Pi targets have an emulated board" in p.stderr
    p = run_cli("emulate", "nosuchboard", check_exit=2)
    assert "unknown target 'nosuchboard'" in p.stderr
    p = run_cli("emulate", "arm_cpu", "--tracker", "127.0.0.1:9190", check_exit=2)
    assert "--tracker needs --key" in p.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        p = run_cli("emulate", "arm_cpu", "--port", busy, check_exit=2)
    assert f"--port {busy}" in p.stderr and "not free" in p.stderr
