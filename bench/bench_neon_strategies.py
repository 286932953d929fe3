"""The binary x int8 strategies on a Raspberry Pi core, without a Pi: one model compiled once
per strategy (forced on every binary conv), instructions and llvm-mca cycles per build.

    python bench/bench_neon_strategies.py [--model vad|dnsmos] [--cpus cortex-a72,cortex-a76]
                                          [--work DIR] [--json out.json]

Each build is the same model (zoo `vad_tiny` or `dnsmos` BAM, torch seed 0, nrqc's exporter)
compiled for the core's target (cortex-a72: arm_cpu, cortex-a76: arm_cpu_a76) with one
strategy forced where nrqc would choose among them (the registry's candidates for that
target; the choice nrqc makes on its own is marked). Everything else in the builds is
identical, so the differences between them are the binary convs'. Counted on the emulated
board (`nrqc.emulator.icount.measure_instructions`: instructions executed in model.so for
one inference under `qemu -cpu` the core, one thread, seeded input, the outputs checked
against onnxruntime) and estimated by llvm-mca for that core (caches and memory ignored).
Deterministic: one count per build; ratios are between builds of this run. The strategies'
aarch64 cost figures (strategies/neon_unpacked.py MEASURED_ON) come from this script's VAD run.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

TARGET_OF_CPU = {"cortex-a72": "arm_cpu", "cortex-a76": "arm_cpu_a76"}


def _export(arch: str, path: Path) -> Path:
    import onnx
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    model, _ = to_onnx(build(arch, "bam"))
    onnx.save(model, str(path))
    return path


def _compile(model: Path, target_name: str, out: Path, strategy: str | None) -> dict:
    """Compile with `strategy` forced on every binary x int8 conv (None: nrqc's own choice)."""
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.targets.kernels import select

    chosen = {}
    orig = select.choose_int8_strategy

    def forced(g, target, measure=None):
        d = orig(g, target, measure)
        chosen[g] = d["strategy"]
        if strategy is not None:
            d = {**d, "strategy": strategy, "method": "forced by bench/bench_neon_strategies.py"}
        return d

    select.choose_int8_strategy = forced
    try:
        compile_model(str(model), target_name, str(out), CompileOptions(check=False), log=lambda m: None)
    finally:
        select.choose_int8_strategy = orig
    return chosen


def main() -> None:
    from nrqc.emulator.icount import measure_instructions
    from nrqc.onnx_model import load_model
    from nrqc.targets import get_target
    from nrqc.targets.kernels import strategies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["vad", "dnsmos"], default="vad")
    ap.add_argument("--cpus", default="cortex-a72,cortex-a76")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-neon-"))
    work.mkdir(parents=True, exist_ok=True)
    model = _export({"vad": "vad_tiny", "dnsmos": "dnsmos"}[a.model], work / f"{a.model}_bam.onnx")
    import onnxruntime as ort

    results = []
    for cpu in a.cpus.split(","):
        target = get_target(TARGET_OF_CPU[cpu])
        names = [s.NAME for s in strategies.for_target(target)]
        print(f"{a.model} BAM on {cpu} ({target.name}): candidates {', '.join(names)}", flush=True)
        rows = []
        for name in names:
            out = work / f"{a.model}_{target.name}_{name}"
            chosen = _compile(model, target.name, out, name)
            spec = load_model(str(model), {}).inputs[0]
            x = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
            r = measure_instructions(out, {spec.name: x}, estimate_cycles=True)
            ref = ort.InferenceSession(str(model)).run(None, {spec.name: x})[0]
            err = float(np.max(np.abs(r["outputs"][0] - ref)))
            row = {"cpu": cpu, "strategy": name, "instructions": r["instructions"],
                   "cycles": r["cycles"]["cycles"], "max_abs_error": err,
                   "nrqc_choice": sorted(set(chosen.values()))}
            rows.append(row)
            print(f"  {name:12s} {row['instructions']:>12,} instructions {row['cycles']:>12,} est. cycles"
                  f"   max abs error vs onnxruntime {err:.2g}", flush=True)
        base = next(r for r in rows if r["strategy"] == "bitserial")
        for r in rows:
            r["vs_bitserial_instructions"] = round(r["instructions"] / base["instructions"], 3)
            r["vs_bitserial_cycles"] = round(r["cycles"] / base["cycles"], 3)
        print(f"  nrqc's own choice: {', '.join(rows[0]['nrqc_choice'])}; ratios to bitserial (whole model): " +
              ", ".join(f"{r['strategy']} {r['vs_bitserial_instructions']:.2f}x instr / {r['vs_bitserial_cycles']:.2f}x cyc"
                        for r in rows))
        results += rows
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
