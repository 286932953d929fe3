"""The cached aarch64 root file system that the emulated board runs in.

Built once (as root: debootstrap needs it) and reused:

1. ``debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,libstdc++6``
   (first stage only: downloads and unpacks the essential packages);
2. every downloaded ``.deb`` is unpacked with ``dpkg-deb -x`` instead of running the
   second stage (the second stage would have to exec aarch64 binaries, and there is no
   binfmt_misc here);
3. ``qemu-aarch64-static`` is copied in;
4. the official aarch64 wheels (apache-tvm, apache-tvm-ffi, numpy, onnxruntime and their
   dependencies) are downloaded with pip for ``manylinux_2_28_aarch64`` / CPython 3.11
   (Debian bookworm's python3 is 3.11) and unzipped into ``/opt/nrqc/site-packages``.

The tree is built under a temporary name next to the cache entry and renamed into place
when complete, under a file lock, so concurrent callers never see a half-built tree.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from nrqc.errors import NrqcError

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEB_INCLUDE = ("python3", "libstdc++6")
# The same runtime a real Raspberry Pi installs with pip (see DEPLOY.md).
WHEELS = ("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy", "onnxruntime")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
GUEST_PYTHON_VERSION = "3.11"
GUEST_SITE = "opt/nrqc/site-packages"  # relative to the rootfs
MARKER = ".nrqc-rootfs.json"
# Bump when the layout changes so that old caches are rebuilt.
LAYOUT_VERSION = 1


def cache_dir() -> Path:
    """``$NRQC_CACHE`` or ``~/.cache/nrqc``."""
    env = os.environ.get("NRQC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nrqc"


def rootfs_dir() -> Path:
    return cache_dir() / "rootfs-arm64"


def wheel_dir() -> Path:
    return cache_dir() / "wheels-aarch64"


def qemu_binary() -> str | None:
    """Path of ``qemu-aarch64-static`` on the host, or None."""
    return shutil.which("qemu-aarch64-static")


def _log(msg: str) -> None:
    print(f"[nrqc emulate] {msg}", file=sys.stderr, flush=True)


def read_marker(root: Path | None = None) -> dict | None:
    root = root or rootfs_dir()
    try:
        info = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if info.get("layout") != LAYOUT_VERSION:
        return None
    return info


def is_built(root: Path | None = None) -> bool:
    return read_marker(root) is not None


def missing_host_tools() -> list[str]:
    """What the host lacks to build/run the emulated board (empty when all is there)."""
    missing = []
    if qemu_binary() is None:
        missing.append("qemu-aarch64-static (apt-get install qemu-user-static)")
    if not is_built():
        if shutil.which("debootstrap") is None:
            missing.append("debootstrap (apt-get install debootstrap)")
        if shutil.which("dpkg-deb") is None:
            missing.append("dpkg-deb (Debian/Ubuntu host)")
        if os.geteuid() != 0:
            missing.append("root privileges to build the root file system once (debootstrap)")
    return missing


def _debian_mirror() -> str:
    """``$NRQC_DEBIAN_MIRROR``, else the host's Debian mirror from /etc/apt, else deb.debian.org."""
    env = os.environ.get("NRQC_DEBIAN_MIRROR")
    if env:
        return env
    for src in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        try:
            text = src.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^(?:URIs:\s*(\S+)|deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+)", text, re.M):
            uri = m.group(1) or m.group(2)
            if uri and uri.rstrip("/").endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def _run(cmd: list[str], what: str, stream_prefix: str | None = None) -> None:
    """Run a build step; stream its output to stderr (progress) and fail with its tail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if stream_prefix is not None and line:
            print(f"{stream_prefix}{line}", file=sys.stderr, flush=True)
    rc = proc.wait()
    if rc != 0:
        raise NrqcError(f"{what} failed (exit {rc}): " + " | ".join(tail[-5:]))


def download_wheels(dest: Path | None = None) -> list[Path]:
    """Download the aarch64 wheels (and their dependencies) into the cache; reused later."""
    dest = dest or wheel_dir()
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
           "--platform", WHEEL_PLATFORM, "--only-binary=:all:",
           "--python-version", GUEST_PYTHON_VERSION, "--implementation", "cp",
           "-d", str(dest), *WHEELS]
    _run(cmd, "pip download of the aarch64 wheels", stream_prefix="[nrqc emulate]   pip: ")
    wheels = sorted(dest.glob("*.whl"))
    if not any(w.name.startswith("apache_tvm-") for w in wheels):
        raise NrqcError(f"no aarch64 apache-tvm wheel in {dest} after pip download")
    return wheels


def _pick_wheels(wheels: list[Path]) -> list[Path]:
    """One wheel per project (the newest file name wins if several versions were cached)."""
    by_project: dict[str, Path] = {}
    for w in sorted(wheels):
        project = w.name.split("-")[0].lower()
        if project == "apache_tvm_ffi" and "0.1.14.post1" not in w.name:
            continue  # 0.1.15.x crash in save_json; keep the pinned one
        if project == "apache_tvm" and "0.27.0.post1" not in w.name:
            continue
        by_project[project] = w
    return list(by_project.values())


def build_rootfs(force: bool = False) -> Path:
    """Build (or reuse) the cached aarch64 root file system; returns its path.

    Progress goes to stderr. Safe to call concurrently (file lock).
    """
    root = rootfs_dir()
    if is_built(root) and not force:
        return root
    missing = [m for m in missing_host_tools()]
    if missing:
        raise NrqcError("cannot build the arm64 root file system: missing " + "; ".join(missing))
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / (root.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(root) and not force:
            return root  # someone else built it while we waited
        return _build_locked(root)


def _build_locked(root: Path) -> Path:
    t0 = time.monotonic()
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    mirror = _debian_mirror()
    _log(f"building the arm64 root file system (first start only) in {root}")
    try:
        _log(f"step 1/4: debootstrap --foreign {SUITE} arm64 minbase + {', '.join(DEB_INCLUDE)} from {mirror}")
        _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
              "--include=" + ",".join(DEB_INCLUDE), SUITE, str(tmp), mirror],
             "debootstrap --arch=arm64 --foreign", stream_prefix="[nrqc emulate]   ")
        debs = sorted((tmp / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise NrqcError(f"debootstrap left no .deb files in {tmp}/var/cache/apt/archives")
        _log(f"step 2/4: unpacking {len(debs)} packages with dpkg-deb -x (instead of the second stage)")
        for i, deb in enumerate(debs, 1):
            _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg-deb -x {deb.name}")
            if i % 10 == 0 or i == len(debs):
                _log(f"  unpacked {i}/{len(debs)}")
        for deb in debs:
            deb.unlink()
        py = tmp / "usr/bin/python3"
        if not (py.exists() or py.is_symlink()):
            raise NrqcError(f"the arm64 root file system has no usr/bin/python3 after unpacking ({tmp})")

        _log("step 3/4: installing qemu-aarch64-static into the root file system")
        qemu = qemu_binary()
        assert qemu is not None
        shutil.copy2(qemu, tmp / "usr/bin/qemu-aarch64-static")

        _log(f"step 4/4: aarch64 wheels ({', '.join(WHEELS)}) for CPython {GUEST_PYTHON_VERSION}")
        wheels = _pick_wheels(download_wheels())
        site = tmp / GUEST_SITE
        site.mkdir(parents=True, exist_ok=True)
        versions = {}
        for w in wheels:
            _log(f"  unzipping {w.name}")
            with zipfile.ZipFile(w) as z:
                for info in z.infolist():
                    out = z.extract(info, site)
                    mode = (info.external_attr >> 16) & 0o777
                    if mode:
                        os.chmod(out, mode)
            parts = w.name.split("-")
            versions[parts[0]] = parts[1]
        marker = {
            "layout": LAYOUT_VERSION,
            "suite": SUITE,
            "arch": "arm64",
            "mirror": mirror,
            "debs": [d.name for d in debs],
            "wheels": versions,
            "qemu": subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        if root.exists():
            old = root.parent / f"{root.name}.old-{os.getpid()}"
            root.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(f"root file system ready in {time.monotonic() - t0:.0f} s: {root}")
    return root
