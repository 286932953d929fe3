"""The artifact manifest (manifest.json): what a compile writes about the model, the target
and the build, and how a written artifact names the target it was built for.

Keys stay stable across versions (older artifacts must still load): `target` is the
target's name, `target_kind` its back end's name, `cpu` the x86 CPU record.
"""
from __future__ import annotations

from pathlib import Path

from nrqc import __version__
from nrqc.artifact import LIBRARY
from nrqc.targets import TargetDescription, get_target


def constant_bytes_by_dtype(mod) -> dict[str, int]:
    """Weights as the built model stores them (after packing/quantization passes)."""
    import tvm
    from tvm import relax

    seen: list = []
    out: dict[str, int] = {}

    def visit(e):
        # Relax constants are tvm.ir.GenericConst in TVM 0.27.
        # (GenericConst also wraps dtypes and strings: keep tensors only.)
        if (isinstance(e, tvm.ir.GenericConst) and hasattr(e.value, "numpy")
                and not any(e.same_as(s) for s in seen)):
            seen.append(e)
            arr = e.value.numpy()
            out[str(arr.dtype)] = out.get(str(arr.dtype), 0) + int(arr.nbytes)

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return out


def make_manifest(m, ctx, weights: dict[str, int], lib_path: Path, build_seconds: float) -> dict:
    """The manifest of a build of `m` (nrqc.onnx_model.LoadedModel) through the pipeline
    context `ctx` (nrqc.pipeline.CompileContext); back ends add their own keys."""
    import tvm

    io_bytes = sum(s.nbytes for s in m.inputs) + sum(s.nbytes for s in m.outputs)
    plan = ctx.memory_plan
    peak = plan.get("planned_storage_bytes", 0) + plan.get("max_kernel_scratch_bytes", 0) + io_bytes
    return {
        "nrqc_version": __version__,
        "tvm_version": tvm.__version__,
        "target": ctx.target.name,
        "target_kind": ctx.target.backend.name,
        "tvm_target": ctx.target.tvm_target,
        **_cpu_record(ctx.target),
        "source_model": str(m.path.resolve()),
        "library": LIBRARY,
        "inputs": [s.to_json() for s in m.inputs],
        "outputs": [s.to_json() for s in m.outputs],
        # inputs bound at compile time (`--const`): not inputs of the artifact; the
        # onnxruntime reference of the source model still takes them
        "constants": {k: {"dtype": str(v.dtype), "shape": list(v.shape), "value": v.reshape(-1).tolist()}
                      for k, v in getattr(m, "constants", {}).items()},
        "weights_bytes": int(sum(weights.values())),
        "weights_bytes_by_dtype": weights,
        "peak_activation_bytes": int(peak),
        "memory_plan": {**plan, "io_bytes": io_bytes},
        "library_bytes": lib_path.stat().st_size,
        "macs": int(sum(layer["macs"] for layer in ctx.layers)),
        "passes": [s["name"] for s in ctx.steps_run],
        "pass_seconds": {s["name"]: s["seconds"] for s in ctx.steps_run},
        "build_seconds": round(build_seconds, 2),
        "tuning": {"tuned": bool(ctx.schedule.database), "database": ctx.schedule.database},
        "layers": ctx.layers,
        "notes": ctx.notes,
        # how the input is computed from audio, when the ONNX file records it (`nrqc run --stream x.wav`)
        "frontend": _metadata(m.onnx_model, "nrqc.frontend"),
    }


def _metadata(model, key: str) -> str | None:
    return next((p.value for p in getattr(model, "metadata_props", ()) if p.key == key), None)


def _cpu_record(target: TargetDescription) -> dict:
    """x86: the CPU built for and the ISA flags its code may use (checked before loading)."""
    if target.name != "x86":
        return {}
    from nrqc.targets import x86

    return {"cpu": {"mcpu": target.tvm_target.get("mcpu"), "isa_flags": x86.required_flags(target)}}


def target_of(manifest: dict) -> TargetDescription:
    """The target a written artifact was built for: its name, and for x86 the CPU recorded
    in the manifest (a build for another CPU than this host's keeps that CPU)."""
    mcpu = (manifest.get("cpu") or {}).get("mcpu")
    return get_target(manifest["target"], mcpu)
