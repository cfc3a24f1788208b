"""The running cluster on a real 3-host lab: gossip, Raft, the API on every node, services on Docker.

Non-destructive checks share one lab (module scope); the ones that kill or stop things are in
test_cluster_faults.py, each on a fresh lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from agent.cli.client import ApiError
from agent.lab import Lab
from tests.cli import corral
from tests.lab import prometheus
from tests.lab.cluster import api, containers, docker_ps, lab_sh, leader, members_seen_by, raw, service_running, until
from tests.lab.conftest import fresh_lab

HOSTS = ["h1", "h2", "h3"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(3)


@pytest.fixture(scope="module")
def web(lab: Lab) -> dict[str, Any]:
    """Stack web-server with nginx-cluster × 10 (the README's example), converged."""
    client = api(lab, "h2")  # a follower: writes are forwarded to the leader
    stack = client.post("/v1/stacks", {"name": "web-server"})
    service = client.post("/v1/services", {
        "stack": "web-server", "name": "nginx-cluster", "image": "corral/base", "scale": 10,
        "command": "mkdir -p /www && echo $CORRAL_CONTAINER > /www/index.html && exec httpd -f -p 80 -h /www",
    })
    until("10 containers running", lambda: service_running(lab, "h3", service["id"], 10), timeout=90)
    return {"stack": stack, "service": service}


def test_every_agent_sees_every_member_alive_with_metadata(lab: Lab) -> None:
    for host in HOSTS:
        body = api(lab, host).get("/v1/members")
        by_name = {m["name"]: m for m in body["items"]}
        assert set(by_name) == set(HOSTS)
        for name, m in by_name.items():
            assert m["state"] == "alive"
            assert m["incarnation"] >= 0 and m["changed_at"]
            assert m["meta"]["api"] == lab.host(name).api_url
            assert m["meta"]["raft"].endswith(":7947")
        stats = api(lab, host).get("/v1/members/stats")
        assert stats["sealing"]["opened"] > 0


def test_one_leader_and_three_voters_agreed_by_all(lab: Lab) -> None:
    chief = until("one agreed leader", lambda: leader(lab))
    statuses = [api(lab, h).get("/v1/raft") for h in HOSTS]
    assert {s["term"] for s in statuses} == {statuses[0]["term"]}
    voters = until("three voters", lambda: sorted(api(lab, chief).get("/v1/raft")["voters"])
                   if len(api(lab, chief).get("/v1/raft")["voters"]) == 3 else None)
    assert voters == HOSTS
    assert [s["role"] for s in statuses].count("leader") == 1


def test_kv_written_on_a_follower_is_read_on_every_node(lab: Lab) -> None:
    chief = until("leader", lambda: leader(lab))
    follower = next(h for h in HOSTS if h != chief)
    status, headers, body = raw(lab.host(follower).api_url + "/v1/kv/drill/one", "PUT", b"hello")
    assert status == 200, body
    index = int(headers["X-Corral-Index"])
    for host in HOSTS:
        status, headers, got = raw(lab.host(host).api_url + f"/v1/kv/drill/one?index={index - 1}&wait=5s")
        assert status == 200 and got["value"] == "hello", (host, got)
        assert int(headers["X-Corral-Index"]) >= index
        status, _, got = raw(lab.host(host).api_url + "/v1/kv/drill/one?consistent=1")
        assert status == 200 and got["value"] == "hello"
    status, _, body = raw(lab.host(follower).api_url + "/v1/kv/drill/one?cas=1", "PUT", b"lost race")
    assert status == 409, body


def test_service_of_ten_spreads_over_hosts_and_serves_its_name(lab: Lab, web: dict[str, Any]) -> None:
    items = containers(lab, "h1", service=web["service"]["id"])
    per_host = Counter(c["host"] for c in items)
    assert sorted(per_host.values()) == [3, 3, 4], per_host
    for c in items:
        assert c["ip"] and c["ip"].startswith("10.42."), c
        host = api(lab, c["host"]).get(f"/v1/hosts/{c['host']}")
        prefix = host["subnet"].rsplit(".", 1)[0] + "."
        assert c["ip"].startswith(prefix), (c, host["subnet"])
    sample = items[0]
    page = lab_sh(lab, sample["host"], f"timeout 3 wget -qO- http://{sample['ip']}/")
    assert page.stdout.strip() == sample["name"], page
    on_engines = sum(len(docker_ps(lab, h)) for h in HOSTS)
    assert on_engines == 10


def test_every_node_answers_the_same_once_applied_indexes_match(lab: Lab, web: dict[str, Any]) -> None:
    def views() -> list[str] | None:
        seen = []
        for host in HOSTS:
            _status, headers, body = raw(lab.host(host).api_url + f"/v1/services/{web['service']['id']}")
            seen.append((headers["X-Corral-Index"], json.dumps(body, sort_keys=True)))
        return [v for _, v in seen] if len({i for i, _ in seen}) == 1 else None

    agreed = until("equal applied indexes", views)
    assert len(set(agreed)) == 1


def test_docker_rm_f_on_a_host_is_recreated_there(lab: Lab, web: dict[str, Any]) -> None:
    victim = next(c for c in containers(lab, "h1", service=web["service"]["id"]) if c["host"] == "h2")
    assert lab_sh(lab, "h2", f"docker rm -f {victim['container_id']}").returncode == 0
    started = time.monotonic()

    def replaced() -> dict[str, Any] | None:
        now = {c["id"]: c for c in containers(lab, "h2", service=web["service"]["id"])}
        c = now.get(victim["id"])
        return c if c and c["state"] == "running" and c["container_id"] != victim["container_id"] else None

    again = until("the container recreated", replaced, timeout=15)
    assert again["host"] == "h2" and again["name"] == victim["name"]
    print(f"recreated after docker rm -f in {time.monotonic() - started:.2f} s")
    until("10 running", lambda: service_running(lab, "h1", web["service"]["id"], 10))


def test_container_deleted_through_the_api_is_replaced(lab: Lab, web: dict[str, Any]) -> None:
    victim = containers(lab, "h3", service=web["service"]["id"])[0]
    api(lab, "h3").delete(f"/v1/containers/{victim['id']}")
    items = until("a replacement", lambda: (lambda cs: cs if victim["id"] not in {c["id"] for c in cs}
                                            and len([c for c in cs if c["state"] == "running"]) == 10 else None)(
        containers(lab, "h1", service=web["service"]["id"])))
    assert len(items) == 10
    until("the old container gone from its engine",
          lambda: all(d["ID"] not in (victim["container_id"] or "") for d in docker_ps(lab, victim["host"])))


def test_scale_down_and_up(lab: Lab, web: dict[str, Any]) -> None:
    sid = web["service"]["id"]
    api(lab, "h1").post(f"/v1/services/{sid}/scale", {"scale": 4})
    until("4 running and 6 removed from the engines",
          lambda: service_running(lab, "h2", sid, 4) and sum(len(docker_ps(lab, h)) for h in HOSTS) == 4)
    api(lab, "h3").post(f"/v1/services/{sid}/scale", {"scale": 10})
    until("10 running again", lambda: service_running(lab, "h1", sid, 10), timeout=60)


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("POST", "/v1/services", {"stack": "web-server", "name": "ghost", "image": "No/Such Image"}, 400, "image"),
    ("POST", "/v1/services", {"stack": "web-server", "name": "neg", "image": "corral/base", "scale": -1}, 400,
     "scale"),
    ("POST", "/v1/services", {"stack": "web-server", "name": "huge", "image": "corral/base", "scale": 10**9}, 400,
     "scale"),
    ("POST", "/v1/services", {"stack": "web-server", "image": "corral/base"}, 400, "name"),
    ("POST", "/v1/services", {"stack": "nope", "name": "x", "image": "corral/base"}, 404, "stack"),
    ("POST", "/v1/services", {"stack": "web-server", "name": "nginx-cluster", "image": "corral/base"}, 409, "name"),
    ("POST", "/v1/stacks", {"name": "web-server"}, 409, "name"),
    ("POST", "/v1/stacks", {"name": "Bad Name!"}, 400, "name"),
    ("GET", "/v1/services/does-not-exist", None, 404, "service"),
    ("DELETE", "/v1/containers/does-not-exist", None, 404, "container"),
    ("POST", "/v1/services/nginx-cluster/scale", {"scale": "ten"}, 400, "scale"),
])
def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
        lab: Lab, web: dict[str, Any], method: str, path: str, body: Any, status: int, field: str) -> None:
    before = api(lab, "h1").get("/v1/raft")["applied"]
    before_services = api(lab, "h1").get("/v1/services")["total"]
    code, _, answer = raw(lab.host("h2").api_url + path, method, json.dumps(body).encode() if body else None)
    assert code == status, answer
    assert answer["error"] and answer["message"] and answer.get("details", {}).get("field") == field, answer
    assert api(lab, "h1").get("/v1/services")["total"] == before_services
    assert api(lab, "h1").get("/v1/raft")["applied"] >= before


def test_a_service_no_host_satisfies_is_kept_with_the_reason(lab: Lab, web: dict[str, Any]) -> None:
    made = api(lab, "h1").post("/v1/services", {
        "stack": "web-server", "name": "picky", "image": "corral/base", "scale": 2, "command": "sleep 3600",
        "placement": {"constraints": ["disk==ssd"]},
    })
    svc = until("a reason", lambda: (lambda s: s if s.get("unplaced") else None)(
        api(lab, "h2").get(f"/v1/services/{made['id']}")))
    assert "disk==ssd" in json.dumps(svc["unplaced"])
    events = api(lab, "h3").get("/v1/events", kind="service.unplaced")["items"]
    assert any(made["id"] == e["refs"].get("service") for e in events), events
    api(lab, "h1").delete(f"/v1/services/{made['id']}")


def test_documented_collections_answer_on_every_node(lab: Lab) -> None:
    doc = api(lab, "h1").get("/v1/openapi.json")
    gets = [p for p, ops in doc["paths"].items() if "get" in ops and "{" not in p
            and "internal" not in ops["get"]["tags"]]  # agents' routes (/v1/internal/…, the blobs' /v2/)
    assert "/v1/services" in gets and "/v1/members" in gets
    for host in HOSTS:
        for path in gets:
            if path == "/v1/events":
                path += "?limit=5"
            status, _, body = raw(lab.host(host).api_url + path)
            if path == "/v1/drills/report" and status == 404:  # a singleton: none until `corral drill` ran
                assert "no drill report yet" in body["message"], (host, body)
                continue
            assert status == 200, (host, path, body)
            if path == "/metrics":  # the one documented route that answers Prometheus' text, not JSON
                assert "corral_build_info" in body, (host, body[:200])


def test_logs_and_stats_through_any_node(lab: Lab, web: dict[str, Any]) -> None:
    c = next(c for c in containers(lab, "h1", service=web["service"]["id"]) if c["host"] == "h3")
    status, _, stats = raw(lab.host("h1").api_url + f"/v1/containers/{c['id']}/stats")
    assert status == 200 and stats["memory"]["usage"] > 0, stats
    status, _, host_stats = raw(lab.host("h2").api_url + "/v1/hosts/h3/stats")
    assert status == 200 and host_stats["containers"]["running"] >= 1 and host_stats["cpus"] >= 1, host_stats
    with pytest.raises(ApiError) as err:
        api(lab, "h1").get(f"/v1/containers/{c['id']}/logs", tail="x")
    assert err.value.status == 400


def test_a_taken_container_name_is_reported_with_the_reason_and_a_stale_one_of_ours_replaced(lab: Lab) -> None:
    """Docker refuses a create whose name is taken: Corral says why in the container's status (and an
    event) when the name is somebody else's, and removes the holder when it is a leftover of its own."""
    client = api(lab, "h1")
    client.post("/v1/stacks", {"name": "names"})
    for host in HOSTS:  # whichever host gets each slot: slot 1's name is a user's, slot 2's a leftover of ours
        for cmd in ("docker create --name names-web-1 corral/base sleep 1000",
                    "docker create --name names-web-2 --label corral.instance=gone corral/base sleep 1000"):
            made = lab_sh(lab, host, cmd)
            assert made.returncode == 0, made.stderr
    service = client.post("/v1/services", {"stack": "names", "name": "web", "image": "corral/base", "scale": 2,
                                           "command": "exec sleep 1000"})

    def slot(n: int) -> dict[str, Any] | None:
        found = [c for c in containers(lab, "h2", service=service["id"]) if c["name"] == f"names-web-{n}"]
        return found[0] if found else None

    blocked = until("slot 1 reported as blocked", lambda: (c := slot(1)) and c.get("error") and c, timeout=60)
    assert blocked["state"] != "running"
    assert "names-web-1" in blocked["error"] and "Corral does not manage" in blocked["error"], blocked["error"]
    until("slot 2 running in place of our leftover", lambda: (c := slot(2)) and c["state"] == "running" and c)
    assert slot(2)["error"] is None  # type: ignore[index]
    events = client.items("/v1/events")
    assert any(e["kind"] == "instance.failed" and "Corral does not manage" in e["message"] for e in events), events
    ps = subprocess.run([sys.executable, "-m", "agent", "ps", "--stack", "names"], capture_output=True, text=True,
                        timeout=30, env={**os.environ, "CORRAL_URL": lab.host("h3").api_url, "COLUMNS": "400"})
    assert ps.returncode == 0 and "create failed: the name names-web-1 is taken" in ps.stdout, ps.stdout
    blocked_on = blocked["host"]
    user_own = lab_sh(lab, blocked_on, "docker ps -a -q --filter name=^names-web-1$ --filter label=corral.instance")
    assert user_own.stdout.strip() == "", "the name is still held by the user's container, not one of ours"
    assert lab_sh(lab, blocked_on, "docker ps -a -q --filter name=^names-web-1$").stdout.strip(), \
        "Corral did not remove a container it does not manage"
    for host in HOSTS:
        lab_sh(lab, host, "docker rm -f names-web-1")
    fixed = until("slot 1 running once the name is free", lambda: (c := slot(1)) and c["state"] == "running" and c)
    assert fixed["error"] is None
    on_2 = slot(2)["host"]  # type: ignore[index]
    assert lab_sh(lab, on_2, "docker ps -a -q --filter label=corral.instance=gone").stdout.strip() == "", \
        "our leftover holding slot 2's name was removed"
    client.delete("/v1/stacks/names")


def test_health_checks_replace_unhealthy_containers_and_say_why(lab: Lab) -> None:
    client = api(lab, "h3")
    client.post("/v1/stacks", {"name": "health"})
    fast = {"interval": "1s", "timeout": "0.5s", "retries": 2}
    web = client.post("/v1/services", {
        "stack": "health", "name": "web", "image": "corral/base", "scale": 2,
        "command": "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 80 -h /www",
        "health_check": {"type": "http", "port": 80, "path": "/healthz", **fast}})
    cmd = client.post("/v1/services", {
        "stack": "health", "name": "cmd", "image": "corral/base", "command": "touch /tmp/ok && exec sleep 1000",
        "health_check": {"type": "command", "command": "test -f /tmp/ok", **fast}})
    made = subprocess.run([sys.executable, "-m", "agent", "service", "create", "health", "watch", "--image",
                           "corral/base", "--command", "exec sleep 1000", "--health", "tcp:81", "--health-interval",
                           "1s", "--health-timeout", "0.5s", "--health-retries", "2", "--on-unhealthy", "none",
                           "--no-wait", "--host", lab.host("h1").api_url], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    watch = api(lab, "h1").get("/v1/services/watch")
    assert watch["spec"]["health_check"]["type"] == "tcp" and watch["spec"]["health_check"]["on_unhealthy"] == "none"

    def healthy(service: dict[str, Any], n: int) -> list[dict[str, Any]] | None:
        items = containers(lab, "h1", service=service["id"])
        ok = [c for c in items if c["state"] == "running" and c["health"] == "healthy"]
        return items if len(ok) == n == len(items) else None

    first = until("web and cmd healthy", lambda: healthy(web, 2) and healthy(cmd, 1), timeout=60)
    assert first is not None
    assert api(lab, "h2").get(f"/v1/services/{web['id']}")["healthy"] == 2
    before = {c["name"]: c for c in containers(lab, "h1", stack="health")}

    victim = before["health-web-1"]  # its page goes: 404 → unhealthy → replaced
    assert lab_sh(lab, victim["host"], "docker exec health-web-1 rm /www/healthz").returncode == 0
    lab_sh(lab, before["health-cmd-1"]["host"], "docker exec health-cmd-1 rm /tmp/ok")

    def replaced(name: str) -> dict[str, Any] | None:
        now = {c["name"]: c for c in containers(lab, "h1", stack="health")}.get(name)
        fresh = now and now["container_id"] != before[name]["container_id"] and now["health"] == "healthy"
        return now if fresh else None

    until("the unhealthy web container replaced by a healthy one", lambda: replaced("health-web-1"), timeout=60)
    until("the unhealthy command-checked container replaced", lambda: replaced("health-cmd-1"), timeout=60)
    after = {c["name"]: c for c in containers(lab, "h1", stack="health")}
    assert after["health-web-2"]["container_id"] == before["health-web-2"]["container_id"], "the healthy one stays"
    events = [e["message"] for e in client.items("/v1/events") if e["kind"] == "instance.unhealthy"]
    assert any("GET /healthz answered 404" in m for m in events), events
    assert any("the check exited 1" in m for m in events), events

    # on_unhealthy: none — reported, with the reason, and left running
    kept = until("the watched container reported unhealthy",
                 lambda: (c := containers(lab, "h1", service=watch["id"])[0])["health"] == "unhealthy" and c)
    assert kept["state"] == "running" and "cannot connect to port 81: connection refused" in kept["health_detail"]
    time.sleep(3)
    again = containers(lab, "h1", service=watch["id"])[0]
    assert again["container_id"] == kept["container_id"] and again["state"] == "running"
    ps = subprocess.run([sys.executable, "-m", "agent", "ps", "--stack", "health"], capture_output=True, text=True,
                        timeout=30, env={**os.environ, "CORRAL_URL": lab.host("h2").api_url, "COLUMNS": "400"})
    assert ps.returncode == 0 and "running (healthy)" in ps.stdout and "running (unhealthy" in ps.stdout, ps.stdout
    client.delete("/v1/stacks/health")


def test_a_container_that_never_turns_healthy_is_replaced_with_a_back_off(lab: Lab) -> None:
    client = api(lab, "h2")
    client.post("/v1/stacks", {"name": "sick"})
    svc = client.post("/v1/services", {
        "stack": "sick", "name": "never", "image": "corral/base", "command": "exec sleep 1000",
        "health_check": {"type": "tcp", "port": 81, "interval": "0.5s", "timeout": "0.4s", "retries": 1}})
    ids: set[str] = set()
    seen_detail = ""
    deadline = time.monotonic() + 14
    while time.monotonic() < deadline:
        for c in containers(lab, "h1", service=svc["id"]):
            if c.get("container_id"):
                ids.add(c["container_id"])
            seen_detail = c.get("health_detail") or seen_detail
        time.sleep(0.2)
    # unhealthy ~0.5 s after each start: without a back-off that is a new container every second or so
    assert 2 <= len(ids) <= 3, f"{len(ids)} containers in 14 s: {sorted(ids)}"
    assert "backing off" in seen_detail, seen_detail
    client.delete("/v1/stacks/sick")


def test_the_history_of_a_busy_container_shows_its_cpu_from_another_node(lab: Lab) -> None:
    """The agents sample every 2 s in the lab (``LAB_STATS_INTERVAL``): a spinning container's samples,
    read from its host's cgroup, reach a client of another node with its CPU in them."""
    client = api(lab, "h1")
    client.post("/v1/stacks", {"name": "busy"})
    svc = client.post("/v1/services", {"stack": "busy", "name": "spin", "image": "corral/base", "scale": 1,
                                       "cpu_limit": 0.5, "command": "while :; do :; done"})
    try:
        running = until("the spinning container runs", lambda: service_running(lab, "h1", svc["id"], 1), timeout=60)
        inst = running[0]
        other = next(h for h in HOSTS if h != inst["host"])

        def busy_samples() -> list[dict[str, Any]] | None:
            status, _, body = raw(lab.host(other).api_url + f"/v1/containers/{inst['id']}/stats?since=5m")
            assert status == 200, body
            busy = [s for s in body["samples"] if s["cpu_percent"] > 10]
            return body["samples"] if len(busy) >= 2 else None

        samples = until("two busy samples in the history", busy_samples, timeout=60, every=1)
        assert all(s["cpu_percent"] <= 60 for s in samples), "within its limit of half a CPU"
        assert all(s["memory"]["usage"] > 0 and s["memory"]["limit"] > 0 for s in samples)
        times = [s["t"] for s in samples]
        assert times == sorted(times) and time.time() - 300 <= times[0] and times[-1] <= time.time() + 1
        status, _, body = raw(lab.host(other).api_url + f"/v1/hosts/{inst['host']}/stats?since=1m&points=3")
        assert status == 200 and body["interval_seconds"] == 2 and 1 <= len(body["samples"]) <= 3, body
        assert body["samples"][-1]["memory"]["limit"] > body["samples"][-1]["memory"]["usage"] > 0
        assert body["samples"][-1]["cpu_percent"] > 10, "the spinning container is part of its host's CPU"
        status, _, body = raw(lab.host(other).api_url + f"/v1/containers/{inst['id']}/stats?since=2h")
        assert status == 400 and body["details"]["field"] == "since", body
        status, _, current = raw(lab.host(other).api_url + f"/v1/containers/{inst['id']}/stats")
        assert status == 200 and "samples" not in current and current["cpu_percent"] > 0, current
    finally:
        client.delete("/v1/stacks/busy")


def test_members_are_alive_after_all_that(lab: Lab) -> None:
    for host in HOSTS:
        assert set(members_seen_by(lab, host).values()) == {"alive"}


def test_a_real_prometheus_scrapes_every_agent_with_a_metrics_key(lab: Lab, web: dict[str, Any]) -> None:
    """Debian's Prometheus, given the scrape config docs/MONITORING.md shows (HTTPS with the lab's CA, a
    metrics key in a credentials_file), scrapes the three agents, and PromQL sees the cluster."""
    made = corral("apikey", "create", "--metrics", "--ttl", "1h", "-d", "prometheus", "--host",
                  lab.host("h2").api_url)  # as the docs say, by the CLI: the token on stdout, alone
    assert made.returncode == 0, made.stderr
    key = {"token": made.stdout.strip()}
    listed = corral("apikey", "ls", "--host", lab.host("h1").api_url)
    assert listed.returncode == 0 and "metrics" in listed.stdout and "prometheus" in listed.stdout, listed
    with pytest.raises(urllib.error.HTTPError) as refused:  # and without it, nothing
        urllib.request.urlopen(lab.host("h1").api_url + "/metrics", timeout=10, context=lab.tls())
    assert refused.value.code == 401 and b"corral_" not in refused.value.read()
    with prometheus.running(lab, key["token"]) as prom:
        def scraped() -> list[dict[str, Any]] | None:
            up = prom.query('up{job="corral"}')
            return up if len(up) == len(HOSTS) and all(r["value"][1] == "1" for r in up) else None

        up = until("Prometheus scraped every agent", scraped, timeout=60, every=0.5)
        assert {r["metric"]["instance"] for r in up} == {lab.host(h).api_url.removeprefix("https://") for h in HOSTS}
        # polled, not read once: a loaded machine can make gossip suspect a host, or Raft elect, for a moment
        until("one leader across the 3 hosts", lambda: prom.query("sum(corral_raft_is_leader) == 1"))
        until("every agent sees 3 alive members", lambda: prom.query(
            'count(corral_gossip_members{state="alive"} == 3) == 3'))
        until("every follower heard from its leader lately, and the leader says 0", lambda: prom.query(
            "count(corral_raft_leader_last_contact_seconds < 5) == 3"))
        until("the web service's 10 containers are running in the figures",
              lambda: prom.query('sum(corral_containers{status="running"}) >= 10'), timeout=30)
        until("every host converged: no drift", lambda: prom.query(
            "count(corral_reconciler_drift_instances == 0) == 3"), timeout=45)
        assert len(prom.query("corral_reconciler_pass_seconds_count > 0")) == 3, "every host's passes are timed"
        until("the overlay's paths are up, each host to its 2 peers", lambda: prom.query(
            "count(corral_overlay_peer_up == 1) == 6"), timeout=30)
        assert len(prom.query("corral_build_info")) == 3
        until("the scrapes show in each agent's HTTP histogram", lambda: prom.query(
            'count(corral_http_request_duration_seconds_count{route="/metrics",code="200"} > 0) == 3'), timeout=10)
