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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(subject, target, shapes, repeat, threads, rpc, rpc_timeout, instructions, against, as_json):
    """Profile SUBJECT: an artifact directory from `nrqc compile`, or an ONNX model (compiled first)."""
    from nrqc.runtime import set_rpc_timeout

    set_rpc_timeout(rpc_timeout)
    # The TVM thread pool reads this once, when it starts.
    os.environ["TVM_NUM_THREADS"] = str(threads)

    with tempfile.TemporaryDirectory(prefix="nrqc-profile-") as tmp:
        path = _artifact(Path(subject), target, shapes, Path(tmp) / "subject")
        if against is not None:
            from nrqc.artifact import read_manifest

            against = _artifact(Path(against), read_manifest(path)["target"], shapes, Path(tmp) / "against")
        _profile(path, repeat, threads, rpc, instructions, against, as_json)


def _artifact(path: Path, target: str, shapes, out: Path) -> Path:
    """An artifact directory as is; an ONNX file compiled (with its check) into `out`."""
    if not path.is_file():
        return path
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.onnx_model import parse_shape_options

    return compile_model(path, target, out, CompileOptions(shapes=parse_shape_options(shapes)),
                         log=lambda m: click.echo(m, err=True))


def _profile(path: Path, repeat, threads, rpc, instructions, against, as_json):
    from nrqc.artifact import read_manifest
    from nrqc.errors import NrqcError
    from nrqc.profiler import (add_comparison, add_instruction_count, format_profile, profile_artifact,
                               profile_without_board)

    if (path / "manifest.json").exists():
        manifest = read_manifest(path)
        if manifest.get("target_kind") == "bare-metal":  # Cortex-M: sizes + QEMU instruction count
            from nrqc.cortex_m import format_profile as format_cm, profile_artifact as profile_cm

            result = profile_cm(path, manifest, against=against)
            click.echo(json.dumps(result, indent=2) if as_json else format_cm(result))
            return
    log = lambda m: click.echo(f"[nrqc profile] {m}", err=True)  # noqa: E731
    manifest = read_manifest(path) if (path / "manifest.json").exists() else {}
    if rpc is None and manifest.get("target_kind") == "linux-cross":
        # No board: the emulator's instruction count is the measure (no latency).
        if instructions is False:
            raise NrqcError(f"{path}: built for {manifest.get('target')}, which does not run on this host: use "
                            f"--rpc HOST:PORT (a board, or `nrqc emulate {manifest.get('target')}`) for latency, or "
                            f"--instructions for the emulated instruction count (no board needed)")
        if threads != 1:
            log(f"--threads {threads}: the emulated instruction count is single-threaded")
        result = profile_without_board(path, log=log)
    else:
        result = profile_artifact(path, repeat=repeat, threads=threads, rpc=rpc)
        if instructions or (instructions is None and result["emulated"]):
            add_instruction_count(result, path, log=log)
    if against is not None:
        add_comparison(result, against)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_profile(result))
