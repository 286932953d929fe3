"""Helpers for the per-pass tests: a model imported and cleaned up as the pipeline does it,
one pass run alone on it, and the kernels main calls."""
from __future__ import annotations

import numpy as np


def context(m=None, target: str = "x86", **kw):
    """A compile context for LoadedModel m (its layer table), or for a Relax module built
    by the test (m None: no ONNX graph, no layers)."""
    from nrqc.layer_table import build_layer_table
    from nrqc.pipeline import CompileContext
    from nrqc.targets import get_target

    return CompileContext(target=get_target(target), onnx_model=m.shaped if m else None,
                          layers=build_layer_table(m.shaped) if m else [], **kw)


def imported(path, target: str = "x86"):
    """(LoadedModel, ctx, module after the import-cleanup phase) for an ONNX file."""
    from nrqc.onnx_model import import_relax, load_model
    from nrqc.pipeline import import_cleanup, run_pipeline

    m = load_model(path, {})
    ctx = context(m, target)
    return m, ctx, run_pipeline(import_relax(m), ctx, import_cleanup())


def run_steps(mod, ctx, *steps):
    from nrqc.pipeline import run_pipeline

    return run_pipeline(mod, ctx, list(steps))


def step(name: str):
    """The pipeline's step called `name` (the pass as the pipeline runs it)."""
    from nrqc.pipeline import build_pipeline

    return next(s for s in build_pipeline() if s.name == name)


def call_tir_callees(mod) -> list[str]:
    from tvm import relax

    names = []
    relax.analysis.post_order_visit(mod["main"], lambda e: names.append(e.args[0].name_hint)
                                    if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.call_tir"
                                    else None)
    return names


def op_names(mod) -> list[str]:
    from tvm import relax

    names = []
    relax.analysis.post_order_visit(mod["main"], lambda e: names.append(e.op.name)
                                    if isinstance(e, relax.Call) and hasattr(e.op, "name") else None)
    return names


def run_module(mod, ctx, *inputs) -> np.ndarray:
    """Build a Relax module with TVM's default pipeline for the context's target and run main."""
    import tvm
    from tvm import relax

    with ctx.target.tvm():
        ex = tvm.compile(mod, target=ctx.target.tvm())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs]).numpy()


def onnxruntime_outputs(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
