"""nrqc against onnxruntime on a Raspberry Pi core, without a Pi: instructions and estimated cycles.

    python bench/bench_arm.py [--models vad,helper_bam,dnsmos_bam,model_v8] [--cpus cortex-a72,cortex-a76]
                              [--work DIR] [--json out.json] [--report]

Every figure is counted on the emulated board (qemu-aarch64 user mode under `-cpu` the Pi's
core, the cached Debian arm64 root file system) the same way for both engines: aarch64
instructions executed in the engine's own library for one inference, one thread, the same
seeded input, and the llvm-mca estimate of the same executed blocks for that core
(nrqc.emulator.icount / peer_count / mca; caches and memory ignored). The figures are
deterministic: no repeats, no medians needed; ratios are between numbers of this run.

Per model (and per core: cortex-a72 = Pi 4, target arm_cpu; cortex-a76 = Pi 5, target
arm_cpu_a76):
  nrqc bam       the BAM model (binary maps, int8 weights) compiled by `nrqc compile`
  nrqc float     its float twin (same architecture, ReLU, float weights) compiled by nrqc
  ort fp32       onnxruntime 1.32 (official aarch64 wheel) on the float twin
  ort int8 QDQ   onnxruntime on onnxruntime.quantization.quantize_static of the float twin
                 (QDQ, per-channel int8 weights, uint8 activations, 8 random calibration inputs)
Models: the zoo VAD (`vad_tiny`, bam and float, nrqc's exporter), the zoo DNSMOS-like model
(`dnsmos`, bam and float), a BAM model written with onnx.helper without node names (and its
float twin, also nameless: tests/binary_models.bam_model), and DNSMOS model_v8
(shared/dnsmos/model_v8.onnx beside the repo, float: nrqc float vs ort fp32 and ort int8 QDQ of it).
The zoo models have untrained weights: instruction counts do not depend on the values.

Every counted run's outputs are checked (nrqc's against onnxruntime here, onnxruntime's
emulated run against onnxruntime here); results go to --json after each count, and a rerun
with the same --json skips what is there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.binary_models (the repository root, never tests/ itself)

TARGET_OF_CPU = {"cortex-a72": "arm_cpu", "cortex-a76": "arm_cpu_a76"}
ENGINES = ("nrqc bam", "nrqc float", "ort fp32", "ort int8 QDQ")


def _zoo(work: Path, arch: str) -> tuple[Path, Path]:
    import onnx
    import torch

    from nrqc.models.zoo import build
    from nrqc.training.onnx_export import to_onnx

    paths = []
    for variant in ("bam", "float"):
        p = work / f"zoo_{arch}_{variant}.onnx"
        if not p.exists():
            torch.manual_seed(0)
            net = build(arch, variant).eval()
            model, _ = to_onnx(net)
            onnx.save(model, str(p))
        paths.append(p)
    return paths[0], paths[1]


def _helper(work: Path) -> tuple[Path, Path]:
    from tests.binary_models import bam_model, renamed

    out = []
    for variant, float_model in (("bam", False), ("float", True)):
        p = work / f"helper_{variant}_no_names.onnx"
        if not p.exists():
            tmp = bam_model(work / f"helper_{variant}_named.onnx", frames=96, bands=40, channels=(16, 32, 32),
                            head=16, float_model=float_model)
            renamed(tmp, p, "empty")
        out.append(p)
    return out[0], out[1]


def _quantized(float_path: Path, work: Path) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from nrqc.onnx_model import graph_inputs

    out = work / (float_path.stem + "_qdq.onnx")
    if out.exists():
        return out
    model = onnx.load(str(float_path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:  # per-channel DequantizeLinear (its axis attribute) needs opset 13 (model_v8 is older)
        from onnx import version_converter

        float_path = work / (float_path.stem + "_opset13.onnx")
        onnx.save(version_converter.convert_version(model, 13), str(float_path))
    specs = graph_inputs(model, {}, float_path)
    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{s.name: rng.standard_normal(s.shape).astype(np.float32) for s in specs}
                              for _ in range(8)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def models(work: Path, names: list[str]) -> dict[str, dict[str, Path | None]]:
    """name -> {"bam": path or None, "float": path}."""
    out = {}
    for name in names:
        if name == "vad":
            bam, flt = _zoo(work, "vad_tiny")
        elif name == "dnsmos_bam":
            bam, flt = _zoo(work, "dnsmos")
        elif name == "helper_bam":
            bam, flt = _helper(work)
        elif name == "model_v8":
            from nrqc.shared_data import dnsmos_model

            bam, flt = None, dnsmos_model()
        else:
            raise SystemExit(f"unknown model {name!r}")
        out[name] = {"bam": bam, "float": flt, "qdq": _quantized(flt, work)}
    return out


def _nrqc(path: Path, target: str, work: Path, log) -> dict:
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.profiler import add_instruction_count

    out = work / f"{path.stem}-{target}"
    if not (out / "manifest.json").exists():
        compile_model(path, target, out, CompileOptions(check=False), log=lambda m: None)
    res: dict = {}
    add_instruction_count(res, out, log=log)
    return {"instructions": res["instructions"], "cycles": (res.get("estimated_cycles") or {}).get("cycles"),
            "check": res["instructions_check"], "artifact": str(out)}


def _ort(path: Path, cpu: str, log) -> dict:
    from nrqc.emulator.peer_count import count_onnxruntime
    from nrqc.profiler import _onnxruntime_check

    r = count_onnxruntime(path, cpu, log=log)
    return {"instructions": r["instructions"], "cycles": (r.get("cycles") or {}).get("cycles"),
            "check": _onnxruntime_check(path, r["outputs"], {}), "onnxruntime": r["onnxruntime"]}


def _table(results: dict, names: list[str], cpus: list[str]) -> str:
    lines = []
    for cpu in cpus:
        lines += ["", f"-cpu {cpu} (target {TARGET_OF_CPU[cpu]}): instructions / estimated cycles per inference",
                  f"  {'model':<12}{'engine':<14}{'instructions':>14}{'est. cycles':>14}"
                  f"{'vs ort fp32':>16}{'vs ort int8':>16}  check"]
        for name in names:
            rows = {e: results.get(f"{name}|{e}|{cpu}") for e in ENGINES}
            fp32, q = rows["ort fp32"], rows["ort int8 QDQ"]
            for e, r in rows.items():
                if r is None:
                    continue

                def rat(ref):
                    if not ref or not r.get("cycles") or not ref.get("cycles"):
                        return "-"
                    return f"{r['instructions'] / ref['instructions']:.2f}/{r['cycles'] / ref['cycles']:.2f}x"

                chk = r.get("check") or {}
                lines.append(f"  {name:<12}{e:<14}{r['instructions']:>14,}{r['cycles'] or 0:>14,}"
                             f"{rat(fp32):>16}{rat(q):>16}  "
                             + ("match" if chk.get("passed") else f"MISMATCH {chk}"))
    lines.append("  (ratios: this engine's instructions/cycles over the onnxruntime row's; < 1: fewer than onnxruntime)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vad,helper_bam,dnsmos_bam,model_v8")
    ap.add_argument("--cpus", default="cortex-a72,cortex-a76")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "nrqc-bench-arm"))
    ap.add_argument("--json", default=None, help="results file (also read: a rerun skips what it holds)")
    ap.add_argument("--report", action="store_true", help="only print the table of what --json holds")
    a = ap.parse_args(argv)
    names, cpus = a.models.split(","), a.cpus.split(",")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    js = Path(a.json) if a.json else work / "results.json"
    results = json.loads(js.read_text()) if js.exists() else {}
    log = lambda m: print(f"  {m}", file=sys.stderr, flush=True)  # noqa: E731
    paths = {} if a.report else models(work, names)
    for cpu in [] if a.report else cpus:
        target = TARGET_OF_CPU[cpu]
        for name in names:
            p = paths[name]
            jobs = {"nrqc bam": (lambda: _nrqc(p["bam"], target, work, log)) if p["bam"] else None,
                    "nrqc float": lambda: _nrqc(p["float"], target, work, log),
                    "ort fp32": lambda: _ort(p["float"], cpu, log),
                    "ort int8 QDQ": lambda: _ort(p["qdq"], cpu, log)}
            for engine, job in jobs.items():
                key = f"{name}|{engine}|{cpu}"
                if job is None or key in results:
                    continue
                t0 = time.time()
                print(f"[bench_arm] {key} ...", file=sys.stderr, flush=True)
                results[key] = {**job(), "seconds": round(time.time() - t0, 1)}
                r = results[key]
                print(f"[bench_arm] {key}: {r['instructions']:,} instructions, {r['cycles']} cycles "
                      f"({r['seconds']} s)", file=sys.stderr, flush=True)
                js.write_text(json.dumps(results, indent=1, sort_keys=True))
    print(f"nrqc vs onnxruntime on the emulated Raspberry Pi cores (host: {os.uname().machine}, "
          f"{os.cpu_count()} cores; counts are independent of the host)")
    print(_table(results, names, cpus))


if __name__ == "__main__":
    main()
