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

from agent.lab import debian, recipes
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
              help="then deploy the example stack web-server (nginx-cluster × 10 and a load balancer on port 80 "
                   "of every host), print `corral ps` and the URL to try")
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
    if not example:
        _print_ui(lab_)
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
        addresses = [lab_.host(f"h{n}").address for n in range(1, count + 1)]
        console.print("the load balancer answers on port 80 of every host: try  curl http://"
                      f"{addresses[0]}/  (or {', '.join(f'http://{a}/' for a in addresses[1:])}); "
                      "`corral lab exec h1 corral lb ls` shows its figures")
    _print_ui(lab_)


def _print_ui(lab_: Lab) -> None:
    """The last lines of `lab up`: where the web UI is and how to log in (every agent serves it)."""
    url = lab_.host("h1").api_url
    console.print(f"web UI: {url}/  (every host serves it: {', '.join(h.api_url + '/' for h in lab_.hosts()[1:])})",
                  markup=False, soft_wrap=True)
    console.print(f"  log in as admin, the password is in {lab_.admin_password_file}  (the certificate is the lab "
                  f"CA's: {lab_.ca_file})", markup=False, soft_wrap=True)


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


@lab.group("image")
def image_group() -> None:
    """Lab images made from Debian's packages with debootstrap (no registry needed), cached on this
    machine and loaded into the lab's cluster."""


def _recipe_list() -> str:
    return "\n".join(f"  {r.name:<6} {r.summary}" for r in recipes.RECIPES.values())


@image_group.command("build", help=f"""Make lab image NAME… (corral-lab/NAME:latest) from Debian's packages and
load it into the lab's cluster (on h1, fetched peer to peer by the other hosts) if a lab is up.

debootstrap --variant=minbase with this machine's Debian suite and apt mirror, the recipe's packages,
docs/locales/apt lists stripped; the tarball is cached in {debian.DEFAULT_CACHE}/images (CORRAL_LAB_CACHE
moves it) under a key of suite, packages and recipe version, so building again takes seconds.

\b
Recipes:
{_recipe_list()}""")
@click.argument("names", nargs=-1, required=True)
@click.option("--rebuild", is_flag=True, help="run debootstrap again even if the cache has the tarball")
@click.option("--no-load", "no_load", is_flag=True, help="only build (or find) the tarball; leave the lab alone")
@click.option("--mirror", default=None, metavar="URL",
              help="the Debian mirror (default: the one this machine's apt sources use for its suite)")
def image_build(names: tuple[str, ...], rebuild: bool, no_load: bool, mirror: str | None) -> None:
    try:
        chosen = [recipes.recipe(name) for name in names]
    except recipes.UnknownRecipe as exc:
        _fail(str(exc))
        return
    started = time.monotonic()

    def say(name: str) -> debian.Say:
        return lambda message: console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] [bold]{name}[/bold]  "
                                             f"{message}", markup=True, highlight=False)

    host = _run(lambda: debian.this_host(mirror))
    built = [_run(lambda r=r: debian.build(r, host, rebuild=rebuild, say=say(r.name))) for r in chosen]
    for image in built:
        how = "from the cache" if image.cached else f"built in {image.build_seconds:.1f} s"
        console.print(f"{image.tag}: {image.image_id[:19]}, {image.size / 2**20:.1f} MiB, {how} ({image.path})")
    if no_load:
        return
    lab_ = _lab()
    if lab_.read_state() is None:
        console.print("no lab is up: the images are cached only (`corral lab up`, then build again to load them)")
        return
    for image in built:
        _run(lambda i=image: lab_.load_image(i.path, i.tag))
    console.print(f"loaded into the lab's cluster: {', '.join(i.tag for i in built)} "
                  f"({time.monotonic() - started:.1f} s in all)")


@image_group.command("ls")
@click.option("--mirror", default=None, metavar="URL", help="as for build (the mirror is not part of the key)")
def image_ls(mirror: str | None) -> None:
    """The recipes, their packages, and whether this machine's cache holds their tarball."""
    host = _run(lambda: debian.this_host(mirror))
    table = Table(title=f"lab images ({host.suite}, {host.arch}, cache {debian.cache_dir()})")
    for col in ("name", "tag", "packages", "cached"):
        table.add_column(col)
    for recipe in recipes.RECIPES.values():
        found = debian.cached(recipe, host)
        table.add_row(recipe.name, recipe.tag, " ".join(recipe.packages),
                      f"{found.size / 2**20:.1f} MiB, {found.image_id[:19]}" if found else "no")
    console.print(table)
