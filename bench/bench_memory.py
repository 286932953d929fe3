"""Device memory of the all-integer BAM models against their float twins (issue 15 item 5).

For each pair (the default VAD BAM `vad_tiny` vs its float twin; the DNSMOS-like zoo BAM
`dnsmos` with a binary head at DNSMOS's input size 900 x 120 vs its float twin) the zoo
model is exported by nrqc's exporter (untrained: memory does not depend on the weight
values), compiled with `nrqc compile` for the target, and the compiled artifact's manifest
gives every figure (nrqc/memory.py): weights as the kernels store them, activations = the
static memory plan + the largest kernel scratch + the outputs, the input at its real width
(1 byte per element when the model quantizes its input itself, as the BAM models do: a
device computing its own features hands over int8), their total, and float / BAM ratios.

    python bench/bench_memory.py [--target x86] [--mcpu haswell] [--work DIR] [--dnsmos-shape 900,120]
                                 [--models vad,dnsmos] [--vad-binary-head]

The float twins are compiled with direct convolutions (NRQC_NO_WINOGRAD=1): Winograd would
store 16/9 of their conv weights, a larger float footprint than the model needs.

The goals of issue 15: VAD >= 8x, DNSMOS-like >= 25x, input included.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's nrqc when run from a checkout

from nrqc.memory import model_memory, reduction  # noqa: E402

GOALS = {"vad": 8.0, "dnsmos": 25.0}


def _export(arch: str, variant: str, path: Path, **kw) -> Path:
    import onnx
    import torch

    from nrqc.models import build
    from nrqc.training.onnx_export import to_onnx

    torch.manual_seed(0)
    model, _ = to_onnx(build(arch, variant, **kw).eval())
    onnx.save(model, str(path))
    return path


def _compile(model: Path, out: Path, target: str, mcpu: str | None, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "nrqc", "compile", str(model), "--target", target, "-o", str(out)]
    if mcpu:
        cmd += ["--mcpu", mcpu]
    print(f"[bench_memory] nrqc compile {model.name} --target {target}{' --mcpu ' + mcpu if mcpu else ''}",
          file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"nrqc compile {model} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads((out / "manifest.json").read_text())


def _row(label: str, m: dict, plan: dict) -> str:
    return (f"  {label:<7}{m['weights_bytes']:>11,}{plan.get('planned_storage_bytes', 0):>11,}"
            f"{plan.get('max_kernel_scratch_bytes', 0):>11,}{m['activation_bytes']:>12,}"
            f"{m['input_bytes']:>10,}{m['total_bytes']:>11,}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x86")
    ap.add_argument("--mcpu", default=None, help="x86: build for this CPU (default: the host's)")
    ap.add_argument("--work", default=None, help="keep the ONNX files and artifacts here")
    ap.add_argument("--dnsmos-shape", default="900,120", help="frames,bands of the DNSMOS-like model")
    ap.add_argument("--vad-binary-head", action="store_true",
                    help="also the VAD with a binary 1x1 head (vad_tiny head_kind='binary'; not the default model)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", default="vad,dnsmos", help="comma-separated: vad, dnsmos")
    args = ap.parse_args(argv)
    frames, bands = (int(v) for v in args.dnsmos_shape.split(","))
    pairs = {
        "vad": ("vad_tiny", {}, "default VAD (vad_tiny [1, 100, 80])"),
        "dnsmos": ("dnsmos", {"frames": frames, "bands": bands, "head_kind": "binary"},
                   f"DNSMOS-like zoo model (dnsmos [1, {frames}, {bands}], binary head)"),
    }
    unknown = set(args.models.split(",")) - set(pairs)
    if unknown:
        raise SystemExit(f"bench_memory: --models {args.models}: unknown {', '.join(sorted(unknown))} (vad, dnsmos)")
    pairs = {k: v for k, v in pairs.items() if k in args.models.split(",")}
    if args.vad_binary_head:
        pairs["vad_binary_head"] = ("vad_tiny", {"head_kind": "binary"}, "VAD with a binary 1x1 head (not the default)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for key, (arch, kw, title) in pairs.items():
            mem, plans = {}, {}
            for variant in ("bam", "float"):
                onnx_path = _export(arch, variant, work / f"{key}_{variant}.onnx", **kw)
                # the float twin with direct convs: Winograd would store 16/9 of its conv
                # weights, a larger float footprint than the model needs (a flattering ratio)
                man = _compile(onnx_path, work / f"{key}_{variant}-{args.target}", args.target, args.mcpu,
                               env={"NRQC_NO_WINOGRAD": "1"} if variant == "float" else None)
                mem[variant] = model_memory(man)
                plan = man.get("memory_plan") or {}
                # the entry point the figures count (main_int8 when the input is counted as int8)
                plans[variant] = (plan.get("entry_points") or {}).get(mem[variant]["entry_point"], plan)
                mem[variant]["weights_bytes_by_dtype"] = man["weights_bytes_by_dtype"]
            r = reduction(mem["bam"], mem["float"])
            results[key] = {"title": title, "bam": mem["bam"], "float": mem["float"], "ratio": r,
                            "goal": GOALS.get(key, GOALS["vad"]), "plans": plans}
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    print(f"device memory in bytes, target {args.target}{' (' + args.mcpu + ')' if args.mcpu else ''}; "
          f"activations = static plan + largest kernel scratch + outputs; input at its real width")
    for key, res in results.items():
        print(f"\n{res['title']}")
        print(f"  {'':<7}{'weights':>11}{'plan':>11}{'scratch':>11}{'activations':>12}{'input':>10}{'total':>11}")
        for variant in ("bam", "float"):
            print(_row(variant, res[variant], res["plans"][variant]))
        r = res["ratio"]
        print(f"  float / bam: weights {r['weights_bytes']:.1f}x, activations {r['activation_bytes']:.1f}x, "
              f"input {r['input_bytes']:.1f}x, total {r['total_bytes']:.1f}x "
              f"(goal >= {res['goal']:g}x: {'met' if r['total_bytes'] >= res['goal'] else 'MISSED'})")
        b = res["bam"]
        parts = {"weights": b["weights_bytes"], "activations": b["activation_bytes"], "input": b["input_bytes"]}
        top = max(parts, key=parts.get)
        print(f"  bam: {top} is the largest part ({100 * parts[top] / b['total_bytes']:.0f} % of its total); "
              f"weights by dtype " + ", ".join(f"{k} {v:,}" for k, v in sorted(b["weights_bytes_by_dtype"].items())))
        per_kernel = res["plans"]["bam"].get("kernel_scratch_bytes") or {}
        if per_kernel:
            print("  bam kernel scratch (the largest counts): " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(per_kernel.items(), key=lambda kv: -kv[1])))
    return results


if __name__ == "__main__":
    main()
