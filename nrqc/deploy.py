"""`nrqc deploy`: upload an artifact to a board over TVM RPC, run it there, and check its
outputs against onnxruntime running the original ONNX model on this host."""
from __future__ import annotations

from pathlib import Path

from nrqc.artifact import read_manifest
from nrqc.backends import backend_of_manifest
from nrqc.board_check import run_and_compare_on_board
from nrqc.errors import NrqcError
from nrqc.onnx_model import TensorSpec, random_inputs
from nrqc.runtime import load_inputs, parse_rpc


def deploy_artifact(out: str | Path, rpc: str, input_options: tuple[str, ...] = (), seed: int = 0,
                    atol: float = 1e-4, rtol: float = 1e-4, model: str | Path | None = None,
                    log=lambda m: None) -> dict:
    """Run artifact ``out`` on the board at ``rpc`` (HOST:PORT) and compare with onnxruntime.

    Inputs come from ``--input NAME=FILE.npy`` options; the others are seeded random.
    Returns a dict with ``passed``, ``max_abs_error``, per-output errors, the board's
    self-description (``board``: ``{"emulated": ...}``) and timings. Raises NrqcError on
    user errors (bad directory, address, input, missing ONNX model).
    """
    out = Path(out)
    manifest = read_manifest(out)
    parse_rpc(rpc)  # malformed address -> NrqcError before anything else
    backend_of_manifest(manifest).check_deploy(out)
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
