"""The binary x int8 strategies on a Raspberry Pi core, without a Pi: one model compiled once
per strategy (forced on every binary conv), instructions and llvm-mca cycles per build.

    python bench/bench_neon_strategies.py [--model vad|dnsmos|pm1] [--cpus cortex-a72,cortex-a76]
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

``--model pm1``: the +-1 x +-1 strategies instead. A chain model (tests/binary_models.py,
seed 0, 24x24 input): a float first conv to a {0,1} map of 64 channels, one +-1 3x3 conv
64 -> 64 on it (AND encoding), two +-1 3x3 convs 64 -> 64 on Sign maps (XNOR encoding).
Two builds: the generic TE popcount kernels (and, xnor) and the NEON ones (neon_and,
neon_xnor), forced per encoding. Besides the whole model, each build's binary-conv kernels
are counted alone (the executed blocks inside their symbols in model.so), and their
llvm-mca cycles per step (tap visit x input word x 4 output channels) are printed: the
figures of strategies/neon_popcount.py (CYCLES_PER_STEP) and and_popcount.py come from it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
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


def _export_pm1(path: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.binary_models (the repository root)
    from tests import binary_models as bm

    layers = [dict(c_out=64, c_first=64, weights="binary", act="sign"),
              dict(c_out=64, weights="binary", act="sign", input_sign=True),
              dict(c_out=64, weights="binary", act="sign", input_sign=True)]
    return bm.chain_model(path, layers, x_shape=(1, 1, 24, 24), seed=0, first_act="greater")


# the +-1 x +-1 builds of --model pm1: the strategy forced per input encoding
PM1_BUILDS = {"generic": {"01": "and", "pm1": "xnor"}, "neon": {"01": "neon_and", "pm1": "neon_xnor"}}


def _compile(model: Path, target_name: str, out: Path, strategy) -> dict:
    """Compile with `strategy` forced on every binary x int8 conv (None: nrqc's own choice;
    a dict: the +-1 x +-1 strategy per input encoding). Returns [(geometry, encoding, nrqc's choice)]
    per layer choice."""
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.targets.kernels import select

    chosen = []
    orig = select.choose_int8_strategy

    def forced(g, target, measure=None, encoding=None):
        d = orig(g, target, measure, encoding)
        chosen.append((g, encoding, d["strategy"]))
        force = strategy.get(encoding) if isinstance(strategy, dict) else (strategy if encoding is None else None)
        if force is not None:
            d = {**d, "strategy": force, "method": "forced by bench/bench_neon_strategies.py"}
        return d

    select.choose_int8_strategy = forced
    try:
        compile_model(str(model), target_name, str(out), CompileOptions(check=False), log=lambda m: None)
    finally:
        select.choose_int8_strategy = orig
    return chosen


_KERNEL_SYMBOL = re.compile(r"^([0-9a-f]+) ([0-9a-f]+) [Tt] \S*bconv_binary_(\w+?)_(?:pack|float)_\d+", re.M)


def _kernel_ranges(lib: Path) -> dict[str, tuple[int, int]]:
    """Each binary-conv kernel's code in model.so by symbol (its packed-function wrapper and
    its compute function), named by strategy: {"<strategy>#<i>": (address, size)}."""
    nm = subprocess.run(["aarch64-linux-gnu-nm", "--print-size", "--defined-only", str(lib)],
                        capture_output=True, text=True, check=True).stdout
    ranges = {}
    for i, m in enumerate(_KERNEL_SYMBOL.finditer(nm)):
        ranges[f"{m.group(3)}#{i}"] = (int(m.group(1), 16), int(m.group(2), 16))
    return ranges


def _pm1_steps(chosen: list) -> dict[str, int]:
    """Steps (tap visit x input word x 4 output channels) of the model's +-1 convs per encoding."""
    from nrqc.targets.kernels.strategies.estimates import taps

    steps: dict[str, int] = {}
    for g, encoding, _s in chosen:
        if encoding is not None:
            steps[encoding] = steps.get(encoding, 0) + taps(g) * g.words_in // 4
    return steps


def main() -> None:
    from nrqc.emulator.icount import measure_instructions
    from nrqc.onnx_model import load_model
    from nrqc.targets import get_target
    from nrqc.targets.kernels import strategies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["vad", "dnsmos", "pm1"], default="vad")
    ap.add_argument("--cpus", default="cortex-a72,cortex-a76")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-neon-"))
    work.mkdir(parents=True, exist_ok=True)
    pm1 = a.model == "pm1"
    if pm1:
        model = _export_pm1(work / "pm1.onnx")
    else:
        model = _export({"vad": "vad_tiny", "dnsmos": "dnsmos"}[a.model], work / f"{a.model}_bam.onnx")
    import onnxruntime as ort

    results = []
    for cpu in a.cpus.split(","):
        target = get_target(TARGET_OF_CPU[cpu])
        builds = dict(PM1_BUILDS) if pm1 else {s.NAME: s.NAME for s in strategies.for_target(target)}
        what = "+-1 chain model" if pm1 else "BAM"
        print(f"{a.model} {what} on {cpu} ({target.name}): builds {', '.join(builds)}", flush=True)
        rows = []
        for name, forced in builds.items():
            out = work / f"{a.model}_{target.name}_{name}"
            chosen = _compile(model, target.name, out, forced)
            spec = load_model(str(model), {}).inputs[0]
            x = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
            ranges = _kernel_ranges(out / "model.so") if pm1 else None
            r = measure_instructions(out, {spec.name: x}, estimate_cycles=True, code_ranges=ranges)
            ref = ort.InferenceSession(str(model)).run(None, {spec.name: x})[0]
            err = float(np.max(np.abs(r["outputs"][0] - ref)))
            row = {"cpu": cpu, "strategy": name, "instructions": r["instructions"],
                   "cycles": r["cycles"]["cycles"], "max_abs_error": err,
                   "nrqc_choice": sorted({s for _g, _e, s in chosen})}
            print(f"  {name:12s} {row['instructions']:>12,} instructions {row['cycles']:>12,} est. cycles"
                  f"   max abs error vs onnxruntime {err:.2g}", flush=True)
            if pm1:
                steps = _pm1_steps(chosen)
                for encoding, strategy in forced.items():
                    mine = [v for k, v in r["by_range"].items() if k.split("#")[0] == strategy]
                    ins, cyc = sum(v["instructions"] for v in mine), sum(v["cycles"] for v in mine)
                    row[strategy] = {"kernel_symbols": len(mine), "instructions": ins, "cycles": cyc, "steps": steps[encoding],
                                     "cycles_per_step": round(cyc / steps[encoding], 3)}
                    print(f"    {strategy:10s} ({encoding} maps, {len(mine)} kernel symbols, {steps[encoding]:,} steps): "
                          f"{ins:>10,} instructions {cyc:>10,} est. cycles = {cyc / steps[encoding]:.3f} cycles/step",
                          flush=True)
            rows.append(row)
        base = rows[0]  # bitserial, or the generic +-1 kernels
        for r in rows:
            r["vs_base_instructions"] = round(r["instructions"] / base["instructions"], 3)
            r["vs_base_cycles"] = round(r["cycles"] / base["cycles"], 3)
        print(f"  nrqc's own choice: {', '.join(rows[0]['nrqc_choice'])}; ratios to {base['strategy']} (whole model): " +
              ", ".join(f"{r['strategy']} {r['vs_base_instructions']:.2f}x instr / {r['vs_base_cycles']:.2f}x cyc"
                        for r in rows))
        results += rows
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
