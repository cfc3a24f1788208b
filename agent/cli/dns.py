"""``corral dns query|status``: what a node's DNS server answers, from its own records."""

from __future__ import annotations

import json
from typing import Any

import click

from agent.cli.client import Client
from agent.cli.output import table, url_option

TYPES = ("A", "AAAA", "SRV", "PTR", "CNAME", "ANY")


@click.group("dns")
def dns() -> None:
    """The cluster's DNS: SERVICE.STACK.ENVIRONMENT.corral.internal on every host (docs/DNS.md)."""


@dns.command("query")
@click.argument("name")
@click.option("--type", "qtype", type=click.Choice(TYPES, case_sensitive=False), default="A", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@url_option
def dns_query(name: str, qtype: str, as_json: bool, url: str) -> None:
    """What the node at --url answers for NAME from its own records (no search list: give the whole
    name, e.g. db.shop.default.corral.internal, or 2.1.42.10.in-addr.arpa with --type PTR)."""
    body: dict[str, Any] = Client(url).get("/v1/dns", name=name, type=qtype.upper())
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    answer = body["answer"]
    if answer["rcode"] == "OUTSIDE":
        click.echo(f"{answer['name']} is not a cluster name: {body['node']} forwards it to its upstream resolvers")
        return
    click.echo(f"{answer['name']} {answer['type']}: {answer['rcode']} ({body['node']})")
    for a in answer["answers"]:
        click.echo(f"  {a['name']}  {a['ttl']}  {a['type']}  {a['value']}")
    if answer["rcode"] == "NOERROR" and not answer["answers"]:
        click.echo("  (no records: the name exists, but nothing of that type is running/healthy now)")


@dns.command("status")
@url_option
def dns_status(url: str) -> None:
    """Where the node at --url serves DNS, its upstreams and counters."""
    body = Client(url).get("/v1/dns")
    server = body["server"]
    if server is None:
        click.echo(f"{body['node']} runs no DNS server")
        return
    click.echo(f"{body['node']}: listening on {server['listening'] or '(not yet)'}, upstreams "
               f"{', '.join(server['upstreams']) or 'none'}, {server['names']} names"
               + (f" — {server['error']}" if server["error"] else ""))
    table("counters", ["counter", "value"], [[k, v] for k, v in server["counters"].items()])
