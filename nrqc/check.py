"""The numerical check: a built model's outputs against onnxruntime's on the same input.

`compare_outputs` is the one comparison every check uses (this host, a board, the emulated
board, a Cortex-M firmware in QEMU, `nrqc deploy`, the profiler's instruction-count run);
`check_in_fresh_process` is the check of a library this host can load. The result dict is
what the manifest's `check` records: `ran`, `passed`, `max_abs_error`, tolerances, `seed`,
per-output errors and a one-line `summary`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nrqc.artifact import MANIFEST, write_json
from nrqc.onnx_model import random_inputs


def compare_outputs(got: list[np.ndarray], ref: list[np.ndarray], names: list[str], atol: float, rtol: float,
                    seed: int) -> dict:
    worst = 0.0
    passed = True
    per_output = {}
    for name, g, r in zip(names, got, ref):
        g = np.asarray(g, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            per_output[name] = {"max_abs_error": None, "shape": list(g.shape), "expected_shape": list(r.shape)}
            passed = False
            continue
        err = float(np.max(np.abs(g - r))) if g.size else 0.0
        ok = bool(np.all(np.abs(g - r) <= atol + rtol * np.abs(r)))
        per_output[name] = {"max_abs_error": err, "passed": ok}
        worst = max(worst, err)
        passed &= ok
    summary = (f"numerical check vs onnxruntime (seed {seed}): max abs error {worst:.3g} "
               f"({'within' if passed else 'OVER'} atol {atol:g} + rtol {rtol:g})")
    return {"ran": True, "passed": passed, "max_abs_error": worst, "atol": atol, "rtol": rtol, "seed": seed,
            "outputs": per_output, "summary": summary}


def check_in_fresh_process(stage: Path, m, manifest: dict, options) -> dict:
    """Run the library written in `stage` on a seeded input in a new process, as `nrqc run`
    loads it, and compare with onnxruntime running the source model `m` here."""
    from nrqc.fresh_run import FreshRunFailed, run_in_fresh_process
    from nrqc.reference import run_onnxruntime

    inputs = random_inputs(m.inputs, options.seed)
    ref = run_onnxruntime(m.path, {**inputs, **m.constants})
    names = [o.name for o in m.outputs]
    # The artifact as written, in a new process, as `nrqc run` loads it (never the
    # in-memory module): an over-read or a wrong ISA shows here, not at the user's.
    write_json(stage / MANIFEST, manifest)
    try:
        got = run_in_fresh_process(stage, [s.name for s in m.inputs], inputs, names)
    except FreshRunFailed as e:
        return {"ran": True, "passed": False, "max_abs_error": None, "atol": options.atol, "rtol": options.rtol,
                "seed": options.seed, "where": "fresh process", "summary": f"numerical check: {e}"}
    res = compare_outputs(got, ref, names, options.atol, options.rtol, options.seed)
    res["where"] = "fresh process"
    return res
