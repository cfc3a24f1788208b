"""The ``corral`` command: the agent process, the user's commands, the lab and the drills.

Bad input gets one line and a non-zero exit: a bad option is click's usage error (2); what the API
refuses, or an agent that cannot be reached, is ``corral: …`` and 1 (:class:`~agent.cli.output.CorralGroup`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
import sys
from pathlib import Path

import click

from agent import __version__
from agent.cli.access import api, apikey, ca, env, login, logout, team, token, user, whoami
from agent.cli.containers import events, logs, ps
from agent.cli.dns import dns
from agent.cli.execs import exec_
from agent.cli.hosts import hosts
from agent.cli.images import image, registry
from agent.cli.keys import keys
from agent.cli.lb import lb
from agent.cli.output import CorralGroup
from agent.cli.services import service
from agent.cli.stacks import stack
from agent.cli.stats import stats
from agent.cli.volumes import config, settings, volume
from agent.drill.cli import drill
from agent.errors import CorralError
from agent.lab.cli import lab
from agent.process.config import DEFAULT_API_PORT, DEFAULT_DATA_DIR, DEFAULT_DOCKER_HOST, AgentConfig


@click.group(cls=CorralGroup)
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """Corral: stacks of containers across a fleet of Docker hosts, with no central server."""


def _check_address(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IP address") from None
    return value


def _check_join(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        host, sep, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        try:
            ipaddress.ip_address(host)
            if sep and not 0 < int(port) < 65536:
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{item!r} is not ADDR or ADDR:PORT") from None
    return value


def _check_labels(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    labels = []
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        labels.append((key.strip(), val.strip()))
    return tuple(labels)


def _check_upstreams(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
                     ) -> tuple[tuple[str, int], ...]:
    from agent.node.dns import parse_upstream

    out = []
    for item in value:
        try:
            out.append(parse_upstream(item))
        except ValueError as exc:
            raise click.BadParameter(f"{item!r} is not an IPv4 ADDR[:PORT]: {exc}") from None
    return tuple(out)


@cli.command()
@click.option("--bind", required=True, callback=_check_address, help="this host's underlay address")
@click.option("--join", multiple=True, callback=_check_join, help="ADDR[:PORT] of any member to join (repeatable)")
@click.option("--bootstrap", is_flag=True, help="start a new cluster: make its secret and print a join token")
@click.option("--token", envvar="CORRAL_JOIN_TOKEN", default=None, help="join token of the cluster to join")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True)
@click.option("--docker-host", default=DEFAULT_DOCKER_HOST, show_default=True, help="the Docker Engine's API URL")
@click.option("--name", default=None, help="host name in the cluster (default: the OS hostname)")
@click.option("--api-port", type=click.IntRange(1, 65535), default=DEFAULT_API_PORT, show_default=True)
@click.option("--access-log", is_flag=True, help="log one line per HTTP request")
@click.option("--manager", is_flag=True, help="prefer this host as a Raft voter (else the first three to join)")
@click.option("--label", "labels", multiple=True, callback=_check_labels, help="host label KEY=VALUE (repeatable)")
@click.option("--host-grace", type=click.FloatRange(0.0, 3600.0), default=5.0, show_default=True,
              help="seconds a lost host's containers wait before they are rescheduled")
@click.option("--gossip-port", type=click.IntRange(1, 65535), default=7946, show_default=True)
@click.option("--raft-port", type=click.IntRange(1, 65535), default=7947, show_default=True)
@click.option("--overlay/--no-overlay", "overlay", default=True, show_default=True,
              help="run the encrypted container overlay on this host")
@click.option("--bootstrap-admin", is_flag=True,
              help="make the first administrator on a cluster that has no user yet (implied by --bootstrap)")
@click.option("--admin-password-file", type=click.Path(path_type=Path, allow_dash=True), default=None,
              help="the first administrator's password, its first line (- reads standard input); default: "
                   "one is made up and printed once")
@click.option("--admin-key-file", type=click.Path(path_type=Path), default=None,
              help="write the first administrator's API key to this file (0600) instead of printing it")
@click.option("--print-systemd-unit", "print_unit", is_flag=True,
              help="print a systemd unit that runs this agent with these options, and exit")
@click.option("--replace-dead-managers", "replace_after", type=click.FloatRange(1.0, 86400.0), default=None,
              help="replace a manager gossip has seen dead this many seconds by a healthy learner (default: never)")
@click.option("--dns-upstream", "dns_upstreams", multiple=True, callback=_check_upstreams, metavar="ADDR[:PORT]",
              help="where the host's DNS server forwards names outside the cluster (repeatable; default: the "
                   "nameservers of /etc/resolv.conf)")
@click.option("--image-send-rate", type=click.FloatRange(0.1, 100_000.0), default=None, envvar="CORRAL_IMAGE_SEND_RATE",
              help="MB/s at most for each image tarball this host sends to a peer (default: no limit)")
@click.option("--image-port", type=click.IntRange(0, 65535), default=7948, show_default=True,
              envvar="CORRAL_IMAGE_PORT",
              help="TCP port of the bulk channel that sends image tarballs to peers (each frame sealed with a key "
                   "from the cluster secret); 0: none, tarballs go over the API's TLS")
@click.option("--stats-interval", type=click.FloatRange(1.0, 300.0), default=10.0, show_default=True,
              envvar="CORRAL_STATS_INTERVAL",
              help="seconds between two samples of the host's and its containers' figures (the last hour is kept "
                   "in memory: GET /v1/hosts/NAME/stats?since=15m)")
def agent(
    bind: str, join: tuple[str, ...], bootstrap: bool, token: str | None, data_dir: Path, docker_host: str,
    name: str | None, api_port: int, access_log: bool, manager: bool, labels: tuple[tuple[str, str], ...],
    host_grace: float, replace_after: float | None, gossip_port: int, raft_port: int, overlay: bool,
    bootstrap_admin: bool, admin_password_file: Path | None, admin_key_file: Path | None, print_unit: bool,
    image_send_rate: float | None, dns_upstreams: tuple[tuple[str, int], ...], image_port: int,
    stats_interval: float,
) -> None:
    """Run this host's agent: HTTPS API on --bind:8080 (and plain HTTP on 127.0.0.1:8080) over the local
    Docker Engine."""
    if print_unit:
        click.echo(systemd_unit([a for a in sys.argv[sys.argv.index("agent") + 1:] if a != "--print-systemd-unit"]))
        return
    from agent.process import agent as process
    from agent.process import log

    log.setup()
    config = AgentConfig(bind=bind, join=join, bootstrap=bootstrap, token=token, data_dir=data_dir,
                         docker_host=docker_host, api_port=api_port, access_log=access_log, manager=manager,
                         labels=labels, host_grace=host_grace, replace_dead_managers_after=replace_after,
                         gossip_port=gossip_port, raft_port=raft_port, overlay=overlay,
                         bootstrap_admin=bootstrap_admin, admin_password_file=admin_password_file,
                         admin_key_file=admin_key_file,
                         image_send_rate=image_send_rate * 1e6 if image_send_rate else None,
                         image_port=image_port or None, dns_upstreams=dns_upstreams,
                         stats_interval=stats_interval)
    if name:
        config = dataclasses.replace(config, name=name)
    try:
        process.run(config)
    except CorralError as exc:
        click.echo(f"corral agent: {exc.message}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"corral agent: cannot serve on {config.api_url}: {exc.strerror or exc}", err=True)
        sys.exit(2)


def systemd_unit(args: list[str]) -> str:
    """A unit for ``corral agent ARGS`` (a join token goes in ``/etc/corral/agent.env``, not in the unit)."""
    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "corral" else Path(sys.executable).parent / "corral"
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--token":
            skip = True
            continue
        if not arg.startswith("--token="):
            kept.append(arg)
    quoted = " ".join(shlex.quote(a) for a in kept)
    return f"""[Unit]
Description=Corral agent
After=network-online.target docker.service
Wants=network-online.target
Requires=docker.service

[Service]
Type=simple
# CORRAL_JOIN_TOKEN=corral2.… for the first start of a joining host (then it is not needed)
EnvironmentFile=-/etc/corral/agent.env
ExecStart={exe} agent {quoted}
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=30
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


for _command in (hosts, stack, service, ps, events, logs, exec_, keys, login, logout, whoami, user, apikey, team, env,
                 token, ca, registry, image, api, lab, drill, volume, config, settings, dns, lb, stats):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="corral")
