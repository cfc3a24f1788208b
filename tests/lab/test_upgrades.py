"""Rolling upgrades on the lab (real agents, dockerds, HAProxy): the README's example (web-server:
nginx-cluster × 10 behind its load balancer on every host) is upgraded under steady requests with zero
failures; a bad release (its containers exit; or fail their health check) rolls back by itself and the
CLI exits non-zero; an upgrade is paused, resumed and rolled back mid-way; the leader is killed
mid-upgrade and the next one goes on with the same upgrade, no slot upgraded twice or skipped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from agent.lab import Lab
from tests.cli import corral
from tests.lab.cluster import api, containers, leader, until
from tests.lab.conftest import example_lab
from tests.lab.test_lb import Steady, get, lb_ready

STACK, SERVICE = "web-server", "web-server/nginx-cluster"


def page(version: str) -> str:
    """The example's command, with a page that says its version."""
    return (f'mkdir -p /www && echo "<h1>$CORRAL_CONTAINER</h1><p>{version}</p>" > /www/index.html '
            "&& exec httpd -f -p 80 -h /www")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from example_lab(lambda lab: until("the load balancer on every host with 10 servers up",
                                             lambda: lb_ready(lab, "lb", 10), timeout=90))


def web(lab: Lab, host: str = "h1") -> dict[str, Any]:
    return next(s for s in api(lab, host).items("/v1/services") if s["stack_name"] == STACK
                and s["name"] == "nginx-cluster")


def upgrade_of(lab: Lab, host: str = "h1") -> dict[str, Any]:
    current: dict[str, Any] = api(lab, host).get(f"/v1/services/{web(lab, host)['id']}/upgrade")["current"]
    return current


def env(lab: Lab, host: str = "h1") -> dict[str, str]:
    return {"CORRAL_URL": lab.host(host).api_url}


def versions(lab: Lab) -> set[str]:
    """The versions the LB's answers say, over 60 requests (the example's own page is v1)."""
    said = {get(lab.host("h3").address)[1].split("<p>")[1].split("</p>")[0] for _ in range(60)}
    return {"v1" if text.startswith("served by") else text for text in said}


class Capacity:
    """Samples how many of the service's containers run, until stopped (the lowest seen)."""

    def __init__(self, lab: Lab, sid: str) -> None:
        self.lab, self.sid, self.lowest, self.samples = lab, sid, 1 << 30, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                running = [c for c in containers(self.lab, "h3", service=self.sid) if c["state"] == "running"
                           and c["spec_version"] != self.new_version()]
            except Exception:
                continue
            self.lowest = min(self.lowest, len(running))
            self.samples += 1
            time.sleep(0.3)

    def new_version(self) -> int | None:
        up = api(self.lab, "h3").get(f"/v1/services/{self.sid}/upgrade")["current"]
        return up["next_version"] if up and up["state"] != "done" else None

    def __enter__(self) -> Capacity:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_an_upgrade_behind_the_load_balancer_fails_no_request(lab: Lab) -> None:
    with Steady(lab.host("h2").address) as load:
        time.sleep(1)
        run = corral("service", "upgrade", SERVICE, "--command", page("v2"), "--parallelism", "2",
                     "--min-healthy", "1s", env=env(lab), timeout=300)
        time.sleep(6)  # the last old containers are drained (5 s) and stopped: still no failure
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("batch ") == 5 and "start-first" in run.stdout, run.stdout
    up = upgrade_of(lab)
    assert up["state"] == "done" and up["counts"]["done"] == 10 and up["strategy"]["order"] == "start-first"
    mine = containers(lab, "h1", service=web(lab)["id"])
    assert len(mine) == 10 and all(c["spec_version"] == up["next_version"] for c in mine)
    assert sorted(c["slot"] for c in mine) == list(range(1, 11)), "exactly one container per slot"
    assert versions(lab) == {"v2"}
    assert load.ok > 300, load.ok
    assert load.failures == [], f"{len(load.failures)} of {load.ok + len(load.failures)} failed: {load.failures[:5]}"


def test_a_bad_release_rolls_back_by_itself_and_the_cli_exits_non_zero(lab: Lab) -> None:
    before = {c["id"] for c in containers(lab, "h1", service=web(lab)["id"])}
    serving = versions(lab)
    with Steady(lab.host("h1").address) as load, Capacity(lab, web(lab)["id"]) as capacity:
        run = corral("service", "upgrade", SERVICE, "--command", "echo broken; exit 3", "--parallelism", "2",
                     "--min-healthy", "2s", "--healthy-deadline", "30s", env=env(lab, "h2"), timeout=300)
        time.sleep(2)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "rolled-back" in run.stdout and "rolling back" in run.stdout, run.stdout
    up = upgrade_of(lab)
    assert up["state"] == "rolled-back" and up["reason"] and "nginx-cluster-" in up["reason"]
    assert up["finished_at"] - up["started_at"] < 30 + 5, "within healthy_deadline + 5 s"
    assert {c["id"] for c in containers(lab, "h1", service=web(lab)["id"])} == before, "the old ones never went"
    assert versions(lab) == serving
    assert capacity.samples > 5 and capacity.lowest == 10, "start-first: the old containers all ran throughout"
    assert load.failures == [], load.failures[:5]
    # a release that runs but fails its health check: started through the API, followed by the CLI
    sid = web(lab)["id"]
    made = api(lab, "h3").post(f"/v1/services/{sid}/upgrade", {
        "spec": {"health_check": {"type": "http", "port": 81, "path": "/", "interval": 1, "retries": 2}},
        "strategy": {"parallelism": 2, "min_healthy": "1s", "healthy_deadline": "20s"}})
    followed = corral("service", "upgrade", SERVICE, "--status", env=env(lab, "h3"), timeout=300)
    assert followed.returncode == 1, followed.stdout + followed.stderr
    up = upgrade_of(lab)
    assert up["id"] == made["id"] and up["state"] == "rolled-back", up
    assert "health check" in up["reason"] or "within 20 s" in up["reason"], up["reason"]
    assert web(lab)["spec"]["health_check"] is None, "the service ends on its previous spec"


def test_pause_resume_and_rollback_mid_way(lab: Lab) -> None:
    serving = versions(lab)
    started = corral("service", "upgrade", SERVICE, "--command", page("v3"), "--parallelism", "2",
                     "--interval", "4s", "--min-healthy", "1s", "--detach", env=env(lab), timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    until("the first batch done", lambda: upgrade_of(lab)["counts"]["done"] >= 2, timeout=60)
    paused = corral("service", "pause", SERVICE, env=env(lab, "h2"), timeout=60)
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stdout + paused.stderr
    held = upgrade_of(lab)
    time.sleep(6)  # longer than the interval: a paused upgrade begins no batch
    still = upgrade_of(lab)
    assert still["state"] == "paused" and still["batch"] == held["batch"], (held["batch"], still["batch"])
    resumed = corral("service", "resume", SERVICE, "--detach", env=env(lab, "h3"), timeout=60)
    assert resumed.returncode == 0 and "rolling" in resumed.stdout, resumed.stdout + resumed.stderr
    until("a batch after the pause", lambda: upgrade_of(lab)["batch"] > held["batch"], timeout=60)
    back = corral("service", "rollback", SERVICE, env=env(lab), timeout=300)
    assert back.returncode == 0, back.stdout + back.stderr
    up = upgrade_of(lab)
    assert up["state"] == "rolled-back" and up["rolling_back"]
    again = corral("service", "rollback", SERVICE, env=env(lab), timeout=60)
    assert again.returncode != 0 and "rolled back already" in again.stdout + again.stderr
    assert versions(lab) == serving, "back on the version before this upgrade"
    assert len(containers(lab, "h1", service=web(lab)["id"])) == 10


def test_the_leader_killed_mid_upgrade_and_the_next_goes_on_with_the_same_upgrade(lab: Lab) -> None:
    started = corral("service", "upgrade", SERVICE, "--command", page("v4"), "--parallelism", "1",
                     "--min-healthy", "1s", "--detach", env=env(lab), timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    first = upgrade_of(lab)
    until("two slots done", lambda: upgrade_of(lab)["counts"]["done"] >= 2, timeout=90)
    chief = leader(lab)
    assert chief is not None
    others = [h for h in ("h1", "h2", "h3") if h != chief]
    survivor = others[0]
    # killed while the slot in flight is on another host: its progress does not wait for the killed agent
    until("a slot in flight on another host than the leader's", lambda: any(
        p["phase"] == "starting" and p["host"] != chief for p in upgrade_of(lab, survivor)["slots"]), timeout=60,
        every=0.05)
    lab.kill_agent(chief)
    try:
        until("a new leader", lambda: leader(lab, others), timeout=30)
        elected = time.time()
        revision = upgrade_of(lab, survivor)["updated"]
    finally:  # back before its host counts as lost (its containers were never down)
        lab.start_agent(chief)
    until("the upgrade moves under the new leader", lambda: upgrade_of(lab, survivor)["updated"] > revision,
          timeout=60)
    resumed_after = time.time() - elected
    until("the upgrade done", lambda: upgrade_of(lab, survivor)["state"] in ("done", "rolled-back", "failed"),
          timeout=300)
    up = upgrade_of(lab, survivor)
    assert up["id"] == first["id"] and up["state"] == "done", up
    events = api(lab, survivor).items("/v1/events", kind="upgrade.slot")
    slots = Counter(e["message"].split(": ")[1].split(" is ")[0] for e in events
                    if e["refs"].get("upgrade") == up["id"])
    # a slot is upgraded once, or (when the killed agent came back too late and its host counted as lost)
    # placed again by the scheduler with the new spec: never both, never twice, never left behind
    again = {f"web-server/nginx-cluster-{p['slot']}" for p in up["slots"] if "placed again" in (p["reason"] or "")}
    print(f"leader {chief} killed: the upgrade moved on {resumed_after:.1f} s after the new leader was seen; "
          f"{len(slots)} slots upgraded by the upgrade, {len(again)} placed again ({sorted(again)})")
    assert all(n == 1 for n in slots.values()), f"a slot upgraded twice: {slots}"
    assert not set(slots) & again and len(set(slots) | again) == 10, (slots, again)
    assert all(p["phase"] == "done" for p in up["slots"])
    mine = containers(lab, survivor, service=web(lab, survivor)["id"])
    assert len(mine) == 10 and all(c["spec_version"] in (0, up["next_version"]) for c in mine)
    assert sorted(c["slot"] for c in mine) == list(range(1, 11))
    assert resumed_after < 15, resumed_after


def test_service_update_of_the_command_is_an_upgrade_and_now_replaces_at_once(lab: Lab) -> None:
    before = (upgrade_of(lab) or {}).get("id")  # the other tests' last one, if they ran
    with Steady(lab.host("h2").address) as load:
        time.sleep(1)
        run = corral("service", "update", SERVICE, "--command", page("v5"), "--update-parallelism", "2",
                     "--update-min-healthy", "1s", env=env(lab, "h3"), timeout=300)
        time.sleep(6)  # the last old containers are drained (5 s) and stopped: still no failure
    assert run.returncode == 0, run.stdout + run.stderr
    assert "started (the service's update_config)" in run.stdout and run.stdout.count("batch ") == 5, run.stdout
    up = upgrade_of(lab)
    assert up["id"] != before and up["state"] == "done" and up["strategy"]["parallelism"] == 2
    assert web(lab)["spec"]["update_config"]["parallelism"] == 2, "kept as the service's update_config"
    assert versions(lab) == {"v5"}
    assert load.failures == [], f"{len(load.failures)} of {load.ok + len(load.failures)} failed: {load.failures[:5]}"
    bad = corral("service", "update", SERVICE, "--command", "echo broken; exit 3", "--update-healthy-deadline",
                 "20s", env=env(lab), timeout=300)
    assert bad.returncode == 1 and "rolled-back" in bad.stdout, bad.stdout + bad.stderr
    assert versions(lab) == {"v5"}, "rolled back to the spec before the update"
    done = upgrade_of(lab)["id"]
    now = corral("service", "update", SERVICE, "--now", "--command", page("v6"), env=env(lab, "h2"), timeout=300)
    assert now.returncode == 0 and "every container replaced at once" in now.stdout, now.stdout + now.stderr
    assert upgrade_of(lab)["id"] == done, "no upgrade"

    def on_v6() -> bool:
        try:
            return versions(lab) == {"v6"}
        except IndexError:  # all at once: the load balancer has no server up for a moment (503)
            return False

    until("every container on v6", on_v6, timeout=90)
    assert len(containers(lab, "h1", service=web(lab)["id"])) == 10
