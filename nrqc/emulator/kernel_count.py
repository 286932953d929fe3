"""Instructions and estimated cycles of single kernels on the emulated board (tuning without a Pi).

``nrqc tune --target arm_cpu`` without ``--rpc-tracker`` measures each MetaSchedule
candidate here: the candidate's cross-linked ``.so`` is called once on seeded random
arguments under ``qemu -cpu`` the target's core, the instructions executed in that
library's own code are counted from qemu's TB log and their cycles estimated with
llvm-mca for that core (``icount``, ``mca``). Both are deterministic, so one measurement
per candidate is enough. Several candidates share one emulated run (their libraries load
at disjoint addresses, each TB is attributed by its address); if that run fails (a
candidate that crashes takes the others with it), each candidate is counted alone and only
the failing ones report an error.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nrqc.emulator import rootfs as _rootfs
from nrqc.emulator.icount import _guest_paths, counted_guest_run, require_tools
from nrqc.errors import NrqcError


def count_kernels(libs: list[str | Path], args: list[list[tuple[str, tuple[int, ...]]]], cpu: str,
                  estimate_cycles: bool = True, timeout: float = 1800, log=lambda m: None) -> list[dict | str]:
    """For each library (a TVM module whose function ``main`` takes tensors of the given
    (dtype, shape)): ``{"instructions", "cycles"}`` of one call, or an error string."""
    if not libs:  # MetaSchedule may hand over an empty batch
        return []
    require_tools(estimate_cycles)
    try:
        return _count_together(libs, args, cpu, estimate_cycles, timeout, log)
    except NrqcError as e:
        if len(libs) == 1:
            return [str(e).splitlines()[0][:300]]
        log(f"batch of {len(libs)} kernels failed ({str(e).splitlines()[0][:120]}); counting each alone")
    out: list[dict | str] = []
    for lib, a in zip(libs, args):
        try:
            out += _count_together([lib], [a], cpu, estimate_cycles, timeout, log)
        except NrqcError as e:
            out.append(str(e).splitlines()[0][:300])
    return out


def _count_together(libs, args, cpu, estimate_cycles, timeout, log) -> list[dict]:
    root = _rootfs.build_rootfs()
    host_dir, guest_dir = _guest_paths(root, cpu)
    try:
        spec = []
        for i, (lib, a) in enumerate(zip(libs, args)):
            shutil.copyfile(lib, host_dir / f"k{i}.so")
            spec.append({"lib": f"{guest_dir}/k{i}.so", "args": [[d, list(s)] for d, s in a]})
        (host_dir / "spec.json").write_text(json.dumps(spec))
        shutil.copyfile(Path(__file__).with_name("kernel_guest.py"), host_dir / "kernel_guest.py")
        run = counted_guest_run(root, cpu, [f"{guest_dir}/kernel_guest.py", f"{guest_dir}/spec.json"],
                                {"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, f"{len(libs)} kernel(s)",
                                timeout, log)
        by_path = {path: (start, size) for start, size, path in run.ranges}
        results = []
        for item in spec:
            where = by_path[item["lib"]]
            insns, _execs, _missing = run.counter.total(where=where)
            r = {"instructions": int(insns)}
            if estimate_cycles:
                from nrqc.emulator.mca import estimate_cycles as _estimate

                r["cycles"] = _estimate(run.counter.executed_blocks(where=where), cpu)["cycles"]
            results.append(r)
        return results
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
