"""`nrqc` command line: one click group; each command lives in nrqc/commands/<name>.py."""
from __future__ import annotations

import os
import sys

import click

from nrqc import __version__
from nrqc.errors import CheckFailed, InternalError, NrqcError


class _Group(click.Group):
    """Turns our errors into one line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx):
        _raise_on_sigterm()
        try:
            return super().invoke(ctx)
        except NrqcError as e:
            click.echo(f"nrqc: error: {e}", err=True)
            sys.exit(e.exit_code)
        except CheckFailed as e:
            click.echo(f"nrqc: check failed: {e}", err=True)
            sys.exit(e.exit_code)
        except InternalError as e:
            if os.environ.get("NRQC_DEBUG"):
                raise
            click.echo(f"nrqc: internal error: {e} (rerun with NRQC_DEBUG=1 for the traceback, and please report it)",
                       err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a bug in nrqc or TVM, not the user's input
            if os.environ.get("NRQC_DEBUG"):
                raise
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            click.echo(f"nrqc: internal error: {type(e).__name__}: {lines[-1] if lines else ''} "
                       f"(rerun with NRQC_DEBUG=1 for the traceback, and please report it)", err=True)
            sys.exit(3)


class Terminated(SystemExit):
    """SIGTERM arrived: unwinds like Ctrl-C, so staging directories are removed and child
    processes (QEMU, compilers) are killed by the `finally` blocks on the way out."""


def _raise_on_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (the CLI runs there)

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills outright
        click.echo("nrqc: terminated (SIGTERM); cleaning up", err=True)
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="nrqc")
def main():
    """nrqc: compile resource-efficient speech models for x86, Raspberry Pi and Cortex-M."""


# One module per command under nrqc/commands/, each exposing a click `command`.
COMMANDS = ("targets", "compile", "run", "profile", "tune", "train", "export", "deploy", "emulate")


def _register():
    # The command modules import TVM/torch lazily inside their functions, so
    # `nrqc --help` stays fast and each command pays only for what it uses.
    import importlib

    for name in COMMANDS:
        main.add_command(importlib.import_module(f"nrqc.commands.{name}").command)


_register()
