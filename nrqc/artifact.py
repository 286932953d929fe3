"""Artifact directories: written whole under a temporary name, then renamed into place."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from nrqc.errors import NrqcError

MANIFEST = "manifest.json"
LIBRARY = "model.so"
REPORT = "report.txt"


def check_output_dir(out: str | Path, option: str = "-o") -> Path:
    """Fail before any build when `out` cannot be written: a file in the way, a parent that
    cannot be created, or a folder that is not writable (a read-only mount, no permission).
    Probed by creating a file, since permission bits do not stop root."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NrqcError(f"{option} {out}: exists and is not a directory")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NrqcError(f"{option} {out}: cannot create the folder {parent} ({e.strerror or e})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe-", dir=parent)
    except OSError as e:
        raise NrqcError(f"{option} {out}: cannot write in {parent} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
    return out


_STAGE_TAG = ".tmp-"


def _stage_prefix(out: Path) -> str:
    return f".{out.name}{_STAGE_TAG}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_stages(out: Path) -> list[Path]:
    """Remove `.OUT.tmp-PID-*` (and `.OUT.old-PID`) left beside `out` by runs that were killed
    (SIGKILL, power loss): those whose PID is no longer running. Returns what was removed."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for tag in (_STAGE_TAG, ".old-"):
        prefix = f".{out.name}{tag}"
        for p in out.parent.glob(f"{glob.escape(prefix)}*"):
            pid = p.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def staged_directory(out: Path):
    """Yield a temp dir beside `out`; on success it replaces `out`, on failure or interruption
    (Ctrl-C, or SIGTERM, which the CLI turns into an exception) it is removed. Its name
    carries this process's PID so a later compile can tell a killed run's leftovers."""
    out = Path(out)
    check_output_dir(out)
    remove_stale_stages(out)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_stage_prefix(out)}{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the previous artifact back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
