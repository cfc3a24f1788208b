"""``corral lb create|ls``: load balancers, services of kind load-balancer that run HAProxy on their hosts."""

from __future__ import annotations

from typing import Any

import click

from agent.cli.client import Client
from agent.cli.output import table, url_option
from agent.cli.stacks import converge
from agent.model.errors import SpecError
from agent.model.lb import rule_from_text


@click.group("lb")
def lb() -> None:
    """Load balancers: HAProxy on the hosts, sending a port's traffic to services' containers."""


@lb.command("create")
@click.argument("ref", metavar="STACK/NAME")
@click.option("--rule", "rules", multiple=True, required=True,
              help="PORT[/http|tcp]=SERVICE:PORT[,hostname=H][,path=/P][,priority=N] (repeatable); "
                   "SERVICE may be STACK/SERVICE; H: www.example.com, *.example.com or example.*")
@click.option("--default", "default", default=None, metavar="SERVICE:PORT",
              help="where http requests no rule matches go (none: 503)")
@click.option("--scale", type=int, default=None, help="this many instances (default: one on every host)")
@click.option("--sticky", is_flag=True, help="a cookie keeps each client on the container it first reached")
@click.option("--proxy-protocol", is_flag=True, help="tcp rules: a PROXY protocol line tells the client's address")
@click.option("--no-forwarded-for", is_flag=True, help="http rules: add no X-Forwarded-For/-Proto")
@click.option("--drain-timeout", type=float, default=None, help="seconds a leaving container keeps its requests (10)")
@click.option("--constraint", multiple=True, help="KEY==VALUE or KEY!=VALUE: the hosts it may run on (repeatable)")
@click.option("--wait/--no-wait", default=True)
@url_option
def lb_create(ref: str, rules: tuple[str, ...], default: str | None, scale: int | None, sticky: bool,
              proxy_protocol: bool, no_forwarded_for: bool, drain_timeout: float | None, constraint: tuple[str, ...],
              wait: bool, url: str) -> None:
    """Create load balancer NAME in stack STACK: one HAProxy per host (or --scale N), binding the rules' ports."""
    stack_name, slash, name = ref.partition("/")
    if not slash:
        raise click.BadParameter(f"{ref!r} is not STACK/NAME", param_hint="STACK/NAME")
    try:
        parsed = [rule_from_text(r, "--rule") for r in rules]
    except SpecError as exc:
        raise click.BadParameter(exc.message, param_hint="--rule") from None
    spec: dict[str, Any] = {"rules": parsed, "stickiness": sticky, "proxy_protocol": proxy_protocol,
                            "forwarded_for": not no_forwarded_for}
    if default is not None:
        service, colon, port = default.rpartition(":")
        if not colon or not port.isdigit():
            raise click.BadParameter(f"{default!r} is not SERVICE:PORT", param_hint="--default")
        spec["default"] = {"target": service, "port": int(port)}
    if drain_timeout is not None:
        spec["drain_timeout"] = drain_timeout
    body: dict[str, Any] = {"stack": stack_name, "name": name, "kind": "load-balancer", "lb": spec,
                            "placement": {"constraints": list(constraint)}}
    if scale is None:
        body["mode"] = "global"
    else:
        body.update(scale=scale, placement={"constraints": list(constraint), "one_per_host": True})
    client = Client(url)
    made = client.post("/v1/services", body)
    ports = sorted({int(str(r["port"])) for r in parsed})
    click.echo(f"load balancer {ref} created ({made['id']}), listening on port(s) {', '.join(map(str, ports))}")
    if wait:
        converge(client, made["id"])


def _rule_text(rule: dict[str, Any]) -> str:
    """A rule as the service's spec shows it (``target: {stack, service, port}``), in --rule's form."""
    where = "".join(f",{k}={rule[k]}" for k in ("hostname", "path") if rule.get(k))
    if rule.get("priority"):
        where += f",priority={rule['priority']}"
    target = rule["target"]
    if isinstance(target, dict):
        name = f"{target['stack']}/{target['service']}" if target.get("stack") else target["service"]
        port = target["port"]
    else:  # the request's flat form
        name, port = target, rule["target_port"]
    return f"{rule['port']}/{rule['protocol']}={name}:{port}{where}"


@lb.command("ls")
@url_option
def lb_ls(url: str) -> None:
    """Every load balancer: its rules, instances running, and its figures (sessions, requests/s, errors)."""
    client = Client(url)
    rows = []
    for s in client.items("/v1/services"):
        if s["spec"].get("kind") != "load-balancer":
            continue
        detail = client.get(f"/v1/services/{s['id']}")
        figures = [i for i in detail.get("lb_instances", []) if "error" not in i]
        rows.append([f"{s['stack_name']}/{s['name']}", " ".join(_rule_text(r) for r in s["spec"]["lb"]["rules"]),
                     f"{s['running']}/{s['scale']}", sum(i["sessions"] for i in figures),
                     sum(i["requests_per_s"] for i in figures), sum(i["errors"] for i in figures)])
    table("load balancers", ["name", "rules", "running", "sessions", "req/s", "errors"], rows)
