"""`nrqc compile`: build an ONNX model into a deployable artifact directory."""
from __future__ import annotations

import click


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", "-t", "target", default="x86", show_default=True, help="Target name (see `nrqc targets`).")
@click.option("-o", "--out", default=None, help="Output directory [default: <model stem>-<target>].")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...", help="Static shape of an input.")
@click.option("--const", "consts", multiple=True, metavar="NAME=VALUE",
              help="Bind an input to a constant (a number, or numbers separated by commas) and remove it from "
                   "the compiled model's inputs (for example sr=16000); branches and shapes that depend on it "
                   "are resolved at compile time.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the built library with onnxruntime on a seeded random input.")
@click.option("--atol", default=1e-4, show_default=True, help="Absolute tolerance of the check.")
@click.option("--rtol", default=1e-4, show_default=True, help="Relative tolerance of the check.")
@click.option("--db", default=None, type=click.Path(), help="Tuning database directory (from `nrqc tune`).")
@click.option("--rpc", default=None, metavar="HOST:PORT",
              help="Run the numerical check on this board (TVM RPC: a Pi's rpc_server or `nrqc emulate`). "
                   "Without it, arm_cpu is checked on the emulated board when its root file system is cached.")
@click.option("--rpc-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up on the --rpc board when connecting, uploading or one run gets no answer within this "
                   "time (0: wait for ever).")
@click.option("--mcpu", default=None, metavar="CPU",
              help="x86 only: build for this CPU (LLVM name: x86-64-v2, haswell, x86-64-v3, x86-64-v4, "
                   "icelake-server, znver4, ...) instead of this host's; recorded in the manifest.")
@click.option("--dump-ir", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="write the IR module after each pipeline step to DIR")
def command(model, target, out, shapes, consts, check, atol, rtol, db, rpc, rpc_timeout, mcpu, dump_ir):
    """Compile MODEL (ONNX) for a target."""
    from nrqc.runtime import set_rpc_timeout

    set_rpc_timeout(rpc_timeout)
    from nrqc.backends import backend_for
    from nrqc.compiler import CompileOptions, compile_model
    from nrqc.errors import NrqcError
    from nrqc.onnx_fold import parse_const_options
    from nrqc.onnx_model import parse_shape_options
    from nrqc.runtime import parse_rpc
    from nrqc.targets import get_target

    desc = get_target(target, mcpu)  # fail on a bad name or CPU before loading anything
    if rpc is not None:
        parse_rpc(rpc)
        backend_for(desc).check_compile_rpc(rpc)
        if not check:
            raise NrqcError(f"--rpc {rpc} runs the numerical check on a board; it contradicts --no-check")
    opts = CompileOptions(shapes=parse_shape_options(shapes), constants=parse_const_options(consts), check=check, atol=atol, rtol=rtol, db=db, rpc=rpc,
                          mcpu=mcpu, dump_ir=dump_ir)
    compile_model(model, target, out, opts, log=lambda msg: click.echo(msg, err=True))
