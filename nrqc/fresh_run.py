"""Running a written artifact in a new process, exactly as a user's `nrqc run` does.

The compile-time check goes through here instead of running the library inside the
compiling process: a kernel that reads past a buffer, or code for an ISA this CPU lacks,
can pass in a process whose heap happens to be laid out kindly and crash in every fresh
one ("check passed, run crashed"). A crash here is a failed check with its signal named.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RUN_TIMEOUT_S = 900


class FreshRunFailed(Exception):
    """The artifact did not produce outputs in a fresh process; the message says how it died."""


def run_in_fresh_process(out: Path, input_names: list[str], feeds: dict[str, np.ndarray],
                         output_names: list[str]) -> list[np.ndarray]:
    """`python -m nrqc run OUT --input NAME=FILE.npy ... -o RESULT.npz` in a new process;
    the outputs in `output_names` order. OUT must already hold the library and manifest."""
    with tempfile.TemporaryDirectory(prefix="nrqc-check-") as tmp:
        args = [sys.executable, "-m", "nrqc", "run", str(out)]
        for i, name in enumerate(input_names):
            path = Path(tmp) / f"input{i}.npy"
            np.save(path, feeds[name])
            args += ["--input", f"{name}={path}"]
        result = Path(tmp) / "outputs.npz"
        args += ["-o", str(result)]
        env = {**os.environ, "PYTHONFAULTHANDLER": "0"}
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise FreshRunFailed(f"`nrqc run` of the written artifact did not finish in {RUN_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            raise FreshRunFailed(_death(proc))
        with np.load(result, allow_pickle=False) as z:
            missing = [n for n in output_names if n not in z.files]
            if missing:
                raise FreshRunFailed(f"`nrqc run` wrote no output named {', '.join(missing)}")
            return [z[n] for n in output_names]


def _death(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return f"the written library crashed ({sig}) when run in a fresh process by `nrqc run`"
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit {proc.returncode}"
    return f"`nrqc run` of the written artifact failed (exit {proc.returncode}): {last[:300]}"
