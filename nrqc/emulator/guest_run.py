"""Run an aarch64 artifact once in the emulated board's root file system, without RPC.

The compile-time numerical check of ``--target arm_cpu`` uses this when the cached root
file system exists: the library is loaded by the official aarch64 TVM runtime
(``tvm_ffi`` + ``libtvm_runtime.so`` of the wheel a Pi installs) under
``qemu-aarch64-static -cpu <the target's core>``, exactly as on the emulated board, but without
the RPC server's emulated ``import tvm`` (~15 s): the harness is ``icount_guest.py``'s
``run`` mode (no qemu logging).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from nrqc import subproc
from nrqc.emulator import rootfs as _rootfs
from nrqc.emulator.board import guest_python, guest_work_dir, qemu_cpu_for
from nrqc.errors import NrqcError

LABEL = (f"emulated aarch64 board (qemu-aarch64-static user mode, -cpu the target's Pi core, cached Debian arm64 root "
         f"file system, official aarch64 TVM runtime): not a Raspberry Pi")
SHORT_LABEL = "emulated aarch64 board (qemu-aarch64-static user mode, not a Raspberry Pi)"


def unavailable_reason() -> str | None:
    """Why an emulated run cannot happen *without building anything* (None when it can)."""
    if _rootfs.qemu_binary() is None:
        return "qemu-aarch64-static is not installed (apt-get install qemu-user-static)"
    if not _rootfs.is_built():
        return f"the emulated board's root file system is not built ({_rootfs.rootfs_dir()})"
    return None


def _cpu_of_artifact(out: Path) -> str:
    from nrqc.artifact import MANIFEST

    try:
        tvm_target = json.loads((out / MANIFEST).read_text()).get("tvm_target")
    except (OSError, ValueError):
        tvm_target = None  # a library being checked before its manifest is written
    return qemu_cpu_for(tvm_target)


def run_emulated(lib: str | Path, input_names: list[str], feeds: dict[str, np.ndarray],
                 timeout: float = 1800, threads: int | None = None,
                 cpu: str | None = None) -> tuple[list[np.ndarray], dict]:
    """Load ``lib`` in the cached rootfs under ``qemu -cpu CPU``, call ``main`` once on
    ``feeds`` (in the order ``input_names``); returns ``(outputs, info)``, ``info`` with
    ``seconds`` and ``emulator``. Never builds the root file system. CPU: ``cpu``, else the
    core of the manifest beside ``lib``, else the Pi 4 default (``board.GUEST_CPU``)."""
    reason = unavailable_reason()
    if reason:
        raise NrqcError(f"cannot run on the emulated board: {reason}")
    root = _rootfs.rootfs_dir()
    env_extra = {"TVM_NUM_THREADS": str(threads)} if threads else {}
    argv, env, prefix = guest_python(root, env_extra, cpu=cpu or _cpu_of_artifact(Path(lib).parent))
    host_dir, guest_dir = guest_work_dir(root, prefix, "nrqc-run-")
    t0 = time.monotonic()
    try:
        shutil.copyfile(lib, host_dir / "model.so")
        shutil.copyfile(Path(__file__).with_name("icount_guest.py"), host_dir / "icount_guest.py")
        np.savez(host_dir / "inputs.npz", **{n: np.asarray(feeds[n], order="C") for n in input_names})
        try:
            proc = subproc.run([*argv, f"{guest_dir}/icount_guest.py", f"{guest_dir}/model.so", "run",
                                f"{guest_dir}/inputs.npz", f"{guest_dir}/outputs.npz", *input_names],
                               env=env, cwd="/", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise NrqcError(f"the emulated run of {lib} did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0 or "NRQC_ICOUNT_DONE" not in proc.stdout:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise NrqcError(f"the emulated run of {lib} failed (exit {proc.returncode}): {tail[0][:200]}")
        with np.load(host_dir / "outputs.npz") as z:
            outputs = [z[f"arr_{i}"] for i in range(len(z.files))]
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
    return outputs, {"seconds": round(time.monotonic() - t0, 2), "emulator": env.get("NRQC_EMULATOR")}
