"""Per-frame cost of streamed recurrent models on x86: nrqc vs onnxruntime (issue 19 item 6).

Models (state [2, 1, 128] carried from frame to frame, as a deployed VAD runs):
- `lstm`: the LSTM VAD's recurrent part alone: one LSTM 128 step on a [1, 1, 128] input,
  state in and out (Gather/Concat around the node, as the VAD has them);
- `vad`: the whole LSTM VAD of tests/onnx/test_lstm_vad.py (STFT as a Conv1d, 4 convs,
  LSTM 128, `If` on sr bound with --const sr=16000).
Each in float and with int8 LSTM weights (DequantizeLinear per gate row, the form
nrqc keeps 8-bit; onnxruntime runs the same file).

Each system streams the same frames in one process: warm-up, then `--rounds` rounds
interleaving the systems, each the median of `--iters` frames; the table shows the median
of the round medians (thread CPU time by default, so other jobs on the host count less),
and nrqc's ratio to onnxruntime (> 1: nrqc faster). Columns: `nrqc` streams from numpy as a
caller does (the frame copied into a device tensor, the state kept on the device, the
output read back; onnxruntime's figure includes the same numpy in/out); `vm` is the VM call
alone on device tensors, the compiled graph's own per-frame cost (what a C caller of the
library pays; the difference is TVM's Python FFI). Every build's streamed outputs are
checked against onnxruntime's before timing.

    python bench/bench_recurrent.py [--models lstm,vad] [--variants float,int8] [--mcpu haswell|none]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_x86 import CLOCKS, add_run_options, host_header, interleaved_medians, work_dir  # noqa: E402
from tests.onnx.test_lstm_vad import FRAME, HIDDEN, lstm_vad  # noqa: E402


def lstm_step_model(seed: int = 0) -> onnx.ModelProto:
    """One LSTM 128 step with its state as an input and an output."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.08).astype(np.float32), n)
             for n, s in (("lstm_w", (1, 4 * HIDDEN, 128)), ("lstm_r", (1, 4 * HIDDEN, HIDDEN)),
                          ("lstm_b", (1, 8 * HIDDEN)))]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "i0"),
              numpy_helper.from_array(np.array([1], np.int64), "i1")]
    nodes = [helper.make_node("Gather", ["state", "i0"], ["h0"], axis=0),
             helper.make_node("Gather", ["state", "i1"], ["c0"], axis=0),
             helper.make_node("LSTM", ["input", "lstm_w", "lstm_r", "lstm_b", "", "h0", "c0"], ["y", "y_h", "y_c"],
                              hidden_size=HIDDEN),
             helper.make_node("Concat", ["y_h", "y_c"], ["stateN"], axis=0)]
    graph = helper.make_graph(
        nodes, "lstm_step",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 128]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, HIDDEN]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, HIDDEN])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


def int8_lstm_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """lstm_w and lstm_r as int8 per gate row (axis 1) through DequantizeLinear."""
    inits = {i.name: i for i in model.graph.initializer}
    dq = []
    for name in ("lstm_w", "lstm_r"):
        w = numpy_helper.to_array(inits[name])
        scale = (np.abs(w).max(axis=(0, 2)) / 127).astype(np.float32)
        q = np.clip(np.round(w / scale[None, :, None]), -127, 127).astype(np.int8)
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend([numpy_helper.from_array(q, name + "_q"),
                                        numpy_helper.from_array(scale, name + "_s"),
                                        numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), name + "_zp")])
        dq.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_s", name + "_zp"], [name], axis=1))
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(dq + rest)
    return model


def _frames(model_name: str, n: int) -> np.ndarray:
    shape = (n, 1, FRAME) if model_name == "vad" else (n, 1, 1, 128)
    return np.random.default_rng(3).standard_normal(shape).astype(np.float32)


def _compile(path: Path, out: Path, mcpu: str | None, consts: list[str]) -> Path:
    if not (out / "model.so").exists():
        cmd = [sys.executable, "-m", "nrqc", "compile", str(path), "-t", "x86", "-o", str(out)]
        cmd += [a for c in consts for a in ("--const", c)] + (["--mcpu", mcpu] if mcpu else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


class _Stream:
    """One frame per call with the state carried; `outputs` keeps what each frame gave."""

    def __init__(self, run, frames):
        self.run, self.frames, self.k = run, frames, 0
        self.state = np.zeros((2, 1, HIDDEN), np.float32)
        self.outputs = []

    def __call__(self):
        out, self.state = self.run(self.frames[self.k % len(self.frames)], self.state)
        self.k += 1
        return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lstm,vad")
    ap.add_argument("--variants", default="float,int8")
    ap.add_argument("--frames", type=int, default=64)
    add_run_options(ap, iters=200)
    args = ap.parse_args(argv)
    work = work_dir(args, "nrqc-bench-recurrent-")
    clock = CLOCKS[args.clock]
    print(host_header())
    print(f"clock: {args.clock}; {args.rounds} rounds x {args.iters} frames, 1 thread; ratio = onnxruntime / nrqc "
          f"per-frame time (> 1: nrqc faster)\n")
    import onnxruntime as ort
    import tvm

    from nrqc.runtime import ArtifactSession, flatten_outputs

    rows = {}
    print(f"{'model':<12} {'build':<10} {'nrqc ms':>9} {'vm ms':>9} {'ort ms':>9} {'ratio':>7} {'vm':>7}  check")
    for model_name in args.models.split(","):
        for variant in args.variants.split(","):
            model = lstm_vad() if model_name == "vad" else lstm_step_model()
            if variant == "int8":
                model = int8_lstm_weights(model)
            path = work / f"{model_name}-{variant}.onnx"
            onnx.save(model, str(path))
            consts = ["sr=16000"] if model_name == "vad" else []
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            extra = {"sr": np.array(16000, np.int64)} if model_name == "vad" else {}
            frames = _frames(model_name, args.frames)
            out_name = "output" if model_name == "vad" else "y"

            def ort_run(x, s, sess=sess, extra=extra, out_name=out_name):
                return sess.run([out_name, "stateN"], {"input": x, "state": s, **extra})

            ref = _Stream(ort_run, frames)
            expected = [ref() for _ in frames]
            for build, mcpu in [("host", None)] + ([(args.mcpu, args.mcpu)] if args.mcpu != "none" else []):
                out = _compile(path, work / f"{model_name}-{variant}-{build}", mcpu, consts)
                session = ArtifactSession(out)
                main = session.vm["main"]

                def nrqc_run(x, s, session=session):
                    got = session.run({"input": x, "state": s})
                    return np.asarray(got[0]), np.asarray(got[1])

                mine = _Stream(nrqc_run, frames)
                err = max(float(np.abs(mine() - e).max()) for e in expected)
                # numpy in and out as a caller streams: the frame copied into a device tensor,
                # the state kept on the device, the output read back
                x_dev = tvm.runtime.tensor(frames[0])

                def nrqc_stream(x, s, main=main, x_dev=x_dev):
                    x_dev.copyfrom(x)
                    y, state = flatten_outputs(main(x_dev, s), keep=True)
                    return y.numpy(), state

                state0 = tvm.runtime.tensor(np.zeros((2, 1, HIDDEN), np.float32))
                vm_only = (lambda main=main, x_dev=x_dev, s=state0: main(x_dev, s))
                streams = {"nrqc": _Stream(nrqc_stream, frames), "vm": vm_only, "ort": _Stream(ort_run, frames)}
                streams["nrqc"].state = state0
                _, med = interleaved_medians(streams, args.rounds, args.iters, clock)
                key = f"{model_name}/{variant}/{build}"
                rows[key] = {"nrqc_ms": med["nrqc"], "nrqc_vm_ms": med["vm"], "ort_ms": med["ort"],
                             "ratio": med["ort"] / med["nrqc"], "vm_ratio": med["ort"] / med["vm"],
                             "max_abs_err": err}
                print(f"{model_name + '/' + variant:<12} {build:<10} {med['nrqc']:9.4f} {med['vm']:9.4f} "
                      f"{med['ort']:9.4f} {med['ort'] / med['nrqc']:6.2f}x {med['ort'] / med['vm']:6.2f}x  "
                      f"max|err| {err:.2e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
