"""``corral stack create|ls|rm|deploy``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from agent.cli.client import Client
from agent.cli.output import console, fail, table, url_option
from agent.model import compose


@click.group("stack")
def stack() -> None:
    """Stacks of services."""


@stack.command("create")
@click.argument("name")
@url_option
def stack_create(name: str, url: str) -> None:
    """Create an empty stack NAME."""
    made = Client(url).post("/v1/stacks", {"name": name})
    click.echo(f"stack {made['name']} created ({made['id']})")


@stack.command("ls")
@url_option
def stack_ls(url: str) -> None:
    """The stacks, with their environment and number of services."""
    table("stacks", ["id", "name", "environment", "services"],
          [[s["id"], s["name"], s["environment"], len(s["services"])] for s in Client(url).items("/v1/stacks")])


@stack.command("rm")
@click.argument("name")
@url_option
def stack_rm(name: str, url: str) -> None:
    """Remove stack NAME (an id or a name) with its services and containers."""
    Client(url).delete(f"/v1/stacks/{name}")
    click.echo(f"stack {name} removed")


@stack.command("deploy")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.argument("name")
@url_option
@click.option("--wait/--no-wait", default=True, help="wait until every container runs")
def stack_deploy(path: Path, name: str, url: str, wait: bool) -> None:
    """Create or update stack NAME from a compose file (like `docker stack deploy -c FILE NAME`)."""
    services = compose.load(path.read_text())
    client = Client(url)
    stacks = {s["name"]: s for s in client.items("/v1/stacks")}
    if name not in stacks:
        stacks[name] = client.post("/v1/stacks", {"name": name})
    existing = {s["name"]: s for s in client.items("/v1/services", stack=stacks[name]["id"])}
    ids = [_deploy_service(client, stacks[name]["id"], name, svc, spec, existing.get(svc))
           for svc, spec in services.items()]
    if wait:
        for sid in ids:
            converge(client, sid)


def _deploy_service(client: Client, stack_id: str, stack_name: str, name: str, spec: dict[str, Any],
                    existing: dict[str, Any] | None) -> str:
    if existing is not None:
        client.request("PATCH", f"/v1/services/{existing['id']}", spec)
        click.echo(f"service {stack_name}/{name} updated")
        return str(existing["id"])
    made = client.post("/v1/services", {"stack": stack_id, "name": name, **spec})
    click.echo(f"service {stack_name}/{name} created, scale {spec['scale']}")
    return str(made["id"])


def converge(client: Client, service_id: str, timeout: float = 120.0) -> None:
    """Progress while a service converges: running / wanted, until equal or the time is up."""
    deadline = time.monotonic() + timeout
    with console.status("converging") as status:
        while True:
            svc = client.get(f"/v1/services/{service_id}")
            status.update(f"{svc['stack_name']}/{svc['name']}: {svc['running']}/{svc['scale']} running")
            if svc["running"] == svc["scale"]:
                console.print(f"{svc['stack_name']}/{svc['name']}: {svc['running']}/{svc['scale']} running")
                return
            if svc.get("unplaced"):
                console.print(f"{svc['stack_name']}/{svc['name']}: {svc['unplaced'][0][1]}")
            if time.monotonic() > deadline:
                raise fail(f"{svc['name']} has {svc['running']}/{svc['scale']} running after {timeout:g} s")
            time.sleep(0.5)
