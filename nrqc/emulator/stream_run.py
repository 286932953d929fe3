"""A stream on the emulated aarch64 board, through the deploy bundle's own runner.

`nrqc run --stream` / `nrqc profile --stream` on an arm_cpu artifact with no `--rpc` board run
the bundle's ``stream_model.py`` (nrqc/bundle_stream_runner.py, what a Pi runs) once for all
frames under ``qemu-aarch64 -cpu`` the target's core, the state kept as runtime tensors between
calls. Counted (`profile`), qemu's log of model.so is split per frame at the runner's marker
calls (nrqc.emulator.icount): each frame's instructions and llvm-mca estimated cycles.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from nrqc import subproc
from nrqc.emulator import rootfs as _rootfs
from nrqc.emulator.board import guest_python, guest_work_dir, qemu_cpu_for
from nrqc.errors import NrqcError

RUNNER = Path(__file__).resolve().parents[1] / "bundle_stream_runner.py"
WHAT = ("aarch64 instructions executed in model.so per call of main (1 thread), the state carried as "
        "runtime tensors; qemu-aarch64 TB logging split at the runner's marker calls; excludes "
        "libtvm_runtime and libc/libm")


class EmulatedStreamSession:
    """`Backend.open_session` of an aarch64 artifact with no board: whole streams (`run_frames`)."""

    def __init__(self, out: Path, manifest: dict):
        self.out, self.manifest = Path(out), manifest

    def run_frames(self, plan, frames: np.ndarray, states: dict, fixed: dict, every_state: bool = True,
                   count: bool = False, estimate_cycles: bool = False, log=lambda m: None) -> dict:
        return stream_on_emulated_board(self.out, self.manifest, plan, frames, states, fixed, count,
                                        estimate_cycles, log, every_state=every_state)


def _guest_args(guest_dir: str, plan, fixed: dict, every_state: bool) -> list[str]:
    args = [f"{guest_dir}/stream_model.py", f"{guest_dir}/frames.npy", f"{guest_dir}/out.npz"]
    for p in plan.states:
        args += ["--state", f"{p.input}={p.output}", "--initial-state", f"{p.input}={guest_dir}/state_{p.input}.npy"]
    for n in fixed:
        args += ["--input", f"{n}={guest_dir}/input_{n}.npy"]
    if every_state:
        args.append("--every-state")
    return args


def stream_on_emulated_board(out: Path, manifest: dict, plan, frames: np.ndarray, states: dict, fixed: dict,
                             count: bool = False, estimate_cycles: bool = False, log=lambda m: None,
                             every_state: bool = False, timeout: float = 3600) -> dict:
    """Run the bundle's runner on `frames` in the emulated board; see the module docstring."""
    from nrqc.artifact import LIBRARY

    if not str((manifest.get("tvm_target") or {}).get("mtriple", "")).startswith("aarch64"):
        raise NrqcError(f"{out}: built for {manifest.get('target')}; the emulated board runs aarch64 libraries only: "
                        f"use --rpc HOST:PORT")
    missing = _rootfs.missing_host_tools()
    if missing:
        raise NrqcError("cannot run on the emulated board: missing " + "; ".join(missing))
    cpu = qemu_cpu_for(manifest.get("tvm_target"))
    root = _rootfs.build_rootfs()
    _argv, _env, prefix = guest_python(root, cpu=cpu)
    host_dir, guest_dir = guest_work_dir(root, prefix, "nrqc-stream-")
    env_extra = {"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        shutil.copyfile(out / manifest.get("library", LIBRARY), host_dir / manifest.get("library", LIBRARY))
        shutil.copyfile(out / "manifest.json", host_dir / "manifest.json")
        bundled = out / "stream_model.py"  # the bundle's own runner (what the Pi runs), else nrqc's
        shutil.copyfile(bundled if bundled.exists() else RUNNER, host_dir / "stream_model.py")
        np.save(host_dir / "frames.npy", np.ascontiguousarray(frames))
        for p in plan.states:
            np.save(host_dir / f"state_{p.input}.npy", np.asarray(states[p.input], dtype=p.dtype))
        for n, v in fixed.items():
            np.save(host_dir / f"input_{n}.npy", np.asarray(v))
        guest_args = _guest_args(guest_dir, plan, fixed, every_state)
        log(f"streaming {len(frames)} frame(s) on the emulated board (-cpu {cpu}) through the bundle's "
            f"stream_model.py" + (", counting each frame's instructions (qemu log)" if count else ""))
        result: dict = {"where": f"emulated board, qemu-aarch64 -cpu {cpu}"}
        if count:
            from nrqc.emulator.icount import counted_guest_run, require_tools

            require_tools(estimate_cycles)
            run = counted_guest_run(root, cpu, guest_args, env_extra, f"{out.name} stream", timeout, log)
            phases = len(run.counter.phases)
            if phases != len(frames) + 2:
                raise NrqcError(f"{out}: {phases - 1} marker call(s) in the stream's qemu log, expected "
                                f"{len(frames) + 1}: count not reliable")
            result["instructions"] = [int(run.counter.total(k + 1)[0]) for k in range(len(frames))]
            result["instructions_what"] = WHAT
            if estimate_cycles:
                from nrqc.emulator.mca import estimate_cycles as _estimate

                log(f"estimating {cpu} cycles of each frame's executed blocks with llvm-mca")
                per = [_estimate(run.counter.executed_blocks(k + 1), cpu) for k in range(len(frames))]
                result["cycles"] = {"median": float(np.median([c["cycles"] for c in per])), "cpu": cpu,
                                    "each": [c["cycles"] for c in per], "what": per[0]["what"]}
            stdout = run.stdout
        else:
            argv, env, _ = guest_python(root, env_extra, cpu=cpu)
            try:
                proc = subproc.run([*argv, *guest_args], env=env, cwd="/", timeout=timeout)
            except subprocess.TimeoutExpired:
                raise NrqcError(f"{out}: the emulated stream did not finish within {timeout:.0f} s") from None
            if proc.returncode != 0 or "NRQC_ICOUNT_DONE" not in proc.stdout:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise NrqcError(f"{out}: the emulated stream failed (exit {proc.returncode}): {tail[0][:200]}")
            stdout = proc.stdout
        with np.load(host_dir / "out.npz") as z:
            result["outputs"] = {n: z[n] for n in z.files}
        result["runner_says"] = stdout.strip().splitlines()[-2] if stdout.strip() else ""
        return result
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
