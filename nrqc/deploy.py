"""`nrqc deploy`: upload an artifact to a board over TVM RPC, run it there, and check its
outputs against onnxruntime running the original ONNX model on this host."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nrqc.errors import NrqcError


def deploy_artifact(out: str | Path, rpc: str, input_options: tuple[str, ...] = (), seed: int = 0,
                    atol: float = 1e-4, rtol: float = 1e-4, model: str | Path | None = None,
                    log=lambda m: None) -> dict:
    """Run artifact ``out`` on the board at ``rpc`` (HOST:PORT) and compare with onnxruntime.

    Inputs come from ``--input NAME=FILE.npy`` options; the others are seeded random.
    Returns a dict with ``passed``, ``max_abs_error``, per-output errors, the board's
    self-description (``board``: ``{"emulated": ...}``) and timings. Raises NrqcError on
    user errors (bad directory, address, input, missing ONNX model).
    """
    from nrqc.artifact import read_manifest
    from nrqc.onnx_model import TensorSpec, random_inputs
    from nrqc.runtime import load_inputs, parse_rpc

    out = Path(out)
    manifest = read_manifest(out)
    parse_rpc(rpc)  # malformed address -> NrqcError before anything else
    if manifest.get("target_kind") == "bare-metal":
        raise NrqcError(f"{out}: built for {manifest.get('target')} (bare metal), which has no TVM RPC server; "
                        f"use `nrqc run {out}`")
    src = Path(model) if model else Path(manifest.get("source_model") or "")
    if not src.is_file():
        raise NrqcError(f"{out}: the source ONNX model '{src}' (manifest source_model) is not here; "
                        f"pass --model PATH.onnx for the onnxruntime reference")
    feeds = load_inputs(tuple(input_options), manifest)
    from_files = set(feeds)
    specs = [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["inputs"]]
    rand = random_inputs(specs, seed)
    for s in specs:
        feeds.setdefault(s.name, rand[s.name])

    check = run_and_compare_on_board(out, manifest, rpc, feeds, src, atol, rtol, seed, log)
    check.update({
        "artifact": str(out),
        "inputs": {k: ("file" if k in from_files else f"random (seed {seed})") for k in feeds},
    })
    return check


def run_and_compare_on_board(out: Path, manifest: dict, rpc: str, feeds: dict[str, np.ndarray], src: Path,
                             atol: float, rtol: float, seed: int, log=lambda m: None) -> dict:
    """Upload ``out``'s library to the board at ``rpc``, run it on ``feeds``, run ``src`` in
    onnxruntime here, and compare (``nrqc deploy`` and the compile-time check on a board).

    Returns :func:`nrqc.compiler.compare_outputs`'s dict plus ``rpc``, ``board`` (what the
    board says about itself) and timings. A board that cannot load the library (wrong
    architecture, no TVM runtime) is an NrqcError naming the board.
    """
    from nrqc.artifact import LIBRARY
    from nrqc.compiler import compare_outputs
    from nrqc.emulator.board import remote_board_info
    from nrqc.reference import run_onnxruntime
    from nrqc.runtime import ArtifactSession, rpc_deadline

    lib = Path(out) / manifest.get("library", LIBRARY)
    log(f"connecting to {rpc}, uploading {lib.name} ({lib.stat().st_size / 1e6:.1f} MB)")
    t0 = time.perf_counter()
    failure = None
    try:
        session = ArtifactSession(out, manifest, rpc=rpc)
    except NrqcError:
        raise
    except Exception as e:  # noqa: BLE001 - the remote loader's error, e.g. an ELF of another machine
        failure = _last_line(e)[:160]
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
    ref = run_onnxruntime(src, feeds)
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


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _remote_machine(rpc: str) -> str | None:
    """The board's machine (``uname -m``) if its server says (the emulated board does)."""
    from nrqc.emulator.board import remote_board_info
    from nrqc.runtime import connect_rpc, rpc_deadline

    try:
        remote = connect_rpc(rpc)
        with rpc_deadline(rpc, "asking the board what it is"):
            return remote_board_info(remote).get("machine")
    except Exception:  # noqa: BLE001 - only a detail of the message being built
        return None


def format_deploy(result: dict) -> str:
    board = result["board"]
    if board.get("emulated"):
        where = f"emulated {board.get('machine', '?')} board ({board.get('emulator', 'qemu')}): timings are not Pi timings"
    elif board:
        where = "board (plain TVM RPC server)"
    else:
        where = "board"
    lines = [f"{where} at {result['rpc']}",
             f"upload+load {result['upload_and_load_seconds']:.2f} s, one run {result['board_run_seconds']:.2f} s"]
    for name, o in result["outputs"].items():
        err = o.get("max_abs_error")
        if err is None:
            lines.append(f"  {name}: shape {o.get('shape')} != onnxruntime {o.get('expected_shape')}")
        else:
            lines.append(f"  {name}: max abs error {err:.3g} ({'ok' if o['passed'] else 'MISMATCH'})")
    lines.append(f"max abs error {result['max_abs_error']:.3g} vs onnxruntime: "
                 f"{'MATCH' if result['passed'] else 'MISMATCH'} (atol {result['atol']:g}, rtol {result['rtol']:g})")
    return "\n".join(lines)
