"""`nrqc targets`: list the hardware target descriptions."""
from __future__ import annotations

import json

import click


@click.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the full descriptions as JSON.")
def command(as_json: bool):
    """List the targets nrqc compiles for."""
    from nrqc.targets import all_targets

    descs = all_targets()
    if as_json:
        click.echo(json.dumps([d.to_json() for d in descs], indent=2))
        return
    width = max(len(d.name) for d in descs)
    for d in descs:
        alias = f" (aliases: {', '.join(d.aliases)})" if d.aliases else ""
        click.echo(f"{d.name:<{width}} {d.backend.name:<12} {d.summary}{alias}")
