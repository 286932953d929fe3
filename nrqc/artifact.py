"""Artifact directories: written whole under a temporary name, then renamed into place."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from nrqc.errors import NrqcError

MANIFEST = "manifest.json"
LIBRARY = "model.so"
REPORT = "report.txt"


@contextlib.contextmanager
def staged_directory(out: Path):
    """Yield a temp dir beside `out`; on success it replaces `out`, on failure it is removed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NrqcError(f"-o {out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def read_manifest(out: str | Path) -> dict:
    out = Path(out)
    path = out / MANIFEST
    if not out.is_dir():
        raise NrqcError(f"{out}: not a compiled artifact directory (run `nrqc compile` first)")
    if not path.exists():
        raise NrqcError(f"{out}: no {MANIFEST}; not a compiled artifact directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NrqcError(f"{path}: corrupt manifest ({e})") from None
