"""``corral lab …``: the lab from the command line, with progress lines and a table of hosts."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agent.lab.image import ImageBuildError
from agent.lab.lab import Lab, LabError
from agent.lab.layout import DEFAULT_SUBNET, MAX_HOSTS

# A table of hosts is wider than 80 columns; when output is not a terminal (CI logs), don't fold it.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)


def _fail(message: str) -> None:
    err_console.print(f"corral lab: {message}", markup=False, soft_wrap=True)
    sys.exit(1)


def _lab(verbose: bool = True) -> Lab:
    started = time.monotonic()

    def progress(host: str, message: str) -> None:
        if verbose:
            console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] [bold]{host:>4}[/bold]  {message}")

    return Lab(progress=progress)


def _run(action: Any) -> Any:
    try:
        return action()
    except (LabError, ImageBuildError) as exc:
        _fail(str(exc))


@click.group("lab")
def lab() -> None:
    """A local multi-host lab: network namespaces, each with its own dockerd and agent."""


@lab.command()
@click.option("--hosts", "count", type=int, default=3, show_default=True, help=f"number of hosts (1-{MAX_HOSTS})")
@click.option("--subnet", default=DEFAULT_SUBNET, show_default=True, help="the underlay network")
@click.option("--registry", "with_registry", is_flag=True,
              help="also run an image registry (Debian's docker-registry, TLS from a lab CA, htpasswd user `lab`) "
                   "on the bridge's address, port 5000, trusted by every host's dockerd and holding corral/base")
@click.option("--example", is_flag=True,
              help="then deploy the example stack web-server (nginx-cluster × 10) and print `corral ps`")
@click.pass_context
def up(ctx: click.Context, count: int, subnet: str, with_registry: bool, example: bool) -> None:
    """Create hosts h1…hN and wait until every agent answers."""
    lab_ = _lab()
    started = time.monotonic()
    _run(lambda: lab_.up(count, subnet, registry=with_registry))
    console.print(f"lab up: {count} hosts in {time.monotonic() - started:.1f} s")
    _print_status(lab_)
    console.print(f"administrator: admin, password in {lab_.admin_password_file}, API key in "
                  f"{lab_.admin_token_file} (`corral lab exec HOST …` sets CORRAL_URL, CORRAL_TOKEN and "
                  "CORRAL_CACERT)")
    if example:
        os.environ["CORRAL_TOKEN"] = lab_.admin_token()  # the commands below act as the administrator
        os.environ["CORRAL_CACERT"] = str(lab_.ca_file)
        from agent.cli.containers import ps
        from agent.cli.stacks import stack_deploy

        url = lab_.host("h1").api_url
        example_file = Path(__file__).resolve().parent.parent / "examples" / "web-server.yml"
        console.print(f"deploying {example_file.name} as stack web-server through {url}")
        ctx.invoke(stack_deploy, path=example_file, name="web-server", url=url, wait=True)
        ctx.invoke(ps, stack="web-server", service_=None, host=None, url=url)
        console.print("try: corral lab exec h1 corral ps    |    corral lab exec h2 wget -qO- http://<address>/")


@lab.command()
def down() -> None:
    """Remove every namespace, link, daemon, mount and directory of the lab (safe to repeat)."""
    lab_ = _lab()
    removed = _run(lab_.down)
    console.print(f"lab down: removed {len(removed)} things" if removed else "lab down: nothing to remove")


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def status(as_json: bool) -> None:
    """Each host: namespace, underlay address, API URL, agent and dockerd state."""
    lab_ = _lab(verbose=False)
    if as_json:
        click.echo(json.dumps(_run(lab_.status), indent=2))
    else:
        _print_status(lab_)


def _print_status(lab_: Lab) -> None:
    rows = _run(lab_.status)
    reg = _run(lab_.registry_status)
    table = Table(title="corral lab")
    for col in ("host", "namespace", "address", "api", "link", "agent", "dockerd", "memory", "faults"):
        table.add_column(col)
    for row in rows:
        agent = row["agent"] + (f" ({row['agent_health']})" if row["agent_health"] else "")
        fault = []
        if row["partition_group"] is not None:
            fault.append(f"partition group {row['partition_group'] + 1}")
        if row["loss_percent"]:
            fault.append(f"loss {row['loss_percent']:g}%")
        table.add_row(
            row["host"], row["namespace"] or "-", row["address"], row["api"], row["link"], agent,
            row["dockerd"], f"{row['rss_bytes'] / 2**20:.0f} MiB", ", ".join(fault) or "-",
        )
    console.print(table)
    if reg is not None:
        pid = f", pid {reg['pid']}" if reg["pid"] else ""
        console.print(f"registry: {reg['url']} ({reg['state']}{pid}): user {reg['user']}, password in "
                      f"{reg['password_file']}, CA {reg['ca_file']}; images as {reg['address']}/corral/base:latest")


@lab.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def exec_(host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST's namespace with DOCKER_HOST and CORRAL_URL set to that host's, and
    CORRAL_TOKEN to the lab administrator's API key."""
    argv, env = _run(lambda: Lab().exec_argv(host, list(command)))
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        _fail(f"cannot run {command[0]}: {exc}")


def _verb(name: str, doc: str, method: str, done: str) -> None:
    @lab.command(name, help=doc)
    @click.argument("host")
    def verb(host: str) -> None:
        lab_ = Lab()
        _run(lambda: getattr(lab_, method)(host))
        console.print(done.format(host=host))


_verb("kill-agent", "SIGKILL HOST's agent.", "kill_agent", "{host}: agent killed")
_verb("start-agent", "Start HOST's agent again and wait until it answers.", "start_agent", "{host}: agent answering")
_verb("stop-host", "Power HOST off: every process killed, mounts gone, link down.", "stop_host", "{host}: stopped")
_verb("start-host", "Power HOST on: link up, dockerd and agent started.", "start_host", "{host}: started")
_verb("pause", "SIGSTOP HOST's agent (a starved process).", "pause", "{host}: agent paused")
_verb("resume", "SIGCONT HOST's agent.", "resume", "{host}: agent resumed")


@lab.command()
@click.argument("groups", nargs=-1, required=True)
def partition(groups: tuple[str, ...]) -> None:
    """Cut the underlay between groups: `partition h1` (h1 | the rest), `partition h1,h2 h3,h4`."""
    parsed = [[n for n in g.split(",") if n] for g in groups]
    full = _run(lambda: Lab().partition(parsed))
    console.print("partitioned: " + " | ".join(",".join(g) for g in full))


@lab.command()
def heal() -> None:
    """Undo every network fault (partitions and loss)."""
    _run(Lab().heal)
    console.print("healed: no partition, no loss")


@lab.command()
@click.argument("host")
@click.option("--loss", required=True, help="percent of packets dropped each way, 0-100 (0 removes)")
def degrade(host: str, loss: str) -> None:
    """Random loss on HOST's underlay traffic (iptables statistic; no delay on this kernel)."""
    try:
        percent = float(loss.rstrip("%"))
    except ValueError:
        _fail(f"--loss must be a number of percent, not {loss!r}")
        return
    _run(lambda: Lab().degrade(host, percent))
    console.print(f"{host}: loss {percent:g}%")
