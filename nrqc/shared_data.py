"""Where the workplace's shared third-party files (``shared/``, e.g. the DNSMOS model the
tests and benchmarks use) are: beside the checkout, or beside the repository it was
cloned from when that is a local path (a CI clone in a temporary directory), or where
``NRQC_SHARED`` says."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _origin_dir() -> Path | None:
    try:
        url = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    url = url.removeprefix("file://")
    return Path(url).resolve() if url and Path(url).is_dir() else None


def shared_dir() -> Path:
    """The first of NRQC_SHARED, ../shared, <origin>/../shared that exists (else ../shared)."""
    candidates = [Path(os.environ["NRQC_SHARED"])] if os.environ.get("NRQC_SHARED") else []
    candidates.append(REPO.parent / "shared")
    origin = _origin_dir()
    if origin is not None:
        candidates.append(origin.parent / "shared")
    return next((c for c in candidates if c.is_dir()), REPO.parent / "shared")


def dnsmos_model() -> Path:
    return shared_dir() / "dnsmos" / "model_v8.onnx"
