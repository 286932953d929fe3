"""Flash and RAM per layer of a Cortex-M library (issue 18 item 2), from what the build
produced: the kernel functions' sizes in the compiled object (arm-none-eabi-nm), the weight
arrays each kernel call reads, the arena ranges it reads and writes (the static plan's
offsets), and its stack frame (-fstack-usage).

Per kernel call of `nrqc_run`, in execution order:

* code: the bytes of its `__tvm_ffi_<kernel>` function (a kernel called twice counts once,
  at its first call);
* weights: the const arrays it reads (an array shared by several kernels, e.g. a threshold
  sign vector, counts at its first reader);
* arena: the bytes of the arena it reads or writes during the call (inputs, outputs and
  scratch such as the nibble tables): what must be resident in RAM while that layer runs;
  the arena itself is the maximum over calls of the bytes live at once (the static plan);
* stack: its frame.

What no kernel owns (the generated callers `nrqc_run`/`nrqc_run_int8` with their DLTensor
shapes, the arena allocator stubs) is one "caller + runtime" row, so the rows add up to the
library's flash.
"""
from __future__ import annotations

import numpy as np


def _nbytes(buf) -> int:
    return int(np.prod(buf.shape, dtype=np.int64)) * np.dtype("uint8" if buf.dtype == "bool" else buf.dtype).itemsize


def per_call(plan, layers, symbols: dict[str, int], frames: dict[str, int]) -> list[dict]:
    """One row per kernel call of `plan` (emit.CallerPlan of nrqc_run)."""
    by_kernel: dict[str, list[str]] = {}
    for layer in layers:
        kernel = str(layer.kernel or "")
        if ":" in kernel:
            by_kernel.setdefault(kernel.split(":", 1)[1], []).append(layer.name or layer.op)
    seen_code: set[str] = set()
    seen_weights: set[int] = set()
    rows = []
    for name, bufs in plan.calls:
        weights = 0
        for b in bufs:
            if b.kind == "weight" and b.ref not in seen_weights:
                seen_weights.add(b.ref)
                weights += plan.weights[b.ref].nbytes
        ranges = {(b.ref, _nbytes(b)) for b in bufs if b.kind == "arena"}
        code = symbols.get(f"__tvm_ffi_{name}", 0) if name not in seen_code else 0
        seen_code.add(name)
        rows.append({"kernel": name, "layers": by_kernel.get(name, []), "code_bytes": code,
                     "weight_bytes": weights, "flash_bytes": code + weights,
                     "arena_bytes": _union_bytes(ranges), "stack_bytes": frames.get(f"__tvm_ffi_{name}", 0)})
    return rows


def _union_bytes(ranges) -> int:
    """Bytes covered by (offset, size) ranges (views of one storage may overlap)."""
    total, end = 0, -1
    for start, size in sorted(ranges):
        stop = start + size
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def table(rows: list[dict], flash_total: int) -> dict:
    """The rows plus the 'caller + runtime' remainder, so flash adds up to the library's."""
    rest = flash_total - sum(r["flash_bytes"] for r in rows)
    return {"calls": rows, "caller_runtime_flash_bytes": rest}


def format_lines(per_layer: dict, arena_bytes: int) -> list[str]:
    lines = ["", "cortex-m flash and RAM per layer (kernel calls of nrqc_run in order; code and weights counted once, "
             "at their first user)",
             f"  {'kernel':<44} {'code B':>7} {'weights B':>10} {'flash B':>8} {'arena B':>8} {'stack B':>8}  layers"]
    for r in per_layer["calls"]:
        lines.append(f"  {r['kernel']:<44} {r['code_bytes']:>7,} {r['weight_bytes']:>10,} {r['flash_bytes']:>8,} "
                     f"{r['arena_bytes']:>8,} {r['stack_bytes']:>8,}  {', '.join(r['layers']) or '-'}")
    lines.append(f"  {'caller + runtime (nrqc_run*, shapes, stubs)':<44} {'':>7} {'':>10} "
                 f"{per_layer['caller_runtime_flash_bytes']:>8,}")
    lines.append(f"  (arena B: the arena bytes a call reads or writes; the arena, {arena_bytes:,} B, is the most "
                 f"live at once)")
    return lines
