"""What the two TVM-library back ends share: the Relax pipeline through `tvm.compile` to a
shared library (model.so) loaded by the TVM runtime, here or on a board over TVM RPC."""
from __future__ import annotations

import abc
import time
from pathlib import Path

from nrqc.artifact import LIBRARY, MANIFEST, REPORT, staged_directory, write_json
from nrqc.backends.base import Backend
from nrqc.board_check import check_on_board
from nrqc.errors import CheckFailed, InternalError, NrqcError
from nrqc.manifest import constant_bytes_by_dtype, make_manifest
from nrqc.onnx_model import import_relax, last_line
from nrqc.pipeline import build_pipeline, run_pipeline
from nrqc.report import compile_report


class LibraryBackend(Backend):
    """A Relax VM executable exported as a shared library."""

    def fcompile(self):
        """The `export_library` linker: None links for this host."""
        return None

    def export_library(self, mod, path: Path | str) -> None:
        """Link a built module (a Relax executable or a MetaSchedule candidate) into `path`."""
        fcompile = self.fcompile()
        if fcompile is None:
            mod.export_library(str(path))
        else:
            mod.export_library(str(path), fcompile=fcompile)

    def build(self, m, ctx, out: Path, options, log=print) -> Path:
        import tvm

        from nrqc.layer_table import resolve_tvm_kernels

        target = self.target
        t0 = time.perf_counter()
        mod = import_relax(m)
        log(f"imported {m.path.name}: {len(m.onnx_model.graph.node)} ONNX nodes, {len(ctx.layers)} layers")
        mod = _run_pipeline_checked(mod, ctx, m)
        resolve_tvm_kernels(ctx.layers, ctx.kernels_in_order)
        weights = constant_bytes_by_dtype(mod)
        ex = tvm.compile(mod, target=target.tvm(), relax_pipeline=None)
        build_seconds = time.perf_counter() - t0
        log(f"built for {target.name} in {build_seconds:.1f} s")

        with staged_directory(out) as stage:
            lib_path = stage / LIBRARY
            self.export_library(ex, lib_path)
            manifest = make_manifest(m, ctx, weights, lib_path, build_seconds)
            if ctx.binary.int8_input is not None:  # main_int8: the input given already quantized
                manifest["int8_input"] = ctx.binary.int8_input.manifest()
            check = {"ran": False, "reason": "--no-check"}
            if options.check:
                check = self.numerical_check(stage, m, manifest, options)
                if ctx.binary.int8_input is not None and check.get("where") == "fresh process":
                    check = _check_int8_entry(check, stage, m, manifest, options, ctx.binary.int8_input)
                log(check.get("summary") or f"numerical check not run: {check['reason']}")
            manifest["check"] = check
            write_json(stage / MANIFEST, manifest)
            (stage / REPORT).write_text(compile_report(manifest))
            self.write_extras(stage, manifest)
            if check.get("ran") and not check["passed"]:
                raise CheckFailed(check["summary"])
        log(f"wrote {out}/ ({LIBRARY}, {MANIFEST}, {REPORT})")
        return out

    def write_extras(self, stage: Path, manifest: dict) -> None:
        """Files beside the library that this back end's users need (none by default)."""

    def numerical_check(self, stage: Path, m, manifest: dict, options) -> dict:
        """The compile-time check against onnxruntime: on the `--rpc` board when given."""
        if options.rpc:
            return check_on_board(stage, m, manifest, options)
        return self.check_without_board(stage, m, manifest, options)

    @abc.abstractmethod
    def check_without_board(self, stage: Path, m, manifest: dict, options) -> dict:
        """The check when no `--rpc` board is given (this host, the emulated board, or not run)."""

    def run(self, out, manifest, feeds, rpc):
        from nrqc.runtime import ArtifactSession

        return ArtifactSession(out, manifest, rpc=rpc).run(feeds)

    def open_session(self, out, manifest, rpc):
        from nrqc.runtime import ArtifactSession

        return ArtifactSession(out, manifest, rpc=rpc)  # loaded once; outputs stay on the device

    def profile(self, out, manifest, *, repeat, threads, rpc, instructions, against, log) -> dict:
        from nrqc.profiler import add_comparison

        result = self.measure(out, repeat=repeat, threads=threads, rpc=rpc, instructions=instructions, log=log)
        if against is not None:
            add_comparison(result, against)
        return result

    def measure(self, out, *, repeat, threads, rpc, instructions, log) -> dict:
        """Latency (here or on the `--rpc` board), per-operator times, memory, and the
        emulated instruction count when asked for (by default on an emulated board)."""
        from nrqc.profiler import add_instruction_count, profile_artifact

        result = profile_artifact(out, repeat=repeat, threads=threads, rpc=rpc)
        if instructions or (instructions is None and result["emulated"]):
            add_instruction_count(result, out, log=log)
        return result

    def format_profile(self, result: dict) -> str:
        from nrqc.profiler import format_profile

        return format_profile(result)


def _run_pipeline_checked(mod, ctx, m):
    try:
        return run_pipeline(mod, ctx)
    except NrqcError:
        raise
    except Exception as e:  # the model was accepted: a crash here is nrqc's (or TVM's) bug, not bad input
        raise InternalError(f"{m.path}: compile step '{_crashed_step(ctx)}' crashed: "
                            f"{type(e).__name__}: {last_line(e)}") from e


def _crashed_step(ctx) -> str:
    """The step that raised: the first one after the last completed step (run_pipeline
    records a step only once it has finished)."""
    done = [s["name"] for s in ctx.steps_run]
    try:
        pending = [s.name for s in build_pipeline() if s.name not in done and s.when(ctx)]
    except Exception:  # noqa: BLE001 - naming the step must not hide the crash being reported
        pending = []
    return pending[0] if pending else (done[-1] if done else "import")


def _check_int8_entry(check: dict, stage: Path, m, manifest: dict, options, quant) -> dict:
    """The main_int8 entry on the check's input quantized as the model's QuantizeLinear does,
    in a fresh process (`nrqc run --input x=q.npy`), against the same onnxruntime outputs."""
    from nrqc.check import compare_outputs
    from nrqc.fresh_run import FreshRunFailed, run_in_fresh_process
    from nrqc.onnx_model import random_inputs
    from nrqc.passes.binary_int8_entry import quantize_like_onnx
    from nrqc.reference import run_onnxruntime

    inputs = random_inputs(m.inputs, options.seed)
    ref = run_onnxruntime(m.path, {**inputs, **m.constants})
    names = [o.name for o in m.outputs]
    feeds = {**inputs, quant.name: quantize_like_onnx(inputs[quant.name], quant)}
    try:
        got = run_in_fresh_process(stage, [s.name for s in m.inputs], feeds, names)
    except FreshRunFailed as e:
        return {**check, "passed": False, "summary": f"{check['summary']}; main_int8: {e}"}
    q = compare_outputs(got, ref, names, options.atol, options.rtol, options.seed)
    return {**check, "int8_entry_point": q, "passed": bool(check["passed"] and q["passed"]),
            "summary": f"{check['summary']}; main_int8 (input given as {quant.dtype}): max abs error "
                       f"{q['max_abs_error']:.3g}"}
