"""Running a written library somewhere other than this process and checking it against
onnxruntime here: on a board over TVM RPC (``nrqc compile --rpc``, ``nrqc deploy``) or on
the emulated aarch64 board (qemu user mode, the official aarch64 TVM runtime).

The back ends decide where a check runs (nrqc.backends); this module runs it. Each
returns the manifest's ``check`` dict (nrqc.check.compare_outputs's, plus ``where``:
``board`` / ``emulated``, ``emulated`` and a ``summary`` naming the place), or, when it
cannot run, ``ran: False`` and a ``reason`` that says how to run it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from nrqc.artifact import LIBRARY
from nrqc.check import compare_outputs
from nrqc.errors import NrqcError
from nrqc.onnx_model import last_line, random_inputs
from nrqc.reference import manifest_constants, run_onnxruntime
from nrqc.runtime import ArtifactSession, connect_rpc, rpc_deadline


def _log(msg: str) -> None:
    print(f"[nrqc compile] {msg}", file=sys.stderr, flush=True)


def check_on_board(stage, m, manifest: dict, options) -> dict:
    """The compile-time check on the board at ``options.rpc``."""
    rpc = options.rpc
    feeds = random_inputs(m.inputs, options.seed)
    res = run_and_compare_on_board(stage, manifest, rpc, feeds, m.path, options.atol, options.rtol, options.seed,
                                   log=_log)
    emulated = bool(res["board"].get("emulated"))
    label = f"the board at {rpc}" + (" (EMULATED: qemu user mode, not a Raspberry Pi)" if emulated else "")
    res.update({"where": "board", "emulated": emulated, "board_label": label})
    res["summary"] = res["summary"].replace("numerical check", f"numerical check on {label}", 1)
    return res


def check_without_board(stage, m, manifest: dict, options, target) -> dict:
    """The compile-time check of a cross-compiled library when no ``--rpc`` board is given:
    on the emulated board when the target has one and its cached root file system exists
    (never built here: that is ``nrqc emulate``'s job, ~45 s and ~135 MB of downloads),
    otherwise not run, with the reason."""
    triple = str(target.tvm_target.get("mtriple", ""))
    how = (f"check on a board with `nrqc compile ... --target {target.name} --rpc HOST:PORT` "
           f"or later with `nrqc deploy OUT --rpc HOST:PORT`")
    if target.backend.emulator is None:
        return {"ran": False,
                "reason": f"{target.name} ({triple}) library cannot run on this host and there is no emulated "
                          f"{target.name} board (no official TVM runtime wheel for it); {how}"}
    from nrqc.emulator.guest_run import unavailable_reason

    reason = unavailable_reason()
    if reason:
        return {"ran": False,
                "reason": f"no --rpc board given and {reason}: build it once with `nrqc emulate {target.name}` "
                          f"(later compiles then check on the emulated board), or {how}"}
    return _check_emulated(stage, m, manifest, options, random_inputs(m.inputs, options.seed))


def _check_emulated(stage, m, manifest, options, feeds) -> dict:
    from nrqc.emulator.board import qemu_cpu_for
    from nrqc.emulator.guest_run import LABEL, SHORT_LABEL, run_emulated

    _log("numerical check on the emulated aarch64 board (cached root file system, qemu user mode); "
         "no --rpc board given")
    names = [s.name for s in m.inputs]
    try:
        # the core the target builds for (a Pi 5 build under cortex-a76, never qemu's "max")
        got, info = run_emulated(Path(stage) / manifest.get("library", LIBRARY), names, feeds,
                                 cpu=qemu_cpu_for(manifest.get("tvm_target")))
    except NrqcError as e:
        # The library itself may be what fails: a failed check, not a usage error.
        return {"ran": True, "passed": False, "max_abs_error": None, "where": "emulated", "emulated": True,
                "board_label": LABEL, "summary": f"numerical check on the {SHORT_LABEL}: {e}"}
    _log(f"ran on the emulated board in {info['seconds']:.1f} s; onnxruntime reference here")
    ref = run_onnxruntime(m.path, {**feeds, **m.constants})
    res = compare_outputs([np.asarray(g) for g in got], ref, [o.name for o in m.outputs], options.atol,
                          options.rtol, options.seed)
    res.update({"where": "emulated", "emulated": True, "board_label": LABEL, "emulator": info["emulator"],
                "board_run_seconds": info["seconds"]})
    res["summary"] = res["summary"].replace("numerical check", f"numerical check on the {SHORT_LABEL}", 1)
    return res


def run_and_compare_on_board(out: Path, manifest: dict, rpc: str, feeds: dict[str, np.ndarray], src: Path,
                             atol: float, rtol: float, seed: int, log=lambda m: None) -> dict:
    """Upload ``out``'s library to the board at ``rpc``, run it on ``feeds``, run ``src`` in
    onnxruntime here, and compare (``nrqc deploy`` and the compile-time check on a board).

    Returns :func:`nrqc.check.compare_outputs`'s dict plus ``rpc``, ``board`` (what the
    board says about itself) and timings. A board that cannot load the library (wrong
    architecture, no TVM runtime) is an NrqcError naming the board.
    """
    from nrqc.emulator.board import remote_board_info

    lib = Path(out) / manifest.get("library", LIBRARY)
    log(f"connecting to {rpc}, uploading {lib.name} ({lib.stat().st_size / 1e6:.1f} MB)")
    t0 = time.perf_counter()
    failure = None
    try:
        session = ArtifactSession(out, manifest, rpc=rpc)
    except NrqcError:
        raise
    except Exception as e:  # noqa: BLE001 - the remote loader's error, e.g. an ELF of another machine
        failure = last_line(e)[:160]
    if failure is not None:
        # The failed session lives on in the exception's frames; a TVM rpc_server serves one
        # session at a time, so it must be closed before asking the board what it is.
        import gc

        gc.collect()
        arch = _remote_machine(rpc)
        raise NrqcError(f"--rpc {rpc}: the board{f' ({arch})' if arch else ''} cannot load {lib.name} built for "
                        f"{manifest.get('target')} ({(manifest.get('tvm_target') or {}).get('mtriple', 'host')}; "
                        f"is the board of that architecture?): {failure}")
    load_s = time.perf_counter() - t0
    with rpc_deadline(rpc, "asking the board what it is"):
        board = remote_board_info(session.remote)
    log(f"loaded on the board in {load_s:.1f} s; running")
    t0 = time.perf_counter()
    got = session.run(feeds)
    run_s = time.perf_counter() - t0
    log(f"ran on the board in {run_s:.2f} s (one call, incl. transfers); onnxruntime reference here")
    ref = run_onnxruntime(src, {**feeds, **manifest_constants(manifest)})
    names = [s["name"] for s in manifest["outputs"]]
    if len(got) != len(ref):
        raise NrqcError(f"{out}: the board returned {len(got)} outputs, onnxruntime {len(ref)} for {src}")
    check = compare_outputs([np.asarray(g) for g in got], ref, names, atol, rtol, seed)
    check.update({
        "rpc": rpc,
        "board": board,
        "upload_and_load_seconds": round(load_s, 3),
        "board_run_seconds": round(run_s, 3),
    })
    return check


def _remote_machine(rpc: str) -> str | None:
    """The board's machine (``uname -m``) if its server says (the emulated board does)."""
    from nrqc.emulator.board import remote_board_info

    try:
        remote = connect_rpc(rpc)
        with rpc_deadline(rpc, "asking the board what it is"):
            return remote_board_info(remote).get("machine")
    except Exception:  # noqa: BLE001 - only a detail of the message being built
        return None
