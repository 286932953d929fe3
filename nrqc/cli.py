"""`nrqc` command line: one click group; each command lives in nrqc/commands/<name>.py."""
from __future__ import annotations

import sys

import click

from nrqc import __version__
from nrqc.errors import CheckFailed, NrqcError


class _Group(click.Group):
    """Turns our errors into one line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NrqcError as e:
            click.echo(f"nrqc: error: {e}", err=True)
            sys.exit(e.exit_code)
        except CheckFailed as e:
            click.echo(f"nrqc: check failed: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="nrqc")
def main():
    """nrqc: compile resource-efficient speech models for x86, Raspberry Pi and Cortex-M."""


def _register():
    # Imported here so that `nrqc --help` stays fast and a command's heavy imports
    # (TVM, torch) are paid only by the command that needs them.
    from nrqc.commands import compile as compile_cmd
    from nrqc.commands import profile, run, targets

    for mod in (targets, compile_cmd, run, profile, *(__import__(f"nrqc.commands.{n}", fromlist=["command"]) for n in ("emulate", "deploy", "train", "export", "tune"))):
        main.add_command(mod.command)


_register()
