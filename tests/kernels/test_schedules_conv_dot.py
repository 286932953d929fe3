"""The dot-product conv schedule (`float_conv_dot_rule`: few output positions, reduction
vectorized, im2col patch matrix) against torch's float64 conv, built for every x86 vector
width this host runs (x86-64-v2 4 lanes, haswell 8, the host's AVX-512 16) and run in a
fresh process with each input placed against a guard page (after its end, then before its
start), so a read outside an input faults instead of passing by luck.

Shapes: the LSTM VAD's STFT conv (1 -> 258 filters, 256 taps, stride 128: 258 is not a
multiple of any vector width) and the convs after it (stride 2, one position), odd channel
counts, dilation, a 2-D case, and reductions that take a narrower vector than the target's.
A whole model through `nrqc compile` (check vs onnxruntime) and run from disk is in the slow set.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import tvm

from tests.guarded_memory import guarded_array, run_isolated

from nrqc.targets import x86

SSE, AVX2 = "x86-64-v2", "haswell"
HOST_AVX512 = x86.host_mcpu() if "avx512f" in x86.host_cpu_flags() else None
ISAS = [SSE, AVX2] + ([HOST_AVX512] if HOST_AVX512 else [])


def conv_primfunc(cin, cout, size, k, stride, pad, dilation=1, relu=True):
    """The fused PrimFunc the pipeline gives the schedules for conv (+ bias + ReLU): NCW when
    `size` is an int, NCHW for (h, w); params (x, w, b, out)."""
    from tvm import relax

    two_d = isinstance(size, tuple)
    xs = (1, cin, *size) if two_d else (1, cin, size)
    ws = (cout, cin, k, k) if two_d else (cout, cin, k)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(xs, "float32"))
    w = relax.Var("w", relax.TensorType(ws, "float32"))
    b = relax.Var("b", relax.TensorType((1, cout, 1, 1) if two_d else (1, cout, 1), "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            if two_d:
                y = bb.emit(relax.op.nn.conv2d(x, w, strides=stride, padding=pad, dilation=dilation))
            else:
                y = bb.emit(relax.op.nn.conv1d(x, w, strides=stride, padding=pad, dilation=dilation))
            y = bb.emit(relax.op.add(y, b))
            if relu:
                y = bb.emit(relax.op.nn.relu(y))
            o = bb.emit_output(y)
        bb.emit_func_output(o)
    mod = relax.transform.LegalizeOps()(bb.get())
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(relax.transform.AnnotateTIROpPattern()(mod)))
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1
    return funcs[0]


def _reference(x, w, b, stride, pad, dilation, relu):
    conv = torch.nn.functional.conv2d if x.ndim == 4 else torch.nn.functional.conv1d
    y = conv(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
             torch.tensor(b.reshape(-1), dtype=torch.float64), stride=stride, padding=pad, dilation=dilation)
    return (torch.relu(y) if relu else y).numpy()


def _guarded_run(mcpus: list[str], cases: list) -> list[tuple[str, float]]:
    """In a fresh process: each case scheduled by the rules for each mcpu (the conv_dot rule
    must be the one taken), built, run with x, w and b each ending at a guard page, then each
    starting right after one; (rule, max relative error vs torch) per run."""
    from nrqc.targets.schedules import schedule_primfunc, vector_spec

    results = []
    for mcpu in mcpus:
        spec = vector_spec({"kind": "llvm", "mcpu": mcpu})
        target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
        for cin, cout, size, k, stride, pad, dilation, relu in cases:
            rule, func = schedule_primfunc(conv_primfunc(cin, cout, size, k, stride, pad, dilation, relu), spec)
            if rule != "conv_dot":
                results.append((str(rule), float("inf")))
                continue
            lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
            rng = np.random.default_rng(cin * 31 + cout)
            two_d = isinstance(size, tuple)
            x = rng.standard_normal((1, cin, *size) if two_d else (1, cin, size)).astype(np.float32)
            w = (rng.standard_normal((cout, cin, k, k) if two_d else (cout, cin, k))
                 / np.sqrt(cin * k)).astype(np.float32)
            b = (rng.standard_normal((1, cout, 1, 1) if two_d else (1, cout, 1)) * 0.1).astype(np.float32)
            ref = _reference(x, w, b, stride, pad, dilation, relu)
            for where in ("after", "before"):
                print(f"conv_dot {cin}->{cout} @{size} k{k} s{stride} p{pad} d{dilation} {mcpu}: inputs {where} "
                      "a guard page", file=sys.stderr, flush=True)
                out = tvm.runtime.tensor(np.full(ref.shape, np.nan, np.float32))
                with guarded_array(x, where) as gx, guarded_array(w, where) as gw, guarded_array(b, where) as gb:
                    lib["main"](gx.tensor, gw.tensor, gb.tensor, out)
                results.append((rule, float(np.max(np.abs(out.numpy() - ref) / (1 + np.abs(ref))))))
    return results


# (cin, cout, size, k, stride, pad, dilation, relu)
STFT = (1, 258, 576, 256, 128, 0, 1, False)  # the LSTM VAD's front end: 3 positions
FAST = [
    STFT,
    (128, 64, 3, 3, 2, 1, 1, True),   # the VAD's second conv: 2 positions, stride 2
    (7, 13, 9, 4, 1, 2, 2, True),     # odd channels, dilation 2, pad 2: reduction 28 (4-wide vectors)
    (16, 12, (3, 5), 3, 1, 1, 1, True),  # 2-D, 15 positions, 12 filters (no whole vector of them)
]
MORE = [
    (64, 64, 2, 3, 2, 1, 1, True),    # one position
    (64, 128, 1, 3, 1, 1, 1, True),   # one position, one input column (pad on both sides)
    (5, 33, 40, 8, 6, 3, 1, False),   # odd filters, reduction 40 (8-wide), stride 6, 7 positions
    (3, 17, (4, 4), 4, 2, 1, 1, True),  # 2-D stride 2: 4 positions, reduction 48
    (2, 20, (6, 7), 2, 1, 0, 2, True),  # 2-D dilation 2: 20 positions, 20 filters, reduction 8
]


def test_conv_dot_matches_torch_within_its_inputs():
    """The older levels (haswell, x86-64-v2) in one fresh process: the STFT conv and the odd one."""
    results = run_isolated(_guarded_run, [AVX2, SSE], FAST[::2])
    assert len(results) == 2 * 2 * 2, results
    assert all(rule == "conv_dot" for rule, _ in results), results
    assert max(err for _, err in results) < 1e-5, results


@pytest.mark.slow
def test_conv_dot_more_shapes_within_their_inputs():
    results = run_isolated(_guarded_run, ISAS, FAST + MORE)
    assert all(rule == "conv_dot" for rule, _ in results), results
    assert max(err for _, err in results) < 1e-5, results


def test_conv_dot_leaves_the_big_layers_to_the_tiled_rule():
    """Many positions per weight with channels a multiple of the vector: the channel-
    vectorized register tile (whose weight repack pays off there) keeps them; a reduction no
    vector of at least 4 divides is not taken either."""
    from nrqc.targets.schedules import schedule_primfunc, vector_spec

    spec = vector_spec({"kind": "llvm", "mcpu": AVX2})
    assert schedule_primfunc(conv_primfunc(16, 32, 64, 3, 1, 1), spec)[0] == "conv"
    assert schedule_primfunc(conv_primfunc(3, 12, (10, 10), 3, 1, 1), spec)[0] == "generic"  # reduction 27


@pytest.mark.slow
def test_stft_conv_model_compiles_to_conv_dot_and_runs_from_disk(tmp_path):
    """An STFT-as-Conv front end (+ bias + ReLU) written with onnx.helper without node names,
    compiled for x86 built for haswell (the compile's own check runs it against onnxruntime)
    and run from disk in a fresh process against numpy."""
    import json
    import subprocess

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nrqc.compiler import CompileOptions, compile_model

    rng = np.random.default_rng(4)
    w = (rng.standard_normal((130, 1, 64)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(130) * 0.1).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[32]),
                           helper.make_node("Relu", ["c"], ["y"])], "stft",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 160])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 130, 4])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)]), str(tmp_path / "m.onnx"))
    out = compile_model(tmp_path / "m.onnx", "x86", tmp_path / "out", CompileOptions(mcpu=AVX2),
                        log=lambda m: None)
    man = json.loads((out / "manifest.json").read_text())
    assert man["check"]["passed"], man["check"]["summary"]
    assert any(n.startswith("shipped schedules") and "conv_dot x1" in n for n in man["notes"]), man["notes"]
    x = rng.standard_normal((1, 1, 160)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from nrqc.runtime import ArtifactSession; "
            "np.save(sys.argv[3], ArtifactSession(sys.argv[1]).run({'x': np.load(sys.argv[2])})[0])")
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, timeout=300)
    ref = _reference(x, w, b[None, :, None], 32, 0, 1, True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, atol=1e-5, rtol=1e-5)
