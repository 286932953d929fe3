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
import os
import re
import select
import shutil
import subprocess
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
# "0x5502838850:  a9b27bfd  stp ...": the instruction word qemu translated
_WORD_RE = re.compile(rb"^0x[0-9a-f]+:\s+([0-9a-f]{8})\s", re.M)


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

    def __init__(self):
        self.tb_len: dict[bytes, int] = {}
        # instruction words of each TB, for the cycle estimate (nrqc.emulator.mca)
        self.tb_words: dict[bytes, tuple[int, ...]] = {}
        self.line_count: collections.Counter = collections.Counter()
        self.bytes_read = 0
        self._rest = b""

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
                self.tb_words[key] = tuple(int(w, 16) for w in _WORD_RE.findall(block))
        # Identical TB executions give identical lines: count lines at C speed, parse later.
        self.line_count.update(part.split(b"\n"))

    def _runs(self) -> tuple[collections.Counter, int]:
        """Executions of each TB (by start address) that has a translation record, and the
        number of logged executions without one."""
        runs: collections.Counter = collections.Counter()
        missing = 0
        for line, n in self.line_count.items():
            m = _TRACE_RE.match(line)
            if m is None:
                continue
            key = int(m.group(1), 16).to_bytes(8, "big")
            if key in self.tb_len:
                runs[key] += n
            else:
                missing += n
        return runs, missing

    def executed_blocks(self) -> list[tuple[tuple[int, ...], int]]:
        """(instruction words, executions) of every executed TB, in address order."""
        runs, _missing = self._runs()
        return [(self.tb_words[k], runs[k]) for k in sorted(runs)]

    def total(self) -> tuple[int, int, int]:
        """(instructions, TB executions, executions without a translation record)."""
        runs, missing = self._runs()
        return sum(self.tb_len[k] * n for k, n in runs.items()), sum(runs.values()), missing


def _guest_paths(root: Path, cpu: str) -> tuple[Path, str]:
    """A work dir visible to the guest: (host path, guest path)."""
    _argv, _env, prefix = guest_python(root, cpu=cpu)
    return guest_work_dir(root, prefix, "nrqc-icount-")


def measure_instructions(artifact_dir: str | Path, inputs: dict[str, np.ndarray] | None = None,
                         seed: int = 0, timeout: float = 3600, log=lambda m: None,
                         estimate_cycles: bool = False) -> dict:
    """Count the aarch64 instructions one inference executes in the artifact's model.so,
    under ``qemu -cpu`` the target's core.

    Returns ``{"instructions", "tb_executions", "distinct_tbs", "outputs", "seconds",
    "log_bytes", "what", "emulator", "cpu"}``; ``outputs`` are the counted run's outputs
    (check them against a reference to know the count belongs to a correct run). With
    ``estimate_cycles``, also ``"cycles"``: :func:`nrqc.emulator.mca.estimate_cycles` of the
    executed TBs for the target's core.
    """
    from nrqc.artifact import LIBRARY, read_manifest
    from nrqc.onnx_model import TensorSpec, random_inputs

    out = Path(artifact_dir)
    manifest = read_manifest(out)
    lib = out / manifest.get("library", LIBRARY)
    if not lib.exists():
        raise NrqcError(f"{out}: missing {lib.name}")
    if not str((manifest.get("tvm_target") or {}).get("mtriple", "")).startswith("aarch64"):
        raise NrqcError(f"{out}: built for {manifest.get('target')}; the instruction count needs an aarch64 library")
    reason = _rootfs.missing_host_tools()
    if reason:
        raise NrqcError("cannot count emulated instructions: missing " + "; ".join(reason))
    cpu = qemu_cpu_for(manifest.get("tvm_target"))
    if estimate_cycles:
        from nrqc.emulator.mca import missing_tools

        if missing_tools():
            raise NrqcError("cannot estimate cycles: missing " + "; ".join(missing_tools()))
    specs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["inputs"]]
    feeds = dict(inputs or {})
    rand = random_inputs(specs, seed)
    for s in specs:
        feeds.setdefault(s.name, rand[s.name])
        feeds[s.name] = np.asarray(feeds[s.name], dtype=s.dtype, order="C")  # keeps 0-d inputs 0-d

    root = _rootfs.build_rootfs()
    t0 = time.monotonic()
    host_dir, guest_dir = _guest_paths(root, cpu)
    try:
        shutil.copyfile(lib, host_dir / "model.so")
        shutil.copyfile(Path(__file__).with_name("icount_guest.py"), host_dir / "icount_guest.py")
        np.savez(host_dir / "inputs.npz", **feeds)
        g_lib, g_script = f"{guest_dir}/model.so", f"{guest_dir}/icount_guest.py"
        env_extra = {"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        # The guest's load addresses depend on its argv and environment sizes: the probe
        # runs the counted run's exact command line, with a same-length mode value.
        guest_args = [g_script, g_lib, "run", f"{guest_dir}/inputs.npz", f"{guest_dir}/outputs.npz",
                      *[s.name for s in specs]]

        # 1) where does model.so land?
        argv, env, _ = guest_python(root, {**env_extra, "NRQC_ICOUNT_MODE": "probe"}, cpu=cpu)
        probe = subproc.run([*argv, *guest_args], env=env, cwd="/", timeout=600)
        m = re.search(r"NRQC_ICOUNT_BASE (0x[0-9a-f]+)", probe.stdout)
        if probe.returncode != 0 or not m:
            raise NrqcError(f"emulated probe of {lib} failed: {(probe.stderr or probe.stdout).strip()[-300:]}")
        base = int(m.group(1), 16)
        vaddr, size = exec_segment(lib)
        start = base + vaddr
        log(f"model.so code at {start:#x}+{size:#x}; counting (one inference, logged by qemu)")

        # 2) the counted run, qemu's log streamed through a FIFO
        fifo_host = host_dir / "qemu.log"
        os.mkfifo(fifo_host)
        fifo_guest = f"{guest_dir}/qemu.log"
        qemu_args = ("-d", "in_asm,exec,nochain", "-dfilter", f"{start:#x}+{size:#x}", "-D", fifo_guest)
        argv, env, _ = guest_python(root, {**env_extra, "NRQC_ICOUNT_MODE": "count"}, qemu_args=qemu_args, cpu=cpu)
        fd = os.open(fifo_host, os.O_RDONLY | os.O_NONBLOCK)
        counter = _LogCounter()
        proc = subprocess.Popen([*argv, *guest_args],
                                env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        out_text: list[str] = []
        err_text: list[str] = []
        threads = [threading.Thread(target=lambda: out_text.append(proc.stdout.read()), daemon=True),
                   threading.Thread(target=lambda: err_text.append(proc.stderr.read()), daemon=True)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        # parsing a multi-GB log takes minutes: a live line on a terminal, otherwise one line
        # a minute (the main job's log is read by people)
        bar = Progress("count instructions (qemu log, MB parsed)", prefix="  ")
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
                    raise NrqcError(f"instruction count of {lib} did not finish within {timeout:.0f} s")
        finally:
            bar.close("")
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
            os.close(fd)
        counter.feed(b"", final=True)
        for t in threads:
            t.join(5)
        stdout = "".join(out_text)
        m2 = re.search(r"NRQC_ICOUNT_BASE (0x[0-9a-f]+)", stdout)
        if proc.returncode != 0 or "NRQC_ICOUNT_DONE" not in stdout:
            raise NrqcError(f"counted emulated run of {lib} failed (exit {proc.returncode}): "
                            f"{''.join(err_text).strip()[-300:]}")
        if not m2 or int(m2.group(1), 16) != base:
            raise NrqcError(f"model.so loaded at a different address in the counted run "
                            f"({m2.group(1) if m2 else '?'} vs {base:#x}): count not reliable")
        insns, execs, missing = counter.total()
        if missing:
            raise NrqcError(f"{missing} logged TB executions had no translation record; count not reliable")
        with np.load(host_dir / "outputs.npz") as z:
            outputs = [z[f"arr_{i}"] for i in range(len(z.files))]
        estimate = None
        if estimate_cycles:
            from nrqc.emulator.mca import estimate_cycles as _estimate

            log(f"estimating {cpu} cycles of {len(counter.tb_len)} translation blocks with llvm-mca")
            estimate = _estimate(counter.executed_blocks(), cpu)
        return {
            "instructions": int(insns),
            "tb_executions": int(execs),
            "distinct_tbs": len(counter.tb_len),
            "log_bytes": counter.bytes_read,
            "seconds": round(time.monotonic() - t0, 1),
            "outputs": outputs,
            "what": ("aarch64 instructions executed in model.so (load + VM creation + one call of main, "
                     "1 thread), counted by qemu-aarch64 TB logging; excludes libtvm_runtime and libc/libm"),
            "emulator": env.get("NRQC_EMULATOR", "qemu-aarch64-static"),
            "cpu": cpu,
            **({"cycles": estimate} if estimate is not None else {}),
        }
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def emulated_instruction_count(artifact_dir: str | Path, inputs: dict[str, np.ndarray] | None = None,
                               seed: int = 0) -> int:
    """Instructions one inference executes in the artifact's code under emulation (see module doc)."""
    return measure_instructions(artifact_dir, inputs, seed)["instructions"]
