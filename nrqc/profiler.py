"""`nrqc profile`: latency against onnxruntime, per-operator breakdown, memory table."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nrqc import memory as device_memory
from nrqc.onnx_model import TensorSpec, random_inputs
from nrqc.reference import manifest_constants


def _stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "min": float(ms.min()),
            "runs": len(ms)}


def _specs(manifest) -> list[TensorSpec]:
    return [TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in manifest["inputs"]]


def time_artifact(session, inputs, repeat: int) -> list[float]:
    import contextlib

    from nrqc.runtime import rpc_deadline

    def deadline(what, runs=1):  # a board that stops answering: a message, not a hang
        return rpc_deadline(session.rpc, what, runs) if session.remote is not None else contextlib.nullcontext()

    args = session.to_device(inputs)
    entry = session.entry_for(inputs)  # main_int8 when the quantized input is given as int8
    with deadline("running the model (warm-up)"):
        session.vm[entry](*args)  # warm-up: first call pays lazy initialisation
    # making the timer is itself a call to the board (RPCTimeEvaluator): under the deadline too
    with deadline(f"timing {repeat} runs", runs=repeat + 1):
        timer = session.vm.time_evaluator(entry, session.dev, number=1, repeat=repeat)
        return list(timer(*args).results)


def time_onnxruntime(model_path, inputs, repeat: int, threads: int) -> list[float]:
    from nrqc.reference import ort_session

    sess = ort_session(model_path, threads)
    sess.run(None, inputs)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, inputs)
        out.append(time.perf_counter() - t0)
    return out


def operator_breakdown(session, inputs, repeat: int) -> list[dict]:
    """Per-kernel time from the Relax VM's instrumentation hook (called around every
    call instruction), median over `repeat` runs, largest first."""
    import tvm

    args = session.to_device(inputs)
    per_run: list[dict[str, float]] = []
    started: dict[str, float] = {}
    current: dict[str, float] = {}

    def instrument(func, name, before, ret, *fargs):
        if before:
            started[name] = time.perf_counter()
        else:
            current[name] = current.get(name, 0.0) + time.perf_counter() - started.pop(name, time.perf_counter())
        return 0

    session.vm.set_instrument(tvm.runtime.convert(instrument) if hasattr(tvm.runtime, "convert") else instrument)
    try:
        for _ in range(max(1, repeat)):
            current.clear()
            session.vm[session.entry_for(inputs)](*args)
            per_run.append(dict(current))
    finally:
        session.vm.set_instrument(None)
    names = per_run[0].keys()
    rows = [{"kernel": n, "ms": float(np.median([r.get(n, 0.0) for r in per_run]) * 1e3)} for n in names
            if not n.startswith("vm.builtin")]
    total = sum(r["ms"] for r in rows) or 1.0
    for r in rows:
        r["percent"] = 100.0 * r["ms"] / total
    return sorted(rows, key=lambda r: -r["ms"])


def profile_artifact(out: str | Path, repeat: int = 20, threads: int | None = None, rpc: str | None = None,
                     breakdown: bool = True) -> dict:
    from nrqc.artifact import LIBRARY, read_manifest
    from nrqc.runtime import ArtifactSession

    manifest = read_manifest(out)
    threads = threads or 1
    inputs = random_inputs(_specs(manifest), seed=0)
    session = ArtifactSession(out, manifest, rpc=rpc)
    threads_requested = threads
    threads_note = None
    if session.remote is not None:
        # TVM_NUM_THREADS here does not reach the board: size the board's own pool.
        threads, threads_note = configure_remote_threads(session.remote, threads)
    lat = _stats(time_artifact(session, inputs, repeat))
    quant = manifest.get("int8_input")
    if quant and quant.get("entry_point") == "main_int8":  # the model quantizes its input: also time main_int8
        from nrqc.passes.binary_int8_entry import QuantizedInput, quantize_like_onnx

        q = QuantizedInput(quant["index"], quant["input"], quant["dtype"], quant["scale"], quant["zero_point"])
        int8_lat = _stats(time_artifact(session, {**inputs, q.name: quantize_like_onnx(inputs[q.name], q)}, repeat))
    else:
        int8_lat = None
    board = {"emulated": False}
    if session.remote is not None:
        from nrqc.emulator import remote_board_info

        board = remote_board_info(session.remote)
    result = {
        "artifact": str(out),
        "target": manifest["target"],
        "where": f"board at {rpc}" if rpc else "this host",
        # An emulated board's latency is qemu's, not a Pi's: say so wherever it is shown.
        "emulated": bool(board.get("emulated")),
        "board": board,
        "threads": threads,
        "threads_requested": threads_requested,
        "threads_note": threads_note,
        "batch": 1,
        "latency_ms": lat,
        "int8_input_latency_ms": int8_lat,  # main_int8 (input given already quantized), when built
        "tuning": manifest.get("tuning", {"tuned": False, "database": None}),
    }
    src = manifest.get("source_model")
    if src and Path(src).exists() and not rpc:
        ort = _stats(time_onnxruntime(src, {**inputs, **manifest_constants(manifest)}, repeat, threads))
        result["onnxruntime_latency_ms"] = ort
        result["speedup_vs_onnxruntime"] = ort["median"] / lat["median"]
    else:
        result["onnxruntime_latency_ms"] = None
        result["speedup_vs_onnxruntime"] = None
        result["onnxruntime_note"] = ("not measured: onnxruntime runs on this host, the model on the board"
                                      if rpc else f"source model {src} not found")
    result["operators"] = operator_breakdown(session, inputs, min(repeat, 5)) if breakdown and not rpc else []
    result["memory"] = memory_of(manifest, out)
    result["macs"] = manifest.get("macs")
    return result


def configure_remote_threads(remote, threads: int) -> tuple[int, str | None]:
    """Size the board's TVM thread pool through RPC; returns (threads the board now uses, note).

    ``runtime.config_threadpool(1, n)`` (mode 1 = the big cores: all of a Pi 4's) asks for
    ``n`` workers, ``runtime.NumThreads()`` reads back what the pool uses: the pool cannot
    grow beyond the size it was created with (the board's core count, or its
    ``TVM_NUM_THREADS``), so the figure reported is the board's, not the request."""
    note = None
    try:
        remote.get_function("runtime.config_threadpool")(1, int(threads))
    except Exception as e:  # noqa: BLE001 - an old/stripped runtime without the function
        note = f"the board's runtime could not configure its thread pool ({str(e).splitlines()[0][:80]})"
    try:
        actual = int(remote.get_function("runtime.NumThreads")())
    except Exception:  # noqa: BLE001
        return threads, (note or "") + ("; " if note else "") + "the board did not report its thread count"
    if actual != threads:
        note = ((note + "; ") if note else "") + (
            f"the board's TVM thread pool has {actual} worker(s), not {threads}: its size is fixed when the "
            f"server's pool starts (the board's cores, or TVM_NUM_THREADS in the rpc_server's environment)")
    return actual, note


def add_instruction_count(result: dict, out: str | Path, log=lambda m: None) -> None:
    """A board-free, repeatable cost of one inference: aarch64 instructions executed in
    model.so under qemu (see nrqc.emulator.icount), for comparing two builds.

    Builds (or reuses) the cached emulated root file system, as ``nrqc emulate`` does. The
    counted run's outputs are compared with onnxruntime (same seeded input) when the
    source model is here, so the count is known to belong to a correct run."""
    from nrqc.artifact import read_manifest
    from nrqc.emulator.icount import measure_instructions
    from nrqc.emulator.mca import missing_tools
    from nrqc.targets import get_target

    manifest = read_manifest(out)
    no_mca = missing_tools()
    m = measure_instructions(out, seed=0, log=log, estimate_cycles=not no_mca)
    est = m.get("cycles")
    clock = get_target(manifest["target"]).figures.get("clock_ghz") if est else None
    # An estimate, never a measurement: the labels say so wherever it is shown.
    result["estimated_cycles"] = None if est is None else {
        "cycles": est["cycles"], "cpu": est["mcpu"], "what": est["what"],
        "latency_ms": est["cycles"] / (clock.value * 1e6) if clock else None,
        "clock_ghz": clock.value if clock else None, "clock_source": clock.source if clock else None}
    if no_mca:
        result["estimated_cycles_note"] = "not estimated: missing " + "; ".join(no_mca)
    result["instructions"] = int(m["instructions"])
    result["instructions_what"] = m.get("what")
    result["instructions_emulator"] = m.get("emulator")
    result["instructions_seconds"] = m.get("seconds")
    macs = manifest.get("macs")
    result["instructions_per_mac"] = m["instructions"] / macs if macs else None
    src = manifest.get("source_model")
    if src and Path(src).exists():
        from nrqc.check import compare_outputs
        from nrqc.reference import run_onnxruntime

        ref = run_onnxruntime(src, {**random_inputs(_specs(manifest), seed=0), **manifest_constants(manifest)})
        chk = compare_outputs(m["outputs"], ref, [o["name"] for o in manifest["outputs"]], 1e-4, 1e-4, 0)
        result["instructions_check"] = {"passed": chk["passed"], "max_abs_error": chk["max_abs_error"]}
    else:
        result["instructions_check"] = None


def profile_without_board(out: str | Path, log=lambda m: None) -> dict:
    """The profile of a cross-compiled aarch64 artifact with no board (the cross back end
    sends only targets with an emulated board here): the emulated instruction count (the
    stable measure) and the memory table. No latency: an emulated latency is not a Pi
    latency, and there is no board to measure one."""
    from nrqc.artifact import read_manifest
    from nrqc.emulator.guest_run import SHORT_LABEL

    manifest = read_manifest(out)

    result = {
        "artifact": str(out),
        "target": manifest["target"],
        "where": "no board",
        "emulated": True,
        "board": {"emulated": True, "machine": "aarch64", "label": SHORT_LABEL},
        "threads": 1,
        "batch": 1,
        "latency_ms": None,
        "latency_note": "not measured: no board (--rpc HOST:PORT measures on a Pi); an emulated latency "
                        "would not be a Pi latency",
        "tuning": manifest.get("tuning", {"tuned": False, "database": None}),
        "onnxruntime_latency_ms": None,
        "speedup_vs_onnxruntime": None,
        "onnxruntime_note": "not measured: no board latency to compare with",
        "operators": [],
        "memory": memory_of(manifest, out),
        "macs": manifest.get("macs"),
    }
    add_instruction_count(result, out, log=log)
    result["board"]["emulator"] = result.get("instructions_emulator")
    return result


def memory_of(manifest: dict, out: str | Path) -> dict:
    from nrqc.artifact import LIBRARY

    return {
        "weights_bytes": manifest["weights_bytes"],
        "weights_bytes_by_dtype": manifest["weights_bytes_by_dtype"],
        "peak_activation_bytes": manifest["peak_activation_bytes"],
        "library_bytes": (Path(out) / manifest.get("library", LIBRARY)).stat().st_size,
        "total_bytes": manifest["weights_bytes"] + manifest["peak_activation_bytes"],
        # the model's input/output tensors are part of the peak (the caller owns them)
        "io_bytes": int((manifest.get("memory_plan") or {}).get("io_bytes", 0)),
        "device": device_memory.model_memory(manifest),  # the input at its real width (int8 when the model quantizes it)
    }


def add_comparison(result: dict, other_out: str | Path) -> None:
    """Memory of another artifact (e.g. the float twin of a binary model) beside this one,
    with the reduction factors other / this."""
    from nrqc.artifact import read_manifest

    other = memory_of(read_manifest(other_out), other_out)
    mine = result["memory"]
    result["against"] = {"artifact": str(other_out), "memory": other}
    result["memory_reduction"] = {
        k: (other[k] / mine[k] if mine[k] else None)
        for k in ("weights_bytes", "peak_activation_bytes", "total_bytes", "library_bytes")}
    mine_x, other_x = mine["total_bytes"] - mine["io_bytes"], other["total_bytes"] - other["io_bytes"]
    result["memory_reduction"]["total_without_io_bytes"] = other_x / mine_x if mine_x > 0 else None
    result["memory_reduction"]["device"] = device_memory.reduction(mine["device"], other["device"])


def format_profile(p: dict) -> str:
    from nrqc.report import _kb

    lat = p["latency_ms"]
    where = p["where"] + (f", EMULATED ({p['board'].get('emulator', 'qemu')}): latency is not a device latency"
                          if p["emulated"] else "")
    threads = f"{p['threads']} thread(s)"
    if p.get("threads_requested") not in (None, p["threads"]):
        threads += f" (asked for {p['threads_requested']})"
    lines = [f"profile of {p['artifact']} ({p['target']}, {where}), "
             f"batch {p['batch']}, {threads}, "
             f"{'tuned with ' + str(p['tuning'].get('database')) if p['tuning'].get('tuned') else 'untuned'}"]
    if p.get("threads_note"):
        lines.append(f"  threads: {p['threads_note']}")
    lines += ["", "latency (ms)          median       p90       min   runs"]
    if lat:
        lines.append(f"  nrqc            {lat['median']:>10.3f} {lat['p90']:>9.3f} {lat['min']:>9.3f} {lat['runs']:>6}")
    else:
        lines.append(f"  nrqc            {p.get('latency_note', 'not measured')}")
    q = p.get("int8_input_latency_ms")
    if q:  # main_int8: the model's input given already quantized
        lines.append(f"  nrqc main_int8  {q['median']:>10.3f} {q['p90']:>9.3f} {q['min']:>9.3f} {q['runs']:>6}"
                     "   (input given already quantized)")
    ort = p.get("onnxruntime_latency_ms")
    if ort:
        lines.append(f"  onnxruntime     {ort['median']:>10.3f} {ort['p90']:>9.3f} {ort['min']:>9.3f} {ort['runs']:>6}")
        s = p["speedup_vs_onnxruntime"]
        lines.append(f"  speedup vs onnxruntime: {s:.2f}x" + (f" (nrqc takes {1 / s:.1f}x onnxruntime's time)" if s < 1 else ""))
    else:
        lines.append(f"  onnxruntime     {p.get('onnxruntime_note', 'not measured')}")
    if p.get("operators"):
        lines += ["", "per-operator time (median of runs, VM instrumentation)",
                  f"  {'kernel':<48} {'ms':>9} {'%':>6}"]
        for r in p["operators"][:25]:
            lines.append(f"  {r['kernel'][:48]:<48} {r['ms']:>9.3f} {r['percent']:>5.1f}%")
    if p.get("instructions") is not None:
        lines += ["", f"instructions per inference (emulated, stable across runs): {p['instructions']:,}"]
        if p.get("instructions_per_mac"):
            lines.append(f"  {p['instructions_per_mac']:.3f} instructions per MAC ({p['macs']:,} MACs)")
        chk = p.get("instructions_check")
        if chk:
            lines.append(f"  counted run vs onnxruntime: max abs error {chk['max_abs_error']:.3g} "
                         f"({'match' if chk['passed'] else 'MISMATCH: the count is of a wrong run'})")
        lines.append(f"  {p.get('instructions_what') or ''}".rstrip())
        if p.get("instructions_emulator"):
            lines.append(f"  emulator: {p['instructions_emulator']}; counted in {p.get('instructions_seconds')} s")
        est = p.get("estimated_cycles")
        if est:
            cpu = est["cpu"].replace("cortex-a", "Cortex-A")
            lines.append(f"estimated {cpu} cycles (llvm-mca, ignores caches and memory): {est['cycles']:,}")
            if est.get("latency_ms") is not None:
                lines.append(f"  ESTIMATED latency at {est['clock_ghz']:g} GHz: {est['latency_ms']:.3f} ms "
                             f"(an estimate from a core model, not a measurement)")
        elif p.get("estimated_cycles_note"):
            lines.append(f"estimated cycles: {p['estimated_cycles_note']}")
    m = p["memory"]
    if p.get("against"):
        o = p["against"]["memory"]
        r = p["memory_reduction"]
        lines += ["", f"memory: this artifact vs {p['against']['artifact']}",
                  f"  {'':<18}{'this':>12}{'other':>12}{'other/this':>12}"]
        for label, key in (("weights", "weights_bytes"), ("peak activations", "peak_activation_bytes"),
                           ("weights + acts", "total_bytes"), ("library", "library_bytes")):
            ratio = f"{r[key]:.1f}x" if r[key] else "-"
            lines.append(f"  {label:<18}{_kb(m[key]):>12}{_kb(o[key]):>12}{ratio:>12}")
            if key == "total_bytes" and r.get("total_without_io_bytes"):
                lines.append(f"  {'  without I/O':<18}{_kb(m[key] - m['io_bytes']):>12}"
                             f"{_kb(o[key] - o['io_bytes']):>12}{r['total_without_io_bytes']:>11.1f}x"
                             "   (model input/output tensors, owned by the caller)")
        lines += device_memory.format_rows(m["device"], o["device"], _kb)
        lines.append("  weights by dtype: " + ", ".join(f"{k}: {_kb(v)}" for k, v in sorted(m["weights_bytes_by_dtype"].items()))
                     + " (other: " + ", ".join(f"{k}: {_kb(v)}" for k, v in sorted(o["weights_bytes_by_dtype"].items())) + ")")
        return "\n".join(lines)
    lines += ["", "memory",
              f"  weights           {_kb(m['weights_bytes']):>12}  "
              + ", ".join(f"{k}: {_kb(v)}" for k, v in sorted(m["weights_bytes_by_dtype"].items())),
              f"  peak activations  {_kb(m['peak_activation_bytes']):>12}",
              f"  weights + acts    {_kb(m['total_bytes']):>12}",
              f"  library           {_kb(m['library_bytes']):>12}"]
    return "\n".join(lines)


def add_onnxruntime_counts(result: dict, out: str | Path, models: list[str | Path] | None = None,
                           log=lambda m: None) -> None:
    """onnxruntime's official aarch64 build counted on the emulated board beside nrqc's count
    of `out` (same ``-cpu``, same seeded input, same llvm-mca model; see
    nrqc.emulator.peer_count): one row per ONNX file of `models` (default: the artifact's
    source model), e.g. a BAM model, its float twin and an int8 QDQ version. Each counted
    onnxruntime run is checked against onnxruntime on this host."""
    from nrqc.artifact import read_manifest
    from nrqc.emulator.board import qemu_cpu_for
    from nrqc.emulator.mca import missing_tools
    from nrqc.emulator.peer_count import count_onnxruntime
    from nrqc.errors import NrqcError

    manifest = read_manifest(out)
    why = onnxruntime_count_refusal(manifest, out, models)
    if why:
        raise NrqcError(why)
    cpu = qemu_cpu_for(manifest.get("tvm_target"))
    models = [Path(p) for p in (models or [])] or [Path(manifest["source_model"])]
    if result.get("instructions") is None:
        add_instruction_count(result, out, log=log)
    shapes = {s["name"]: tuple(s["shape"]) for s in manifest["inputs"]}
    estimate = not missing_tools()
    rows = []
    for i, model in enumerate(models, 1):
        log(f"counting onnxruntime on {model} ({i}/{len(models)}) under -cpu {cpu}")
        r = count_onnxruntime(model, cpu, shapes=shapes, seed=0, estimate_cycles=estimate, log=log)
        rows.append({"model": str(model), "instructions": r["instructions"],
                     "cycles": (r.get("cycles") or {}).get("cycles"), "onnxruntime": r["onnxruntime"],
                     "check": _onnxruntime_check(model, r["outputs"], shapes)})
    mine = result.get("estimated_cycles") or {}
    result["against_onnxruntime"] = {
        "cpu": cpu, "emulator": result.get("instructions_emulator"), "what": rows and r["what"],
        "nrqc": {"artifact": str(out), "model": manifest.get("source_model"), "instructions": result["instructions"],
                 "cycles": mine.get("cycles")},
        "onnxruntime": rows,
    }


def onnxruntime_count_refusal(manifest: dict, out, models) -> str | None:
    """Why `add_onnxruntime_counts` cannot run for this artifact (None when it can)."""
    from nrqc.emulator.icount import aarch64_refusal

    why = aarch64_refusal(manifest, out)
    if why:
        return f"--against-onnxruntime: {why} (onnxruntime is counted on the emulated aarch64 board)"
    for p in models or [manifest.get("source_model") or ""]:
        if not Path(p).is_file():
            return (f"--against-onnxruntime {p}: no such ONNX file" if models else
                    f"--against-onnxruntime: the artifact's source model {p!r} is gone; name the ONNX file")
    return None


def _onnxruntime_check(model: Path, outputs: list, shapes: dict) -> dict:
    """The emulated onnxruntime run's outputs against onnxruntime here on the same input."""
    import onnx

    from nrqc.check import compare_outputs
    from nrqc.emulator.peer_count import onnx_input_specs
    from nrqc.reference import run_onnxruntime

    specs = onnx_input_specs(model, shapes)
    ref = run_onnxruntime(model, random_inputs(specs, seed=0))
    names = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
    chk = compare_outputs(outputs, ref, names, 1e-5, 1e-5, 0)
    return {"passed": chk["passed"], "max_abs_error": chk["max_abs_error"]}


def format_onnxruntime_counts(p: dict) -> str:
    """The side-by-side table of `add_onnxruntime_counts`: instructions and estimated cycles,
    with onnxruntime / nrqc ratios (> 1: nrqc executes less)."""
    a = p["against_onnxruntime"]
    me = a["nrqc"]

    def ratio(theirs, mine):
        return f"{theirs / mine:.2f}x" if theirs and mine else "-"

    def cyc(v):
        return f"{v:,}" if v is not None else "-"

    cpu = a["cpu"].replace("cortex-a", "Cortex-A")
    lines = [f"nrqc vs onnxruntime, counted alike on the emulated board (-cpu {a['cpu']}, 1 thread, same seeded input;",
             f"  estimated {cpu} cycles from llvm-mca, ignoring caches and memory; ratio = onnxruntime / nrqc)",
             f"  {'engine':<20}{'model':<32}{'instructions':>14}{'est. cycles':>14}{'instr ratio':>12}"
             f"{'cycle ratio':>12}  check",
             f"  {'nrqc':<20}{Path(me['model'] or me['artifact']).name[:31]:<32}{me['instructions']:>14,}"
             f"{cyc(me['cycles']):>14}{'1.00x':>12}{'1.00x' if me['cycles'] else '-':>12}  "
             + ("match" if (p.get("instructions_check") or {}).get("passed") else
                "-" if p.get("instructions_check") is None else "MISMATCH")]
    for r in a["onnxruntime"]:
        ok = r["check"]
        lines.append(f"  {'onnxruntime ' + r['onnxruntime']:<20}{Path(r['model']).name[:31]:<32}{r['instructions']:>14,}"
                     f"{cyc(r['cycles']):>14}{ratio(r['instructions'], me['instructions']):>12}"
                     f"{ratio(r['cycles'], me['cycles']):>12}  "
                     + (f"match (max abs error {ok['max_abs_error']:.2g})" if ok["passed"] else
                        f"MISMATCH vs onnxruntime here ({ok['max_abs_error']:.3g})"))
    lines.append(f"  onnxruntime: {a['what']}")
    return "\n".join(lines)


def add_bare_metal_cycles(result: dict, out: str | Path, manifest: dict, log=lambda m: None) -> None:
    """An llvm-mca cycle estimate of one nrqc_run of a Cortex-M firmware, beside its QEMU
    instruction count: the blocks one run executes in the library (qemu-system-arm TB
    logging, nrqc.emulator.mprofile) through ``llvm-mca -mcpu=cortex-m4`` and, for a
    Cortex-M7 build, ``cortex-m7`` (LLVM 14's M7 model lacks some instructions: then a
    note says which, and the M4 figure stands)."""
    from nrqc.cortex_m import FIRMWARE_ELF, FIRMWARE_DIR, firmware
    from nrqc.emulator.mca import estimate_cycles, missing_tools
    from nrqc.emulator.mprofile import count_firmware_blocks
    from nrqc.errors import NrqcError
    from nrqc.manifest import target_of

    if missing_tools():
        result["estimated_cycles_note"] = "not estimated: missing " + "; ".join(missing_tools())
        return
    if manifest.get("int8_input"):
        result["estimated_cycles_note"] = ("not estimated: the test firmware of a model with an int8 entry point "
                                           "runs both entry points")
        return
    target = target_of(manifest)
    elf = Path(out) / manifest.get("firmware", FIRMWARE_ELF)
    objs = sorted((Path(out) / FIRMWARE_DIR / "build").glob("*.o"))
    log("counting the blocks one nrqc_run executes (qemu-system-arm TB logging) for llvm-mca")
    counter, phase = count_firmware_blocks(firmware.qemu_command(target, elf), elf, objs, log=log)
    blocks = counter.executed_blocks(phase)
    logged = counter.total(phase)[0]
    est = {"logged_instructions": int(logged), "cycles": {}, "what": None, "notes": []}
    cpus = ["cortex-m4"] + ([target.tvm_target["mcpu"]] if target.tvm_target.get("mcpu") not in (None, "cortex-m4")
                            else [])
    for cpu in cpus:
        try:
            r = estimate_cycles(blocks, cpu)
        except NrqcError as e:
            est["notes"].append(f"{cpu}: not estimated ({str(e).splitlines()[-1][:160]})")
            continue
        est["cycles"][cpu] = r["cycles"]
        est["what"] = r["what"]
    result["estimated_cycles"] = est


def format_bare_metal_cycles(p: dict) -> str:
    est = p.get("estimated_cycles")
    if not est:
        return f"  estimated cycles: {p.get('estimated_cycles_note', 'not estimated')}"
    lines = [f"  estimated cycles/inference (llvm-mca per executed block x executions; ignores flash wait "
             f"states and memory; {est['logged_instructions']:,} instructions in the logged blocks):"]
    for cpu, c in est["cycles"].items():
        lines.append(f"    {cpu.replace('cortex-m', 'Cortex-M')}: {c:,}")
    lines += [f"    {n}" for n in est["notes"]]
    return "\n".join(lines)


def profile_stream(out: str | Path, manifest: dict, session, frames: int, *, threads: int = 1,
                   rpc: str | None = None, explicit_states: tuple[str, ...] = (), time_axis: int | None = None,
                   frame_ms: float | None = None, hop_ms: float | None = None, seed: int = 0) -> dict:
    """`nrqc profile OUT --stream N`: N seeded frames streamed through `session` (the back
    end's `open_session`) with the state carried (as `nrqc run --stream` does), the wall time
    of each call, the same stream through onnxruntime on the source model timed alike (its
    outputs compared), and the real-time factor at the model's frame rate (per-frame latency
    / audio per frame)."""
    from nrqc.check import compare_outputs
    from nrqc.streaming import frame_ms_of, run_stream, stream_onnxruntime

    plan, warm, frames_in, states = _seeded_stream(manifest, frames, explicit_states, time_axis, seed)
    run_stream(session, manifest, plan, warm, states)  # warm-up: the first call pays lazy initialisation
    mine = run_stream(session, manifest, plan, frames_in, states, every_state=False)
    ms, source = frame_ms_of(manifest, plan, frame_ms, hop_ms)
    result = {"artifact": str(out), "target": manifest["target"],
              "where": f"board at {rpc}" if rpc else "this host", "threads": threads,
              "stream_input": plan.stream_input, "shape": list(plan.shape), "time_axis": plan.time_axis,
              "chunk": plan.chunk, "states": [{"input": p.input, "output": p.output} for p in plan.states],
              "frames": frames, "frame_ms": ms, "frame_ms_source": source,
              "latency_ms": _per_frame(mine.seconds), "onnxruntime_latency_ms": None}
    src = manifest.get("source_model")
    if src and Path(src).exists() and not rpc:
        stream_onnxruntime(src, manifest, plan, warm, states, threads=threads)  # warm-up, as for nrqc
        ref = stream_onnxruntime(src, manifest, plan, frames_in, states, threads=threads)
        result["onnxruntime_latency_ms"] = _per_frame(ref.seconds)
        result["speedup_vs_onnxruntime"] = result["onnxruntime_latency_ms"]["median"] / result["latency_ms"]["median"]
        # every frame's other outputs, and the state after the last frame
        names = list(mine.outputs) + [f"{p.input} after the stream" for p in plan.states]
        chk = compare_outputs([*mine.outputs.values(), *mine.final_states.values()],
                              [*(ref.outputs[n] for n in mine.outputs), *(ref.final_states[p.input] for p in plan.states)],
                              names, 1e-5, 1e-5, seed)
        result["stream_check"] = {"passed": chk["passed"], "max_abs_error": chk["max_abs_error"]}
    else:
        result["onnxruntime_note"] = ("not measured: onnxruntime runs on this host, the model on the board"
                                      if rpc else f"source model {src} not found")
    for key in ("latency_ms", "onnxruntime_latency_ms"):
        lat = result[key]
        if lat and ms:
            lat["real_time_factor"] = lat["median"] / ms
    return result


def _seeded_stream(manifest: dict, frames: int, explicit_states, time_axis, seed: int):
    """(plan, one warm-up frame, `frames` frames, zero states) of seeded random frames."""
    from nrqc.streaming import initial_states, plan_stream

    plan = plan_stream(manifest, None, tuple(explicit_states), (), time_axis)
    rng = np.random.default_rng(seed)
    data = [random_inputs([TensorSpec(plan.stream_input, plan.shape, plan.dtype)],
                          seed=int(rng.integers(1 << 31)))[plan.stream_input] for _ in range(frames + 1)]
    return plan, data[0][None], np.stack(data[1:]), initial_states(plan)


def profile_stream_counted(out: str | Path, manifest: dict, session, frames: int, *,
                           explicit_states: tuple[str, ...] = (), time_axis: int | None = None,
                           frame_ms: float | None = None, hop_ms: float | None = None, seed: int = 0,
                           estimate_cycles: bool = True, log=lambda m: None) -> dict:
    """`nrqc profile OUT --stream N` for a build that runs emulated (Cortex-M in QEMU, aarch64
    on the emulated board): N seeded frames streamed with the state carried inside the device
    (`session.run_frames`, counted), the instructions of each frame, the estimated cycles per
    frame (llvm-mca over the executed blocks) and from them, at the target's clock, the
    estimated time per frame and real-time factor; every frame's outputs and the last state
    compared with onnxruntime streaming the source model."""
    from nrqc.check import compare_outputs
    from nrqc.manifest import target_of
    from nrqc.streaming import frame_ms_of, stream_onnxruntime

    plan, _warm, frames_in, states = _seeded_stream(manifest, frames, explicit_states, time_axis, seed)
    got = session.run_frames(plan, frames_in, states, {}, every_state=False, count=True,
                             estimate_cycles=estimate_cycles, log=log)
    ms, source = frame_ms_of(manifest, plan, frame_ms, hop_ms)
    insns = np.asarray(got["instructions"], dtype=np.int64)
    cycles_note = None
    if got.get("cycles") is None and got.get("bare_metal") and estimate_cycles:
        # the firmware's one nrqc_run (its stored input and state) is one frame: its blocks through llvm-mca
        one: dict = {}
        add_bare_metal_cycles(one, out, manifest, log=log)
        est = one.get("estimated_cycles")
        if est and est["cycles"]:
            cpu = list(est["cycles"])[-1]  # the target's own core (cortex-m7 for an M7 build), else the M4
            got["cycles"] = {"median": est["cycles"][cpu], "cpu": cpu,
                             "what": "one nrqc_run of the test firmware (one frame: its stored input and state), "
                                     "llvm-mca per executed block x executions; ignores flash wait states"}
        cycles_note = one.get("estimated_cycles_note") or (est and "; ".join(est["notes"]))
    result = {"artifact": str(out), "target": manifest["target"], "where": got["where"],
              "stream_input": plan.stream_input, "shape": list(plan.shape), "time_axis": plan.time_axis,
              "chunk": plan.chunk, "states": [{"input": p.input, "output": p.output} for p in plan.states],
              "frames": frames, "frame_ms": ms, "frame_ms_source": source, "entry": got.get("entry"),
              "instructions_per_frame": {"median": int(np.median(insns)), "min": int(insns.min()),
                                         "max": int(insns.max()), "each": insns.tolist(),
                                         "what": got["instructions_what"]},
              "estimated_cycles_per_frame": got.get("cycles"), "onnxruntime_latency_ms": None,
              **({"cycles_note": cycles_note} if cycles_note else {})}
    cycles = got.get("cycles")
    clock = target_of(manifest).figures.get("clock_ghz")
    if cycles and clock:
        est_ms = cycles["median"] / (clock.value * 1e6)
        result["estimated_ms_per_frame"] = {"ms": est_ms, "clock_ghz": clock.value, "clock_source": clock.source,
                                            "cpu": cycles["cpu"]}
        if ms:
            result["estimated_ms_per_frame"]["real_time_factor"] = est_ms / ms
    src = manifest.get("source_model")
    if src and Path(src).exists():
        ref = stream_onnxruntime(src, manifest, plan, frames_in, states)
        outs = {n: v for n, v in got["outputs"].items() if n not in {p.output for p in plan.states}}
        finals = [got["outputs"][p.output][-1] for p in plan.states]
        names = list(outs) + [f"{p.input} after the stream" for p in plan.states]
        chk = compare_outputs([*outs.values(), *finals],
                              [*(ref.outputs[n] for n in outs), *(ref.final_states[p.input] for p in plan.states)],
                              names, 1e-5, 1e-5, seed)
        result["stream_check"] = {"passed": chk["passed"], "max_abs_error": chk["max_abs_error"]}
    else:
        result["onnxruntime_note"] = f"source model {src} not found"
    return result


def format_counted_stream_profile(p: dict) -> str:
    states = ", ".join(f"{s['input']} <- {s['output']}" for s in p["states"]) or "none"
    ins = p["instructions_per_frame"]
    lines = [f"streaming profile of {p['artifact']} ({p['target']}, {p['where']})",
             f"  {p['frames']} frames of '{p['stream_input']}' {p['shape']} ({p['chunk']} steps along axis "
             f"{p['time_axis']}), state carried on the device: {states}" + (f" ({p['entry']})" if p.get("entry") else ""),
             "  audio per frame: " + (f"{p['frame_ms']:g} ms ({p['frame_ms_source']})" if p["frame_ms"]
                                      else p["frame_ms_source"]),
             f"  instructions per frame: median {ins['median']:,} (min {ins['min']:,}, max {ins['max']:,}); "
             f"{ins['what']}"]
    cyc = p.get("estimated_cycles_per_frame")
    if cyc:
        lines.append(f"  estimated cycles per frame ({cyc['cpu']}, llvm-mca over the executed blocks): "
                     f"median {cyc['median']:,.0f}; {cyc['what']}")
        est = p.get("estimated_ms_per_frame")
        if est:
            rtf = est.get("real_time_factor")
            lines.append(f"  estimated time per frame at {est['clock_ghz'] * 1000:g} MHz ({est['clock_source']}): "
                         f"{est['ms']:.3f} ms" + (f"; real-time factor {rtf:.4f} ({1 / rtf:,.1f}x faster than real "
                                                  f"time)" if rtf and rtf < 1 else f"; real-time factor {rtf:.4f} "
                                                  f"(does not keep up)" if rtf else
                                                  "; real-time factor: audio per frame unknown"))
    else:
        lines.append(f"  estimated cycles per frame: {p.get('cycles_note', 'not estimated')}")
    chk = p.get("stream_check")
    lines.append(f"  every frame's outputs and the last state vs onnxruntime's stream: max abs error "
                 f"{chk['max_abs_error']:.3g} ({'match' if chk['passed'] else 'MISMATCH'})" if chk else
                 f"  onnxruntime: {p.get('onnxruntime_note')}")
    return "\n".join(lines)


def _per_frame(seconds: list[float]) -> dict:
    return {**_stats(seconds), "max": float(np.max(seconds) * 1e3)} if seconds else {}


def format_stream_profile(p: dict) -> str:
    states = ", ".join(f"{s['input']} <- {s['output']}" for s in p["states"]) or "none"
    lines = [f"streaming profile of {p['artifact']} ({p['target']}, {p['where']}), {p['threads']} thread(s)",
             f"  {p['frames']} frames of '{p['stream_input']}' {p['shape']} ({p['chunk']} steps along axis "
             f"{p['time_axis']}), state carried: {states}",
             f"  audio per frame: " + (f"{p['frame_ms']:g} ms ({p['frame_ms_source']})" if p["frame_ms"]
                                       else p["frame_ms_source"]),
             "", "per-frame latency (ms)   median       p90       min       max  frames   real-time factor"]

    def row(label, lat):
        rtf = lat.get("real_time_factor")
        rtf_text = "-" if not rtf else (f"{rtf:.4f} ({1 / rtf:,.0f}x faster than real time)" if rtf < 1 else
                                        f"{rtf:.4f} ({rtf:.2f}x slower than real time: does not keep up)")
        return (f"  {label:<18}{lat['median']:>11.3f} {lat['p90']:>9.3f} {lat['min']:>9.3f} {lat['max']:>9.3f}"
                f" {lat['runs']:>7}   {rtf_text}")

    lines.append(row("nrqc", p["latency_ms"]))
    ort = p.get("onnxruntime_latency_ms")
    if ort:
        lines.append(row("onnxruntime", ort))
        s = p["speedup_vs_onnxruntime"]
        lines.append(f"  speedup vs onnxruntime: {s:.2f}x" + (f" (nrqc takes {1 / s:.1f}x onnxruntime's time)" if s < 1 else ""))
        chk = p["stream_check"]
        lines.append(f"  every frame's outputs and the last state vs onnxruntime's stream: max abs error {chk['max_abs_error']:.3g} "
                     f"({'match' if chk['passed'] else 'MISMATCH'})")
    else:
        lines.append(f"  onnxruntime       {p.get('onnxruntime_note', 'not measured')}")
    lines.append("  (wall time of each call: frame in, the outputs that are not state read, next state kept; "
                 "real-time factor = median latency / audio per frame, < 1 keeps up)")
    return "\n".join(lines)
