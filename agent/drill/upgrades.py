"""The upgrade drills (issue 18): the reference service behind a load balancer, upgraded as a user would.

``rolling-upgrade`` (a changed page, batch 2, start-first: zero failed requests, every container new,
exactly the scale running), ``bad-upgrade`` (a version whose health check fails: rolled back by itself,
capacity kept, the CLI exits non-zero) and ``upgrade-leader-kill`` (the leader killed mid-upgrade: the
next one goes on with the same upgrade, no slot twice or skipped). Each adds a load balancer in front of
the reference service for its run (and removes it), and counts the requests sent through it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from agent.cli.client import ApiError

if TYPE_CHECKING:
    from agent.drill.drills import Drills, Result

LB_NAME, LB_PORT = "drill-lb", 8097
STACK, SERVICE = "web-server", "nginx-cluster"
RESUME_TARGET = 2.0
"""Seconds from the next leader's election to its first step of the same upgrade (the issue's)."""


def page(version: str) -> str:
    return (f'mkdir -p /www && echo "<h1>$CORRAL_CONTAINER</h1><p>{version}</p>" > /www/index.html '
            "&& exec httpd -f -p 80 -h /www")


class LbProbe(threading.Thread):
    """GET / through one host's load balancer, back to back (a new connection each), failures kept."""

    def __init__(self, address: str, port: int = LB_PORT) -> None:
        super().__init__(daemon=True, name="drill-lb-probe")
        self.address, self.port, self.ok, self.failures = address, port, 0, []  # type: ignore[var-annotated]
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                conn = http.client.HTTPConnection(self.address, self.port, timeout=5)
                conn.request("GET", "/")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {status}")
            except OSError as exc:
                self.failures.append(repr(exc))
            time.sleep(0.01)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


class Sampler(threading.Thread):
    """Calls ``sample`` every 0.3 s (errors skipped) until stopped."""

    def __init__(self, sample: Callable[[], None]) -> None:
        super().__init__(daemon=True, name="drill-sampler")
        self.sample, self.halt = sample, threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(ApiError, OSError, KeyError, TypeError):
                self.sample()
            time.sleep(0.3)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


# Methods of :class:`agent.drill.drills.Drills` (assigned in its body), written here.

@contextlib.contextmanager
def behind_lb(d: Drills, chief: str) -> Iterator[LbProbe]:
    """A load balancer (one per host) in front of the reference service, and a probe through it."""
    client = d.api(chief, timeout=10.0)
    made = client.post("/v1/services", {"stack": STACK, "name": LB_NAME, "kind": "load-balancer", "mode": "global",
                                        "lb": {"rules": [{"port": LB_PORT, "target": SERVICE, "target_port": 80}],
                                               "drain_timeout": 5}})
    probe: LbProbe | None = None
    try:
        def ready() -> bool:
            figures = d.api(chief).get(f"/v1/services/{made['id']}").get("lb_instances", [])
            return bool(figures) and all("error" not in f and sum(
                s["state"] == "UP" for b in f["backends"] for s in b["servers"]) == d.scale for f in figures)
        d.until(f"the drill's load balancer with {d.scale} servers up", ready, 90, every=0.2)
        host = next(h for h in d.hosts if h != chief)
        probe = LbProbe(d.lab.host(host).address)
        probe.start()
        yield probe
    finally:
        if probe is not None:
            probe.stop()
        with contextlib.suppress(Exception):
            d.api(chief, timeout=10.0).delete(f"/v1/services/{made['id']}")

def current(d: Drills, via: str) -> dict[str, Any]:
    current: dict[str, Any] = d.api(via).get(f"/v1/services/{d.service_id}/upgrade")["current"]
    return current

def ended(d: Drills, via: str, upgrade_id: str) -> dict[str, Any] | None:
    up = current(d, via)
    return up if up["id"] == upgrade_id and up["state"] in ("done", "rolled-back", "failed", "paused") else None

def cli(d: Drills, host: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CORRAL_URL=d.lab.host(host).api_url, CORRAL_TOKEN=d.lab.admin_token(),
               CORRAL_CACERT=str(d.lab.ca_file))
    return subprocess.run([sys.executable, "-m", "agent", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)

def drill_rolling_upgrade(d: Drills, r: Result) -> None:
    """Upgrade the reference service behind a load balancer to a changed page, batch 2, start-first.

    Zero failed requests through the load balancer; every container on the new version; exactly the scale running."""
    chief = d.healthy()
    mark = d.probe.snapshot()
    with behind_lb(d, chief) as probe:
        version = f"v{int(time.time())}"
        run = cli(d, chief, "service", "upgrade", f"{STACK}/{SERVICE}", "--command", page(version),
                        "--parallelism", "2", "--order", "start-first", "--min-healthy", "1s")
        time.sleep(6)  # the last old containers are drained (5 s) and stopped, under the probe still
    up = current(d, chief)
    r.happened.append(f"upgrade {up['id']} {up['state']} in {(up['finished_at'] or 0) - up['started_at']:.1f} s, "
                      f"{up['batch']} batches (CLI exit {run.returncode})")
    r.figures.update(upgrade_s=round((up["finished_at"] or 0) - up["started_at"], 2), lb_sent=probe.ok +
                     len(probe.failures), lb_failed=len(probe.failures))
    items = d.containers(chief)
    r.check(run.returncode == 0 and up["state"] == "done", f"the upgrade ended {up['state']}: {up['reason']}")
    r.check(len(items) == d.scale and all(c["spec_version"] in (0, up["next_version"]) for c in items),
            f"{len(items)} containers, not all on the new version")
    r.check(sorted(c["slot"] for c in items) == list(range(1, d.scale + 1)), "not exactly one per slot")
    lost = d.business(mark).failed
    r.check(lost == 0, f"{lost} business requests (each container through its published port) failed")
    r.check(probe.ok > 0 and not probe.failures,
            f"{len(probe.failures)} requests through the load balancer failed: {probe.failures[:3]}")

def drill_bad_upgrade(d: Drills, r: Result) -> None:
    """Upgrade to a version whose health check fails (nothing listens on its port), batch 2, start-first.

    Rolled back by itself, with the reason, the CLI exiting non-zero; scale - 2 old ones at least; zero LB failures."""
    chief = d.healthy()
    lowest = [d.scale]
    with behind_lb(d, chief) as probe:
        made = d.api(chief, timeout=10.0).post(f"/v1/services/{d.service_id}/upgrade", {
            "spec": {"health_check": {"type": "http", "port": 81, "path": "/", "interval": 1, "timeout": 0.5,
                                      "retries": 2}},
            "strategy": {"parallelism": 2, "order": "start-first", "min_healthy": "1s",
                         "healthy_deadline": "20s"}})

        def sample() -> None:
            up = current(d, chief)
            old = [c for c in d.containers(chief) if c["state"] == "running"
                   and c["spec_version"] != up["next_version"]]
            if up["id"] == made["id"] and up["state"] == "rolling":
                lowest[0] = min(lowest[0], len(old))

        sampler = Sampler(sample)
        sampler.start()
        try:
            run = cli(d, chief, "service", "upgrade", f"{STACK}/{SERVICE}", "--status")
        finally:
            sampler.stop()
        time.sleep(2)
    up = current(d, chief)
    took = (up["finished_at"] or 0) - up["started_at"]
    r.happened.append(f"upgrade {up['id']} {up['state']} after {took:.1f} s: {up['reason']} (CLI exit "
                      f"{run.returncode})")
    r.figures.update(rolled_back_s=round(took, 2), lowest_old_running=lowest[0],
                     lb_sent=probe.ok + len(probe.failures), lb_failed=len(probe.failures))
    r.check(up["id"] == made["id"] and up["state"] == "rolled-back" and bool(up["reason"]),
            f"ended {up['state']}: {up['reason']}")
    r.check(run.returncode != 0, "the CLI exited 0 for a rolled-back upgrade")
    r.check(took <= 20 + 5, f"rolled back after {took:.1f} s > healthy_deadline + 5 s")
    r.check(lowest[0] >= d.scale - 2, f"only {lowest[0]} old containers ran at one point")
    svc = d.api(chief).get(f"/v1/services/{d.service_id}")
    r.check(svc["spec"]["health_check"] is None, "the service did not end on its previous spec")
    r.check(probe.ok > 0 and not probe.failures,
            f"{len(probe.failures)} requests through the load balancer failed: {probe.failures[:3]}")


def drill_upgrade_leader_kill(d: Drills, r: Result) -> None:
    """Kill the leader's agent mid-upgrade (batch 1 of the reference service), and start it again.

    The next leader goes on with the same upgrade within 2 s of its election; no slot twice or skipped; done."""
    chief = d.healthy()
    others = [h for h in d.hosts if h != chief]
    via = others[0]
    with behind_lb(d, chief) as probe:
        made = d.api(chief, timeout=10.0).post(f"/v1/services/{d.service_id}/upgrade", {
            "spec": {"command": page(f"v{int(time.time())}")},
            "strategy": {"parallelism": 1, "order": "start-first", "min_healthy": "1s"}})
        d.until("two slots done and one in flight on another host than the leader's", lambda: (
            lambda up: up["counts"]["done"] >= 2 and any(p["phase"] == "starting" and p["host"] != chief
                                                         for p in up["slots"]))(current(d, via)), 120)
        d.lab.kill_agent(chief)
        r.happened.append(f"killed the agent of leader {chief} with {current(d, via)['counts']['done']} slots done")
        try:
            failover = d.until("a new leader", lambda: d.leader(others), 30, every=0.02)
            revision = current(d, via)["updated"]
        finally:
            d.lab.start_agent(chief)
        resumed = d.until("the same upgrade moves on", lambda: current(d, via)["updated"] > revision, 60,
                             every=0.05)
        r.figures.update(leader_failover_s=round(failover, 3), resumed_after_election_s=round(resumed, 3))
        r.happened.append(f"new leader after {failover:.2f} s; the upgrade moved on {resumed:.2f} s later")
        d.until("the upgrade ended", lambda: ended(d, via, made["id"]), 300)
        time.sleep(6)  # the last old container drained and stopped, under the probe still
    up = current(d, via)
    events = d.api(via).items("/v1/events", kind="upgrade.slot")
    slots = Counter(e["message"].split(": ")[1].split(" is ")[0] for e in events
                    if e["refs"].get("upgrade") == made["id"])
    again = {f"{STACK}/{SERVICE}-{p['slot']}" for p in up["slots"] if "placed again" in (p["reason"] or "")}
    r.figures.update(upgraded=len(slots), placed_again=len(again))
    r.check(up["id"] == made["id"] and up["state"] == "done", f"ended {up['state']}: {up['reason']}")
    r.check(all(n == 1 for n in slots.values()), f"a slot upgraded twice: {slots}")
    r.check(not set(slots) & again and len(set(slots) | again) == d.scale, f"slots skipped: {slots}, {again}")
    r.check(resumed <= RESUME_TARGET, f"the upgrade moved on {resumed:.2f} s after the election > {RESUME_TARGET} s")
    r.figures.update(lb_sent=probe.ok + len(probe.failures), lb_failed=len(probe.failures))
    r.check(probe.ok > 0 and not probe.failures,
            f"{len(probe.failures)} requests through the load balancer failed: {probe.failures[:3]}")


UPGRADE_DRILLS = ["rolling-upgrade", "bad-upgrade", "upgrade-leader-kill"]

__all__ = ["UPGRADE_DRILLS", "drill_bad_upgrade", "drill_rolling_upgrade", "drill_upgrade_leader_kill"]
