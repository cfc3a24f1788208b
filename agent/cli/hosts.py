"""``corral hosts``."""

from __future__ import annotations

import click

from agent.cli.client import Client
from agent.cli.output import table, url_option


@click.command("hosts")
@url_option
def hosts(url: str) -> None:
    """The cluster's hosts: state, health (as each host's agent reports it), containers, capacity."""
    items = Client(url).items("/v1/hosts")
    table("hosts", ["name", "address", "state", "health", "containers", "cpus", "memory", "labels"],
          [[h["name"], h["address"], h["state"], h.get("health") or "unknown", h["containers"], h["cpus"],
            f"{h['memory'] / 2**30:.1f} GiB", ",".join(f"{k}={v}" for k, v in h["labels"].items())] for h in items])
