"""Environments own hosts, on the real lab: a host moved to `prod` is drained of `default`'s containers
first and then runs `prod`'s; the overlay carries traffic within an environment and none between them
(a `default` container cannot ping or connect to a `prod` one, with the drops counted); a user of one
environment sees only its hosts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from agent.cli.client import ApiError, Client
from agent.lab import Lab
from tests.lab.cluster import api, service_running, until
from tests.lab.conftest import fresh_lab

PAGE = "mkdir -p /w && echo $CORRAL_CONTAINER > /w/index.html && exec httpd -f -p 80 -h /w"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(3)


def dexec(lab: Lab, host: str, container: str, command: str) -> subprocess.CompletedProcess[str]:
    argv, env = lab.exec_argv(host, ["docker", "exec", container, "sh", "-c", command])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def drops(lab: Lab, host: str) -> dict[str, int]:
    body: dict[str, Any] = api(lab, host).get("/v1/overlay")
    return dict(body.get("drops") or {})


def test_a_moved_host_is_drained_then_isolated_from_its_old_environment(lab: Lab) -> None:
    admin = api(lab, "h1")
    admin.post("/v1/stacks", {"name": "web"})
    web = admin.post("/v1/services", {"stack": "web", "name": "echo", "image": "corral/base", "scale": 3,
                                      "command": PAGE, "placement": {"one_per_host": True}})
    until("3 web containers, one per host", lambda: service_running(lab, "h1", web["id"], 3), timeout=60)

    admin.post("/v1/environments", {"name": "prod"})
    moved = admin.post("/v1/hosts/h3/move", {"environment": "prod"})
    assert moved["environment"] == "prod"

    def drained() -> list[dict[str, Any]] | None:
        items = api(lab, "h1").items("/v1/containers", service=web["id"])
        ok = [c for c in items if c["state"] == "running"]
        return items if len(ok) == 2 and all(c["host"] != "h3" for c in items) else None
    # one_per_host over default's two hosts left: two run, the third slot waits for a host
    web_now = until("default's containers off h3", drained, timeout=60)
    assert admin.get(f"/v1/services/{web['id']}")["unplaced"], "the slot with no host left says why"

    admin.post("/v1/stacks", {"name": "vault", "environment": "prod"})
    secret = admin.post("/v1/services", {"stack": "vault", "name": "db", "image": "corral/base", "scale": 1,
                                         "command": PAGE})
    prod = until("prod's container on h3", lambda: service_running(lab, "h1", secret["id"], 1), timeout=60)[0]
    assert prod["host"] == "h3" and prod["ip"]

    h1_pod = next(c for c in web_now if c["host"] == "h1")
    h2_pod = next(c for c in web_now if c["host"] == "h2")
    same = dexec(lab, "h1", h1_pod["container_id"], f"timeout 5 wget -q -O - http://{h2_pod['ip']}/")
    assert same.returncode == 0 and h2_pod["name"] in same.stdout, "within default: traffic flows"
    before = drops(lab, "h1")
    pinged = dexec(lab, "h1", h1_pod["container_id"], f"ping -c 3 -W 1 {prod['ip']}")
    assert pinged.returncode != 0, "a default container cannot ping a prod one"
    fetched = dexec(lab, "h1", h1_pod["container_id"], f"timeout 5 wget -q -O - http://{prod['ip']}/")
    assert fetched.returncode != 0 and prod["name"] not in fetched.stdout, "nor connect to it"
    after = drops(lab, "h1")
    assert after.get("no_route", 0) - before.get("no_route", 0) >= 3, (before, after)
    peers = api(lab, "h3").get("/v1/overlay").get("peers", {})
    assert not peers, f"h3 (prod) keeps no session with default's hosts: {peers}"
    assert set(api(lab, "h1").get("/v1/overlay").get("peers", {})) == {"h2"}

    # a user of default sees default's hosts only; prod's host does not exist for it
    admin.post("/v1/users", {"name": "dev", "password": "a long enough password"})
    admin.request("PUT", "/v1/environments/default/members/user:dev", {"role": "member"})
    key = admin.post("/v1/apikeys", {"user": "dev"})
    dev = Client(lab.host("h2").api_url, token=key["token"])
    assert {h["name"] for h in dev.items("/v1/hosts")} == {"h1", "h2"}
    with pytest.raises(ApiError) as err:
        dev.get("/v1/hosts/h3")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        dev.post("/v1/hosts/h1/move", {"environment": "prod"})
    assert err.value.status == 403, "moving hosts is for administrators"
