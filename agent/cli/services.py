"""``corral service create|create-external|ls|inspect|scale|stop|start|restart|rm`` (and
``upgrade|rollback|pause|resume``, ``agent/cli/upgrades.py``)."""

from __future__ import annotations

import json
from typing import Any

import click

from agent.cli.client import Client
from agent.cli.output import fail, table, url_option
from agent.cli.stacks import converge
from agent.cli.upgrades import register as register_upgrades


@click.group("service")
def service() -> None:
    """Services: N containers of one image across the hosts."""


@service.command("create")
@click.argument("stack_name")
@click.argument("name")
@click.option("--image", required=True)
@click.option("--scale", type=int, default=1, show_default=True)
@click.option("--command", "command_", default=None, help="shell command line")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("-p", "--publish", multiple=True, help="PUBLISHED:TARGET[/udp] (repeatable)")
@click.option("-l", "--label", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--constraint", multiple=True, help="KEY==VALUE or KEY!=VALUE (repeatable)")
@click.option("--health", default=None, metavar="CHECK",
              help="http:PORT[/PATH], tcp:PORT (probed by the agent) or cmd:COMMAND (run in the container)")
@click.option("--health-interval", default=None, help="between checks, e.g. 5s (default 5s)")
@click.option("--health-timeout", default=None, help="e.g. 2s (default 2s)")
@click.option("--health-retries", type=int, default=None, help="failures in a row that make it unhealthy (3)")
@click.option("--health-start-period", default=None, help="failures before the first success do not count (0s)")
@click.option("--on-unhealthy", type=click.Choice(["recreate", "none"]), default=None,
              help="replace an unhealthy container (default) or only report it")
@click.option("--link", "links", multiple=True, metavar="SERVICE[:ALIAS]",
              help="ALIAS (default SERVICE) resolves to that service of the stack in these containers only "
                   "(compose links; repeatable)")
@click.option("--alias", "aliases", multiple=True, help="another DNS name of the service in its stack (repeatable)")
@click.option("--wait/--no-wait", default=True)
@url_option
def service_create(stack_name: str, name: str, image: str, scale: int, command_: str | None, env: tuple[str, ...],
                   publish: tuple[str, ...], label: tuple[str, ...], constraint: tuple[str, ...], health: str | None,
                   health_interval: str | None, health_timeout: str | None, health_retries: int | None,
                   health_start_period: str | None, on_unhealthy: str | None, links: tuple[str, ...],
                   aliases: tuple[str, ...], wait: bool, url: str) -> None:
    """Create service NAME in stack STACK_NAME."""
    client = Client(url)
    body: dict[str, Any] = {"stack": stack_name, "name": name, "image": image, "scale": scale,
                            "environment": list(env), "ports": list(publish), "labels": list(label),
                            "placement": {"constraints": list(constraint)}, "aliases": list(aliases),
                            "links": {(alias or target): target for target, _, alias in
                                      (link.partition(":") for link in links)}}
    if command_:
        body["command"] = command_
    extra = {"interval": health_interval, "timeout": health_timeout, "retries": health_retries,
             "start_period": health_start_period, "on_unhealthy": on_unhealthy}
    if health is not None:
        body["health_check"] = {**_health_option(health), **{k: v for k, v in extra.items() if v is not None}}
    elif any(v is not None for v in extra.values()):
        raise click.UsageError("--health-* and --on-unhealthy need --health")
    made = client.post("/v1/services", body)
    click.echo(f"service {stack_name}/{name} created ({made['id']}), scale {scale}")
    if wait:
        converge(client, made["id"])


@service.command("create-external")
@click.argument("stack_name")
@click.argument("name")
@click.option("--address", "addresses", multiple=True, metavar="IPV4",
              help="NAME answers this address (an A record; repeatable)")
@click.option("--hostname", default=None, metavar="HOST",
              help="or NAME is an alias of HOST (a CNAME), e.g. db.example.com")
@click.option("--alias", "aliases", multiple=True, help="another DNS name of the service in its stack (repeatable)")
@url_option
def service_create_external(stack_name: str, name: str, addresses: tuple[str, ...], hostname: str | None,
                            aliases: tuple[str, ...], url: str) -> None:
    """Create external service NAME in stack STACK_NAME: a DNS name for something outside the cluster.

    Nothing is placed or run; containers reach it by NAME like any service of the stack
    (``--address 192.0.2.10 --address 192.0.2.11`` or ``--hostname db.example.com``)."""
    if bool(addresses) == (hostname is not None):
        raise click.UsageError("give --address (one or more) or --hostname, not both")
    external: dict[str, Any] = {"addresses": list(addresses)} if addresses else {"hostname": hostname}
    made = Client(url).post("/v1/services", {"stack": stack_name, "name": name, "kind": "external",
                                             "external": external, "aliases": list(aliases)})
    what = ", ".join(addresses) if addresses else f"a CNAME to {hostname}"
    click.echo(f"external service {stack_name}/{name} created ({made['id']}): {what}")


def _health_option(text: str) -> dict[str, Any]:
    """``http:80/healthz``, ``tcp:5432``, ``cmd:test -f /ready`` → the API's health_check fields."""
    kind, _, rest = text.partition(":")
    if kind == "cmd" and rest.strip():
        return {"type": "command", "command": rest}
    if kind in ("http", "tcp"):
        port, slash, path = rest.partition("/")
        if port.isdigit() and (kind == "http" or not slash):
            return {"type": kind, "port": int(port), **({"path": "/" + path} if kind == "http" else {})}
    raise click.BadParameter(f"{text!r} is not http:PORT[/PATH], tcp:PORT or cmd:COMMAND", param_hint="--health")


@service.command("ls")
@url_option
def service_ls(url: str) -> None:
    """Every service: image, running, healthy and wanted containers, why some are not placed."""
    table("services", ["id", "stack", "name", "image", "running", "healthy", "scale", "state", "upgrade", "unplaced"],
          [[s["id"], s["stack_name"], s["name"], _image_text(s["spec"]), s["running"], s.get("healthy"), s["scale"],
            s["state"], _upgrade_cell(s.get("upgrade")), s["unplaced"][0][1] if s.get("unplaced") else None]
           for s in Client(url).items("/v1/services")])


def _upgrade_cell(up: dict[str, Any] | None) -> str | None:
    """``u12 rolling 3/10`` for the current upgrade (None when there never was one)."""
    return None if not up else f"{up['id']} {up['state']} {up['done']}/{up['slots']}"


def _image_text(spec: dict[str, Any]) -> str:
    """The image, or for an external service what its name answers."""
    external = spec.get("external") if spec.get("kind") == "external" else None
    if not external:
        return str(spec.get("image"))
    return "external → " + (", ".join(external.get("addresses") or ()) or str(external.get("hostname")))


def service_id(client: Client, ref: str) -> str:
    """STACK/SERVICE, a service name, or an id."""
    if "/" not in ref:
        return ref
    stack_name, _, name = ref.partition("/")
    for svc in client.items("/v1/services"):
        if svc["stack_name"] == stack_name and svc["name"] == name:
            return str(svc["id"])
    raise fail(f"no service {ref!r}")


@service.command("inspect")
@click.argument("ref")
@url_option
def service_inspect(ref: str, url: str) -> None:
    """Service REF (STACK/SERVICE, a name or an id) as JSON."""
    client = Client(url)
    click.echo(json.dumps(client.get(f"/v1/services/{service_id(client, ref)}"), indent=2))


@service.command("scale")
@click.argument("ref")
@click.argument("scale", type=int)
@click.option("--wait/--no-wait", default=True)
@url_option
def service_scale(ref: str, scale: int, wait: bool, url: str) -> None:
    """Run SCALE containers of service REF."""
    client = Client(url)
    sid = service_id(client, ref)
    client.post(f"/v1/services/{sid}/scale", {"scale": scale})
    click.echo(f"{ref} scaled to {scale}")
    if wait:
        converge(client, sid)


def _action(verb: str, doc: str) -> None:
    @service.command(verb, help=doc)
    @click.argument("ref")
    @url_option
    def cmd(ref: str, url: str) -> None:
        client = Client(url)
        client.post(f"/v1/services/{service_id(client, ref)}/{verb}")
        click.echo(f"{ref}: {verb}")


_action("stop", "Stop every container of service REF.")
_action("start", "Start service REF again.")
_action("restart", "Replace every container of service REF.")


@service.command("rm")
@click.argument("ref")
@url_option
def service_rm(ref: str, url: str) -> None:
    """Remove service REF and its containers."""
    client = Client(url)
    client.delete(f"/v1/services/{service_id(client, ref)}")
    click.echo(f"{ref} removed")


register_upgrades(service, service_id)
