"""DNS on every host, on the real lab: a container on h1 finds and reaches ``db`` on h3 by name; a new
container's name answers on every host's server before its entrypoint goes on; a failing health check
takes a container out of the answers; outside names go to the lab's own resolver (dnsmasq)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from agent.lab import Lab
from agent.lab.resolver import NAMES
from tests.lab.cluster import api, service_running, until
from tests.lab.conftest import fresh_lab

ZONE = "shop.default.corral.internal"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(3)


def docker(lab: Lab, host: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd, env = lab.exec_argv(host, ["docker", *argv])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def answers(lab: Lab, host: str, name: str, qtype: str = "A") -> list[str]:
    body = api(lab, host).get("/v1/dns", name=name, type=qtype)
    return sorted(a["value"] for a in body["answer"]["answers"])


@pytest.fixture(scope="module")
def shop(lab: Lab) -> dict[str, Any]:
    """``db`` (a web server with a health check) on h3, and ``client`` on h1 whose entrypoint looks up its
    own name at every host's DNS server before it does anything else."""
    admin = api(lab, "h1")
    admin.post("/v1/stacks", {"name": "shop"})
    db = admin.post("/v1/services", {
        "stack": "shop", "name": "db", "image": "corral/base", "scale": 1,
        "placement": {"constraints": ["node.hostname==h3"]},
        "command": "mkdir -p /www && echo db-answer > /www/index.html && echo ok > /www/ok && "
                   "exec httpd -f -p 80 -h /www",
        "health_check": {"type": "http", "port": 80, "path": "/ok", "interval": 1, "retries": 1,
                         "on_unhealthy": "none"}})
    until("db runs", lambda: service_running(lab, "h1", db["id"], 1), timeout=90)
    gateways = " ".join(h["subnet"].rsplit(".", 1)[0] + ".1" for h in admin.items("/v1/hosts"))
    me = f"shop-client-1.{ZONE}"
    client = admin.post("/v1/services", {
        "stack": "shop", "name": "client", "image": "corral/base", "scale": 1,
        "placement": {"constraints": ["node.hostname==h1"]},
        "command": f"for gw in {gateways}; do echo \"at $gw:\"; nslookup {me} $gw; done; exec sleep 1d"})
    running = until("client runs", lambda: service_running(lab, "h1", client["id"], 1), timeout=90)
    return {"db": db, "client": client, "client_container": running[0], "gateways": gateways.split()}


def test_a_container_on_h1_resolves_and_reaches_db_on_h3_by_name(lab: Lab, shop: dict[str, Any]) -> None:
    box = shop["client_container"]
    db = api(lab, "h1").items("/v1/containers", service=shop["db"]["id"])[0]
    assert db["host"] == "h3" and box["host"] == "h1"
    fetch = ("exec", box["container_id"], "sh", "-c", "timeout 5 wget -q -O - http://db/")
    got = until("db answers by name", lambda: (r := docker(lab, "h1", *fetch)).returncode == 0 and r, 30)
    assert got.stdout.strip() == "db-answer"
    other_stack = ("exec", box["container_id"], "sh", "-c", "timeout 5 wget -q -O - http://db.shop/")
    assert docker(lab, "h1", *other_stack).stdout.strip() == "db-answer", "SERVICE.STACK, via the second domain"
    looked = docker(lab, "h1", "exec", box["container_id"], "nslookup", "db")
    assert db["ip"] in looked.stdout, looked
    for host in ("h1", "h2", "h3"):
        assert answers(lab, host, f"db.{ZONE}") == [db["ip"]]


def test_a_new_containers_name_answers_on_every_host_before_its_entrypoint_goes_on(
        lab: Lab, shop: dict[str, Any]) -> None:
    box = shop["client_container"]
    logs = until("the entrypoint's lookups are in the log", lambda: (
        out := docker(lab, "h1", "logs", box["container_id"]).stdout).count("at ") == len(shop["gateways"]) and out,
        30)
    blocks = logs.split("at ")[1:]
    assert len(blocks) == 3
    for block in blocks:
        assert f"Address: {box['ip']}" in block or f"Address 1: {box['ip']}" in block, logs


def test_a_failing_health_check_takes_the_container_out_of_the_answers(lab: Lab, shop: dict[str, Any]) -> None:
    db = api(lab, "h1").items("/v1/containers", service=shop["db"]["id"])[0]
    assert answers(lab, "h1", f"db.{ZONE}") == [db["ip"]]
    assert docker(lab, "h3", "exec", db["container_id"], "rm", "/www/ok").returncode == 0
    until("db leaves the answers on every host",
          lambda: all(answers(lab, h, f"db.{ZONE}") == [] for h in ("h1", "h2", "h3")), 30)
    assert answers(lab, "h2", f"shop-db-1.{ZONE}") == [db["ip"]], "its own name still answers"
    assert docker(lab, "h3", "exec", db["container_id"], "sh", "-c", "echo ok > /www/ok").returncode == 0
    until("db is back", lambda: answers(lab, "h1", f"db.{ZONE}") == [db["ip"]], 30)


def test_outside_names_are_forwarded_to_the_labs_resolver(lab: Lab, shop: dict[str, Any]) -> None:
    box = shop["client_container"]
    name, address = next(iter(NAMES.items()))
    looked = docker(lab, "h1", "exec", box["container_id"], "nslookup", name)
    assert address in looked.stdout, looked
    missing = docker(lab, "h1", "exec", box["container_id"], "nslookup", "nothing.lab.example")
    assert missing.returncode != 0 and "10.99" not in missing.stdout
    server = api(lab, "h1").get("/v1/dns")["server"]
    assert server["upstreams"] == [lab.resolver().upstream]
    assert server["counters"]["forward_answers"] >= 2 and server["counters"]["forward_timeouts"] == 0


def test_external_services_and_links_resolve_in_containers(lab: Lab, shop: dict[str, Any]) -> None:
    """An external service's addresses and its CNAME (followed to the lab resolver's name), as a container
    sees them; a compose link's alias from the linking service's containers, and from nowhere else."""
    admin = api(lab, "h1")
    admin.post("/v1/services", {"stack": "shop", "name": "legacy", "kind": "external",
                                "external": {"addresses": ["192.0.2.10", "192.0.2.11"]}})
    www = "www.lab.example"
    admin.post("/v1/services", {"stack": "shop", "name": "site", "kind": "external", "external": {"hostname": www}})
    linker = admin.post("/v1/services", {
        "stack": "shop", "name": "linker", "image": "corral/base", "scale": 1, "links": {"backend": "db"},
        "placement": {"constraints": ["node.hostname==h2"]}, "command": "exec sleep 1d"})
    linked = until("linker runs", lambda: service_running(lab, "h1", linker["id"], 1), timeout=90)[0]
    box = shop["client_container"]
    db = admin.items("/v1/containers", service=shop["db"]["id"])[0]

    # (busybox nslookup goes on through the search list for AAAA, and exits 1 at the last NXDOMAIN)
    legacy = until("legacy answers in h1's container", lambda: "192.0.2.10" in (r := docker(
        lab, "h1", "exec", box["container_id"], "nslookup", "legacy")).stdout and r, 30)
    assert "192.0.2.11" in legacy.stdout, legacy.stdout
    site = docker(lab, "h1", "exec", box["container_id"], "nslookup", "site")
    assert NAMES[www] in site.stdout, site.stdout  # the CNAME followed upstream
    assert answers(lab, "h3", f"site.{ZONE}", "CNAME") == [www]
    assert [s for s in admin.items("/v1/services") if s["name"] in ("legacy", "site") and s["running"] == 0
            and s["spec"]["scale"] == 0], "nothing runs for an external service"

    backend = docker(lab, "h2", "exec", linked["container_id"], "nslookup", "backend")
    assert db["ip"] in backend.stdout, backend.stdout
    elsewhere = docker(lab, "h1", "exec", box["container_id"], "nslookup", "backend")
    assert "Address" in backend.stdout and db["ip"] not in elsewhere.stdout, "a link is its service's alone"
