"""Executed blocks of a Cortex-M firmware in qemu-system-arm, for an llvm-mca cycle estimate.

The firmware's instruction count (``nrqc.cortex_m.firmware``: SysTick under ``-icount
shift=0``) says how many instructions one ``nrqc_run`` executes, not which. For a cycle
estimate each executed translation block (TB) is needed with its instructions, as for the
Pi (``icount``, ``mca``): qemu-system-arm 7.2 has no TCG plugins here either, so the same
logging is used: ``-d in_asm,exec,nochain`` (each TB's Thumb instructions once, one line
per TB execution), ``-dfilter`` limited to the library's code (every function defined in
the library objects, and the libc/libgcc functions they call: memset, memcpy,
``__aeabi_*``...), streamed through a FIFO, never stored. The log is split at the first
execution of ``nrqc_run``'s entry block, so the C start-up code's memset/memcpy before it
is not counted; after ``nrqc_run`` returns the harness only prints (its own code,
outside the filter).

What this ignores: the harness (main, SysTick interrupt handler: its few instructions
per 16.7 M are outside the filter), and, in the cycle estimate, everything llvm-mca's
Cortex-M4/M7 model does not see: flash wait states and the memory system (every load as
the model's L1/TCM latency), branch penalties beyond the model, the interaction between
consecutive blocks. The instruction total of the logged blocks is checked against the
firmware's SysTick count by the caller (they agree within the SysTick resolution).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from nrqc.emulator.icount import _LogCounter, stream_log
from nrqc.errors import NrqcError

ENTRY = "nrqc_run"
_NM_RE = re.compile(r"^([0-9a-f]+) (?:([0-9a-f]+) )?([A-Za-z]) (\S+)$", re.M)


def _nm(args: list[str]) -> str:
    nm = shutil.which("arm-none-eabi-nm")
    if nm is None:
        raise NrqcError("arm-none-eabi-nm not found (apt-get install binutils-arm-none-eabi)")
    return subprocess.run([nm, *args], capture_output=True, text=True, check=True).stdout


def library_ranges(elf: Path, lib_objs: list[Path]) -> tuple[list[tuple[int, int]], int]:
    """(merged [start, size) code ranges of the library's functions and the libc/libgcc
    functions it calls, address of ENTRY) in the linked firmware."""
    defined, called = set(), set()
    for line in _nm([*map(str, lib_objs)]).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "Tt":
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            called.add(parts[1])
    spans, entry = [], None
    for addr, size, kind, name in _NM_RE.findall(_nm(["-S", "--defined-only", str(elf)])):
        if kind not in "TtWw" or not size or name not in defined | called:
            continue
        start = int(addr, 16) & ~1  # Thumb function symbols carry bit 0
        spans.append((start, start + int(size, 16)))
        if name == ENTRY:
            entry = start
    if entry is None or not spans:
        raise NrqcError(f"{elf}: no {ENTRY} among the library's functions")
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 4:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b - a) for a, b in merged], entry


def count_firmware_blocks(qemu_cmd: list[str], elf: Path, lib_objs: list[Path], timeout: float = 1800,
                          log=lambda m: None) -> tuple[_LogCounter, int]:
    """Run the firmware once under qemu's TB logging; (counter, counted phase index): the
    phase starting at the first execution of ENTRY."""
    ranges, entry = library_ranges(elf, lib_objs)
    filt = ",".join(f"{a:#x}+{n:#x}" for a, n in ranges)
    counter = _LogCounter(entry, count_marker=True, pc_digits=8)
    with tempfile.TemporaryDirectory(prefix="nrqc-mprofile-") as tmp:
        fifo = Path(tmp) / "qemu.log"
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        proc = subprocess.Popen([*qemu_cmd, "-d", "in_asm,exec,nochain", "-dfilter", filt, "-D", str(fifo)],
                                cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        out, err = stream_log(proc, fd, counter, timeout, elf.name)
    if "NRQC_DONE" not in out + err:
        raise NrqcError(f"{elf}: firmware did not complete under qemu's logging (exit {proc.returncode})")
    if len(counter.phases) < 2:
        raise NrqcError(f"{elf}: {ENTRY} never ran in the logged firmware run")
    _i, _e, missing = counter.total()
    if missing:
        raise NrqcError(f"{missing} logged TB executions had no translation record; count not reliable")
    return counter, 1
