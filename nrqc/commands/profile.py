"""`nrqc profile`: latency, per-operator and memory tables for an artifact or a model."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click


@click.command("profile")
@click.argument("subject", type=click.Path())
@click.option("--target", "-t", default="x86", show_default=True, help="Target, when SUBJECT is an ONNX model.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...", help="Input shape, for an ONNX model.")
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(min=1), help="Timed runs.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Threads for nrqc (TVM_NUM_THREADS) and onnxruntime alike.")
@click.option("--rpc", default=None, metavar="HOST:PORT", help="Measure on a board through TVM RPC.")
@click.option("--rpc-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up on the --rpc board when connecting, uploading or one run gets no answer within this "
                   "time (0: wait for ever).")
@click.option("--instructions/--no-instructions", default=None,
              help="aarch64 artifacts: count the instructions one inference executes under qemu (a stable "
                   "measure for comparing builds, no board needed; seconds to minutes; builds the cached "
                   "emulated root file system on first use). Default: on when the profile is emulated "
                   "(no --rpc, or an emulated board), off on a real board.")
@click.option("--against", default=None, metavar="OUT|MODEL.onnx",
              help="Show memory beside another artifact or model for the same target (e.g. the float twin "
                   "of a binary model), with the reduction factors.")
@click.option("--against-onnxruntime", "against_ort", multiple=True, is_flag=False, flag_value="",
              metavar="[MODEL.onnx]",
              help="aarch64 artifacts: also count onnxruntime's official aarch64 build on the emulated board, "
                   "the same way (instructions in its own library and llvm-mca estimated cycles, 1 thread, "
                   "same -cpu and seeded input), side by side with nrqc. Alone: the artifact's own ONNX "
                   "file; repeat with files for more rows (e.g. the float twin and an int8 QDQ version). "
                   "Minutes per file.")
@click.option("--estimate-cycles", is_flag=True,
              help="Cortex-M artifacts: also estimate cycles (llvm-mca -mcpu=cortex-m4, and cortex-m7 for an M7 "
                   "build, over the blocks one run executes, from a second QEMU run with TB logging).")
@click.option("--stream", "stream_frames", default=None, type=click.IntRange(min=1), metavar="N",
              help="Stream N seeded frames with the state carried (as `nrqc run --stream`) and report the latency "
                   "of each call and the real-time factor, beside onnxruntime streaming the source model. Builds "
                   "that run emulated (cortex-m in QEMU, arm_cpu without --rpc): the instructions of each frame, "
                   "the estimated cycles per frame and the real-time factor at the target's clock.")
@click.option("--frame-ms", default=None, type=click.FloatRange(min=0, min_open=True),
              help="With --stream: milliseconds of audio one call covers (for the real-time factor).")
@click.option("--hop-ms", default=None, type=click.FloatRange(min=0, min_open=True),
              help="With --stream: milliseconds per step of the input's time axis (e.g. 0.0625 for 16 kHz "
                   "samples, 10 for 10 ms feature frames); the audio per call is the chunk length times this.")
@click.option("--state", "states", multiple=True, metavar="IN=OUT",
              help="With --stream: the output OUT is the next value of the state input IN (default: by name).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(subject, target, shapes, repeat, threads, rpc, rpc_timeout, instructions, against, against_ort,
            estimate_cycles, stream_frames, frame_ms, hop_ms, states, as_json):
    """Profile SUBJECT: an artifact directory from `nrqc compile`, or an ONNX model (compiled first)."""
    from nrqc.runtime import set_rpc_timeout

    set_rpc_timeout(rpc_timeout)
    # The TVM thread pool reads this once, when it starts.
    os.environ["TVM_NUM_THREADS"] = str(threads)
    if stream_frames is None and (frame_ms or hop_ms or states):
        raise click.UsageError("--frame-ms, --hop-ms and --state go with --stream N")

    with tempfile.TemporaryDirectory(prefix="nrqc-profile-") as tmp:
        path = _artifact(Path(subject), target, shapes, Path(tmp) / "subject")
        if stream_frames is not None:
            return _profile_stream(path, stream_frames, threads, rpc, frame_ms, hop_ms, states, as_json)
        if against is not None:
            from nrqc.artifact import read_manifest

            against = _artifact(Path(against), read_manifest(path)["target"], shapes, Path(tmp) / "against")
        ort_models = None if not against_ort else [m for m in against_ort if m]
        _profile(path, repeat, threads, rpc, instructions, against, ort_models, estimate_cycles, as_json)


def _artifact(path: Path, target: str, shapes, out: Path) -> Path:
    """An artifact directory as is; an ONNX file compiled (with its check) into `out`."""
    if not path.is_file():
        return path
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.onnx_model import parse_shape_options

    return compile_model(path, target, out, CompileOptions(shapes=parse_shape_options(shapes)),
                         log=lambda m: click.echo(m, err=True))


def _profile(path: Path, repeat, threads, rpc, instructions, against, ort_models, estimate_cycles, as_json):
    from nrqc.artifact import read_manifest
    from nrqc.backends import backend_of_manifest

    manifest = read_manifest(path)
    backend = backend_of_manifest(manifest)
    log = lambda m: click.echo(f"[nrqc profile] {m}", err=True)  # noqa: E731
    if ort_models is not None:
        from nrqc.profiler import onnxruntime_count_refusal

        why = onnxruntime_count_refusal(manifest, path, ort_models)
        if why:
            raise click.UsageError(why)
    result = backend.profile(path, manifest, repeat=repeat, threads=threads, rpc=rpc, instructions=instructions,
                             against=against, log=log)
    text = None if as_json else backend.format_profile(result)
    if estimate_cycles and _bare_metal(manifest):  # (aarch64 builds estimate cycles anyway)
        from nrqc.profiler import add_bare_metal_cycles, format_bare_metal_cycles

        add_bare_metal_cycles(result, path, manifest, log=log)
        text = None if as_json else text + "\n" + format_bare_metal_cycles(result)
    if ort_models is not None:
        from nrqc.profiler import add_onnxruntime_counts, format_onnxruntime_counts

        add_onnxruntime_counts(result, path, ort_models, log=log)
        text = None if as_json else text + "\n\n" + format_onnxruntime_counts(result)
    click.echo(json.dumps(result, indent=2, default=_plain) if as_json else text)


def _profile_stream(path: Path, frames, threads, rpc, frame_ms, hop_ms, states, as_json):
    from nrqc.artifact import read_manifest
    from nrqc.backends import backend_of_manifest
    from nrqc.manifest import target_of
    from nrqc.profiler import format_stream_profile, profile_stream

    manifest = read_manifest(path)
    session = backend_of_manifest(manifest).open_session(path, manifest, rpc)
    if not rpc and not target_of(manifest).backend.runs_on_host:
        # an emulated build (Cortex-M in QEMU, aarch64 on the emulated board): counted per frame
        from nrqc.profiler import format_counted_stream_profile, profile_stream_counted

        result = profile_stream_counted(path, manifest, session, frames, explicit_states=tuple(states),
                                        frame_ms=frame_ms, hop_ms=hop_ms,
                                        log=lambda m: click.echo(f"[nrqc profile] {m}", err=True))
        click.echo(json.dumps(result, indent=2, default=_plain) if as_json else format_counted_stream_profile(result))
        return
    result = profile_stream(path, manifest, session, frames, threads=threads, rpc=rpc, explicit_states=tuple(states),
                            frame_ms=frame_ms, hop_ms=hop_ms)
    click.echo(json.dumps(result, indent=2, default=_plain) if as_json else format_stream_profile(result))


def _plain(v):
    """numpy values in the result (counted outputs are dropped before)."""
    return v.tolist() if hasattr(v, "tolist") else str(v)


def _bare_metal(manifest) -> bool:
    from nrqc.manifest import target_of
    from nrqc.targets import BareMetalC

    return isinstance(target_of(manifest).backend, BareMetalC)
