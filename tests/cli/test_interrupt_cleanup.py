"""An interrupted or killed `nrqc compile` leaves nothing behind: no `.OUT.tmp-*` staging
directory, no QEMU process; stale staging directories of killed runs go on the next compile.
Relative -o paths work for every target (the Cortex-M check runs QEMU in another directory)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import REPO, run_cli
from tests.onnx_builders import small_conv_model

_CM_MISSING = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
               if not shutil.which(t)]
needs_cortex_m = pytest.mark.skipif(bool(_CM_MISSING), reason=f"Cortex-M toolchain/emulator missing: "
                                                              f"{', '.join(_CM_MISSING)}")


def _nrqc(args, cwd: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "nrqc", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _stages(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.tmp-")]


@needs_cortex_m
def test_cortex_m_compile_with_relative_output_from_another_cwd(tmp_path):
    """Regression: QEMU ran in a scratch directory with the firmware's relative path
    ("firmware.elf: No such file or directory"); the result is checked against onnxruntime."""
    from tests.cortex_m.test_cortex_m_firmware import vad_like_model

    work = tmp_path / "work"
    work.mkdir()
    vad_like_model(work / "vad.onnx")
    proc = _nrqc(["compile", "vad.onnx", "--target", "cortex-m4", "-o", "runs/vad-m4"], cwd=work)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "numerical check in QEMU (cortex-m4)" in err
    art = work / "runs" / "vad-m4"
    assert (art / "firmware" / "firmware.elf").is_file()
    # The artifact runs from yet another directory, with a relative path, on the user's input.
    x = np.random.default_rng(3).standard_normal((1, 1, 40, 32)).astype(np.float32)
    np.save(work / "x.npy", x)
    sub = work / "elsewhere"
    sub.mkdir()
    inp = ort.InferenceSession(str(work / "vad.onnx")).get_inputs()[0].name
    proc = _nrqc(["run", "../runs/vad-m4", "--input", f"{inp}=../x.npy", "-o", "y.npy"], cwd=sub)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    ref = ort.InferenceSession(str(work / "vad.onnx")).run(None, {inp: x})[0]
    np.testing.assert_allclose(np.load(sub / "y.npy"), ref, atol=1e-4, rtol=1e-4)


def _hung_qemu(bin_dir: Path, pid_file: Path) -> dict:
    """A `qemu-system-arm` first on PATH that records its PID and runs the real QEMU with -S
    (CPU stopped at reset): a firmware that never finishes, like a hung board."""
    real = shutil.which("qemu-system-arm")
    bin_dir.mkdir()
    wrapper = bin_dir / "qemu-system-arm"
    wrapper.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec '{real}' -S \"$@\"\n")
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@needs_cortex_m
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_compile_leaves_no_staging_dir_and_no_qemu(tmp_path, sig):
    from tests.cortex_m.test_cortex_m_firmware import vad_like_model

    model = vad_like_model(tmp_path / "vad.onnx")
    pid_file = tmp_path / "qemu.pid"
    env = _hung_qemu(tmp_path / "bin", pid_file)
    out = tmp_path / "o"
    proc = _nrqc(["compile", model, "--target", "cortex-m4", "-o", out], cwd=tmp_path, env=env)
    qemu_pid = None
    try:
        try:
            deadline = time.monotonic() + 300
            while not pid_file.exists() or not pid_file.read_text().strip():
                assert proc.poll() is None, f"compile ended before QEMU ran: {proc.communicate()[1][-2000:]}"
                assert time.monotonic() < deadline, "QEMU never started"
                time.sleep(0.1)
            qemu_pid = int(pid_file.read_text())
            assert _alive(qemu_pid)
            assert _stages(tmp_path, "o"), "the staging directory should exist while QEMU runs"
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode != 0
        assert "Traceback" not in err, err[-2000:]
        assert not _stages(tmp_path, "o") and not out.exists()
        for _ in range(50):  # the kill is synchronous; allow the kernel a moment to reap
            if not _alive(qemu_pid):
                break
            time.sleep(0.1)
        assert not _alive(qemu_pid), f"QEMU {qemu_pid} outlived the interrupted compile"
    finally:  # a failed check (a timeout included) must not leave the test's own hung QEMU running
        if qemu_pid is not None and _alive(qemu_pid):
            os.kill(qemu_pid, signal.SIGKILL)


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_staging_dirs_of_dead_runs_are_removed(tmp_path):
    model = small_conv_model(tmp_path / "m.onnx")
    stale = tmp_path / f".o.tmp-{_dead_pid()}-abc123"
    (stale / "junk").mkdir(parents=True)
    live = tmp_path / f".o.tmp-{os.getpid()}-def456"  # a running process's stage: not touched
    live.mkdir()
    other = tmp_path / f".other.tmp-{_dead_pid()}-x"  # another output's: not ours to judge
    other.mkdir()
    run_cli("compile", model, "-o", tmp_path / "o", "--no-check")
    assert not stale.exists()
    assert live.exists() and other.exists()
    assert (tmp_path / "o" / "manifest.json").is_file()


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs (chmod does not stop root): skipped where mounting is not permitted."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mount is not permitted here (needs root or CAP_SYS_ADMIN)")
    try:
        (mnt / "existing").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_read_only_output_folder_fails_before_the_build(tmp_path, read_only_dir):
    model = small_conv_model(tmp_path / "m.onnx")
    for out in (read_only_dir / "o", read_only_dir / "existing" / "o", read_only_dir / "new" / "deeper" / "o"):
        t0 = time.monotonic()
        proc = run_cli("compile", model, "-o", out, check_exit=2)
        assert proc.stderr.startswith(f"nrqc: error: -o {out}: cannot "), proc.stderr
        assert "Read-only file system" in proc.stderr and proc.stderr.strip().count("\n") == 0
        assert "imported" not in proc.stderr  # nothing was built
        assert time.monotonic() - t0 < 60
