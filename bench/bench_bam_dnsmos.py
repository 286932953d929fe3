"""Speed of the DNSMOS-like BAM speech-quality model: nrqc vs its peers, same run.

    python bench/bench_bam_dnsmos.py [--frames 200 --bands 64] [--rounds 5 --iters 30] [--json out.json]

Batch 1, one thread for everyone (TVM_NUM_THREADS=1 is set before TVM loads; onnxruntime
intra-op threads = 1). Compared:
  nrqc     the BAM model (Heaviside maps, int8 weights) compiled by `nrqc compile` (x86)
  ort-f32  onnxruntime on the float model of the same architecture (ReLU, float weights)
  ort-int8 onnxruntime on its int8 QDQ version (onnxruntime.quantization.quantize_static,
           QDQ format, per-channel int8 weights, calibrated on random log-mel-like inputs)
  tvm-f32  plain TVM (`tvm.compile` with the default Relax pipeline) on the float model
Every figure is the median over `rounds` of the median of `iters` timed calls. Ratios are
taken between numbers measured in this run. The achieved operation rate of the nrqc
binary layers is reported against the target description's peak (int8 MAC/cycle of the unit
the kernels run on, AMX tiles or vectors, and popcount bits/cycle) at the clock from
/proc/cpuinfo.

The model comes from `models/` when the zoo exports it (`--zoo`), else from the contract
builder in tests/binary_models.py (same architecture: conv 32 -> pool -> conv 32 -> pool
-> conv 32 -> pool -> conv 64 -> pool -> global max -> dense 64-64-64-1).
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
# the model builders live in the test package (tests/binary_models.py); the repository root
# goes on the path, never tests/ itself (its onnx/ folder would hide the onnx package)
sys.path.insert(0, str(REPO))


def _median_of_medians(fn, rounds: int, iters: int) -> tuple[float, list[float]]:
    fn()
    fn()
    meds = []
    for _ in range(rounds):
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        meds.append(float(np.median(ts)) * 1e3)
    return float(np.median(meds)), meds


def _ort(path, x):
    from nrqc.reference import ort_session

    sess = ort_session(path, threads=1)
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def _zoo_models(work: Path, frames: int, bands: int):
    import onnx
    import torch

    from nrqc.models.zoo import quality_bam4
    from nrqc.training.onnx_export import to_onnx

    paths = []
    for variant in ("bam", "float"):
        torch.manual_seed(0)
        net = quality_bam4(variant, frames=frames, bands=bands)
        net.eval()
        model, _ = to_onnx(net)
        p = work / f"zoo_bam4_{variant}.onnx"
        onnx.save(model, str(p))
        paths.append(p)
    inp = onnx.load(str(paths[0])).graph.input[0]
    shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    return paths[0], paths[1], shape, inp.name


def _quantize(float_path: Path, out: Path, shape, in_name="x", n_calib=16) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{in_name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n_calib)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def _plain_tvm(float_path: Path, shape):
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from nrqc.targets import get_target

    model = onnx.load(str(float_path))
    mod = from_onnx(model, shape_dict={model.graph.input[0].name: list(shape)}, keep_params_in_input=False)
    target = get_target("x86").tvm()
    ex = tvm.compile(mod, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--bands", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--skip-plain-tvm", action="store_true", help="plain TVM float is slow to run; skip it")
    ap.add_argument("--zoo", action="store_true",
                    help="use models/zoo.py quality_bam4 ('bam' and 'float' variants, exported by nrqc's exporter; "
                         "untrained weights: speed and memory only)")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--workdir", type=str, default=None)
    args = ap.parse_args(argv)

    import tvm

    from tests import binary_models as bm
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.runtime import ArtifactSession
    from nrqc.targets import get_target

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_bam_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.zoo:
        bam, flt, shape, in_name = _zoo_models(work, args.frames, args.bands)
    else:
        shape, in_name = (1, 1, args.frames, args.bands), "x"
        bam = bm.bam_model(work / "bam.onnx", frames=args.frames, bands=args.bands)
        flt = bm.bam_model(work / "bam_float.onnx", frames=args.frames, bands=args.bands, float_model=True)
    q8 = _quantize(flt, work / "bam_float_int8qdq.onnx", shape, in_name)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    t0 = time.perf_counter()
    out = compile_model(bam, "x86", work / "nrqc_bam", CompileOptions(check=True), log=lambda *a: None)
    compile_s = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    sess = ArtifactSession(out, manifest)
    dev_args = sess.to_device({in_name: x})
    fn_nrqc = lambda: sess.vm["main"](*dev_args)  # noqa: E731

    fns = {"nrqc": fn_nrqc, "ort-f32": _ort(flt, x), "ort-int8": _ort(q8, x)}
    if not args.skip_plain_tvm:
        vm = _plain_tvm(flt, shape)
        xt = tvm.runtime.tensor(x)
        fns["tvm-f32"] = lambda: vm["main"](xt)  # noqa: E731
    # rounds interleave the systems, so a load spike on this shared machine hits all alike
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
        fn()
    for _ in range(args.rounds):
        for k, fn in fns.items():
            iters = args.iters if k != "tvm-f32" else max(3, args.iters // 10)
            per_round[k].append(_median_of_medians(fn, 1, iters)[0])
    results = {k: float(np.median(v)) for k, v in per_round.items()}
    rn = per_round["nrqc"]

    # memory: the same manifests `nrqc profile` reads, binary model next to its float twin
    # the float twin without Winograd: its smallest footprint (Winograd stores 16/9 of the weights)
    os.environ["NRQC_NO_WINOGRAD"] = "1"
    try:
        out_f = compile_model(flt, "x86", work / "nrqc_float", CompileOptions(check=False), log=lambda *a: None)
    finally:
        os.environ.pop("NRQC_NO_WINOGRAD", None)
    mf = json.loads((out_f / "manifest.json").read_text())

    def mem(m):
        return {"weights_bytes": m["weights_bytes"], "peak_activation_bytes": m["peak_activation_bytes"],
                "total_bytes": m["weights_bytes"] + m["peak_activation_bytes"],
                "weights_bytes_by_dtype": m["weights_bytes_by_dtype"], "memory_plan": m["memory_plan"]}

    memory = {"bam_int8": mem(manifest), "float": mem(mf)}
    memory["reduction_total"] = round(memory["float"]["total_bytes"] / memory["bam_int8"]["total_bytes"], 2)
    memory["reduction_weights"] = round(memory["float"]["weights_bytes"] / memory["bam_int8"]["weights_bytes"], 2)
    memory["reduction_activations"] = round(memory["float"]["peak_activation_bytes"]
                                            / memory["bam_int8"]["peak_activation_bytes"], 2)

    # per-kernel breakdown of the nrqc run (the binary layers' share)
    from nrqc.profiler import operator_breakdown

    rows = operator_breakdown(sess, {in_name: x}, repeat=max(5, args.iters // 3))
    target = get_target("x86")
    clock_hz = target.figure("clock_ghz") * 1e9
    layers = manifest["layers"]
    # layers that run as nrqc's integer kernels (a binary-input layer left in float does not count)
    converted = [layer for layer in layers if layer["act_bits"] == 1 and layer["weight_bits"] in (1, 8)
                 and str(layer["kernel"]).startswith("nrqc:")]
    binary_macs = sum(layer["macs"] for layer in converted)
    binary_kernels = {str(layer["kernel"]).removeprefix("nrqc:") for layer in converted}
    binary_ms = sum(r["ms"] for r in rows if r["kernel"] in binary_kernels)
    achieved = binary_macs / (binary_ms * 1e-3) / clock_hz if binary_ms else 0.0
    whole = manifest["macs"] / (results["nrqc"] * 1e-3) / clock_hz
    peak_pop = target.figure("peak_popcount_bits_per_cycle")
    strategies = {layer["name"]: layer.get("strategy", {}).get("strategy") for layer in layers if layer.get("strategy")}
    # the peak of the fastest unit the chosen kernels run on: AMX tiles, vpermb table
    # lookups (logical MACs: 4 per looked-up byte), or vpdpbusd vectors
    peak_unit, peak_int8 = "vector", target.figure("peak_int8_macs_per_cycle")
    for strategy, figure, unit in (("amx", "peak_amx_int8_macs_per_cycle", "AMX tdpbusd"),
                                   ("lut", "peak_lut_int8_macs_per_cycle", "vpermb LUT")):
        if strategy in strategies.values() and target.figure(figure):
            peak_unit, peak_int8 = unit, target.figure(figure)
            break
    report = {
        "model": str(bam), "input_shape": list(shape), "threads": 1, "rounds": args.rounds, "iters": args.iters,
        "median_ms": {k: round(v, 4) for k, v in results.items()},
        "nrqc_round_medians_ms": [round(v, 4) for v in rn],
        "speedup_nrqc_vs": {k: round(v / results["nrqc"], 3) for k, v in results.items() if k != "nrqc"},
        "goals": {"3x_vs_ort_f32": results["ort-f32"] / results["nrqc"] >= 3.0,
                  "faster_than_ort_int8": results["ort-int8"] > results["nrqc"]},
        "nrqc_check": manifest["check"]["summary"], "nrqc_compile_s": round(compile_s, 1),
        "binary_layers": {"macs": binary_macs, "kernel_ms": round(binary_ms, 4), "strategies": strategies,
                          "achieved_int8_mac_per_cycle": round(achieved, 2),
                          "peak_int8_mac_per_cycle": peak_int8, "peak_unit": peak_unit,
                          "fraction_of_int8_peak": round(achieved / peak_int8, 4) if peak_int8 else None,
                          "achieved_as_popcount_bits_per_cycle_if_bitserial": round(achieved * 8, 2),
                          "peak_popcount_bits_per_cycle": peak_pop},
        "memory": memory,
        "whole_model_mac_per_cycle": round(whole, 2), "clock_ghz": target.figure("clock_ghz"),
        "kernel_breakdown_ms": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }
    print(f"BAM model {shape}, batch 1, 1 thread, median of {args.rounds} rounds x {args.iters} runs")
    for k, v in results.items():
        print(f"  {k:<9} {v:8.3f} ms" + ("" if k == "nrqc" else f"   nrqc speedup {v / results['nrqc']:.2f}x"))
    print(f"  goal >=3x vs onnxruntime float: {'MET' if report['goals']['3x_vs_ort_f32'] else 'NOT met'}; "
          f"faster than onnxruntime int8: {'MET' if report['goals']['faster_than_ort_int8'] else 'NOT met'}")
    print(f"  binary layers: {binary_macs:,} MACs in {binary_ms:.3f} ms = {achieved:.2f} int8 MAC/cycle "
          f"({peak_unit} peak {peak_int8:g}; {100 * achieved / peak_int8:.1f} %), strategies {sorted(set(strategies.values()))}; "
          f"whole model {whole:.2f} MAC/cycle at {target.figure('clock_ghz'):.2f} GHz")
    if peak_int8 and achieved > peak_int8:
        print(f"  note: the measured rate exceeds the target description's peak ({peak_int8:g} int8 MAC/cycle at "
              f"{target.figure('clock_ghz'):.2f} GHz from /proc/cpuinfo 'cpu MHz'): that clock is below the boost "
              f"clock the core runs at, and/or the per-cycle figure is conservative for this core")
    print("  " + manifest["check"]["summary"])
    kb = lambda n: f"{n / 1024:.1f} KiB"  # noqa: E731
    print(f"  memory (nrqc manifests): BAM int8 weights {kb(memory['bam_int8']['weights_bytes'])} + peak activations "
          f"{kb(memory['bam_int8']['peak_activation_bytes'])}; float twin {kb(memory['float']['weights_bytes'])} + "
          f"{kb(memory['float']['peak_activation_bytes'])}: total reduction {memory['reduction_total']}x "
          f"(weights {memory['reduction_weights']}x, activations {memory['reduction_activations']}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
