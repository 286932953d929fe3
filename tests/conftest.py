"""Shared fixtures: the repo root, the third-party DNSMOS model, and running the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nrqc.shared_data import dnsmos_model

REPO = Path(__file__).resolve().parent.parent
DNSMOS = dnsmos_model()


def run_cli(*args, check_exit: int | None = 0, env: dict | None = None, timeout: int = 900):
    """Run `nrqc ARGS` in a subprocess, as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "nrqc", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check_exit is not None:
        assert proc.returncode == check_exit, (
            f"nrqc {' '.join(map(str, args))} exited {proc.returncode}, expected {check_exit}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def dnsmos_path() -> Path:
    if not DNSMOS.exists():
        pytest.fail(f"the third-party test model is missing: {DNSMOS} (shared/ must sit beside the repo, beside the repo it was cloned from, or at $NRQC_SHARED)")
    return DNSMOS
