"""The user's commands: hosts, stacks, services, containers, logs, events (any node answers).

Each talks to ``--host URL`` (or CORRAL_URL, default http://127.0.0.1:8080) and prints a table; an
API error is one line on stderr and exit status 1.
"""

from __future__ import annotations

import base64
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agent import compose
from agent.client import DEFAULT_URL, ApiError, Client

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _client(ctx: click.Context) -> Client:
    return Client(ctx.obj["url"] if ctx.obj else DEFAULT_URL)


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ApiError as exc:
        click.echo(f"corral: {exc.message}", err=True)
        sys.exit(1)
    except compose.ComposeError as exc:
        click.echo(f"corral: {exc}", err=True)
        sys.exit(1)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[("-" if v is None else str(v)) for v in row])
    console.print(table)


def url_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--host", "url", envvar="CORRAL_URL", default=DEFAULT_URL, show_default=True,
                        help="any agent's API URL")(f)


@click.command("hosts")
@url_option
def hosts(url: str) -> None:
    """The cluster's hosts and their state."""
    items = _run(lambda: Client(url).items("/v1/hosts"))
    _table("hosts", ["name", "address", "state", "containers", "cpus", "memory", "labels"],
           [[h["name"], h["address"], h["state"], h["containers"], h["cpus"], f"{h['memory'] / 2**30:.1f} GiB",
             ",".join(f"{k}={v}" for k, v in h["labels"].items())] for h in items])


@click.group("stack")
def stack() -> None:
    """Stacks of services."""


@stack.command("create")
@click.argument("name")
@url_option
def stack_create(name: str, url: str) -> None:
    made = _run(lambda: Client(url).post("/v1/stacks", {"name": name}))
    click.echo(f"stack {made['name']} created ({made['id']})")


@stack.command("ls")
@url_option
def stack_ls(url: str) -> None:
    items = _run(lambda: Client(url).items("/v1/stacks"))
    _table("stacks", ["id", "name", "environment", "services"],
           [[s["id"], s["name"], s["environment"], len(s["services"])] for s in items])


@stack.command("rm")
@click.argument("name")
@url_option
def stack_rm(name: str, url: str) -> None:
    _run(lambda: Client(url).delete(f"/v1/stacks/{name}"))
    click.echo(f"stack {name} removed")


@stack.command("deploy")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.argument("name")
@url_option
@click.option("--wait/--no-wait", default=True, help="wait until every container runs")
def stack_deploy(path: Path, name: str, url: str, wait: bool) -> None:
    """Create or update stack NAME from a compose file (like `docker stack deploy -c FILE NAME`)."""
    services = _run(lambda: compose.load(path.read_text()))
    client = Client(url)
    stacks = {s["name"]: s for s in _run(lambda: client.items("/v1/stacks"))}
    if name not in stacks:
        stacks[name] = _run(lambda: client.post("/v1/stacks", {"name": name}))
    existing = {s["name"]: s for s in _run(lambda: client.items("/v1/services", stack=stacks[name]["id"]))}
    ids = []
    for svc_name, spec in services.items():
        ids.append(_deploy_service(client, stacks[name]["id"], name, svc_name, spec, existing.get(svc_name)))
    if wait:
        for sid in ids:
            _converge(client, sid)


def _deploy_service(client: Client, stack_id: str, stack_name: str, name: str, spec: dict[str, Any],
                    existing: dict[str, Any] | None) -> str:
    if existing is not None:
        _run(lambda: client.request("PATCH", f"/v1/services/{existing['id']}", spec))
        click.echo(f"service {stack_name}/{name} updated")
        return str(existing["id"])
    made = _run(lambda: client.post("/v1/services", {"stack": stack_id, "name": name, **spec}))
    click.echo(f"service {stack_name}/{name} created, scale {spec['scale']}")
    return str(made["id"])


def _converge(client: Client, service_id: str, timeout: float = 120.0) -> None:
    """Progress while a service converges: running / wanted, until equal or the time is up."""
    deadline = time.monotonic() + timeout
    with console.status("converging") as status:
        while True:
            svc = _run(lambda: client.get(f"/v1/services/{service_id}"))
            status.update(f"{svc['stack_name']}/{svc['name']}: {svc['running']}/{svc['scale']} running")
            if svc["running"] == svc["scale"]:
                console.print(f"{svc['stack_name']}/{svc['name']}: {svc['running']}/{svc['scale']} running")
                return
            if svc.get("unplaced"):
                console.print(f"{svc['stack_name']}/{svc['name']}: {svc['unplaced'][0][1]}")
            if time.monotonic() > deadline:
                click.echo(f"corral: {svc['name']} has {svc['running']}/{svc['scale']} running after "
                           f"{timeout:g} s", err=True)
                sys.exit(1)
            time.sleep(0.5)


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
@click.option("--wait/--no-wait", default=True)
@url_option
def service_create(stack_name: str, name: str, image: str, scale: int, command_: str | None, env: tuple[str, ...],
                   publish: tuple[str, ...], label: tuple[str, ...], constraint: tuple[str, ...], health: str | None,
                   health_interval: str | None, health_timeout: str | None, health_retries: int | None,
                   health_start_period: str | None, on_unhealthy: str | None, wait: bool, url: str) -> None:
    client = Client(url)
    body: dict[str, Any] = {"stack": stack_name, "name": name, "image": image, "scale": scale,
                            "environment": list(env), "ports": list(publish), "labels": list(label),
                            "placement": {"constraints": list(constraint)}}
    if command_:
        body["command"] = command_
    extra = {"interval": health_interval, "timeout": health_timeout, "retries": health_retries,
             "start_period": health_start_period, "on_unhealthy": on_unhealthy}
    if health is not None:
        body["health_check"] = {**_health_option(health), **{k: v for k, v in extra.items() if v is not None}}
    elif any(v is not None for v in extra.values()):
        raise click.UsageError("--health-* and --on-unhealthy need --health")
    made = _run(lambda: client.post("/v1/services", body))
    click.echo(f"service {stack_name}/{name} created ({made['id']}), scale {scale}")
    if wait:
        _converge(client, made["id"])


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
    items = _run(lambda: Client(url).items("/v1/services"))
    _table("services", ["id", "stack", "name", "image", "running", "healthy", "scale", "state", "unplaced"],
           [[s["id"], s["stack_name"], s["name"], s["spec"]["image"], s["running"], s.get("healthy"), s["scale"],
             s["state"], s["unplaced"][0][1] if s.get("unplaced") else None] for s in items])


def _service_id(client: Client, ref: str) -> str:
    """STACK/SERVICE, a service name, or an id."""
    if "/" in ref:
        stack_name, _, name = ref.partition("/")
        for svc in _run(lambda: client.items("/v1/services")):
            if svc["stack_name"] == stack_name and svc["name"] == name:
                return str(svc["id"])
        click.echo(f"corral: no service {ref!r}", err=True)
        sys.exit(1)
    return ref


@service.command("inspect")
@click.argument("ref")
@url_option
def service_inspect(ref: str, url: str) -> None:
    import json

    client = Client(url)
    click.echo(json.dumps(_run(lambda: client.get(f"/v1/services/{_service_id(client, ref)}")), indent=2))


@service.command("scale")
@click.argument("ref")
@click.argument("scale", type=int)
@click.option("--wait/--no-wait", default=True)
@url_option
def service_scale(ref: str, scale: int, wait: bool, url: str) -> None:
    client = Client(url)
    sid = _service_id(client, ref)
    _run(lambda: client.post(f"/v1/services/{sid}/scale", {"scale": scale}))
    click.echo(f"{ref} scaled to {scale}")
    if wait:
        _converge(client, sid)


def _action(verb: str) -> None:
    @service.command(verb, help=f"{verb.capitalize()} every container of the service.")
    @click.argument("ref")
    @url_option
    def cmd(ref: str, url: str) -> None:
        client = Client(url)
        _run(lambda: client.post(f"/v1/services/{_service_id(client, ref)}/{verb}"))
        click.echo(f"{ref}: {verb}")


for _verb in ("stop", "start", "restart"):
    _action(_verb)


@service.command("rm")
@click.argument("ref")
@url_option
def service_rm(ref: str, url: str) -> None:
    client = Client(url)
    _run(lambda: client.delete(f"/v1/services/{_service_id(client, ref)}"))
    click.echo(f"{ref} removed")


@click.command("ps")
@click.option("--stack", default=None)
@click.option("--service", "service_", default=None)
@click.option("--on", "host", default=None, help="only containers on this host")
@url_option
def ps(stack: str | None, service_: str | None, host: str | None, url: str) -> None:
    """Containers, where they run and their state."""
    items = _run(lambda: Client(url).items("/v1/containers", stack=stack, service=service_, host=host))
    _table("containers", ["id", "name", "host", "state", "exit", "address", "published"],
           [[c["id"], c["name"], c["host"], _state_cell(c),
             c["exit_code"], c.get("ip"),
             " ".join(c.get("ports") or []) or None] for c in items])


def _state_cell(c: dict[str, Any]) -> str:
    """``running (healthy)``, ``missing: create failed: …``, ``running (unhealthy: GET / answered 500)``."""
    cell = str(c["state"])
    if c.get("health"):
        cell += f" ({c['health']}: {c['health_detail']})" if c.get("health_detail") else f" ({c['health']})"
    return f"{cell}: {c['error']}" if c.get("error") else cell


@click.command("events")
@click.option("-f", "--follow", is_flag=True)
@url_option
def events(follow: bool, url: str) -> None:
    """The cluster's events (placements, host state changes, scaling…)."""
    client = Client(url)
    if follow:
        for line in _run(lambda: client.stream("/v1/events", stream=1)):
            click.echo(line)
        return
    for e in _run(lambda: client.items("/v1/events")):
        click.echo(f"{e['index']:>8}  {e['kind']:<18} {e['message']}")


@click.command("logs")
@click.argument("container")
@click.option("-f", "--follow", is_flag=True)
@click.option("--tail", type=int, default=None)
@url_option
def logs(container: str, follow: bool, tail: int | None, url: str) -> None:
    """A container's output, streamed from its host through whichever node was asked."""
    client = Client(url)
    for line in _run(lambda: client.stream(f"/v1/containers/{container}/logs", follow=int(follow), tail=tail)):
        click.echo(line)


@click.group("keys")
def keys() -> None:
    """Rotate the gossip/Raft keys: install a new key everywhere, use it, remove the old one."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random key (base64) to install."""
    click.echo(base64.b64encode(secrets.token_bytes(32)).decode())


@keys.command("list")
@url_option
def keys_list(url: str) -> None:
    """Installed key ids, which one seals, and how many live members hold each."""
    body = _run(lambda: Client(url).get("/v1/keys"))
    _table("keys", ["key id", "primary", "members holding it"],
           [[k["id"], "yes" if k["primary"] else "", f"{k['members']}/{body['live_members']}"] for k in body["keys"]])


def _key_action(action: str, doc: str) -> None:
    @keys.command(action, help=doc)
    @click.argument("key")
    @url_option
    def cmd(key: str, url: str) -> None:
        result = _run(lambda: Client(url).post("/v1/keys", {"action": action, "key": key}))
        click.echo(f"{action} {result['key_id']}: keyring is now {', '.join(result['keys'])} (primary first)")


_key_action("install", "Install KEY on every node (it opens packets sealed with it).")
_key_action("use", "Seal with KEY from now on (install it first).")
_key_action("remove", "Remove KEY (not the primary).")

COMMANDS = [hosts, stack, service, ps, events, logs, keys]
