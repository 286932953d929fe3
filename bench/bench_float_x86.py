"""nrqc against onnxruntime on float models and float layers on x86 (issue 16 item 2, issue 19 item 6).

    python bench/bench_float_x86.py [--rounds 7 --iters 50] [--models stft,vad_front,cnn96,model_v8,...]
                                    [--mcpu haswell] [--clock cpu|wall] [--json out.json]

Batch 1, one thread for both (TVM_NUM_THREADS=1 before TVM loads, onnxruntime intra-op
threads 1). Systems:
  nrqc-host     the model compiled by nrqc for this host's CPU (`--target x86`)
  nrqc-haswell  the same built for an AVX2-only CPU (`--mcpu haswell`), run here
  ort           onnxruntime on the same ONNX file
Models (onnx.helper ones have no node names; weights random, speed only):
  stft       the LSTM VAD's STFT-as-Conv front end alone (tests/onnx/test_lstm_vad.py): a
             Conv1d 1 -> 258 filters, 256 taps, stride 128 on 576 samples, then the magnitude
             (two Slices, Mul, Add, Sqrt)
  vad_front  that front end plus the VAD's 4 convs + ReLU (129->128, 128->64 /2, 64->64 /2,
             64->128): everything of the LSTM VAD's frame but the LSTM and its head
  cnn96      a 96x96 one-channel 4-layer float CNN (3x3 convs 1->32->64->64->128, ReLU, 2x2 max
             pools, global average pool, 128->10 Gemm): 77.4 M MACs
  vad_float  the zoo VAD's float twin (vad_tiny, 1-D convs)
  dnsmos_float  the zoo DNSMOS-like model's float twin (quality_bam4)
  model_v8   DNSMOS model_v8 (shared/dnsmos/model_v8.onnx beside the repo; skipped if absent)
Each figure is the median over `rounds` of the median of `iters` calls, the systems
interleaved in every round (bench_x86.interleaved_medians); `--clock cpu` (default) times
the process's CPU time, since this host is shared. Every nrqc build is checked against
onnxruntime when compiled (`nrqc compile`'s check, a fresh process). The header names the
host CPU and ISA: the haswell build's figures on an AVX-512 host are "haswell build on that CPU".
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_bam_dnsmos import _ort  # noqa: E402
from bench_x86 import CLOCKS, _input, _nrqc, _zoo_pair, add_run_options, host_header, interleaved_medians, work_dir  # noqa: E402


class _Graph:
    """A nameless onnx.helper graph under construction (seeded random weights)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def const(self, value) -> str:
        from onnx import numpy_helper

        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: tuple, relu: bool = True, **attrs) -> str:
        w = (self.rng.standard_normal((cout, cin, *k)) / np.sqrt(cin * np.prod(k))).astype(np.float32)
        y = self.node("Conv", [x, self.const(w), self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32))],
                      **attrs)
        return self.node("Relu", [y]) if relu else y

    def save(self, path: Path, x_shape: list[int], y: str) -> Path:
        import onnx
        from onnx import TensorProto, helper

        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], self.inits)
        m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)]))
        onnx.save(m, str(path))
        return path


def _stft_front(g: _Graph, x: str) -> str:
    spec = g.conv(x, 1, 258, (256,), relu=False, strides=[128])
    ax = g.const(np.array([1], np.int64))
    re = g.node("Slice", [spec, g.const(np.array([0], np.int64)), g.const(np.array([129], np.int64)), ax])
    im = g.node("Slice", [spec, g.const(np.array([129], np.int64)), g.const(np.array([258], np.int64)), ax])
    return g.node("Sqrt", [g.node("Add", [g.node("Mul", [re, re]), g.node("Mul", [im, im])])])


def stft(work: Path) -> Path:
    g = _Graph()
    return g.save(work / "stft.onnx", [1, 1, 576], _stft_front(g, "x"))


def vad_front(work: Path) -> Path:
    g = _Graph()
    h = _stft_front(g, "x")
    for ci, co, s in ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)):
        h = g.conv(h, ci, co, (3,), pads=[1, 1], strides=[s])
    return g.save(work / "vad_front.onnx", [1, 1, 576], h)


def cnn96(work: Path) -> Path:
    g = _Graph()
    h = "x"
    for ci, co in ((1, 32), (32, 64), (64, 64), (64, 128)):
        h = g.conv(h, ci, co, (3, 3), pads=[1, 1, 1, 1])
        h = g.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h])])
    w = (g.rng.standard_normal((10, 128)) / np.sqrt(128)).astype(np.float32)
    h = g.node("Gemm", [h, g.const(w), g.const(np.zeros(10, np.float32))], transB=1)
    return g.save(work / "cnn96.onnx", [1, 1, 96, 96], h)


def model_v8(work: Path) -> Path | None:
    from nrqc.shared_data import dnsmos_model

    try:
        p = dnsmos_model()
    except Exception:  # noqa: BLE001 - the shared model is optional
        return None
    return p if p and Path(p).exists() else None


MODELS = {
    "stft": ("LSTM VAD STFT-as-Conv front end (1->258, 256 taps, stride 128) + magnitude", stft),
    "vad_front": ("LSTM VAD front end + its 4 convs (no LSTM)", vad_front),
    "cnn96": ("96x96 4-layer float CNN (onnx.helper, 77.4 M MACs)", cnn96),
    "vad_float": ("zoo VAD float twin (vad_tiny)", lambda w: _zoo_pair(w, "vad_tiny")[1]),
    "dnsmos_float": ("zoo DNSMOS-like float twin (quality_bam4)", lambda w: _zoo_pair(w, "bam4")[1]),
    "model_v8": ("DNSMOS model_v8 (float)", model_v8),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(ap, iters=50)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    work = work_dir(args, "bench_float_x86_")
    print(host_header())
    print(f"median of {args.rounds} rounds x median of {args.iters} calls, {args.clock} clock; "
          "ratio = onnxruntime's time / nrqc's (> 1: nrqc faster)")
    report = {"header": host_header(), "clock": args.clock, "models": {}}
    rng = np.random.default_rng(0)
    for key in args.models.split(","):
        label, make = MODELS[key]
        mdir = work / key
        mdir.mkdir(exist_ok=True)
        path = make(mdir)
        if path is None:
            print(f"\n{label}: skipped (model file not found)")
            continue
        name, x = _input(path, rng)
        fns, info = {}, {}
        for sys_name, mcpu in (("nrqc-host", None), (f"nrqc-{args.mcpu}", args.mcpu)):
            try:
                fns[sys_name], info[sys_name] = _nrqc(path, mdir / sys_name, mcpu, name, x)
            except Exception as e:  # noqa: BLE001 - a failed build is reported, the others still run
                info[sys_name] = {"error": str(e).splitlines()[0][:200]}
        fns["ort"] = _ort(path, x)
        per_round, med = interleaved_medians(fns, args.rounds, args.iters, clock)
        print(f"\n{label}: input {name} {list(x.shape)}")
        print(f"  {'system':<14} {'ms':>8} {'ort / system':>14}")
        for k, v in med.items():
            print(f"  {k:<14} {v:8.4f} {med['ort'] / v:13.2f}x")
        for k, i in info.items():
            print(f"  {k}: " + "; ".join(f"{a} {b}" for a, b in i.items() if a != "strategies"))
        report["models"][key] = {"label": label, "median_ms": med, "round_ms": per_round, "info": info}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
