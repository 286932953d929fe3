"""A stable, board-free measure of a build: aarch64 instructions executed in the model's code.

Emulated latency says nothing about a Pi. What qemu can give exactly is *what the guest
executed*. Debian's qemu-aarch64-static (7.2) has no TCG plugins (no ``libinsn.so``: the
static build cannot load plugins), so the count comes from qemu's own logging:

- ``-d in_asm`` prints each translation block (TB) once, when it is translated: its
  guest instructions, hence its length;
- ``-d exec,nochain`` prints one line per TB *execution* (``nochain`` stops qemu from
  jumping TB-to-TB without logging);
- ``-dfilter START+SIZE`` restricts both to the executable segment of ``model.so``.

instructions = sum over TBs of (executions x length). The log (GBs for a real model)
streams through a FIFO into a parser and is never stored.

What is counted: one load of the library + creating the Relax VM + one call of
``main``, single-threaded (TVM_NUM_THREADS=1), in model.so's own code (the compiled
kernels). Not counted: libtvm_runtime (the VM interpreter, allocations), libc/libm calls
made by kernels. The count is deterministic for a given library and input shape (two
runs give the same number; checked by the tests); it compares two builds of a model,
it is not a cycle count.

The library's load address is found by a first (unlogged) run; qemu-user's guest
address allocation is deterministic, and the counted run re-checks it.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from nrqc import subproc
from nrqc.emulator import rootfs as _rootfs
from nrqc.emulator.board import guest_python, guest_work_dir, qemu_cpu_for
from nrqc.errors import NrqcError
from nrqc.progress import Progress

_TRACE_RE = re.compile(rb"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/", re.M)
_IN_ASM_RE = re.compile(rb"^IN:[^\n]*\n((?:0x[0-9a-f]+:[^\n]*\n)+)", re.M)
# "0x5502838850:  a9b27bfd  stp ...": the instruction word qemu translated (aarch64); Thumb
# (qemu-system-arm, M-profile) prints halfwords: "0x0000004c:  480d  ldr ..." or "f022 0203  bic ...",
# kept as one int (first halfword << 16 | second for a 32-bit instruction; see nrqc.emulator.mca)
_WORD_RE = re.compile(rb"^0x[0-9a-f]+:\s+([0-9a-f]{8}|[0-9a-f]{4} [0-9a-f]{4}|[0-9a-f]{4})\s", re.M)


def exec_segment(lib: Path) -> tuple[int, int]:
    """(vaddr, memsz) of the executable PT_LOAD segment of an ELF64 little-endian library."""
    import struct

    data = Path(lib).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NrqcError(f"{lib}: not a 64-bit little-endian ELF library")
    e_phoff = struct.unpack_from("<Q", data, 0x20)[0]
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(e_phnum):
        p_type, p_flags, _off, p_vaddr, _paddr, _filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1 and p_flags & 1:  # PT_LOAD, PF_X
            return p_vaddr, p_memsz
    raise NrqcError(f"{lib}: no executable segment")


class _LogCounter:
    """Parses the qemu log stream: TB lengths from in_asm, TB executions from exec."""

    def __init__(self, marker: int | None = None, count_marker: bool = False, pc_digits: int = 16):
        self.tb_len: dict[bytes, int] = {}
        # instruction words of each TB, for the cycle estimate (nrqc.emulator.mca)
        self.tb_words: dict[bytes, tuple[int, ...]] = {}
        # One Counter per phase: each execution of the marker TB (a libc function the guest
        # calls only between phases) starts the next phase; the marker's own lines are not counted.
        self.phases: list[collections.Counter] = [collections.Counter()]
        self._marker = None if marker is None else f"/{marker:0{pc_digits}x}/".encode()  # 8 digits on arm32
        self._count_marker = count_marker  # the marker TB is the first of the next phase (else dropped)
        self.bytes_read = 0
        self._rest = b""

    @property
    def line_count(self) -> collections.Counter:
        return self.phases[-1] if len(self.phases) == 1 else sum(self.phases, collections.Counter())

    def feed(self, chunk: bytes, final: bool = False) -> None:
        self.bytes_read += len(chunk)
        buf = self._rest + chunk
        if final:
            cut = len(buf)
        else:
            # Cut before the last "Trace" line: an in_asm block never spans it.
            cut = buf.rfind(b"\nTrace ")
            if cut < 0:
                self._rest = buf
                return
            cut += 1
        part, self._rest = buf[:cut], buf[cut:]
        if b"IN:" in part:
            for block in _IN_ASM_RE.findall(part):
                first = block.split(b":", 1)[0]
                key = int(first, 16).to_bytes(8, "big")
                self.tb_len[key] = block.count(b"\n")
                self.tb_words[key] = tuple(int(w.replace(b" ", b""), 16) for w in _WORD_RE.findall(block))
        # Identical TB executions give identical lines: count lines at C speed, parse later.
        while self._marker is not None:
            at = part.find(self._marker)
            if at < 0:
                break
            start = part.rfind(b"\n", 0, at) + 1
            end = part.find(b"\n", at)
            end = len(part) if end < 0 else end + 1
            if part.startswith(b"Trace ", start):
                self.phases[-1].update(part[:start].split(b"\n"))
                self.phases.append(collections.Counter())
                if self._count_marker:
                    self.phases[-1][part[start:end].rstrip(b"\n")] += 1
            else:  # the marker's address in an in_asm line: not an execution
                self.phases[-1].update(part[:start].split(b"\n"))
            part = part[end:]
        self.phases[-1].update(part.split(b"\n"))

    def _runs(self, phase: int | None = None) -> tuple[collections.Counter, int]:
        """Executions of each TB (by start address) that has a translation record, and the
        number of logged executions without one (in one phase, or all of them)."""
        runs: collections.Counter = collections.Counter()
        missing = 0
        lines = self.line_count if phase is None else self.phases[phase]
        for line, n in lines.items():
            m = _TRACE_RE.match(line)
            if m is None:
                continue
            key = int(m.group(1), 16).to_bytes(8, "big")
            if key in self.tb_len:
                runs[key] += n
            else:
                missing += n
        return runs, missing

    def executed_blocks(self, phase: int | None = None, where: tuple[int, int] | None = None
                        ) -> list[tuple[tuple[int, ...], int]]:
        """(instruction words, executions) of every executed TB, in address order; only
        those of one phase, and starting in [start, start + size) when `where` is given."""
        runs, _missing = self._runs(phase)
        return [(self.tb_words[k], runs[k]) for k in sorted(runs) if _inside(k, where)]

    def total(self, phase: int | None = None, where: tuple[int, int] | None = None) -> tuple[int, int, int]:
        """(instructions, TB executions, executions without a translation record)."""
        runs, missing = self._runs(phase)
        runs = {k: n for k, n in runs.items() if _inside(k, where)}
        return sum(self.tb_len[k] * n for k, n in runs.items()), sum(runs.values()), missing


def _inside(key: bytes, where: tuple[int, int] | None) -> bool:
    return where is None or where[0] <= int.from_bytes(key, "big") < where[0] + where[1]


def _guest_paths(root: Path, cpu: str) -> tuple[Path, str]:
    """A work dir visible to the guest: (host path, guest path)."""
    _argv, _env, prefix = guest_python(root, cpu=cpu)
    return guest_work_dir(root, prefix, "nrqc-icount-")


_LIB_RE = re.compile(r"^NRQC_ICOUNT_LIB (0x[0-9a-f]+) (\S+)$", re.M)
_MARK_RE = re.compile(r"^NRQC_ICOUNT_MARK (0x[0-9a-f]+)$", re.M)


def guest_layout(stdout: str, root: Path, prefix: str) -> tuple[list[tuple[int, int, str]], int | None]:
    """What a harness printed about its address space: ``NRQC_ICOUNT_LIB BASE PATH`` for
    each library to count (its executable segment, read from the file, at BASE), and
    ``NRQC_ICOUNT_MARK ADDR``, the libc function it calls between phases.

    Returns ``([(start, size, guest path)], marker or None)``."""
    ranges = []
    for base, path in _LIB_RE.findall(stdout):
        host = Path(path) if prefix else root / path.lstrip("/")
        vaddr, size = exec_segment(host)
        ranges.append((int(base, 16) + vaddr, size, path))
    m = _MARK_RE.search(stdout)
    return ranges, (int(m.group(1), 16) if m else None)


@dataclasses.dataclass
class CountedRun:
    """A logged guest run: the parsed log, the harness's stdout, the counted code ranges."""
    counter: _LogCounter
    stdout: str
    ranges: list[tuple[int, int, str]]
    marker: int | None
    emulator: str
    seconds: float


def stream_log(proc: subprocess.Popen, fd: int, counter: _LogCounter, timeout: float, what: str
               ) -> tuple[str, str]:
    """Feed qemu's log from the FIFO `fd` into `counter` until `proc` exits; returns its
    (stdout, stderr). The process group is killed on a timeout or any error; `fd` is closed."""
    out_text: list[str] = []
    err_text: list[str] = []
    threads = [threading.Thread(target=lambda: out_text.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: err_text.append(proc.stderr.read()), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    # parsing a multi-GB log takes minutes: a live line on a terminal, otherwise one line
    # a minute (the main job's log is read by people)
    bar = Progress(f"count instructions of {what} (qemu log, MB parsed)", prefix="  ")
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 0.5)
            chunk = b""
            if r:
                try:
                    chunk = os.read(fd, 1 << 24)
                except BlockingIOError:
                    chunk = b""
            if chunk:
                counter.feed(chunk)
                bar.update((counter.bytes_read >> 20) - bar.n)
                continue
            if proc.poll() is not None:
                break
            if r:
                time.sleep(0.05)  # EOF before qemu opened the FIFO (or between writers)
            if time.monotonic() > deadline:
                raise NrqcError(f"instruction count of {what} did not finish within {timeout:.0f} s")
    finally:
        bar.close("")
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        os.close(fd)
    counter.feed(b"", final=True)
    for t in threads:
        t.join(5)
    return "".join(out_text), "".join(err_text)


def counted_guest_run(root: Path, cpu: str, guest_args: list[str], env_extra: dict[str, str], what: str,
                      timeout: float = 3600, log=lambda m: None) -> CountedRun:
    """Run a harness twice under ``qemu -cpu CPU``: a probe (``NRQC_ICOUNT_MODE=probe``:
    it prints its layout, see :func:`guest_layout`, and exits) and the counted run, whose
    qemu log (``-d in_asm,exec,nochain``, ``-dfilter`` the layout's code ranges and the
    marker's first instruction) streams through a FIFO into a :class:`_LogCounter`.

    The guest's load addresses depend on its argv and environment sizes: the probe runs
    the counted run's exact command line with a same-length mode value, and the counted
    run's own layout must match the probe's."""
    t0 = time.monotonic()
    _argv, _env, prefix = guest_python(root, cpu=cpu)
    argv, env, _ = guest_python(root, {**env_extra, "NRQC_ICOUNT_MODE": "probe"}, cpu=cpu)
    probe = subproc.run([*argv, *guest_args], env=env, cwd="/", timeout=600)
    ranges, marker = guest_layout(probe.stdout, root, prefix)
    if probe.returncode != 0 or not ranges:
        raise NrqcError(f"emulated probe of {what} failed: {(probe.stderr or probe.stdout).strip()[-300:]}")
    log(f"{what}: code at " + ", ".join(f"{a:#x}+{n:#x}" for a, n, _p in ranges)
        + "; counting (logged by qemu)")
    filt = ",".join([f"{a:#x}+{n:#x}" for a, n, _p in ranges] + ([f"{marker:#x}+0x4"] if marker else []))
    host_dir = Path(tempfile.mkdtemp(prefix="nrqc-icount-log-", dir=None if prefix else root / "tmp"))
    try:
        fifo_host = host_dir / "qemu.log"
        os.mkfifo(fifo_host)
        # in the chroot the guest sees the rootfs as /
        fifo_guest = str(fifo_host) if prefix else "/" + str(fifo_host.relative_to(root))
        qemu_args = ("-d", "in_asm,exec,nochain", "-dfilter", filt, "-D", fifo_guest)
        argv, env, _ = guest_python(root, {**env_extra, "NRQC_ICOUNT_MODE": "count"}, qemu_args=qemu_args, cpu=cpu)
        fd = os.open(fifo_host, os.O_RDONLY | os.O_NONBLOCK)
        counter = _LogCounter(marker)
        proc = subprocess.Popen([*argv, *guest_args], env=env, cwd="/", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        out_text, err_text = stream_log(proc, fd, counter, timeout, what)
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
    stdout = out_text
    if proc.returncode != 0 or "NRQC_ICOUNT_DONE" not in stdout:
        raise NrqcError(f"counted emulated run of {what} failed (exit {proc.returncode}): "
                        f"{(err_text or stdout).strip()[-300:]}")
    again, marker2 = guest_layout(stdout, root, prefix)
    if again != ranges or marker2 != marker:
        raise NrqcError(f"{what}: the code loaded at other addresses in the counted run than in the probe: "
                        f"count not reliable")
    _insns, _execs, missing = counter.total()
    if missing:
        raise NrqcError(f"{missing} logged TB executions had no translation record; count not reliable")
    return CountedRun(counter, stdout, ranges, marker, env.get("NRQC_EMULATOR", "qemu-aarch64-static"),
                      round(time.monotonic() - t0, 1))


def aarch64_refusal(manifest: dict, out) -> str | None:
    """Why an artifact cannot be counted on the emulated board (None when it can)."""
    if not str((manifest.get("tvm_target") or {}).get("mtriple", "")).startswith("aarch64"):
        return f"{out}: built for {manifest.get('target')}; the instruction count needs an aarch64 library"
    return None


def require_tools(estimate_cycles: bool) -> None:
    """The host tools a count (and, when asked, its cycle estimate) needs, or a one-line error."""
    reason = _rootfs.missing_host_tools()
    if reason:
        raise NrqcError("cannot count emulated instructions: missing " + "; ".join(reason))
    if estimate_cycles:
        from nrqc.emulator.mca import missing_tools

        if missing_tools():
            raise NrqcError("cannot estimate cycles: missing " + "; ".join(missing_tools()))


def measure_instructions(artifact_dir: str | Path, inputs: dict[str, np.ndarray] | None = None,
                         seed: int = 0, timeout: float = 3600, log=lambda m: None,
                         estimate_cycles: bool = False, code_ranges: dict[str, tuple[int, int]] | None = None) -> dict:
    """Count the aarch64 instructions one inference executes in the artifact's model.so,
    under ``qemu -cpu`` the target's core.

    Returns ``{"instructions", "tb_executions", "distinct_tbs", "outputs", "seconds",
    "log_bytes", "what", "emulator", "cpu"}``; ``outputs`` are the counted run's outputs
    (check them against a reference to know the count belongs to a correct run). With
    ``estimate_cycles``, also ``"cycles"``: :func:`nrqc.emulator.mca.estimate_cycles` of the
    executed TBs for the target's core. With ``code_ranges`` (name -> (address, size) in the
    library's own address space, e.g. a kernel's symbol), also ``"by_range"``: the
    instructions (and cycles) of the TBs starting in each range.
    """
    from nrqc.artifact import LIBRARY, read_manifest
    from nrqc.onnx_model import TensorSpec

    out = Path(artifact_dir)
    manifest = read_manifest(out)
    lib = out / manifest.get("library", LIBRARY)
    if not lib.exists():
        raise NrqcError(f"{out}: missing {lib.name}")
    why = aarch64_refusal(manifest, out)
    if why:
        raise NrqcError(why)
    cpu = qemu_cpu_for(manifest.get("tvm_target"))
    require_tools(estimate_cycles)
    specs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["inputs"]]
    feeds = seeded_feeds(specs, inputs, seed)

    root = _rootfs.build_rootfs()
    host_dir, guest_dir = _guest_paths(root, cpu)
    try:
        shutil.copyfile(lib, host_dir / "model.so")
        shutil.copyfile(Path(__file__).with_name("icount_guest.py"), host_dir / "icount_guest.py")
        np.savez(host_dir / "inputs.npz", **feeds)
        guest_args = [f"{guest_dir}/icount_guest.py", f"{guest_dir}/model.so", "run", f"{guest_dir}/inputs.npz",
                      f"{guest_dir}/outputs.npz", *[s.name for s in specs]]
        run = counted_guest_run(root, cpu, guest_args, {"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                                str(lib), timeout, log)
        insns, execs, _missing = run.counter.total()
        with np.load(host_dir / "outputs.npz") as z:
            outputs = [z[f"arr_{i}"] for i in range(len(z.files))]
        estimate = None
        if estimate_cycles:
            from nrqc.emulator.mca import estimate_cycles as _estimate

            log(f"estimating {cpu} cycles of {len(run.counter.tb_len)} translation blocks with llvm-mca")
            estimate = _estimate(run.counter.executed_blocks(), cpu)
        by_range = {}
        if code_ranges:
            base = run.ranges[0][0] - exec_segment(lib)[0]  # the library's load address
            for name, (addr, size) in code_ranges.items():
                where = (base + addr, size)
                row = {"instructions": int(run.counter.total(where=where)[0])}
                if estimate_cycles:
                    row["cycles"] = _estimate(run.counter.executed_blocks(where=where), cpu)["cycles"]
                by_range[name] = row
        return {
            **({"by_range": by_range} if code_ranges else {}),
            "instructions": int(insns),
            "tb_executions": int(execs),
            "distinct_tbs": len(run.counter.tb_len),
            "log_bytes": run.counter.bytes_read,
            "seconds": run.seconds,
            "outputs": outputs,
            "what": ("aarch64 instructions executed in model.so (load + VM creation + one call of main, "
                     "1 thread), counted by qemu-aarch64 TB logging; excludes libtvm_runtime and libc/libm"),
            "emulator": run.emulator,
            "cpu": cpu,
            **({"cycles": estimate} if estimate is not None else {}),
        }
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def seeded_feeds(specs, inputs: dict[str, np.ndarray] | None, seed: int) -> dict[str, np.ndarray]:
    """The given inputs, the others seeded-random (nrqc.onnx_model.random_inputs), C-ordered
    in each spec's dtype."""
    from nrqc.onnx_model import random_inputs

    feeds = dict(inputs or {})
    rand = random_inputs(specs, seed)
    for s in specs:
        feeds.setdefault(s.name, rand[s.name])
        feeds[s.name] = np.asarray(feeds[s.name], dtype=s.dtype, order="C")  # keeps 0-d inputs 0-d
    return feeds


def emulated_instruction_count(artifact_dir: str | Path, inputs: dict[str, np.ndarray] | None = None,
                               seed: int = 0) -> int:
    """Instructions one inference executes in the artifact's code under emulation (see module doc)."""
    return measure_instructions(artifact_dir, inputs, seed)["instructions"]
