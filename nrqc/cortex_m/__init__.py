"""Cortex-M back end: a self-contained C library (+ test firmware run in QEMU).

`build_artifact` runs the shared Relax pipeline up to the static memory plan (so the
binary-layer and schedule slots apply to microcontrollers too), gives every kernel a
memory-first schedule (nrqc.cortex_m.schedule), generates the kernels with TVM's C code
generator and a caller from the planned `main` (nrqc.cortex_m.emit), compiles them with
arm-none-eabi-gcc, checks the footprint against the target's flash/RAM budget, links a
test firmware and (unless --no-check) runs it in QEMU against onnxruntime.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from nrqc.artifact import MANIFEST, REPORT, read_manifest, staged_directory, write_json
from nrqc.check import compare_outputs
from nrqc.errors import CheckFailed, NrqcError
from nrqc.manifest import constant_bytes_by_dtype, make_manifest, target_of
from nrqc.onnx_model import TensorSpec, import_relax, random_inputs
from nrqc.reference import run_onnxruntime
from nrqc.targets import BareMetalC

FIRMWARE_DIR = "firmware"
FIRMWARE_ELF = "firmware/firmware.elf"


def _steps():
    """The shared pipeline through the static memory plan (the VM phase is not ours: emit
    writes the caller), with the memory-first schedule in the target-schedule slot."""
    from nrqc import pipeline
    from nrqc.cortex_m.dsp import hand_kernels_step
    from nrqc.cortex_m.float_conv import float_conv_step
    from nrqc.cortex_m.schedule import schedule_step_run

    return pipeline.build_pipeline(
        through=pipeline.MEMORY_PLAN,
        target_schedule=[pipeline.Step("nrqc.cortex_m.HandKernels", "schedule", hand_kernels_step),
                         pipeline.Step("nrqc.cortex_m.FloatKernels", "schedule", float_conv_step),
                         pipeline.Step("nrqc.cortex_m.ShrinkTemporaries", "schedule", schedule_step_run)])


def _register_popcount() -> None:
    """tirx.popcount has no C lowering by default: lower it to nrqc_dsp.h's inline SWAR
    popcount (M-profile has no popcount instruction; __builtin_popcount would be a call into
    libgcc's __popcountsi2 for every word). 64-bit words: the two halves."""
    import tvm
    from tvm import tirx

    def lower(op):
        x = op.args[0]
        bits = int(tvm.runtime.DataType(str(x.ty.dtype)).bits) if hasattr(x, "ty") else 32
        if bits > 32:
            lo = tirx.call_pure_extern("int32", "nrqc_popcount32", x.astype("uint32"))
            hi = tirx.call_pure_extern("int32", "nrqc_popcount32", (x >> tirx.const(32, str(x.ty.dtype))).astype("uint32"))
            res = lo + hi
        else:
            res = tirx.call_pure_extern("int32", "nrqc_popcount32", x.astype("uint32") if bits < 32 else x)
        return res.astype(str(op.ty.dtype)) if hasattr(op, "ty") else res

    try:
        tirx.register_intrin_lowering("tirx.popcount", "c", f=lower, level=99)
    except Exception:  # noqa: already registered in this process
        pass


def generate_kernels(mod, called: set[str], target) -> str:
    """TVM C source of the kernels main calls (asserts off: no error strings in flash).

    Kernels are first generated with the schedules' explicit unrolling. TVM 0.27's C code
    generator caches a printed load (`float v_ = a[i];`) within a scope and reuses it after
    a store to `a[i]` in the same scope, which made unrolled max reductions (MaxPool,
    GlobalMaxPool) wrong; the kernels whose C shows that pattern are generated again with
    unrolled loops kept as loops (`tirx.UnrollLoop.explicit_unroll = False`)."""
    from tvm import tirx

    _register_popcount()
    funcs = {gv: f.with_attr("global_symbol", gv.name_hint) for gv, f in mod.functions.items()
             if isinstance(f, tirx.PrimFunc) and gv.name_hint in called}
    source = _build_c(funcs, target, unroll=True)
    stale = stale_load_kernels(source)
    if not stale:
        return drop_header_declarations(source)
    safe = {gv: f for gv, f in funcs.items() if gv.name_hint not in stale}
    risky = {gv: f for gv, f in funcs.items() if gv.name_hint in stale}
    parts = [_build_c(risky, target, unroll=False)]
    if safe:
        parts.insert(0, _build_c(safe, target, unroll=True))
        # one definition of the module context pointer across the two generated units
        parts[1] = parts[1].replace("void* __tvm_ffi__library_ctx = NULL;", "", 1)
    return drop_header_declarations(
        ("\n/* kernels regenerated without explicit unrolling (stale-load pattern in TVM's C output): "
         + ", ".join(sorted(stale)) + " */\n").join(parts))


def drop_header_declarations(source: str) -> str:
    """TVM declares every call_extern callee with its own argument types; the functions of
    nrqc_dsp.h (included first) are already declared there, with const pointers."""
    return re.sub(r"^(?:TVM_DLL |extern )?(?:int32_t|void) (nrqc_\w+)\([^;{]*\);\s*$\n?", "", source, flags=re.M)


def _build_c(funcs: dict, target, unroll: bool) -> str:
    import tvm

    # No float vector types on Cortex-M in C: vectorized loops (from shared schedules) become serial.
    config = {"tirx.disable_assert": True}
    if not unroll:
        config["tirx.UnrollLoop"] = {"explicit_unroll": False}
    for key in ("tirx.disable_vectorize", "tir.disable_vectorize"):
        try:
            with tvm.transform.PassContext(config={key: True}):
                config[key] = True
        except Exception:  # noqa: key not registered in this TVM build
            pass
    with tvm.transform.PassContext(opt_level=3, config=config):
        lib = tvm.tirx.build(tvm.IRModule(funcs), target=tvm.target.Target(target.tvm_target))
    return lib.inspect_source()


_SSA_LOAD = re.compile(r"^\s*[\w ]+?\s+(v_\w*)\s*=\s*(\w+\[[^;]*\]);\s*$")
_STORE = re.compile(r"^\s*(\w+\[[^;]*\])\s*=(?!=)")


def stale_load_kernels(source: str) -> set[str]:
    """Kernels whose generated C uses an SSA copy of a load after a store to that element."""
    bad = set()
    for chunk in source.split("TVM_DLL int32_t __tvm_ffi_")[1:]:
        name = chunk.split("(", 1)[0]
        if "{" not in chunk.split("\n", 1)[0]:
            continue  # a declaration
        loads: dict[str, str] = {}
        stale: set[str] = set()
        for line in chunk.splitlines()[1:]:
            if any(re.search(rf"\b{v}\b", line) for v in stale):
                bad.add(name)
                break
            m = _SSA_LOAD.match(line)
            if m:
                loads[m.group(1)] = m.group(2)
                continue
            m = _STORE.match(line)
            if m:
                stale |= {v for v, rhs in loads.items() if rhs == m.group(1)}
    return bad


def _include_dirs() -> list[Path]:
    import tvm

    root = Path(tvm.__file__).parent
    return [root / "include", root.parent / "tvm_ffi" / "include"]


def build_artifact(m, ctx, out: Path, options, log=print) -> Path:
    from nrqc.cortex_m import emit, firmware, memory_report
    from nrqc.cortex_m.dsp import relabel_fused_layers
    from nrqc.layer_table import resolve_tvm_kernels
    from nrqc.pipeline import run_pipeline

    target = ctx.target
    from nrqc.cortex_m import knobs
    from nrqc.tuning.cortex_m_db import read_knobs

    knob_config, knob_note = read_knobs(ctx.options.get("db"), target)  # `nrqc tune --target cortex-m4` choices
    knobs.use(knob_config)  # None: the defaults (an earlier compile's choices never leak into this one)
    if knob_note:
        ctx.notes.append(knob_note)
    missing = firmware.env_available()
    if missing:
        raise NrqcError(f"--target {target.name} needs {', '.join(missing)} on PATH "
                        f"(apt install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")
    t0 = time.perf_counter()
    from nrqc.cortex_m.int8_input import INT8_FUNC, find_quantized_input

    mod = import_relax(m)
    quant, mod = find_quantized_input(mod)
    log(f"imported {m.path.name}: {len(m.onnx_model.graph.node)} ONNX nodes, {len(ctx.layers)} layers")
    try:
        mod = run_pipeline(mod, ctx, _steps())
    except NrqcError:
        raise
    except Exception as e:
        last = ctx.steps_run[-1]["name"] if ctx.steps_run else "import"
        raise NrqcError(f"{m.path}: compilation failed in the pass pipeline (after {last}): "
                        f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}") from None
    resolve_tvm_kernels(ctx.layers, ctx.kernels_in_order)
    relabel_fused_layers(mod, ctx.layers)
    weights = constant_bytes_by_dtype(mod)
    plan = emit.plan_caller(mod, m.inputs, m.outputs)
    entries = [("nrqc_run", plan, m.inputs)]
    extra_header = ""
    if quant is not None:
        q_inputs = [TensorSpec(s.name, s.shape, quant.dtype) if i == quant.index else s for i, s in enumerate(m.inputs)]
        # main's own kernels when its first layer can read the int8 input (no second copy of the
        # model in flash), else main_int8 as the pipeline compiled it
        twin = emit.int8_twin(mod, plan, quant, q_inputs[quant.index])
        entries.append(("nrqc_run_int8", twin or emit.plan_caller(mod, q_inputs, m.outputs, INT8_FUNC, plan.weights),
                        q_inputs))
        if twin is not None:
            log("nrqc_run_int8 runs nrqc_run's kernels, the first layer reading the quantized input directly")
        extra_header = (f"/* nrqc_run_int8: input {quant.index} ({quant.name}) already quantized as the model's "
                        f"QuantizeLinear does:\n   q = saturate(round_half_even(x / SCALE) + ZERO_POINT) */\n"
                        f"#define NRQC_INPUT{quant.index}_SCALE {float(np.float32(quant.scale)).hex()}f\n"
                        f"#define NRQC_INPUT{quant.index}_ZERO_POINT {quant.zero_point}\n")
        log(f"input {quant.name} is quantized by the model ({quant.dtype}, scale {quant.scale:g}, "
            f"zero point {quant.zero_point}): also emitting nrqc_run_int8")
    from nrqc.cortex_m.stream_api import state_slots, stream_api

    slots = state_slots(m.inputs, m.outputs, entries)  # a streaming model: nrqc_step keeps its state
    stream_header, stream_source = stream_api(slots, entries, m.outputs)
    if slots:
        log("streaming API: nrqc_step with the state held in the library ("
            + ", ".join(f"{s.input} <- {s.output}{' in place' if s.in_place else ' ping-pong'}" for s in slots) + ")")
    source = generate_kernels(mod, {name for _, p, _ in entries for name, _ in p.calls}, target)
    with staged_directory(out) as stage:
        lib_info = emit.write_library(stage, source, entries, m.outputs, m.path.name, _include_dirs(),
                                      extra_header + stream_header, stream_source)
        build = stage / FIRMWARE_DIR / "build"
        objs, foreign = firmware.compile_library(stage, build, target.name)
        if foreign:
            ctx.notes.append("cortex-m: the library calls " + ", ".join(foreign) + " (libm/libgcc)")
        sizes = firmware.library_sizes(objs, build)
        per_layer = memory_report.table(memory_report.per_call(plan, ctx.layers, firmware.symbol_sizes(objs),
                                                               sizes["frames"]), sizes["flash_bytes"])
        build_seconds = time.perf_counter() - t0
        log(f"built C library for {target.name} in {build_seconds:.1f} s: flash {sizes['flash_bytes']:,} B "
            f"(text+rodata {sizes['text']:,} + data {sizes['data']:,}), RAM {sizes['ram_bytes']:,} B "
            f"(data+bss, arena {lib_info['arena_bytes']:,}) + stack {sizes['stack_bytes']:,} B")
        flash_limit = int(target.figures["flash_bytes"].value)
        ram_limit = int(target.figures["ram_bytes"].value)
        if sizes["flash_bytes"] > flash_limit:
            raise NrqcError(f"{m.path.name} does not fit {target.name}: flash {sizes['flash_bytes']:,} B "
                            f"(code+weights) > {flash_limit:,} B")
        if sizes["ram_bytes"] + sizes["stack_bytes"] > ram_limit:
            raise NrqcError(f"{m.path.name} does not fit {target.name}: RAM {sizes['ram_bytes']:,} B "
                            f"(arena {lib_info['arena_bytes']:,}) + stack {sizes['stack_bytes']:,} B > {ram_limit:,} B")
        stored = random_inputs(m.inputs, options.seed)
        fw = stage / FIRMWARE_DIR
        firmware.write_firmware_sources(fw, m.inputs, m.outputs, stored, quant)
        for i, s in enumerate(m.inputs):
            np.save(fw / f"stored_input{i}.npy", stored[s.name])
        elf = firmware.link_firmware(objs, fw, stage, build, target.name)
        manifest = make_manifest(m, ctx, weights, stage / emit.HEADER, build_seconds)
        manifest.update({
            "library": emit.HEADER,
            "library_bytes": sizes["flash_bytes"],
            "sources": list(emit.SOURCES),
            "firmware": FIRMWARE_ELF,
            "flash_bytes": sizes["flash_bytes"],
            "ram_bytes": sizes["ram_bytes"],
            "arena_bytes": lib_info["arena_bytes"],
            "stack_bytes": sizes["stack_bytes"],
            "limits": {"flash_bytes": flash_limit, "ram_bytes": ram_limit},
            "int8_input": (None if quant is None else
                           {"entry_point": "nrqc_run_int8", "input": quant.name, "index": quant.index,
                            "dtype": quant.dtype, "scale": quant.scale, "zero_point": quant.zero_point}),
            "streaming": {"states": [x.manifest() for x in slots]} if slots else None,
            "cortex_m": {**lib_info, "text": sizes["text"], "data": sizes["data"], "bss": sizes["bss"],
                         "firmware_sizes": firmware.firmware_sizes(elf), "library_calls": foreign,
                         "seed": options.seed, "per_layer": per_layer},
        })
        check = {"ran": False, "reason": "--no-check"}
        if options.check:
            got = firmware.run_firmware(target, elf, m.outputs)
            ref = run_onnxruntime(m.path, {**stored, **m.constants})
            check = compare_outputs(got["outputs"], ref, [o.name for o in m.outputs], options.atol, options.rtol,
                                    options.seed)
            check["summary"] = check["summary"].replace("numerical check", f"numerical check in QEMU ({target.name})")
            if quant is not None:  # the int8 entry point on the same input, quantized in numpy
                qcheck = compare_outputs(got["outputs_int8"], ref, [o.name for o in m.outputs], options.atol,
                                         options.rtol, options.seed)
                check["int8_entry_point"] = qcheck
                check["passed"] = bool(check["passed"] and qcheck["passed"])
                check["summary"] += f"; nrqc_run_int8: max abs error {qcheck['max_abs_error']:.3g}"
            check["instructions"] = got["instructions"]
            manifest["instructions"] = got["instructions"]
            log(check["summary"])
            log(f"executed instructions per inference (QEMU icount): {got['instructions']:,}")
        manifest["check"] = check
        write_json(stage / MANIFEST, manifest)
        (stage / REPORT).write_text(compile_report(manifest))
        if check.get("ran") and not check["passed"]:
            raise CheckFailed(check["summary"])
    log(f"wrote {out}/ ({emit.HEADER}, {', '.join(emit.SOURCES)}, {FIRMWARE_ELF}, manifest.json, report.txt)")
    return out


def compile_report(manifest: dict) -> str:
    from nrqc.report import compile_report as base

    lim = manifest["limits"]
    cm = manifest["cortex_m"]
    lines = [
        "",
        f"cortex-m footprint (arm-none-eabi-size of the library objects, {manifest['target']})",
        f"  flash: {manifest['flash_bytes']:>9,} B of {lim['flash_bytes']:,} "
        f"({100 * manifest['flash_bytes'] / lim['flash_bytes']:.1f}%)  text+rodata {cm['text']:,} + data {cm['data']:,}",
        f"  RAM:   {manifest['ram_bytes']:>9,} B of {lim['ram_bytes']:,} "
        f"({100 * manifest['ram_bytes'] / lim['ram_bytes']:.1f}%)  data {cm['data']:,} + bss {cm['bss']:,} "
        f"(arena {manifest['arena_bytes']:,} = plan {cm['storage_bytes']:,} + workspace {cm['workspace_bytes']:,})",
        f"  stack: {manifest['stack_bytes']:>9,} B (deepest frame chain, -fstack-usage; counted in the RAM fit check)",
    ]
    if manifest.get("instructions") is not None:
        lines.append(f"  executed instructions per inference (QEMU -icount): {manifest['instructions']:,}")
    if cm.get("per_layer"):
        from nrqc.cortex_m.memory_report import format_lines

        lines += format_lines(cm["per_layer"], manifest["arena_bytes"])
    return base(manifest) + "\n".join(lines) + "\n"


def _specs(manifest, key):
    return [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest[key]]


def run_artifact(out: Path, manifest: dict, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the artifact's firmware in QEMU on `feeds` (read through semihosting files)."""
    from nrqc.cortex_m import firmware

    elf = Path(out) / manifest.get("firmware", FIRMWARE_ELF)
    if not elf.exists():
        raise NrqcError(f"{out}: no {FIRMWARE_ELF}; recompile with `nrqc compile`")
    quant = manifest.get("int8_input")
    indexed, qfeeds = {}, {}
    for i, spec in enumerate(_specs(manifest, "inputs")):
        arr = np.asarray(feeds[spec.name])
        if tuple(arr.shape) != tuple(spec.shape):
            raise NrqcError(f"--input {spec.name}: shape {list(arr.shape)}, the artifact expects {list(spec.shape)}")
        if quant and quant["index"] == i and str(arr.dtype) == quant["dtype"]:
            qfeeds[i] = arr  # already quantized: run nrqc_run_int8
        else:
            indexed[i] = arr.astype(spec.dtype if spec.dtype != "bool" else "uint8")
    got = firmware.run_firmware(target_of(manifest), elf, _specs(manifest, "outputs"), indexed, qfeeds=qfeeds)
    return got["outputs_int8"] if qfeeds else got["outputs"]


def _footprint_of(out: Path) -> dict:
    """Another Cortex-M artifact's footprint and instruction count, from its manifest (the
    figures its compile measured), for `nrqc profile OUT --against OTHER`."""
    other = read_manifest(out)
    if "flash_bytes" not in other or not isinstance(target_of(other).backend, BareMetalC):
        raise NrqcError(f"--against {out}: not a Cortex-M artifact (target {other.get('target')})")
    instructions = other.get("instructions")
    if instructions is None:  # compiled with --no-check: count now
        from nrqc.cortex_m import firmware

        instructions = firmware.run_firmware(target_of(other), Path(out) / other.get("firmware", FIRMWARE_ELF),
                                             _specs(other, "outputs"))["instructions"]
    return {"artifact": str(out), "model": other.get("source_model"), "target": other.get("target"),
            "flash_bytes": other["flash_bytes"], "ram_bytes": other["ram_bytes"],
            "stack_bytes": other["stack_bytes"], "arena_bytes": other["arena_bytes"],
            "instructions": int(instructions)}


def profile_artifact(out: Path, manifest: dict, against: Path | None = None) -> dict:
    """Footprint (from the manifest's arm-none-eabi-size figures) and a fresh QEMU
    executed-instruction count on the stored input. against: another Cortex-M artifact
    (e.g. the float twin of a BAM model) whose flash / RAM / instructions are shown beside."""
    from nrqc.cortex_m import firmware

    out = Path(out)
    elf = out / manifest.get("firmware", FIRMWARE_ELF)
    build = out / FIRMWARE_DIR / "build"
    objs = sorted(build.glob("*.o"))
    if not elf.exists() or not objs:
        raise NrqcError(f"{out}: firmware or library objects missing; recompile with `nrqc compile`")
    sizes = firmware.library_sizes(objs, build)
    run = firmware.run_firmware(target_of(manifest), elf, _specs(manifest, "outputs"))
    lim = manifest["limits"]
    result = {
        "target": manifest["target"],
        "model": manifest["source_model"],
        "memory": {"flash_bytes": sizes["flash_bytes"], "ram_bytes": sizes["ram_bytes"],
                   "arena_bytes": manifest["arena_bytes"], "stack_bytes": sizes["stack_bytes"],
                   "text": sizes["text"], "data": sizes["data"], "bss": sizes["bss"],
                   "flash_limit_bytes": lim["flash_bytes"], "ram_limit_bytes": lim["ram_bytes"],
                   "fits": sizes["flash_bytes"] <= lim["flash_bytes"]
                   and sizes["ram_bytes"] + sizes["stack_bytes"] <= lim["ram_bytes"]},
        "instructions": run["instructions"],
        "instruction_measure": "QEMU -icount shift=0 (1 ns virtual time per executed instruction), SysTick "
                               "around nrqc_run, calibrated on a 2,000,000-instruction loop",
        "ticks": run["ticks"],
        "macs": manifest.get("macs"),
    }
    if against is not None:
        other = _footprint_of(Path(against))
        mine = {"flash_bytes": sizes["flash_bytes"], "ram_bytes": sizes["ram_bytes"],
                "ram_with_stack_bytes": sizes["ram_bytes"] + sizes["stack_bytes"], "instructions": run["instructions"]}
        theirs = {**other, "ram_with_stack_bytes": other["ram_bytes"] + other["stack_bytes"]}
        result["against"] = other
        # other / this: > 1 means this artifact needs less
        result["reduction"] = {k: (theirs[k] / mine[k] if mine[k] else None) for k in mine}
    return result


def format_against(this: dict, other: dict, reduction: dict) -> list[str]:
    """Lines comparing flash / RAM / instructions of this artifact with another one."""
    def ratio(k):
        r = reduction.get(k)
        return f"{r:.2f}x" if r else "-"

    return [
        f"  vs {other['artifact']} ({other.get('model')}):  this / other (other/this)",
        f"    flash         {this['flash_bytes']:>10,} B / {other['flash_bytes']:>10,} B  ({ratio('flash_bytes')})",
        f"    RAM + stack   {this['ram_with_stack_bytes']:>10,} B / "
        f"{other['ram_bytes'] + other['stack_bytes']:>10,} B  ({ratio('ram_with_stack_bytes')})",
        f"    instructions  {this['instructions']:>12,} / {other['instructions']:>12,}  ({ratio('instructions')})",
    ]


def format_profile(result: dict) -> str:
    mem = result["memory"]
    return "\n".join([
        f"{result['target']}: {result['model']}",
        f"  flash  {mem['flash_bytes']:>10,} B / {mem['flash_limit_bytes']:,} "
        f"({100 * mem['flash_bytes'] / mem['flash_limit_bytes']:.1f}%)  text+rodata {mem['text']:,} + data {mem['data']:,}",
        f"  RAM    {mem['ram_bytes']:>10,} B / {mem['ram_limit_bytes']:,} "
        f"({100 * mem['ram_bytes'] / mem['ram_limit_bytes']:.1f}%)  data+bss, arena {mem['arena_bytes']:,}; "
        f"stack {mem['stack_bytes']:,}",
        f"  fits   {'yes' if mem['fits'] else 'NO'}",
        f"  instructions/inference {result['instructions']:>12,}  ({result['instruction_measure']})",
        *([f"  MACs/inference         {result['macs']:>12,}"] if result.get("macs") else []),
        *(format_against({"flash_bytes": mem["flash_bytes"], "ram_with_stack_bytes": mem["ram_bytes"] + mem["stack_bytes"],
                          "instructions": result["instructions"]}, result["against"], result["reduction"])
          if result.get("against") else []),
    ])


__all__ = ["build_artifact", "run_artifact", "profile_artifact", "format_profile", "json"]
