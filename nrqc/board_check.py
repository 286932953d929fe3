"""The compile-time numerical check for libraries that do not run on this host (arm_cpu,
armv7) or that the user wants checked on a board (``nrqc compile --rpc HOST:PORT``).

Where the check runs, in order:

1. ``--rpc HOST:PORT``: on that board (a Pi's ``python -m tvm.exec.rpc_server`` or
   ``nrqc emulate arm_cpu``), compared with onnxruntime here, as ``nrqc deploy`` does;
2. aarch64 without ``--rpc``, when the emulated board's cached root file system already
   exists: on the emulated board (qemu user mode, the official aarch64 TVM runtime),
   labelled as emulated in the manifest and the report. The root file system is never
   built here (that is ``nrqc emulate arm_cpu``'s job: ~45 s and ~135 MB of downloads);
3. otherwise the check does not run, and ``check.reason`` says why and how to run it.

The returned dict is the manifest's ``check``: ``ran``, and when it ran ``passed``,
``max_abs_error``, ``where`` (``board`` / ``emulated``), ``emulated`` and ``summary``.
"""
from __future__ import annotations

import sys

from nrqc.errors import NrqcError


def _log(msg: str) -> None:
    print(f"[nrqc compile] {msg}", file=sys.stderr, flush=True)


def check_off_host(stage, m, manifest: dict, options, target) -> dict:
    """Run the numerical check of a built library somewhere other than this process."""
    from nrqc.onnx_model import random_inputs

    feeds = random_inputs(m.inputs, options.seed)
    rpc = getattr(options, "rpc", None)
    if rpc:
        return _check_on_board(stage, m, manifest, options, feeds, rpc)
    triple = str(target.tvm_target.get("mtriple", ""))
    how = (f"check on a board with `nrqc compile ... --target {target.name} --rpc HOST:PORT` "
           f"or later with `nrqc deploy OUT --rpc HOST:PORT`")
    if not triple.startswith("aarch64"):
        return {"ran": False,
                "reason": f"{target.name} ({triple}) library cannot run on this host and there is no emulated "
                          f"{target.name} board (no official TVM runtime wheel for it); {how}"}
    from nrqc.emulator.guest_run import unavailable_reason

    reason = unavailable_reason()
    if reason:
        return {"ran": False,
                "reason": f"no --rpc board given and {reason}: build it once with `nrqc emulate {target.name}` "
                          f"(later compiles then check on the emulated board), or {how}"}
    return _check_emulated(stage, m, manifest, options, feeds)


def _check_on_board(stage, m, manifest, options, feeds, rpc: str) -> dict:
    from nrqc.deploy import run_and_compare_on_board

    res = run_and_compare_on_board(stage, manifest, rpc, feeds, m.path, options.atol, options.rtol, options.seed,
                                   log=_log)
    emulated = bool(res["board"].get("emulated"))
    label = f"the board at {rpc}" + (" (EMULATED: qemu user mode, not a Raspberry Pi)" if emulated else "")
    res.update({"where": "board", "emulated": emulated, "board_label": label})
    res["summary"] = res["summary"].replace("numerical check", f"numerical check on {label}", 1)
    return res


def _check_emulated(stage, m, manifest, options, feeds) -> dict:
    from pathlib import Path

    import numpy as np

    from nrqc.artifact import LIBRARY
    from nrqc.compiler import compare_outputs
    from nrqc.emulator.guest_run import LABEL, SHORT_LABEL, run_emulated
    from nrqc.reference import run_onnxruntime

    _log("numerical check on the emulated aarch64 board (cached root file system, qemu user mode); "
         "no --rpc board given")
    names = [s.name for s in m.inputs]
    try:
        got, info = run_emulated(Path(stage) / manifest.get("library", LIBRARY), names, feeds)
    except NrqcError as e:
        # The library itself may be what fails: a failed check, not a usage error.
        return {"ran": True, "passed": False, "max_abs_error": None, "where": "emulated", "emulated": True,
                "board_label": LABEL, "summary": f"numerical check on the {SHORT_LABEL}: {e}"}
    _log(f"ran on the emulated board in {info['seconds']:.1f} s; onnxruntime reference here")
    ref = run_onnxruntime(m.path, feeds)
    res = compare_outputs([np.asarray(g) for g in got], ref, [o.name for o in m.outputs], options.atol,
                          options.rtol, options.seed)
    res.update({"where": "emulated", "emulated": True, "board_label": LABEL, "emulator": info["emulator"],
                "board_run_seconds": info["seconds"]})
    res["summary"] = res["summary"].replace("numerical check", f"numerical check on the {SHORT_LABEL}", 1)
    return res
