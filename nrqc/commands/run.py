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
def command(out, inputs, output, rpc, rpc_timeout):
    """Run the artifact OUT and print (or save) its outputs."""
    from nrqc.runtime import set_rpc_timeout

    set_rpc_timeout(rpc_timeout)
    from nrqc.artifact import read_manifest
    from nrqc.errors import NrqcError
    from nrqc.runtime import load_inputs

    manifest = read_manifest(out)
    feeds = load_inputs(inputs, manifest)
    missing = [s["name"] for s in manifest["inputs"] if s["name"] not in feeds]
    if missing:
        raise NrqcError(f"missing --input for {', '.join(missing)}")
    from nrqc.backends import backend_of_manifest

    results = backend_of_manifest(manifest).run(out, manifest, feeds, rpc)
    if output:
        if str(output).endswith(".npz"):
            tmp = Path(output).with_name(Path(output).name + ".tmp.npz")
            np.savez(tmp, **{spec["name"]: arr for spec, arr in zip(manifest["outputs"], results)})
        else:
            tmp = Path(output).with_name(Path(output).name + ".tmp.npy")
            np.save(tmp, results[0])
        os.replace(tmp, output)
    for spec, arr in zip(manifest["outputs"], results):
        click.echo(f"{spec['name']} {list(arr.shape)} {arr.dtype}: {np.array2string(arr, threshold=20, precision=6)}")
