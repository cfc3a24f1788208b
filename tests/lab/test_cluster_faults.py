"""What the cluster does when agents die, data dirs vanish, hosts lose power or the network splits.

One 3-host lab for the module; the tests run in file order and each leaves the cluster whole again
(every test first waits for all members alive and one leader), so they can share it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.lab import Lab, procs
from mesh.raft import config as raft_config
from tests.lab.cluster import api, containers, docker_ps, leader, members_seen_by, raw, service_running, until
from tests.lab.conftest import fresh_lab

HOSTS = ["h1", "h2", "h3"]
SCALE = 6


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from fresh_lab(3)


@pytest.fixture(scope="module")
def service(lab: Lab) -> str:
    api(lab, "h1").post("/v1/stacks", {"name": "drill"})
    made = api(lab, "h1").post("/v1/services", {"stack": "drill", "name": "web", "image": "corral/base",
                                                "scale": SCALE, "command": "exec httpd -f -p 80 -h /"})
    until("service running", lambda: service_running(lab, "h1", made["id"], SCALE), timeout=60)
    return str(made["id"])


def healthy(lab: Lab) -> str:
    """Wait until every agent sees every member alive and all agree on a leader with 3 voters; the leader."""
    until("all members alive everywhere",
          lambda: all(set(members_seen_by(lab, h).values()) == {"alive"} and len(members_seen_by(lab, h)) == 3
                      for h in HOSTS), timeout=30)
    chief = until("one leader", lambda: leader(lab), timeout=30)
    until("three voters", lambda: len(api(lab, chief).get("/v1/raft")["voters"]) == 3, timeout=30)
    return chief


def engines_total(lab: Lab) -> Counter[str]:
    return Counter({h: len([c for c in docker_ps(lab, h) if c["State"] == "running"]) for h in HOSTS})


def test_killed_leader_is_replaced_and_writes_continue(lab: Lab, service: str) -> None:
    old = healthy(lab)
    others = [h for h in HOSTS if h != old]
    lab.kill_agent(old)
    killed = time.monotonic()
    new = until("a new leader", lambda: leader(lab, others), timeout=15)
    assert new != old
    status, _, body = raw(lab.host(others[0]).api_url + "/v1/kv/after-failover", "PUT", b"yes")
    assert status == 200, body
    print(f"leader {old} killed: {new} leads and a write committed after {time.monotonic() - killed:.2f} s")
    # the containers never stopped, and nothing moved yet (grace period)
    assert sum(engines_total(lab).values()) == SCALE
    lab.start_agent(old)
    until(f"{old} follows {new}", lambda: api(lab, old).get("/v1/raft")["leader"] == new
          and api(lab, old).get("/v1/raft")["role"] == "follower", timeout=20)
    assert until("the write on the old leader", lambda: raw(lab.host(old).api_url + "/v1/kv/after-failover")[2]
                 .get("value")) == "yes"


def test_wiped_manager_catches_up_by_snapshot_and_loses_nothing(lab: Lab, service: str) -> None:
    chief = healthy(lab)
    victim = next(h for h in HOSTS if h != chief)
    client = api(lab, chief)
    writes = raft_config.lan().snapshot_threshold + 100  # past the agent's snapshot threshold: the log is compacted
    with ThreadPoolExecutor(32) as pool:  # 32 clients at once, so the writes commit in batches
        list(pool.map(lambda i: client.request("PUT", f"/v1/kv/bulk/{i}", body=i), range(writes)))
    before = api(lab, chief).get(f"/v1/services/{service}")
    lab.kill_agent(victim)
    shutil.rmtree(lab.host(victim).agent_data)
    lab.start_agent(victim)
    leader_applied = api(lab, chief).get("/v1/raft")["applied"]
    until(f"{victim} caught up", lambda: api(lab, victim).get("/v1/raft")["applied"] >= leader_applied, timeout=30)
    raft = api(lab, victim).get("/v1/raft")
    assert raft["snapshot_index"] > 0, raft  # it got a snapshot, not only log entries
    after = api(lab, victim).get(f"/v1/services/{service}")
    assert (after["name"], after["scale"], sorted(after["containers"])) == (
        before["name"], before["scale"], sorted(before["containers"]))
    assert raw(lab.host(victim).api_url + f"/v1/kv/bulk/{writes - 1}")[2]["value"] == str(writes - 1)
    until("the victim runs its share again", lambda: service_running(lab, victim, service, SCALE), timeout=30)
    assert sum(engines_total(lab).values()) == SCALE


def test_partitioned_manager_neither_leads_nor_serves_consistent_reads(lab: Lab, service: str) -> None:
    chief = healthy(lab)
    cut = next(h for h in HOSTS if h != chief)
    rest = [h for h in HOSTS if h != cut]
    lab.partition([[cut], rest])
    try:
        for i in range(5):
            status, _, body = raw(lab.host(rest[0]).api_url + f"/v1/kv/split/{i}", "PUT", b"1")
            assert status == 200, body
        time.sleep(2.0)  # several election timeouts: PreVote keeps the cut node from deposing anyone
        assert api(lab, cut).get("/v1/raft")["role"] != "leader"
        assert leader(lab, rest) in rest
        status, _, body = raw(lab.host(cut).api_url + "/v1/kv/split/0?consistent=1", timeout=15)
        assert status == 503 and body["error"], body
        status, _, body = raw(lab.host(cut).api_url + "/v1/kv/split/9", "PUT", b"x", timeout=15)
        assert status == 503, body
    finally:
        lab.heal()
    until("the cut node catches up", lambda: raw(lab.host(cut).api_url + "/v1/kv/split/4")[0] == 200, timeout=30)
    healthy(lab)


def test_killed_worker_agent_keeps_its_containers_then_hands_them_over_once(lab: Lab, service: str) -> None:
    chief = healthy(lab)
    worker = max((h for h in HOSTS if h != chief), key=lambda h: engines_total(lab)[h])
    mine = engines_total(lab)[worker]
    assert mine > 0
    lab.kill_agent(worker)
    states = []

    def host_state() -> str | None:
        st = api(lab, chief).get(f"/v1/hosts/{worker}")["state"]
        if not states or states[-1] != st:
            states.append(st)
        return st if st == "disconnected" else None

    until(f"{worker} disconnected", host_state, timeout=20)
    assert engines_total(lab)[worker] == mine  # its containers kept running without their agent
    until("its instances running elsewhere",
          lambda: service_running(lab, chief, service, SCALE)
          and all(c["host"] != worker for c in containers(lab, chief, service=service)), timeout=30)
    lab.start_agent(worker)
    until("stale copies removed", lambda: engines_total(lab)[worker] == 0, timeout=20)
    assert sum(engines_total(lab).values()) == SCALE
    assert "active" in [api(lab, chief).get(f"/v1/hosts/{worker}")["state"]]
    print(f"host states seen: {states}")


def test_stopped_host_work_moves_and_comes_back_once(lab: Lab, service: str) -> None:
    chief = healthy(lab)
    victim = max((h for h in HOSTS if h != chief), key=lambda h: engines_total(lab)[h])
    assert engines_total(lab)[victim] > 0
    lab.stop_host(victim)
    stopped = time.monotonic()
    until("every instance running on the others",
          lambda: service_running(lab, chief, service, SCALE)
          and all(c["host"] != victim for c in containers(lab, chief, service=service)), timeout=30)
    print(f"{victim} stopped: its containers ran elsewhere after {time.monotonic() - stopped:.2f} s")
    lab.start_host(victim)
    until(f"{victim} back and active",
          lambda: api(lab, chief).get(f"/v1/hosts/{victim}")["state"] == "active", timeout=30)
    until("its restarted stale containers removed", lambda: engines_total(lab)[victim] == 0, timeout=30)
    assert sum(engines_total(lab).values()) == SCALE



def test_a_host_whose_engine_died_says_so_in_its_health_and_on_every_node(lab: Lab, service: str) -> None:
    """/v1/health tells the truth: the agent runs, but its Docker Engine is gone — `degraded`, with the
    reason, on the host itself and, through gossip metadata, in every node's /v1/hosts."""
    healthy(lab)
    until("h3 healthy everywhere", lambda: all(
        {h["name"]: h["health"] for h in api(lab, node).items("/v1/hosts")}.get("h3") == "ok" for node in HOSTS),
        timeout=30)
    dockerd = procs.read_pid(lab.host("h3").dockerd_pidfile)
    assert dockerd is not None
    procs.kill([dockerd])
    assert procs.wait_gone([dockerd], 10)
    try:
        body = until("h3 degraded", lambda: (lambda b: b if b["status"] == "degraded" else None)(
            api(lab, "h3").get("/v1/health")), timeout=15)
        assert body["checks"]["docker"] != "ok" and any(r.startswith("docker:") for r in body["reasons"]), body
        seen = until("h1 sees h3 degraded", lambda: next(
            (h["health"] for h in api(lab, "h1").items("/v1/hosts") if h["name"] == "h3"
             and str(h["health"]).startswith("degraded")), None), timeout=30)
        assert "reconciler" in seen, seen  # its passes fail: the engine does not answer
        done = subprocess.run([sys.executable, "-m", "agent", "hosts", "--host", lab.host("h2").api_url],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "degraded" in done.stdout, done.stdout
    finally:
        lab.kill_agent("h3")
        lab.start_host("h3")
    until("h3 ok again", lambda: api(lab, "h3").get("/v1/health")["status"] == "ok", timeout=30)
    healthy(lab)
