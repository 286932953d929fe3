"""`nrqc deploy`: run an artifact on a board through TVM RPC and check it against onnxruntime."""
from __future__ import annotations

import json

import click


@click.command("deploy")
@click.argument("out", type=click.Path())
@click.option("--rpc", required=True, metavar="HOST:PORT",
              help="The board's TVM RPC server (a Pi's `python -m tvm.exec.rpc_server`, or `nrqc emulate`).")
@click.option("--rpc-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up on the --rpc board when connecting, uploading or one run gets no answer within this "
                   "time (0: wait for ever).")
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="An input tensor (.npy); inputs not given are seeded random.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs.")
@click.option("--atol", default=1e-4, show_default=True, type=float, help="Absolute tolerance vs onnxruntime.")
@click.option("--rtol", default=1e-4, show_default=True, type=float, help="Relative tolerance vs onnxruntime.")
@click.option("--model", default=None, type=click.Path(),
              help="The ONNX model for the reference (default: the manifest's source_model).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(out, rpc, rpc_timeout, inputs, seed, atol, rtol, model, as_json):
    """Upload the artifact OUT to a board, run it there, and compare with onnxruntime here.

    Exits 0 only when every output matches within the tolerance, 1 otherwise.
    """
    from nrqc.runtime import set_rpc_timeout

    set_rpc_timeout(rpc_timeout)
    from nrqc.deploy import deploy_artifact, format_deploy
    from nrqc.errors import CheckFailed

    result = deploy_artifact(out, rpc, inputs, seed=seed, atol=atol, rtol=rtol, model=model,
                             log=lambda m: click.echo(f"[nrqc deploy] {m}", err=True))
    click.echo(json.dumps(result, indent=2) if as_json else format_deploy(result))
    if not result["passed"]:
        raise CheckFailed(f"the board's outputs differ from onnxruntime (max abs error {result['max_abs_error']:.3g})")
