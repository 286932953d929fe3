"""nrqc on x86 against the engines x86 users pick, in one run, on three BAM models.

    python bench/bench_x86.py [--rounds 7 --iters 20] [--models dnsmos,vad,helper] [--clock cpu|wall]
                              [--json out.json]

Batch 1, one thread for everyone (TVM_NUM_THREADS=1 before TVM loads, onnxruntime
intra-op threads 1, OpenVINO INFERENCE_NUM_THREADS 1). Systems:
  nrqc-host     the BAM model compiled by nrqc for this host's CPU (`--target x86`)
  nrqc-haswell  the same, built for an AVX2-only CPU (`--mcpu haswell`), run here
  ort-bam       onnxruntime on the BAM model's own ONNX file
  ort-f32       onnxruntime on the float twin (same architecture, ReLU, float weights)
  ort-int8      onnxruntime on the float twin quantized by onnxruntime.quantization.quantize_static
                (QDQ, per-channel int8 weights, int8 activations)
  ov-f32, ov-int8   OpenVINO on the float twin and its QDQ file (optional: `pip install .[bench]`)
Models:
  dnsmos   the zoo's DNSMOS-like BAM model (models/zoo.py quality_bam4, exported by nrqc's exporter)
  vad      the zoo's default VAD BAM model (vad_tiny, 1-D convs, frames x 80 mel bands)
  helper   a BAM CNN written with onnx.helper by another writer, every node name empty
           (tests/binary_models.py bam_model + renamed)
Untrained weights (speed only). Every figure is the median over `rounds` of the median of
`iters` calls; rounds interleave the systems so a load spike hits all alike. `--clock cpu`
(default) times the process's CPU time (this host is shared: wall time also counts the
waits for a core); `--clock wall` the elapsed time. The nrqc builds are checked against
onnxruntime in a fresh process when compiled (`nrqc compile`'s check). The header names the
host CPU and its ISA: figures of the haswell build on an AVX-512 host are "haswell build on
<that CPU>", not an AVX2-only machine.
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
sys.path.insert(0, str(REPO / "bench"))

from bench_bam_dnsmos import _ort, _quantize  # noqa: E402

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
OV_MISSING = "OpenVINO not installed: pip install .[bench]"


def _export(net, path: Path) -> Path:
    import onnx

    from nrqc.training.onnx_export import to_onnx

    model, _ = to_onnx(net)
    onnx.save(model, str(path))
    return path


def _zoo_pair(work: Path, arch: str, **kw) -> tuple[Path, Path]:
    import torch

    from nrqc.models import zoo

    paths = []
    for variant in ("bam", "float"):
        torch.manual_seed(0)
        net = zoo.build(arch, variant, **kw).eval()
        paths.append(_export(net, work / f"{arch}_{variant}.onnx"))
    return paths[0], paths[1]


def _helper_pair(work: Path) -> tuple[Path, Path]:
    from tests import binary_models as bm

    named = bm.bam_model(work / "helper_named.onnx", frames=100, bands=48)
    bam = bm.renamed(named, work / "helper_bam.onnx", names="empty")
    flt = bm.renamed(bm.bam_model(work / "helper_float_named.onnx", frames=100, bands=48, float_model=True),
                     work / "helper_float.onnx", names="empty")
    return bam, flt


MODELS = {
    "dnsmos": ("DNSMOS-like zoo BAM (quality_bam4)", lambda w: _zoo_pair(w, "bam4")),
    "vad": ("default zoo VAD BAM (vad_tiny)", lambda w: _zoo_pair(w, "vad_tiny")),
    "helper": ("onnx.helper BAM CNN, no node names", _helper_pair),
}


def _input(path: Path, rng) -> tuple[str, np.ndarray]:
    import onnx

    inp = onnx.load(str(path)).graph.input[0]
    shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    x = rng.standard_normal(shape)
    return inp.name, (x.astype(dtype) if np.issubdtype(dtype, np.floating) else np.clip(x * 30, -128, 127).astype(dtype))


def _nrqc(path: Path, out: Path, mcpu: str | None, name: str, x):
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.runtime import ArtifactSession

    t0 = time.perf_counter()
    art = compile_model(path, "x86", out, CompileOptions(check=True, mcpu=mcpu), log=lambda *a: None)
    manifest = json.loads((art / "manifest.json").read_text())
    sess = ArtifactSession(art, manifest)
    dev_args = sess.to_device({name: x})
    info = {"compile_s": round(time.perf_counter() - t0, 1), "check": manifest["check"]["summary"],
            "strategies": sorted({str(layer["strategy"].get("strategy")) for layer in manifest["layers"]
                                  if layer.get("strategy")})}
    return (lambda: sess.vm["main"](*dev_args)), info


def _openvino(path: Path, name: str, x):
    """(the infer call, a note). OpenVINO 2026.4's snippets JIT fails on some QDQ graphs
    ("Not enough gp registers in the pool", seen on the DNSMOS-like QDQ twin): such a
    model is compiled again with SNIPPETS_MODE DISABLE, and the note says so."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    note = ""
    try:
        compiled = core.compile_model(str(path), "CPU", config)
    except Exception as e:  # noqa: BLE001 (OpenVINO raises plain Exception)
        note = "SNIPPETS_MODE DISABLE (default compile failed: " + " ".join(str(e).split())[-90:] + ")"
        compiled = core.compile_model(str(path), "CPU", {**config, "SNIPPETS_MODE": "DISABLE"})
    req = compiled.create_infer_request()
    return (lambda: req.infer({name: x})), note


def _median_ms(fn, iters: int, clock) -> float:
    ts = []
    for _ in range(iters):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return float(np.median(ts)) * 1e3


def add_run_options(ap: argparse.ArgumentParser, iters: int) -> None:
    """The options every x86 bench takes: rounds, calls per round, clock, the older CPU to
    build for, a JSON report, a work directory."""
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=iters)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    ap.add_argument("--mcpu", default="haswell", help="the older x86 CPU to build for besides this host")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)


def work_dir(args, prefix: str) -> Path:
    work = Path(args.workdir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def interleaved_medians(fns: dict, rounds: int, iters: int, clock) -> tuple[dict, dict]:
    """(per-round medians, their median) in ms of each call in `fns`: two warm-up calls each,
    then `rounds` rounds interleaving the systems, each the median of `iters` calls."""
    for fn in fns.values():
        fn()
        fn()
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            per_round[k].append(_median_ms(fn, iters, clock))
    return per_round, {k: float(np.median(v)) for k, v in per_round.items()}


def host_header() -> str:
    import onnxruntime

    from nrqc.targets import x86

    flags = x86.host_cpu_flags()
    isa = [f for f in ("sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512vbmi", "avx512_vpopcntdq",
                       "avx_vnni", "amx_int8") if f in flags]
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    avx512 = "avx512f" in flags
    try:
        import openvino
        ov = f"OpenVINO {openvino.__version__}"
    except ImportError:
        ov = "OpenVINO absent"
    return (f"host: {model} (LLVM: {x86.host_mcpu()}), ISA {' '.join(isa)}; "
            + ("an AVX-512 host: the haswell build's figures are 'haswell build on this CPU', not an AVX2-only machine"
               if avx512 else "AVX2-only host") + f"\nonnxruntime {onnxruntime.__version__}, {ov}; batch 1, one thread")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(ap, iters=20)
    ap.add_argument("--models", default="dnsmos,vad,helper")
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    work = work_dir(args, "bench_x86_")
    print(host_header())
    print(f"median of {args.rounds} rounds x median of {args.iters} calls, {args.clock} clock; ratio = system / nrqc")
    try:
        import openvino  # noqa: F401
        have_ov = True
    except ImportError:
        have_ov = False
        print(OV_MISSING)
    report = {"header": host_header(), "clock": args.clock, "models": {}}
    rng = np.random.default_rng(0)
    for key in args.models.split(","):
        label, make = MODELS[key]
        mdir = work / key
        mdir.mkdir(exist_ok=True)
        bam, flt = make(mdir)
        in_name, x = _input(bam, rng)
        f_name, xf = _input(flt, rng)
        q8 = _quantize(flt, mdir / "float_int8qdq.onnx", xf.shape, f_name)
        fns, info = {}, {}
        for sys_name, mcpu in (("nrqc-host", None), (f"nrqc-{args.mcpu}", args.mcpu)):
            try:
                fns[sys_name], info[sys_name] = _nrqc(bam, mdir / sys_name, mcpu, in_name, x)
            except Exception as e:  # a failed build is reported, the others still run
                info[sys_name] = {"error": str(e).splitlines()[0][:200]}
        fns["ort-bam"] = _ort(bam, x)
        fns["ort-f32"] = _ort(flt, xf)
        fns["ort-int8"] = _ort(q8, xf)
        if have_ov:
            for sys_name, p in (("ov-f32", flt), ("ov-int8", q8)):
                try:
                    fns[sys_name], note = _openvino(p, f_name, xf)
                    if note:
                        info[sys_name] = {"note": note}
                except Exception as e:  # noqa: BLE001
                    info[sys_name] = {"error": " ".join(str(e).split())[-200:]}
        per_round, med = interleaved_medians(fns, args.rounds, args.iters, clock)
        refs = [k for k in ("nrqc-host", f"nrqc-{args.mcpu}") if k in med]
        print(f"\n{label}: input {in_name} {list(x.shape)} {x.dtype}")
        print(f"  {'system':<14} {'ms':>8} " + " ".join(f"{'x vs ' + r:>18}" for r in refs))
        for k, v in med.items():
            print(f"  {k:<14} {v:8.3f} " + " ".join(f"{v / med[r]:17.2f}x" for r in refs))
        for k, i in info.items():
            print(f"  {k}: " + "; ".join(f"{a} {b}" for a, b in i.items()))
        report["models"][key] = {"label": label, "median_ms": med, "round_ms": per_round, "info": info}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
