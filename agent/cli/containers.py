"""``corral ps``, ``corral logs``, ``corral events``."""

from __future__ import annotations

from typing import Any

import click

from agent.cli.client import Client
from agent.cli.output import table, url_option


@click.command("ps")
@click.option("--stack", default=None)
@click.option("--service", "service_", default=None)
@click.option("--on", "host", default=None, help="only containers on this host")
@url_option
def ps(stack: str | None, service_: str | None, host: str | None, url: str) -> None:
    """Containers, where they run and their state."""
    items = Client(url).items("/v1/containers", stack=stack, service=service_, host=host)
    table("containers", ["id", "name", "host", "state", "exit", "address", "published"],
          [[c["id"], c["name"], c["host"], state_cell(c), c["exit_code"], c.get("ip"),
            " ".join(c.get("ports") or []) or None] for c in items])


def state_cell(c: dict[str, Any]) -> str:
    """``running (healthy)``, ``missing: create failed: …``, ``running (unhealthy: GET / answered 500)``."""
    cell = str(c["state"])
    if c.get("host_state") not in (None, "active"):
        cell = f"{cell}, as last reported by its host ({c['host_state']})"
    if c.get("waiting"):
        cell += f"; waiting: {c['waiting']}"
    if c.get("health"):
        cell += f" ({c['health']}: {c['health_detail']})" if c.get("health_detail") else f" ({c['health']})"
    return f"{cell}: {c['error']}" if c.get("error") else cell


@click.command("events")
@click.option("-f", "--follow", is_flag=True)
@click.option("--audit", is_flag=True, help="only what users' requests did: who, with which key, from where")
@url_option
def events(follow: bool, audit: bool, url: str) -> None:
    """The cluster's events (placements, host state changes, scaling…) of the environments you may read."""
    client = Client(url)
    query = {"audit": 1} if audit else {}
    if follow:
        for line in client.stream("/v1/events", stream=1, **query):
            click.echo(line)
        return
    for e in client.items("/v1/events", **query):
        who = f"  [{e['actor']} key {e['credential']} from {e['source']}]" if e.get("actor") else ""
        click.echo(f"{e['index']:>8}  {e['kind']:<18} {e['message']}{who}")


@click.command("logs")
@click.argument("container")
@click.option("-f", "--follow", is_flag=True)
@click.option("--tail", type=click.IntRange(0, 100_000), default=None)
@url_option
def logs(container: str, follow: bool, tail: int | None, url: str) -> None:
    """A container's output, streamed from its host through whichever node was asked."""
    for line in Client(url).stream(f"/v1/containers/{container}/logs", follow=int(follow), tail=tail):
        click.echo(line)
