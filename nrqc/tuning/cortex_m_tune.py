"""`nrqc tune --target cortex-m4`: search the Cortex-M kernels' parameters by QEMU instruction count.

The space is whatever the Cortex-M back end declares (`knob_space`, the one function to
re-point when the kernels' parameters move: today nrqc.cortex_m.knobs.SPACE, per kernel
key). The measure is the whole model's executed instructions per inference in QEMU
(`-icount shift=0`, SysTick; nrqc.cortex_m.firmware), taken from the compile's own check,
so every candidate is also checked against onnxruntime; it is deterministic, so each
candidate is compiled and run once. A candidate that does not fit the target's flash/RAM
fails its compile and is skipped.

Search: coordinate descent, kernel by kernel (in model order), knob by knob: every value of
one knob with the others at their best so far; the model's count decides; ties keep the
default. The choices go to DIR/<target>-<key>/cortex_m_knobs.json (nrqc.tuning.cortex_m_db),
which `nrqc compile --db DIR` applies.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from nrqc.errors import NrqcError
from nrqc.tuning.cortex_m_db import write_knobs

MEASURE = "QEMU executed instructions per inference (-icount shift=0, SysTick), whole model"


def knob_space(layers: list[dict]) -> dict[str, dict[str, tuple]]:
    """kernel key -> {knob: allowed values} for the kernels a compile built (its manifest's
    layers record each hand-written kernel's key and op)."""
    from nrqc.cortex_m import knobs

    space = {}
    for layer in layers:
        s = layer.get("strategy") or {}
        key = s.get("knob_key")
        if key and key not in space:
            space[key] = knobs.choices(key.split(":", 1)[0])
    return {k: v for k, v in space.items() if v}


def _measure(model, target_name: str, config: dict, shapes, work: Path, n: int, log) -> tuple[int | None, dict]:
    """Compile with `config` applied through a knob database (as `nrqc compile --db` does)
    and return (instructions, manifest); None when the candidate does not build or fit."""
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.targets import get_target

    db = work / f"db{n}"
    write_knobs(db, get_target(target_name), config, {"measure": "candidate"})
    out = work / f"c{n}"
    try:
        compile_model(model, target_name, out, CompileOptions(shapes=shapes or {}, db=str(db)), log=lambda m: None)
    except NrqcError as e:
        log(f"    candidate {config}: {str(e).splitlines()[0][:160]}")
        return None, {}
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest.get("instructions"), manifest


def tune_cortex_m(model, target, db_dir, shapes=None, log=print) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nrqc-tune-cm-") as tmp:
        work = Path(tmp)
        n = 0
        best_n, manifest = _measure(model, target.name, {}, shapes, work, n, log)
        if best_n is None:
            raise NrqcError(f"{model}: the default build for {target.name} failed; nothing to tune")
        base = best_n
        space = knob_space(manifest.get("layers") or [])
        log(f"default build: {base:,} instructions per inference; {len(space)} tunable kernel(s)"
            + (": " + ", ".join(f"{k} {sorted(v)}" for k, v in space.items()) if space else ""))
        config: dict[str, dict] = {}
        trials = [{"config": {}, "instructions": base}]
        from nrqc.cortex_m import knobs as cm_knobs

        for key, knobs in space.items():
            for knob, values in knobs.items():
                for value in values:
                    current = {**cm_knobs.defaults(key.split(":", 1)[0]), **config.get(key, {})}
                    if current.get(knob) == value:  # already measured (the default, or the best so far)
                        continue
                    cand = {**config, key: {**config.get(key, {}), knob: value}}
                    n += 1
                    got, _m = _measure(model, target.name, cand, shapes, work, n, log)
                    trials.append({"config": cand, "instructions": got})
                    log(f"  [{n}] {key} {knob}={value}: "
                        + (f"{got:,} instructions" if got is not None else "failed"))
                    if got is not None and got < best_n:
                        best_n, config = got, cand
    summary = {"measure": MEASURE, "instructions": {"default": base, "tuned": best_n}, "trials": trials,
               "model": str(Path(model).resolve()), "seconds": round(time.perf_counter() - t0, 1)}
    path = write_knobs(db_dir, target, config, summary)
    log(f"tuned {len(space)} kernel(s) in {len(trials)} builds: {base:,} -> {best_n:,} instructions per inference "
        f"({base / best_n:.3f}x); choices in {path}")
    return summary
