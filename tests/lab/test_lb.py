"""Load balancers on the lab: the README's example (web-server: nginx-cluster × 10 plus a load balancer on
port 80 of every host) serves all 10 containers from every host; a second load balancer routes by
hostname and by path; under steady requests, a scale change and a ``docker rm -f`` of a target cost
zero failed requests.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from agent.lab import Lab
from tests.cli import corral
from tests.lab.cluster import api, containers, lab_sh, until
from tests.lab.conftest import example_lab

STACK = "web-server"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from example_lab()


def get(address: str, port: int = 80, path: str = "/", host: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        conn.close()


def served_by(body: str) -> str:
    return body.split("<h1>", 1)[1].split("</h1>", 1)[0] if "<h1>" in body else body.strip()


def service(lab: Lab, name: str) -> dict[str, Any]:
    return next(s for s in api(lab, "h1").items("/v1/services") if s["stack_name"] == STACK and s["name"] == name)


def lb_ready(lab: Lab, name: str, backends: int) -> bool:
    """Every instance of load balancer ``name`` runs and has ``backends`` servers UP."""
    detail = api(lab, "h1").get(f"/v1/services/{service(lab, name)['id']}")
    figures = detail.get("lb_instances", [])
    return bool(figures) and detail["running"] == detail["scale"] and all(
        "error" not in f and sum(s["state"] == "UP" for b in f["backends"] for s in b["servers"]) == backends
        for f in figures)


def test_the_example_load_balancer_serves_all_ten_containers_from_every_host(lab: Lab) -> None:
    until("the load balancer on every host with 10 servers up", lambda: lb_ready(lab, "lb", 10), timeout=60)
    lb = service(lab, "lb")
    assert lb["running"] == 3, "one on each host (no replicas given)"
    names = {c["name"] for c in containers(lab, "h1", service=service(lab, "nginx-cluster")["id"])}
    for h in ("h1", "h2", "h3"):
        seen = Counter(served_by(get(lab.host(h).address)[1]) for _ in range(40))
        assert set(seen) == names, f"{h}: {seen}"
    ps = corral("ps", env={"CORRAL_URL": lab.host("h2").api_url})
    assert ps.returncode == 0 and ps.stdout.count("web-server-lb-") == 3, ps.stdout
    figures = api(lab, "h3").get(f"/v1/services/{lb['id']}")["lb_instances"]
    assert {f["host"] for f in figures} == {"h1", "h2", "h3"} and all(f["errors"] == 0 for f in figures)


def test_rules_route_by_hostname_and_by_path(lab: Lab) -> None:
    env = {"CORRAL_URL": lab.host("h2").api_url}
    made = corral("service", "create", STACK, "api", "--image", "corral/base", "--command",
                  "mkdir -p /www/api && echo API-PAGE > /www/api/index.html && exec httpd -f -p 80 -h /www", env=env,
                  timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    made = corral("lb", "create", f"{STACK}/edge", "--scale", "1",
                  "--rule", "8088=nginx-cluster:80,hostname=*.example.com",
                  "--rule", "8088=api:80,path=/api", "--rule", "8088=api:80,hostname=api.*,priority=5",
                  env=env, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    until("edge with 11 servers up", lambda: lb_ready(lab, "edge", 11), timeout=60)
    (edge,) = containers(lab, "h1", service=service(lab, "edge")["id"])
    address = lab.host(edge["host"]).address
    assert get(address, 8088, "/", "www.example.com")[1].startswith("<h1>"), "*.example.com → nginx-cluster"
    assert get(address, 8088, "/api/", "www.other.org")[1].strip() == "API-PAGE", "/api → api"
    assert get(address, 8088, "/api/", "api.example.com")[1].strip() == "API-PAGE"
    assert get(address, 8088, "/", "api.example.com")[0] == 404, "api.* → api (priority 5), which has no /"
    assert get(address, 8088, "/", "www.other.org")[0] == 503, "no rule and no default: 503"
    listed = corral("lb", "ls", env=env)
    assert listed.returncode == 0 and "web-server/edge" in listed.stdout and "web-server/lb" in listed.stdout


class Steady:
    """GET / through one host's load balancer, one request after another (new connection each), counting
    failures, until stopped."""

    def __init__(self, address: str) -> None:
        self.address, self.ok, self.failures = address, 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = get(self.address)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {status} at {time.monotonic():.2f}")
            except Exception as exc:
                self.failures.append(f"{exc!r} at {time.monotonic():.2f}")
            time.sleep(0.01)

    def __enter__(self) -> Steady:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_scale_and_rm_f_under_steady_requests_fail_nothing(lab: Lab) -> None:
    web = service(lab, "nginx-cluster")
    env = {"CORRAL_URL": lab.host("h1").api_url}
    with Steady(lab.host("h2").address) as load:
        time.sleep(2)
        scaled = corral("service", "scale", f"{STACK}/nginx-cluster", "5", env=env, timeout=120)
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        until("5 servers up on every load balancer", lambda: lb_ready(lab, "lb", 5), timeout=60)
        time.sleep(6)  # the drained containers stop after the drain timeout (5 s): still no failure
        victim = containers(lab, "h1", service=web["id"])[0]
        removed = lab_sh(lab, victim["host"], f"docker rm -f {victim['container_id']}")
        assert removed.returncode == 0, removed.stderr
        until("the removed container replaced and back behind every load balancer",
              lambda: lb_ready(lab, "lb", 5) and all(c["container_id"] != victim["container_id"]
                                                    for c in containers(lab, "h1", service=web["id"])), timeout=60)
        time.sleep(2)
    assert load.ok > 200, load.ok
    assert load.failures == [], f"{len(load.failures)} of {load.ok + len(load.failures)} failed: {load.failures[:5]}"
