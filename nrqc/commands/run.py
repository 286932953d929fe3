"""`nrqc run`: run a compiled artifact on given inputs, here or on a board."""
from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np


@click.command("run")
@click.argument("out", type=click.Path())
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input tensor (.npy).")
@click.option("-o", "--output", default=None, type=click.Path(),
              help="Write the first output to this .npy file, or every output (by name) to this .npz file.")
@click.option("--rpc", default=None, metavar="HOST:PORT", help="Run on a board through TVM RPC.")
@click.option("--rpc-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up on the --rpc board when connecting, uploading or one run gets no answer within this "
                   "time (0: wait for ever).")
@click.option("--stream", default=None, metavar="[NAME=]FILE",
              help="Run frame by frame: FILE (.npy: frames [K, ...] or one long signal; audio only when the model "
                   "records its frontend) is cut along the input's time axis into chunks of the model's length, "
                   "the state outputs are fed back as the next call's state inputs, and -o gets every output "
                   "stacked per frame.")
@click.option("--state", "states", multiple=True, metavar="IN=OUT",
              help="With --stream: the output OUT is the next value of the input IN (default: found by name, "
                   "e.g. state -> stateN / state_out / new_state, same shape and dtype).")
@click.option("--initial-state", "initial", multiple=True, metavar="NAME=FILE.npy",
              help="With --stream: the first value of a state input (default: zeros).")
@click.option("--time-axis", default=None, type=int,
              help="With --stream: the axis of the streamed input that is time (default: its first axis that "
                   "is not a leading batch axis of 1).")
def command(out, inputs, output, rpc, rpc_timeout, stream, states, initial, time_axis):
    """Run the artifact OUT and print (or save) its outputs."""
    from nrqc.runtime import set_rpc_timeout

    set_rpc_timeout(rpc_timeout)
    from nrqc.artifact import read_manifest
    from nrqc.errors import NrqcError
    from nrqc.runtime import load_inputs

    manifest = read_manifest(out)
    feeds = load_inputs(inputs, manifest)
    if stream is not None:
        return _stream(out, manifest, feeds, output, rpc, stream, states, initial, time_axis)
    if states or initial or time_axis is not None:
        raise NrqcError("--state, --initial-state and --time-axis go with --stream")
    missing = [s["name"] for s in manifest["inputs"] if s["name"] not in feeds]
    if missing:
        raise NrqcError(f"missing --input for {', '.join(missing)}")
    from nrqc.backends import backend_of_manifest

    results = backend_of_manifest(manifest).run(out, manifest, feeds, rpc)
    if output:
        _save(output, {spec["name"]: arr for spec, arr in zip(manifest["outputs"], results)}, results[0])
    for spec, arr in zip(manifest["outputs"], results):
        click.echo(f"{spec['name']} {list(arr.shape)} {arr.dtype}: {np.array2string(arr, threshold=20, precision=6)}")


def _save(output, by_name: dict, first) -> None:
    """Every output (by name) to a .npz, else `first` to a .npy; written whole or not at all."""
    if str(output).endswith(".npz"):
        tmp = Path(output).with_name(Path(output).name + ".tmp.npz")
        np.savez(tmp, **by_name)
    else:
        tmp = Path(output).with_name(Path(output).name + ".tmp.npy")
        np.save(tmp, first)
    os.replace(tmp, output)


def _stream(out, manifest, fixed, output, rpc, stream, states, initial, time_axis):
    from nrqc.backends import backend_of_manifest
    from nrqc.progress import Progress
    from nrqc.streaming import describe_plan, initial_states, load_stream_file, plan_stream, run_stream

    name, sep, path = stream.partition("=")
    if not sep:
        name, path = None, stream
    plan = plan_stream(manifest, name, tuple(states), tuple(fixed), time_axis)
    frames, left = load_stream_file(path, manifest, plan)
    state0 = initial_states(plan, tuple(initial))
    click.echo(f"[nrqc run] {describe_plan(plan)}; {len(frames)} frame(s) from {path}"
               + (f" ({left} trailing step(s) short of a chunk not run)" if left else ""), err=True)
    session = backend_of_manifest(manifest).open_session(out, manifest, rpc)
    with Progress("stream", total=len(frames), quiet=2.0) as p:
        result = run_stream(session, manifest, plan, frames, state0, fixed, progress=p,
                            log=lambda m: click.echo(f"[nrqc run] {m}", err=True))
    per_frame = [n for n in result.outputs if n not in {s.output for s in plan.states}]
    if output:
        first = result.outputs[per_frame[0] if per_frame else manifest["outputs"][0]["name"]]
        _save(output, result.outputs, first)
    for n, arr in result.outputs.items():
        if n in per_frame:
            click.echo(f"{n} {list(arr.shape)} {arr.dtype}: {np.array2string(arr, threshold=20, precision=6)}")
        else:  # a state: its last value (every frame's is in the -o .npz)
            last = arr[-1] if len(arr) else np.zeros(0)
            click.echo(f"{n} {list(arr.shape)} {arr.dtype} (state), after the last frame: "
                       f"{np.array2string(last, threshold=8, precision=6)}")
