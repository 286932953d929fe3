"""The all-integer first layer on x86 (issue 15 item 3e): the default zoo VAD BAM with a float
first layer (before) and an int8 first layer (after), first conv and whole model, against
onnxruntime on the same ONNX files, in one run.

    python bench/bench_int8_first_layer.py [--rounds 7 --iters 50] [--mcpu haswell] [--clock cpu|wall]

Both models are vad_tiny BAM (1-D convs over 100 frames, 80 mel bands as channels), untrained
(speed only), the same seed, exported by nrqc's exporter: `--first-layer float` (float conv +
threshold + pack kernel) and the default int8 first layer (QuantizeLinear/DequantizeLinear
on the input, int8 per-channel weights: nrqc's int8 conv with the quantize fused into its
load). Systems, per model: nrqc built for this host and for `--mcpu` (run here), the
int8 model's `main_int8` entry (input given already quantized), and onnxruntime (1 thread)
on the same file. Batch 1, one thread. Figures are medians over `rounds` of the median of
`iters` calls, rounds interleaving the systems; `--clock cpu` (default) times the process's
CPU time (a shared host), `--clock wall` the elapsed time. The first conv's time is the VM
instrument's per-kernel time (median of `iters` runs). Every build passed nrqc compile's
check against onnxruntime in a fresh process (printed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_bam_dnsmos import _ort  # noqa: E402
from bench_x86 import CLOCKS, _export, add_run_options, host_header, interleaved_medians, work_dir  # noqa: E402


def _models(work: Path) -> dict[str, Path]:
    import torch

    from nrqc.models import zoo

    out = {}
    for first in ("float", "int8"):
        torch.manual_seed(0)
        net = zoo.build("vad_tiny", "bam", first_layer=first).eval()
        out[first] = _export(net, work / f"vad_tiny_bam_first_{first}.onnx")
    return out


def _build(path: Path, out: Path, mcpu: str | None):
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.runtime import ArtifactSession

    art = compile_model(path, "x86", out, CompileOptions(check=True, mcpu=mcpu), log=lambda *a: None)
    manifest = json.loads((art / "manifest.json").read_text())
    first = next(layer for layer in manifest["layers"] if layer["op"] == "Conv")
    return ArtifactSession(art, manifest), manifest, first


def _first_conv_ms(session, feeds, kernel: str, iters: int) -> float:
    from nrqc.profiler import operator_breakdown

    rows = operator_breakdown(session, feeds, iters)
    # main_int8 calls the same kernel built for the int8 source: "<kernel>_int8in"
    return next(r["ms"] for r in rows if r["kernel"] == kernel or r["kernel"].startswith(kernel + "_"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(ap, iters=50)
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    work = work_dir(args, "bench_int8_first_")
    print(host_header())
    print(f"median of {args.rounds} rounds x median of {args.iters} calls, {args.clock} clock")
    models = _models(work)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 100, 80)).astype(np.float32) * 2
    fns, first_ms, info = {}, {}, {}
    for first, path in models.items():
        fns[f"ort {first}-first"] = _ort(path, x)
        for level, mcpu in (("host", None), (args.mcpu, args.mcpu)):
            key = f"nrqc-{level} {first}-first"
            session, manifest, layer = _build(path, work / key.replace(" ", "_"), mcpu)
            name = manifest["inputs"][0]["name"]
            feeds = {name: x}
            args_main = session.to_device(feeds)
            fns[key] = (lambda s=session, a=args_main: s.vm["main"](*a))
            kernel = layer["kernel"].split(":", 1)[1]
            first_ms[key] = _first_conv_ms(session, feeds, kernel, args.iters)
            info[key] = {"first conv kernel": kernel, "strategy": (layer.get("strategy") or {}).get("strategy"),
                         "check": manifest["check"]["summary"]}
            quant = manifest.get("int8_input")
            if quant:
                from nrqc.passes.binary_int8_entry import QuantizedInput, quantize_like_onnx

                q = quantize_like_onnx(x, QuantizedInput(0, name, quant["dtype"], quant["scale"], quant["zero_point"]))
                args_q = session.to_device({name: q})
                fns[f"{key} main_int8"] = (lambda s=session, a=args_q: s.vm["main_int8"](*a))
                first_ms[f"{key} main_int8"] = _first_conv_ms(session, {name: q}, kernel, args.iters)
    per_round, med = interleaved_medians(fns, args.rounds, args.iters, clock)
    print(f"\nvad_tiny BAM, input logmel [1, 100, 80] float32 (768,000 first-conv MACs of 1,435,200)")
    print(f"  {'system':<36} {'model ms':>9} {'first conv ms':>14} {'ort/nrqc (same file)':>21}")
    for k, v in med.items():
        first = "int8" if "int8-first" in k else "float"
        ort = med[f"ort {first}-first"]
        fc = f"{first_ms[k]:14.4f}" if k in first_ms else f"{'':>14}"
        ratio = f"{ort / v:20.2f}x" if not k.startswith("ort") else f"{'':>21}"
        print(f"  {k:<36} {v:9.4f} {fc} {ratio}")
    for level in ("host", args.mcpu):
        a, b = f"nrqc-{level} float-first", f"nrqc-{level} int8-first"
        print(f"  {level}: int8 first layer vs float first layer: first conv {first_ms[a] / first_ms[b]:.2f}x faster, "
              f"whole model {med[a] / med[b]:.2f}x faster")
    for k, i in info.items():
        print(f"  {k}: " + "; ".join(f"{a} {b}" for a, b in i.items()))
    report = {"header": host_header(), "clock": args.clock, "median_ms": med, "first_conv_ms": first_ms,
              "round_ms": per_round, "info": info}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
