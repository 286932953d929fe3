"""Host side of the emulated aarch64 board: run TVM's RPC server under qemu-aarch64-static.

The server runs in the cached arm64 root file system (``rootfs.py``), with the official
aarch64 TVM wheel, i.e. the same runtime a Raspberry Pi uses. As root it runs
``chroot ROOTFS /usr/bin/qemu-aarch64-static -cpu CPU /usr/bin/python3 ...``, CPU the core of
the target the library was built for (``cortex-a72`` for a Pi 4, ``cortex-a76`` for a Pi 5;
never qemu's default ``max``, which has dotprod, i8mm and SVE a Pi lacks);
otherwise ``qemu-aarch64-static -L ROOTFS`` (qemu resolves the guest's absolute paths in
the root file system first).

Every process of the board (qemu, and the session children the server forks) is in one
new process group that ``stop()`` terminates by its id; the guest processes also die
with their parent (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from nrqc.emulator import rootfs as _rootfs
from nrqc.errors import NrqcError

GUEST_CPU = "cortex-a72"  # Raspberry Pi 4: the board's core when no target says otherwise
# qemu-aarch64 (7.2) CPU models that are a Raspberry Pi core; their names are LLVM's mcpu names.
PI_CPUS = ("cortex-a72", "cortex-a76")


def qemu_cpu_for(tvm_target: dict | None) -> str:
    """The qemu ``-cpu`` that runs a library built for ``tvm_target`` like its Pi would:
    the target's mcpu (GUEST_CPU when it names none). Any other core is refused rather than
    emulated as something else."""
    mcpu = str((tvm_target or {}).get("mcpu") or GUEST_CPU)
    if mcpu not in PI_CPUS:
        raise NrqcError(f"no emulated board for -mcpu {mcpu}: the emulated Raspberry Pi cores are "
                        f"{', '.join(PI_CPUS)}")
    return mcpu
BOARD_INFO_FUNC = "nrqc.board.info"


def unavailable_reason() -> str | None:
    """Why an emulated board cannot be started here (None when it can)."""
    missing = _rootfs.missing_host_tools()
    if missing:
        return "no emulated arm64 board: missing " + "; ".join(missing)
    return None


def _emulator_label(qemu: str, cpu: str) -> str:
    try:
        first = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        first = "qemu-aarch64-static"
    return f"{first}, user mode, -cpu {cpu}"


def guest_python(root: Path, env_extra: dict[str, str] | None = None,
                 qemu_args: tuple[str, ...] = (), cpu: str = GUEST_CPU) -> tuple[list[str], dict[str, str], str]:
    """Command prefix + environment running the guest's python3 under ``qemu -cpu CPU``.

    Returns ``(argv_prefix, env, guest_root_prefix)``: ``guest_root_prefix`` is what to
    prepend to a path inside the root file system to name it in the guest ("" under
    chroot, the host path of the root file system with ``-L``).
    """
    qemu = _rootfs.qemu_binary()
    if qemu is None:
        raise NrqcError("qemu-aarch64-static not found: install qemu-user-static")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root" if os.geteuid() == 0 else os.environ.get("HOME", "/tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "NRQC_EMULATOR": _emulator_label(qemu, cpu),
    }
    chroot = shutil.which("chroot")
    # NRQC_EMULATOR_MODE=chroot|prefix forces a mode (default: chroot when root).
    mode = os.environ.get("NRQC_EMULATOR_MODE") or ("chroot" if os.geteuid() == 0 and chroot else "prefix")
    if mode not in ("chroot", "prefix"):
        raise NrqcError(f"NRQC_EMULATOR_MODE={mode!r}: expected 'chroot' or 'prefix'")
    if mode == "chroot":
        if os.geteuid() != 0 or not chroot:
            raise NrqcError("NRQC_EMULATOR_MODE=chroot needs root and the chroot command")
        prefix = ""
        argv = [chroot, str(root), "/usr/bin/qemu-aarch64-static", "-cpu", cpu, *qemu_args,
                "/usr/bin/python3"]
    else:
        prefix = str(root)
        argv = [qemu, "-L", str(root), "-cpu", cpu, *qemu_args, f"{root}/usr/bin/python3"]
    env["PYTHONPATH"] = f"{prefix}/{_rootfs.GUEST_SITE}"
    env.update(env_extra or {})
    return argv, env, prefix


def _install_guest_file(root: Path, src: Path, name: str, prefix: str) -> str:
    """Copy a helper script into the root file system; returns its path in the guest."""
    prefix_dir = root / "opt/nrqc"
    if os.access(prefix_dir, os.W_OK):
        dst = prefix_dir / name
        tmp = prefix_dir / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return f"{prefix}/opt/nrqc/{name}"
    if prefix == "":
        raise NrqcError(f"cannot write {prefix_dir} (the chroot needs the helper script inside it)")
    return str(src)  # -L mode: the guest sees host paths that are not in the rootfs


def guest_work_dir(root: Path, prefix: str, name_prefix: str) -> tuple[Path, str]:
    """A fresh directory the guest can use: (host path, guest path)."""
    if prefix == "":  # chroot: inside the root file system
        host = Path(tempfile.mkdtemp(prefix=name_prefix, dir=root / "tmp"))
        return host, "/tmp/" + host.name
    host = Path(tempfile.mkdtemp(prefix=name_prefix))
    return host, str(host)


def _check_port_free(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError as e:
        raise NrqcError(f"--port {port}: {host}:{port} is not free ({e.strerror})") from None
    finally:
        s.close()


class EmulatedBoard:
    """One emulated aarch64 board running TVM's RPC server on ``host:port``."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 tracker: str | None = None, key: str = "", echo_log: bool = True, cpu: str = GUEST_CPU):
        self.host = host
        self.cpu = cpu
        self.requested_port = port or 0
        self.port: int | None = None
        self.tracker = tracker
        self.key = key
        self.echo_log = echo_log
        self.proc: subprocess.Popen | None = None
        self.import_seconds: float | None = None
        self.start_seconds: float | None = None
        self._ready = threading.Event()
        self._error: str | None = None
        self._log_tail: list[str] = []
        self._threads: list[threading.Thread] = []
        self._tmp_host: Path | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> tuple[str, int]:
        if self.tracker and not self.key:
            raise NrqcError("--tracker needs --key (the device key the board registers under)")
        if self.tracker and ":" not in self.tracker:
            raise NrqcError(f"--tracker {self.tracker!r}: expected HOST:PORT")
        if self.requested_port:
            _check_port_free(self.host, self.requested_port)
        root = _rootfs.build_rootfs()
        argv, env, prefix = guest_python(root, cpu=self.cpu)
        script = _install_guest_file(root, Path(__file__).with_name("guest_server.py"), "guest_server.py", prefix)
        # The RPC sessions' work dirs go to a per-board TMPDIR, removed by stop().
        self._tmp_host, tmp_guest = guest_work_dir(root, prefix, "nrqc-board-")
        env["TMPDIR"] = tmp_guest
        argv += [script, "--host", self.host, "--port", str(self.requested_port)]
        if self.tracker:
            argv += ["--tracker", self.tracker, "--key", self.key]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        for stream, is_out in ((self.proc.stdout, True), (self.proc.stderr, False)):
            t = threading.Thread(target=self._pump, args=(stream, is_out), daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or self._error:
                err = self._error or f"exited with code {self.proc.returncode}"
                self.stop()
                raise NrqcError(f"emulated board failed to start: {err}: " + " | ".join(self._log_tail[-4:]))
            if time.monotonic() > deadline:
                self.stop()
                raise NrqcError(f"emulated board did not listen within {timeout:.0f} s")
        self.start_seconds = time.monotonic() - t0
        assert self.port is not None
        return self.host, self.port

    def _pump(self, stream, is_out: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if is_out and line.startswith("NRQC_BOARD_LISTENING"):
                parts = line.split()
                self.port = int(parts[2])
                for p in parts[3:]:
                    if p.startswith("import_s="):
                        self.import_seconds = float(p.split("=", 1)[1])
                self._ready.set()
                continue
            if is_out and line.startswith("NRQC_BOARD_ERROR"):
                self._error = line[len("NRQC_BOARD_ERROR "):]
                continue
            self._log_tail = (self._log_tail + [line])[-20:]
            if self.echo_log:
                print(f"[board] {line}", file=sys.stderr, flush=True)

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server and every process it started (one process group, by its id)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Session children may outlive the leader for a moment: kill the rest of the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        for t in self._threads:
            t.join(1.0)
        if self._tmp_host is not None:
            shutil.rmtree(self._tmp_host, ignore_errors=True)
            self._tmp_host = None

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def emulated_board(port: int | None = None, echo_log: bool = False, verify: bool = True,
                   cpu: str = GUEST_CPU) -> Iterator[tuple[str, int]]:
    """Start an emulated aarch64 board; yields ``(host, port)`` of its TVM RPC server.

    Builds the cached root file system on first use (progress on stderr). With
    ``verify``, one RPC session checks the board answers before yielding.
    """
    board = EmulatedBoard(port=port, echo_log=echo_log, cpu=cpu)
    board.start()
    try:
        if verify:
            info = board_info(board.host, board.port)
            if not info.get("emulated"):
                raise NrqcError(f"board on {board.host}:{board.port} did not identify as emulated: {info}")
        yield board.host, board.port
    finally:
        board.stop()


def board_info(host: str, port: int, session_timeout: float = 120) -> dict:
    """What a board says about itself; ``{"emulated": False}`` for a plain TVM RPC server."""
    import json

    from tvm import rpc

    remote = rpc.connect(host, port, session_timeout=session_timeout)
    return remote_board_info(remote)


def remote_board_info(remote) -> dict:
    """Board facts through an open RPC session; a real Pi's plain rpc_server has none."""
    import json

    try:
        f = remote.get_function(BOARD_INFO_FUNC)
    except Exception:  # noqa: BLE001 - the function is simply not registered there
        return {"emulated": False}
    return json.loads(str(f()))


def serve_foreground(port: int | None = None, host: str = "127.0.0.1",
                     tracker: str | None = None, key: str = "", cpu: str = GUEST_CPU) -> int:
    """``nrqc emulate``: start, print the address, block until SIGTERM/SIGINT, clean up."""
    board = EmulatedBoard(port=port, host=host, tracker=tracker, key=key, echo_log=True, cpu=cpu)
    stopping = threading.Event()

    def _on_signal(signum, _frame):
        stopping.set()
        board.stop()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        print("[nrqc emulate] starting the emulated arm_cpu board (import tvm under qemu takes ~15 s)",
              file=sys.stderr, flush=True)
        h, p = board.start()
        where = f" (registered to tracker {tracker} with key {key!r})" if tracker else ""
        print(f"arm_cpu emulated board: TVM RPC server listening on {h}:{p}{where}", flush=True)
        print(f"[nrqc emulate] ready in {board.start_seconds:.1f} s (emulated import tvm "
              f"{board.import_seconds or 0:.1f} s); stop with Ctrl-C or SIGTERM", file=sys.stderr, flush=True)
        proc = board.proc
        while proc is not None and proc.poll() is None and not stopping.is_set():
            time.sleep(0.5)
        if stopping.is_set():
            print("[nrqc emulate] stopped", file=sys.stderr, flush=True)
            return 0
        code = proc.returncode if proc is not None else 0
        board.stop()
        raise NrqcError(f"the emulated board exited unexpectedly (code {code})")
    finally:
        board.stop()
        for s, h in old.items():
            signal.signal(s, h)
