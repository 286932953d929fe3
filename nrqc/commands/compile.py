"""`nrqc compile`: build an ONNX model into a deployable artifact directory."""
from __future__ import annotations

import click


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", "-t", "target", default="x86", show_default=True, help="Target name (see `nrqc targets`).")
@click.option("-o", "--out", default=None, help="Output directory [default: <model stem>-<target>].")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...", help="Static shape of an input.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the built library with onnxruntime on a seeded random input.")
@click.option("--atol", default=1e-4, show_default=True, help="Absolute tolerance of the check.")
@click.option("--rtol", default=1e-4, show_default=True, help="Relative tolerance of the check.")
@click.option("--db", default=None, type=click.Path(), help="Tuning database directory (from `nrqc tune`).")
def command(model, target, out, shapes, check, atol, rtol, db):
    """Compile MODEL (ONNX) for a target."""
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.onnx_model import parse_shape_options
    from nrqc.targets import get_target

    get_target(target)  # fail on a bad name before loading anything
    opts = CompileOptions(shapes=parse_shape_options(shapes), check=check, atol=atol, rtol=rtol, db=db)
    compile_model(model, target, out, opts, log=lambda msg: click.echo(msg, err=True))
