"""``corral hosts``, ``corral hosts move NAME ENV``."""

from __future__ import annotations

import click

from agent.cli.client import Client
from agent.cli.output import table, url_option


@click.group("hosts", invoke_without_command=True)
@url_option
@click.pass_context
def hosts(ctx: click.Context, url: str) -> None:
    """The cluster's hosts (of the environments you have a role in): environment, state, health (as each
    host's agent reports it), containers, capacity."""
    if ctx.invoked_subcommand is not None:
        return
    items = Client(url).items("/v1/hosts")
    table("hosts", ["name", "environment", "address", "state", "health", "containers", "cpus", "memory", "labels"],
          [[h["name"], h.get("environment", "default"), h["address"], h["state"], h.get("health") or "unknown",
            h["containers"], h["cpus"], f"{h['memory'] / 2**30:.1f} GiB",
            ",".join(f"{k}={v}" for k, v in h["labels"].items())] for h in items])


@hosts.command("move")
@click.argument("name")
@click.argument("environment")
@url_option
def hosts_move(name: str, environment: str, url: str) -> None:
    """Give host NAME to ENVIRONMENT (administrators): its containers of the old environment are placed on
    the old environment's other hosts first, then the new one's may land on it."""
    moved = Client(url).post(f"/v1/hosts/{name}/move", {"environment": environment})
    click.echo(f"host {name} is in {moved['environment']} now; {moved['draining']} container(s) of its old "
               "environment to move off it")
