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


MIRROR_ENV = "NRQC_DEBIAN_MIRROR"
# Debian suite names (codenames and aliases): how a Debian archive is told from other apt
# sources (Ubuntu, vendor repositories) whatever its URL looks like (a local mirror, a proxy).
DEBIAN_SUITES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable")
_mirror_option: str | None = None


def use_mirror(url: str | None) -> None:
    """`nrqc emulate --mirror URL`: the Debian mirror for this process's root file system build."""
    global _mirror_option
    if url is not None and not re.match(r"^(https?|ftp|file)://\S+$", url):
        raise NrqcError(f"--mirror {url!r}: expected a URL such as http://HOST/debian or file:///PATH")
    _mirror_option = url


def _one_line_sources(text: str):
    """(uri, suite) of each `deb [options] URI SUITE [COMPONENT...]` line."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m:
            yield m.group(1), m.group(2)


def _deb822_sources(text: str):
    """(uri, suite) pairs of each enabled `Types: deb` stanza of a .sources file."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                key = None
                continue
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri, suite


def host_debian_mirrors(apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """Debian archive URIs in the host's apt sources, best first: sources.list and
    sources.list.d/*.list (one-line format) and sources.list.d/*.sources (deb822). An entry
    counts when its suite is a Debian one; a security archive (SUITE-security, its own tree)
    does not. Entries for our SUITE come first."""
    found: list[tuple[int, str]] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list")),
             *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        pairs = _deb822_sources(text) if f.suffix == ".sources" else _one_line_sources(text)
        for uri, suite in pairs:
            base, _, flavour = suite.partition("-")
            if base not in DEBIAN_SUITES or flavour == "security" or "/updates" in suite:
                continue
            if not re.match(r"^(https?|ftp|file)://", uri):
                continue  # cdrom:, mirror+file: and the like are nothing debootstrap can fetch from
            found.append((0 if base == SUITE else 1, uri.rstrip("/")))
    ordered = []
    for _, uri in sorted(found, key=lambda t: t[0]):
        if uri not in ordered:
            ordered.append(uri)
    return ordered


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """`--mirror`, else ``$NRQC_DEBIAN_MIRROR``, else the host's Debian mirror from its apt
    sources. No address is built in: behind a local mirror or proxy a fixed one would fail
    late and obscurely, so with nothing configured this names the options instead."""
    if _mirror_option:
        return _mirror_option
    env = os.environ.get(MIRROR_ENV)
    if env:
        return env
    mirrors = host_debian_mirrors(apt_dir)
    if mirrors:
        return mirrors[0]
    raise NrqcError(f"no Debian mirror for the arm64 root file system: none in {apt_dir}/sources.list, "
                    f"sources.list.d/*.list or *.sources, and ${MIRROR_ENV} is unset; pass "
                    f"`nrqc emulate arm_cpu --mirror URL` (for example http://deb.debian.org/debian) "
                    f"or set ${MIRROR_ENV}")


def _run(cmd: list[str], what: str, progress_label: str | None = None) -> None:
    """Run a build step, its output shown as progress (nrqc.progress: a live line on a
    terminal, about ten lines in a log), failing with its tail. The child runs in its own
    process group, killed if nrqc is interrupted."""
    from nrqc import subproc
    from nrqc.progress import Progress

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    tail: list[str] = []
    assert proc.stdout is not None
    bar = Progress(f"[nrqc emulate]   {progress_label}", prefix="", every=30.0) if progress_label else None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-15:]
            if bar is not None and line:
                bar.update(1, note=line[:160])
        rc = proc.wait()
    except BaseException:
        subproc.kill_group(proc)
        raise
    if bar is not None:
        bar.close("")
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
    _run(cmd, "pip download of the aarch64 wheels", progress_label="pip download (lines)")
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
    debian_mirror()  # no mirror configured: say so before taking the lock
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
    mirror = debian_mirror()
    _log(f"building the arm64 root file system (first start only) in {root}")
    try:
        _log(f"step 1/4: debootstrap --foreign {SUITE} arm64 minbase + {', '.join(DEB_INCLUDE)} from {mirror}")
        _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
              "--include=" + ",".join(DEB_INCLUDE), SUITE, str(tmp), mirror],
             "debootstrap --arch=arm64 --foreign", progress_label="debootstrap (lines)")
        debs = sorted((tmp / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise NrqcError(f"debootstrap left no .deb files in {tmp}/var/cache/apt/archives")
        _log(f"step 2/4: unpacking {len(debs)} packages with dpkg-deb -x (instead of the second stage)")
        from nrqc.progress import Progress

        with Progress("[nrqc emulate]   unpacked", len(debs), prefix="") as bar:
            for deb in debs:
                _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg-deb -x {deb.name}")
                bar.update(1, note=deb.name)
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
