"""`nrqc compile`: ONNX -> Relax -> nrqc pipeline -> library + manifest + report."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from nrqc import __version__
from nrqc.artifact import LIBRARY, MANIFEST, REPORT, check_output_dir, staged_directory, write_json
from nrqc.errors import CheckFailed, NrqcError
from nrqc.layer_table import build_layer_table, resolve_tvm_kernels
from nrqc.onnx_model import (TensorSpec, check_supported_ops, graph_inputs, graph_outputs, infer_shapes,
                             load_onnx, random_inputs, validate_onnx)
from nrqc.pipeline import CompileContext, run_pipeline
from nrqc.targets import TargetDescription, get_target


@dataclasses.dataclass
class CompileOptions:
    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    check: bool = True
    atol: float = 1e-4
    rtol: float = 1e-4
    db: str | None = None
    seed: int = 0
    rpc: str | None = None  # run the check on this board (HOST:PORT), see nrqc.board_check
    mcpu: str | None = None  # x86: build for this named CPU instead of this host's (`--mcpu`)


@dataclasses.dataclass
class LoadedModel:
    """The validated ONNX model with static shapes, ready for import."""

    path: Path
    onnx_model: object  # original
    shaped: object  # shape-inferred copy
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def load_model(path: str | Path, shapes: dict[str, tuple[int, ...]]) -> LoadedModel:
    path = Path(path)
    model = load_onnx(path)
    check_supported_ops(model, path)
    validate_onnx(model, path)
    inputs = graph_inputs(model, shapes, path)
    try:
        shaped = infer_shapes(model, inputs)
    except Exception as e:
        raise NrqcError(f"{path}: shapes {_fmt_specs(inputs)} do not fit the model: {str(e).splitlines()[0]}") from None
    return LoadedModel(path, model, shaped, inputs, graph_outputs(shaped))


def _fmt_specs(specs) -> str:
    return ", ".join(f"{s.name}={','.join(map(str, s.shape))}" for s in specs)


def import_relax(m: LoadedModel):
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(m.onnx_model, shape_dict={s.name: list(s.shape) for s in m.inputs},
                         dtype_dict={s.name: s.dtype for s in m.inputs}, keep_params_in_input=False)
    except tvm.error.OpNotImplemented as e:
        raise NrqcError(f"{m.path}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # the frontend raises plain ValueError/TVMError for shape clashes
        node = _first_line(e)
        raise NrqcError(f"{m.path}: import failed with shapes {_fmt_specs(m.inputs)}: {node}") from None


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def compile_model(model_path: str | Path, target_name: str, out: str | Path | None,
                  options: CompileOptions | None = None, log=print) -> Path:
    options = options or CompileOptions()
    target = get_target(target_name, options.mcpu)
    m = load_model(model_path, options.shapes)
    out = Path(out) if out else Path(f"{m.path.stem}-{target.name}")
    check_output_dir(out)  # a read-only or impossible output folder fails now, not after the build
    layers = build_layer_table(m.shaped)
    ctx = CompileContext(target=target, onnx_model=m.shaped, layers=layers,
                         options={"db": options.db, "source_model": str(m.path)})
    if target.kind == "bare-metal":
        from nrqc.cortex_m import build_artifact  # noqa: the Cortex-M back end

        return build_artifact(m, ctx, out, options, log=log)

    t0 = time.perf_counter()
    mod = import_relax(m)
    log(f"imported {m.path.name}: {len(m.onnx_model.graph.node)} ONNX nodes, {len(layers)} layers")
    mod = _run_pipeline_checked(mod, ctx, m)
    resolve_tvm_kernels(layers, ctx.kernels_in_order)
    weights = constant_bytes_by_dtype(mod)
    import tvm

    ex = tvm.compile(mod, target=target.tvm(), relax_pipeline=None)
    build_seconds = time.perf_counter() - t0
    log(f"built for {target.name} in {build_seconds:.1f} s")

    with staged_directory(out) as stage:
        lib_path = stage / LIBRARY
        export_library(ex, lib_path, target)
        manifest = make_manifest(m, ctx, weights, lib_path, build_seconds)
        check = {"ran": False, "reason": "--no-check"}
        if options.check:
            check = numerical_check(stage, m, manifest, options, target)
            log(check.get("summary") or f"numerical check not run: {check['reason']}")
        manifest["check"] = check
        write_json(stage / MANIFEST, manifest)
        from nrqc.report import compile_report

        (stage / REPORT).write_text(compile_report(manifest))
        if target.kind == "linux-cross":
            from nrqc.deploy_bundle import write_deploy_md

            write_deploy_md(stage, manifest)
        if check.get("ran") and not check["passed"]:
            raise CheckFailed(check["summary"])
    log(f"wrote {out}/ ({LIBRARY}, {MANIFEST}, {REPORT})")
    return out


def _run_pipeline_checked(mod, ctx, m: LoadedModel):
    try:
        return run_pipeline(mod, ctx)
    except NrqcError:
        raise
    except Exception as e:  # the model was accepted: a crash here is nrqc's (or TVM's) bug, not bad input
        from nrqc.errors import InternalError

        raise InternalError(f"{m.path}: compile step '{_crashed_step(ctx)}' crashed: "
                            f"{type(e).__name__}: {_first_line(e)}") from e


def _crashed_step(ctx) -> str:
    """The step that raised: the first one after the last completed step (run_pipeline
    records a step only once it has finished)."""
    from nrqc.pipeline import build_pipeline

    done = [s["name"] for s in ctx.steps_run]
    try:
        pending = [s.name for s in build_pipeline() if s.name not in done and s.when(ctx)]
    except Exception:  # noqa: BLE001 - naming the step must not hide the crash being reported
        pending = []
    return pending[0] if pending else (done[-1] if done else "import")


def export_library(ex, path: Path, target: TargetDescription) -> None:
    import tvm

    if target.cross_compiler:
        ex.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(target.cross_compiler))
    else:
        ex.export_library(str(path))


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


def make_manifest(m: LoadedModel, ctx: CompileContext, weights: dict[str, int], lib_path: Path,
                  build_seconds: float) -> dict:
    import tvm

    io_bytes = sum(s.nbytes for s in m.inputs) + sum(s.nbytes for s in m.outputs)
    plan = ctx.memory_plan
    peak = plan.get("planned_storage_bytes", 0) + plan.get("max_kernel_scratch_bytes", 0) + io_bytes
    return {
        "nrqc_version": __version__,
        "tvm_version": tvm.__version__,
        "target": ctx.target.name,
        "target_kind": ctx.target.kind,
        "tvm_target": ctx.target.tvm_target,
        **_cpu_record(ctx.target),
        "source_model": str(m.path.resolve()),
        "library": LIBRARY,
        "inputs": [s.to_json() for s in m.inputs],
        "outputs": [s.to_json() for s in m.outputs],
        "weights_bytes": int(sum(weights.values())),
        "weights_bytes_by_dtype": weights,
        "peak_activation_bytes": int(peak),
        "memory_plan": {**plan, "io_bytes": io_bytes},
        "library_bytes": lib_path.stat().st_size,
        "macs": int(sum(layer["macs"] for layer in ctx.layers)),
        "passes": [s["name"] for s in ctx.steps_run],
        "pass_seconds": {s["name"]: s["seconds"] for s in ctx.steps_run},
        "build_seconds": round(build_seconds, 2),
        "tuning": {"tuned": bool(ctx.options.get("db")), "database": ctx.options.get("db")},
        "layers": ctx.layers,
        "notes": ctx.notes,
    }


def _cpu_record(target: TargetDescription) -> dict:
    """x86: the CPU built for and the ISA flags its code may use (checked before loading)."""
    if target.name != "x86":
        return {}
    from nrqc.targets import x86

    return {"cpu": {"mcpu": target.tvm_target.get("mcpu"), "isa_flags": x86.required_flags(target)}}


def numerical_check(stage: Path, m: LoadedModel, manifest: dict, options: CompileOptions,
                    target: TargetDescription) -> dict:
    """Run the built library on a seeded input and compare with onnxruntime."""
    if target.kind != "host" or options.rpc:
        from nrqc.board_check import check_off_host  # a board (--rpc) or the emulated one

        return check_off_host(stage, m, manifest, options, target)
    from nrqc.fresh_run import FreshRunFailed, run_in_fresh_process
    from nrqc.reference import run_onnxruntime
    from nrqc.targets.kernels.select import runs_here

    if not runs_here(target):
        from nrqc.targets import x86

        missing = x86.missing_here(x86.required_flags(target))
        return {"ran": False, "reason": f"built for x86 CPU '{target.tvm_target.get('mcpu')}', whose "
                                        f"{', '.join(missing)} this CPU lacks: run `nrqc run` on such a machine"}
    inputs = random_inputs(m.inputs, options.seed)
    ref = run_onnxruntime(m.path, inputs)
    names = [o.name for o in m.outputs]
    # The artifact as written, in a new process, as `nrqc run` loads it (never the
    # in-memory module): an over-read or a wrong ISA shows here, not at the user's.
    write_json(stage / MANIFEST, manifest)
    try:
        got = run_in_fresh_process(stage, [s.name for s in m.inputs], inputs, names)
    except FreshRunFailed as e:
        return {"ran": True, "passed": False, "max_abs_error": None, "atol": options.atol, "rtol": options.rtol,
                "seed": options.seed, "where": "fresh process", "summary": f"numerical check: {e}"}
    res = compare_outputs(got, ref, names, options.atol, options.rtol, options.seed)
    res["where"] = "fresh process"
    return res


def compare_outputs(got: list[np.ndarray], ref: list[np.ndarray], names: list[str], atol: float, rtol: float,
                    seed: int) -> dict:
    worst = 0.0
    passed = True
    per_output = {}
    for name, g, r in zip(names, got, ref):
        g = np.asarray(g, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if g.shape != r.shape:
            per_output[name] = {"max_abs_error": None, "shape": list(g.shape), "expected_shape": list(r.shape)}
            passed = False
            continue
        err = float(np.max(np.abs(g - r))) if g.size else 0.0
        ok = bool(np.all(np.abs(g - r) <= atol + rtol * np.abs(r)))
        per_output[name] = {"max_abs_error": err, "passed": ok}
        worst = max(worst, err)
        passed &= ok
    summary = (f"numerical check vs onnxruntime (seed {seed}): max abs error {worst:.3g} "
               f"({'within' if passed else 'OVER'} atol {atol:g} + rtol {rtol:g})")
    return {"ran": True, "passed": passed, "max_abs_error": worst, "atol": atol, "rtol": rtol, "seed": seed,
            "outputs": per_output, "summary": summary}
