"""A board-free cycle estimate: qemu's executed translation blocks through ``llvm-mca``.

``icount`` knows, for one inference, every translation block (TB) qemu executed in
model.so: its instruction words and how often it ran. This module turns that into an
estimated cycle count for a given core (``-mcpu=cortex-a72`` for a Pi 4, ``cortex-a76``
for a Pi 5)::

    estimated cycles = sum over distinct TBs of (cycles per execution x executions)

How one TB's cycles are obtained:

- the words logged by qemu are re-disassembled with ``llvm-mc --disassemble`` (qemu's
  own disassembly prints absolute branch targets such as ``b.ls #0x55028388e8`` that do
  not assemble again; LLVM's text of the same words does, and is exactly what
  ``llvm-mca`` parses);
- each TB is one ``# LLVM-MCA-BEGIN``/``# LLVM-MCA-END`` region, many regions per
  ``llvm-mca`` call (one process per TB would take minutes for thousands of TBs);
- cycles per execution = ``Total Cycles / Iterations`` with ``-iterations=100``: the
  *steady-state* cost of the block run back to back. Nearly all executions are of hot
  loop bodies that do run back to back, where an out-of-order core overlaps one
  iteration with the next; a single-iteration count would charge every execution the
  full pipeline fill and drain (the latency of the longest dependency chain) and
  overstate a 3-wide core's loops by several times. Cold TBs (run a few times) are
  understated by the same choice, and weigh nothing in the total.

What it ignores: caches and memory (every load hits L1 with the model's load latency),
branch mispredictions, the overlap between *different* consecutive TBs (each is modelled
on its own), calls (llvm-mca 14 gives a call an assumed 100-cycle latency that matters
only to the call's dependants) and the code outside model.so (libc/libm, the TVM
runtime). It is a relative measure with a cycle scale, not a Pi latency.

Deterministic: llvm-mca's model has no randomness, and the TBs are sorted before batching.
Results are cached per (llvm-mca version, cpu, TB words) in ``$NRQC_CACHE/mca/``, so a
second estimate of a similar build only models its new blocks.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from nrqc.errors import NrqcError

ITERATIONS = 100
BATCH = 1000  # TB regions per llvm-mca process (3000 regions of ~15 instructions: ~14 s)
_REGION_RE = re.compile(r"^\[\d+\] Code Region - (\S+)\s*\n\s*\nIterations:\s+(\d+)\n"
                        r"Instructions:\s+\d+\nTotal Cycles:\s+(\d+)", re.M)
_BAD_ENCODING_RE = re.compile(r"^<stdin>:(\d+):\d+: warning: invalid instruction encoding", re.M)

WHAT = ("llvm-mca steady-state cycles of each executed translation block (-iterations=100, Total Cycles / "
        "Iterations) x its executions; ignores caches and memory, branch mispredictions, overlap between "
        "blocks, and code outside the counted library")


def missing_tools() -> list[str]:
    """Host tools the estimate needs that are not installed (Debian's ``llvm`` package)."""
    return [f"{t} (apt-get install llvm)" for t in ("llvm-mc", "llvm-mca") if shutil.which(t) is None]


def _run(argv: list[str], text: str, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as e:
        raise NrqcError(f"{what} failed: {e}") from None
    if proc.returncode != 0:
        raise NrqcError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return proc


def triple_for(mcpu: str) -> str:
    """LLVM triple of a core: Thumb-2 for the M-profile cores (cortex-m4/m7), else aarch64."""
    return "thumbv7em-none-eabi" if mcpu.startswith("cortex-m") else "aarch64"


def encoding(word: int, triple: str) -> bytes:
    """The bytes of one logged instruction: an aarch64 word, or a Thumb instruction kept as
    one int (a 16-bit halfword, or first halfword << 16 | second for a 32-bit one; each
    halfword is little-endian in memory)."""
    if triple == "aarch64":
        return word.to_bytes(4, "little")
    if word > 0xFFFF:
        return (word >> 16).to_bytes(2, "little") + (word & 0xFFFF).to_bytes(2, "little")
    return word.to_bytes(2, "little")


def disassemble(words: list[int], mcpu: str) -> dict[int, str]:
    """LLVM assembly text of each executed instruction (one llvm-mc process for all). An
    executed instruction LLVM cannot decode for `mcpu` is an error: leaving it out would
    make the estimate quietly low."""
    uniq = sorted(set(words))
    triple = triple_for(mcpu)
    src = "".join(" ".join(f"0x{b:02x}" for b in encoding(w, triple)) + "\n" for w in uniq)
    proc = _run(["llvm-mc", "--disassemble", f"-triple={triple}", f"-mcpu={mcpu}"], src,
                f"llvm-mc --disassemble (-mcpu={mcpu})")
    bad = [uniq[int(n) - 1] for n in _BAD_ENCODING_RE.findall(proc.stderr)]
    if bad:
        raise NrqcError(f"llvm-mc cannot decode {len(bad)} executed instruction word(s) for -mcpu={mcpu} "
                        f"(first: {bad[0]:#010x}): no cycle estimate")
    lines = [ln.strip() for ln in proc.stdout.splitlines()
             if ln.strip() and ln.strip() != ".text" and not ln.strip().startswith(".")]
    if len(lines) != len(uniq):
        raise NrqcError(f"llvm-mc decoded {len(lines)} of {len(uniq)} instruction words: cannot pair them up")
    return dict(zip(uniq, lines))


def _disassemble_in_order(blocks: dict[str, tuple[int, ...]], mcpu: str) -> dict[str, list[str]]:
    """Thumb: each block's instructions disassembled in their order (an IT instruction makes
    the next ones conditional, so an instruction's text depends on what precedes it)."""
    triple = triple_for(mcpu)
    names = sorted(blocks)
    src = "".join(" ".join(f"0x{b:02x}" for b in encoding(w, triple)) + "\n" for n in names for w in blocks[n])
    proc = _run(["llvm-mc", "--disassemble", f"-triple={triple}", f"-mcpu={mcpu}"], src,
                f"llvm-mc --disassemble (-mcpu={mcpu})")
    if _BAD_ENCODING_RE.search(proc.stderr):
        raise NrqcError(f"llvm-mc cannot decode an executed instruction for -mcpu={mcpu}: no cycle estimate "
                        f"({proc.stderr.strip().splitlines()[0][:160]})")
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip() and not ln.strip().startswith(".")]
    total = sum(len(blocks[n]) for n in names)
    if len(lines) != total:
        raise NrqcError(f"llvm-mc decoded {len(lines)} of {total} instructions: cannot pair them up")
    out, i = {}, 0
    for n in names:
        out[n] = lines[i:i + len(blocks[n])]
        i += len(blocks[n])
    return out


# ARMv8.1 LSE atomics (executed by onnxruntime on a Cortex-A76, which has them) are not in
# LLVM 14's Cortex-A57 scheduling model, which it uses for the A72 and A76: each is modelled
# as the plain load (or store) of the same size, address and destination; they are rare
# (reference counts in the framework, never in kernels), so the estimate barely moves.
_ATOMIC_RE = re.compile(r"^(?:ld(?:add|clr|eor|set|smax|smin|umax|umin)|swp)(?:al|a|l)?(b|h)?\t(\w+), (\w+), \[(\w+)\]$")
_CAS_RE = re.compile(r"^cas(?:al|a|l)?(b|h)?\t(\w+), (\w+), \[(\w+)\]$")
_ST_ATOMIC_RE = re.compile(r"^st(?:add|clr|eor|set|smax|smin|umax|umin)l?(b|h)?\t(\w+), \[(\w+)\]$")


def stand_in(line: str) -> str:
    """The instruction llvm-mca models in place of `line` (itself, unless an LSE atomic)."""
    m = _ATOMIC_RE.match(line)
    if m:
        size, _rs, rt, xn = m.groups()
        return f"ldr{size or ''}\t{rt}, [{xn}]"
    m = _CAS_RE.match(line)
    if m:
        size, rs, _rt, xn = m.groups()
        return f"ldr{size or ''}\t{rs}, [{xn}]"
    m = _ST_ATOMIC_RE.match(line)
    if m:
        size, rs, xn = m.groups()
        return f"str{size or ''}\t{rs}, [{xn}]"
    return line


def mca_cycles(blocks: dict[str, list[str]], mcpu: str) -> dict[str, float]:
    """Steady-state cycles per execution of each named block of assembly lines, from
    llvm-mca runs of up to BATCH regions each. An instruction the core's model lacks is an
    error (LLVM 14's Cortex-M7 model has no ``it``, ``vcmpe.f32`` or ``vcmp.f32 #0``)."""
    out: dict[str, float] = {}
    names = sorted(blocks)
    for start in range(0, len(names), BATCH):
        chunk = names[start:start + BATCH]
        src = [".text"]
        for name in chunk:
            src += [f"# LLVM-MCA-BEGIN {name}", *map(stand_in, blocks[name]), f"# LLVM-MCA-END {name}"]
        proc = _run(["llvm-mca", f"-mtriple={triple_for(mcpu)}", f"-mcpu={mcpu}", f"-iterations={ITERATIONS}",
                     "-resource-pressure=0", "-instruction-info=0", "-"], "\n".join(src) + "\n",
                    f"llvm-mca -mcpu={mcpu}")
        for name, iters, total in _REGION_RE.findall(proc.stdout):
            out[name] = int(total) / int(iters)
        missing = [n for n in chunk if n not in out]
        if missing:
            raise NrqcError(f"llvm-mca reported no result for {len(missing)} block(s) (first: {missing[0]})")
    return out


def _tool_version() -> str:
    proc = _run(["llvm-mca", "--version"], "", "llvm-mca --version")
    m = re.search(r"LLVM version (\S+)", proc.stdout)
    return m.group(1) if m else "unknown"


def _cache_file(mcpu: str) -> Path:
    from nrqc.emulator.rootfs import cache_dir

    return cache_dir() / "mca" / f"{mcpu}-llvm{_tool_version()}.json"


def _load_cache(path: Path) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # absent or damaged: the cache only saves time


def _save_cache(path: Path, cache: dict[str, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mca-")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory costs time, not correctness


def _block_key(words: tuple[int, ...]) -> str:
    return "tb_" + hashlib.sha1(b"".join(w.to_bytes(4, "little") for w in words)).hexdigest()[:20]  # per mcpu file


def estimate_cycles(executed: list[tuple[tuple[int, ...], int]], mcpu: str, use_cache: bool = True) -> dict:
    """Estimated cycles of executed blocks, each given as (instruction words, executions).

    Returns ``{"cycles", "mcpu", "distinct_blocks", "what"}``.
    """
    missing = missing_tools()
    if missing:
        raise NrqcError("cannot estimate cycles: missing " + "; ".join(missing))
    per_block: dict[str, tuple[int, ...]] = {}
    for words, _n in executed:
        per_block.setdefault(_block_key(words), words)
    cache_path = _cache_file(mcpu)
    cache = _load_cache(cache_path) if use_cache else {}
    todo = {k: w for k, w in per_block.items() if k not in cache}
    if todo:
        if triple_for(mcpu) == "aarch64":
            text = disassemble([w for ws in todo.values() for w in ws], mcpu)
            blocks = {k: [text[w] for w in ws] for k, ws in todo.items()}
        else:
            blocks = _disassemble_in_order(todo, mcpu)
        cache.update(mca_cycles(blocks, mcpu))
        if use_cache:
            _save_cache(cache_path, cache)
    # fsum: exactly rounded, so the total does not depend on the order of the blocks
    cycles = math.fsum(cache[_block_key(words)] * n for words, n in executed)
    return {"cycles": int(round(cycles)), "mcpu": mcpu, "distinct_blocks": len(per_block), "what": WHAT}
