"""The drills: inject a failure on the lab, observe what the cluster does, restore, verify, measure.

Every drill starts from a healthy cluster (all members alive, one leader with three voters, the
reference service fully running) and must leave one behind. Each returns a :class:`Result` with
what a user expects, what happened, the measured times, the business probe's sent/failed requests
during the drill, and a verdict with the reason. Thresholds are the issues' targets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from agent.cli.client import ApiError, Client
from agent.drill import upgrades as upgrade_drills
from agent.drill.lbtraffic import Clients, Picks, Sent
from agent.drill.probe import BusinessProbe, Counts
from agent.lab import Lab
from mesh import waiting
from mesh.keyring import Keyring

T = TypeVar("T")

RAFT_FAILOVER_TARGET = 1.0
RECREATE_TARGET = 2.0
REPLACE_TARGET = 5.0
HOST_LOSS_TARGET = 10.0
#: An HTTP check every 1 s, 2 failures in a row: unhealthy ~2 s after it breaks, replaced by a
#: healthy container within this.
UNHEALTHY_TARGET = 8.0
#: The DNS answers drop a lost host's containers within this of its being declared dead (the
#: propagation target of issue 17: a Raft commit, the feed, the index; measured ~10-50 ms).
DNS_FOLLOW_TARGET = 1.0
HEALTH_STACK = "drill-health"
AUTH_USER, AUTH_STACK = "drill-user", "drill-prod"
STACK, SERVICE = "web-server", "nginx-cluster"
#: lb-continuity: its own stack (a target service and a load balancer of two instances on a port of
#: its own), so the other drills' reference workload is left as it is.
LB_STACK, LB_TARGET, LB_NAME, LB_PORT, LB_DRAIN = "drill-lb", "web", "edge", 8090, 5
LB_RATE = 20.0  # requests/s per client; 2 clients (keep-alive, new connections) per load balancer: 80/s
DEAD_BACKEND_TARGET = 1.0
WEB_COMMAND = ["sh", "-c", 'mkdir -p /www && echo "<h1>$CORRAL_CONTAINER</h1>" > /www/index.html && '
               "exec httpd -f -p 80 -h /www"]


class DrillFailed(Exception):
    pass


@dataclasses.dataclass
class Result:
    name: str
    action: str
    expect: str
    happened: list[str] = dataclasses.field(default_factory=list)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    verdict: str = "PASS"
    reason: str = ""

    def fail(self, reason: str) -> None:
        if self.verdict == "PASS":
            self.verdict, self.reason = "FAIL", reason
        else:
            self.reason += f"; {reason}"

    def check(self, ok: bool, reason: str) -> None:
        if not ok:
            self.fail(reason)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "reason": self.reason or None, "action": self.action,
                "expect": self.expect, "happened": self.happened, "figures": self.figures}


class Drills:
    def __init__(self, lab: Lab, probe: BusinessProbe, service_id: str, rng: random.Random,
                 say: Callable[[str], None] = lambda _m: None, lossy_seconds: float = 60.0) -> None:
        self.lab = lab
        self.probe = probe
        self.service_id = service_id
        self.rng = rng
        self.say = say
        self.lossy_seconds = lossy_seconds
        self.hosts = [h.name for h in lab.hosts()]
        self.scale = 0
        self.stopped: dict[str, float] = {}
        """lb-continuity: when each fault (a stop-host, the rm -f) began."""

    # ------------------------------------------------------------------ reading the cluster

    def api(self, host: str, timeout: float = 5.0) -> Client:
        return Client(self.lab.host(host).api_url, timeout=timeout, token=self.lab.admin_token(),
                      cafile=str(self.lab.ca_file))

    def urls(self) -> list[str]:
        return [self.lab.host(h).api_url for h in self.hosts]

    def answering(self) -> list[str]:
        out = []
        for h in self.hosts:
            try:
                self.api(h, 1.0).get("/v1/health")
                out.append(h)
            except ApiError:
                pass
        return out

    def leader(self, among: list[str] | None = None) -> str | None:
        among = among or self.hosts
        seen = set()
        for h in among:
            try:
                seen.add(self.api(h, 1.0).get("/v1/raft").get("leader"))
            except ApiError:
                continue
        chief = seen.pop() if len(seen) == 1 else None
        return chief if chief in among else None

    def members(self, host: str) -> dict[str, str]:
        return {m["name"]: m["state"] for m in self.api(host, 2.0).get("/v1/members")["items"]}

    def containers(self, via: str | None = None) -> list[dict[str, Any]]:
        for h in ([via] if via else []) + self.answering():
            try:
                return self.api(h).items("/v1/containers", service=self.service_id)
            except ApiError:
                continue
        raise DrillFailed("no agent answers the API")

    def running_exactly(self, via: str | None = None, avoid: str | None = None) -> bool:
        items = self.containers(via)
        return (len(items) == self.scale and all(c["state"] == "running" for c in items)
                and (avoid is None or all(c["host"] != avoid for c in items)))

    def engine_containers(self, host: str) -> list[dict[str, str]]:
        argv, env = self.lab.exec_argv(host, ["docker", "ps", "-a", "--filter", "label=corral.instance",
                                              "--format", "{{json .}}"])
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return []
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def engines(self) -> Counter[str]:
        """Running copies of each instance across every engine (an instance twice is a duplicate)."""
        copies: Counter[str] = Counter()
        for h in self.hosts:
            for c in self.engine_containers(h):
                if c.get("State") == "running":
                    labels = dict(kv.split("=", 1) for kv in c.get("Labels", "").split(",") if "=" in kv)
                    copies[labels.get("corral.instance", "?")] += 1
        return copies

    def until(self, what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.05) -> float:
        """Seconds until ``probe`` holds (:func:`mesh.waiting.until`); DrillFailed when it does not in time."""
        started = time.monotonic()
        try:
            waiting.until(what, probe, timeout, every, retry_on=(ApiError, OSError, KeyError))
        except TimeoutError as exc:
            raise DrillFailed(str(exc)) from None
        return time.monotonic() - started

    def healthy(self, timeout: float = 60.0) -> str:
        """Wait for the whole cluster healthy; the leader."""
        n = len(self.hosts)
        self.until("every member alive on every agent", lambda: all(
            list(self.members(h).values()).count("alive") == n for h in self.hosts), timeout)
        self.until("one leader", lambda: self.leader(), timeout)
        chief = self.leader() or ""
        self.until("three voters", lambda: len(self.api(chief).get("/v1/raft")["voters"]) == min(3, n), timeout)
        self.until(f"{self.scale} containers running", lambda: self.running_exactly(chief), timeout)
        self.until("no duplicates on the engines",
                   lambda: (lambda e: len(e) == self.scale and set(e.values()) == {1})(self.engines()), timeout)
        return chief

    def voters(self) -> list[str]:
        chief = self.leader() or self.hosts[0]
        return list(self.api(chief).get("/v1/raft")["voters"])

    def workers(self, chief: str) -> list[str]:
        """Hosts to hurt, best first: never the leader; a non-voter that runs containers before a
        voter, and more containers before fewer (earlier drills move work around, and a drill on
        an empty host would measure nothing); the overlay probe's host last."""
        voters = set(self.voters())
        per_host = Counter(c["host"] for c in self.containers())
        pool = [h for h in self.hosts if h != chief]
        probe_host = self.probe.overlay_host  # hurting it would blind the overlay probe
        return sorted(pool, key=lambda h: (per_host[h] == 0, h == probe_host, h in voters, -per_host[h], h))

    def put(self, host: str, key: str, value: str, timeout: float = 10.0) -> tuple[int, Any]:
        req = urllib.request.Request(self.lab.host(host).api_url + f"/v1/kv/{key}", data=value.encode(), method="PUT",
                                     headers=self.lab.auth_headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.lab.tls()) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)

    def sh(self, host: str, command: str) -> subprocess.CompletedProcess[str]:
        argv, env = self.lab.exec_argv(host, ["sh", "-c", command])
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    # ------------------------------------------------------------------ running one drill

    def run(self, name: str) -> Result:
        method = getattr(self, "drill_" + name.replace("-", "_"))
        doc = (method.__doc__ or "").strip().split("\n\n")
        result = Result(name, doc[0], doc[1] if len(doc) > 1 else "")
        try:
            self.healthy()
        except DrillFailed as exc:
            result.fail(f"the cluster was not healthy before the drill: {exc}")
            return result
        before = self.probe.snapshot()
        started = time.monotonic()
        try:
            method(result)
        except DrillFailed as exc:
            result.fail(str(exc))
        except Exception as exc:  # a drill that crashes is a failed drill, with the reason
            result.fail(f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                self.lab.heal()
            self._restore_all(result)
        try:
            self.healthy(90)
        except DrillFailed as exc:
            result.fail(f"not healthy again after the drill: {exc}")
        if self.probe.probes_overlay and not self.probe.wait_overlay_round(before, 30):
            result.fail("the overlay probe reached no verdict in 30 s after the drill")
        counts = self.probe.snapshot().minus(before)
        result.figures.update(duration_s=round(time.monotonic() - started, 2), business_sent=counts.sent,
                              business_failed=counts.failed)
        if counts.overlay_sent:
            result.figures.update(overlay_sent=counts.overlay_sent, overlay_failed=counts.overlay_failed)
        if counts.errors:
            result.figures["business_errors"] = counts.errors
        return result

    def _restore_all(self, result: Result) -> None:
        """Whatever a drill left down comes back up (a failed drill must not break the next one)."""
        for row in self.lab.status():
            h = row["host"]
            try:
                if row["dockerd"] != "running":
                    self.lab.start_host(h)
                    result.happened.append(f"restored host {h}")
                elif row["agent"] == "paused":
                    self.lab.resume(h)
                    result.happened.append(f"resumed agent {h}")
                elif row["agent"] != "running":
                    self.lab.start_agent(h)
                    result.happened.append(f"restored agent {h}")
            except Exception as exc:
                result.fail(f"could not restore {h}: {exc}")

    def agent_pids(self) -> dict[str, Any]:
        return {row["host"]: row["agent_pid"] for row in self.lab.status()}

    def business(self, since: Counts) -> Counts:
        return self.probe.snapshot().minus(since)

    # ------------------------------------------------------------------ the drills

    drill_rolling_upgrade = upgrade_drills.drill_rolling_upgrade  # issue 18's, in agent/drill/upgrades.py
    drill_bad_upgrade = upgrade_drills.drill_bad_upgrade
    drill_upgrade_leader_kill = upgrade_drills.drill_upgrade_leader_kill

    def drill_leader_kill(self, r: Result) -> None:
        """SIGKILL the leader's agent.

        Containers keep serving (no business request lost); a new leader within the Raft target
        (1 s); writes resume; the old agent restarts and rejoins as a follower."""
        old = self.healthy()
        others = [h for h in self.hosts if h != old]
        mark = self.probe.snapshot()
        self.lab.kill_agent(old)
        killed = time.monotonic()
        r.happened.append(f"killed the agent of leader {old}")
        failover = self.until("a new leader", lambda: self.leader(others), 15, every=0.02)
        new = self.leader(others)
        resumed = self.until("a write accepted", lambda: self.put(others[0], "drill/leader-kill", "1", 3)[0] == 200,
                             15, every=0.02) + failover
        r.figures.update(leader_failover_s=round(failover, 3), writes_resumed_s=round(resumed, 3))
        r.happened.append(f"{new} leads after {failover:.2f} s; a write committed after {resumed:.2f} s")
        time.sleep(1.0)
        lost = self.business(mark).failed
        self.lab.start_agent(old)
        rejoin = self.until(f"{old} follows", lambda: self.api(old).get("/v1/raft")["role"] == "follower"
                            and self.api(old).get("/v1/raft")["leader"] == new, 30)
        r.figures["rejoined_s"] = round(rejoin, 2)
        r.happened.append(f"{old} restarted and follows {new} after {rejoin:.2f} s")
        r.check(failover <= RAFT_FAILOVER_TARGET, f"new leader after {failover:.2f} s > {RAFT_FAILOVER_TARGET} s")
        r.check(lost == 0, f"{lost} business requests failed while the leader was down")
        r.check(time.monotonic() - killed < 60, "took too long")

    def drill_leader_wipe(self, r: Result) -> None:
        """Stop the leader's agent, delete its data directory, start it again.

        No stack, service, name or container mapping is lost; it catches up from the others."""
        old = self.healthy()
        view = self._view(old)
        self.lab.kill_agent(old)
        shutil.rmtree(self.lab.host(old).agent_data)
        r.happened.append(f"killed leader {old} and deleted {self.lab.host(old).agent_data}")
        self.lab.start_agent(old)
        started = time.monotonic()
        target = max(self.api(h).get("/v1/raft")["applied"] for h in self.hosts if h != old)
        self.until(f"{old} caught up", lambda: self.api(old).get("/v1/raft")["applied"] >= target, 60)
        r.figures["caught_up_s"] = round(time.monotonic() - started, 2)
        after = self._view(old)
        r.figures["snapshot_index"] = self.api(old).get("/v1/raft")["snapshot_index"]
        r.happened.append(f"{old} came back empty and caught up in {r.figures['caught_up_s']} s "
                          f"(snapshot index {r.figures['snapshot_index']})")
        if after != view:
            diff = {k: {"before": sorted(set(view[k]) - set(after[k]))[:5],
                        "after": sorted(set(after[k]) - set(view[k]))[:5]} for k in view if view[k] != after[k]}
            r.fail(f"the wiped node's view differs from the cluster's before the wipe: {diff}")

    def _view(self, host: str) -> dict[str, Any]:
        c = self.api(host)
        return {
            "stacks": sorted((s["id"], s["name"]) for s in c.items("/v1/stacks")),
            "services": sorted((s["id"], s["name"], s["scale"]) for s in c.items("/v1/services")),
            "containers": sorted((i["id"], i["name"], i["host"]) for i in c.items("/v1/containers")),
        }

    def drill_manager_majority_loss(self, r: Result) -> None:
        """Stop 2 of 3 managers.

        Reads still answered (stale, flagged), writes refused with a clear 503, containers keep
        serving; restore one and writes resume with nothing lost."""
        chief = self.healthy()
        assert self.put(chief, "drill/majority", "before")[0] == 200
        voters = self.voters()
        down = [chief, *[v for v in voters if v != chief][:1]]
        survivor = next(v for v in voters if v not in down)
        mark = self.probe.snapshot()
        for h in down:
            self.lab.kill_agent(h)
        r.happened.append(f"killed managers {', '.join(down)}; {survivor} is the last manager")
        time.sleep(2.0)  # past an election timeout: the survivor knows it has no leader
        with urllib.request.urlopen(urllib.request.Request(self.lab.host(survivor).api_url + "/v1/services",
                                                           headers=self.lab.auth_headers()), timeout=5,
                                    context=self.lab.tls()) as resp:
            stale = resp.headers.get("X-Corral-Stale")
            read_ok = resp.status == 200
        started = time.monotonic()
        status, body = self.put(survivor, "drill/majority", "during", timeout=15)
        refused_in = time.monotonic() - started
        r.figures.update(read_status=200 if read_ok else "failed", stale_flag=bool(stale),
                         write_status=status, write_refused_in_s=round(refused_in, 2))
        r.happened.append(f"read on {survivor}: {'answered' if read_ok else 'failed'}, stale flag: {stale!r}; "
                          f"write: HTTP {status} {body.get('message') if isinstance(body, dict) else body} "
                          f"after {refused_in:.2f} s")
        r.check(read_ok and bool(stale), "the read was not answered and flagged stale")
        r.check(status == 503 and isinstance(body, dict) and bool(body.get("message")), "the write was not a 503")
        serving_lost = self.business(mark).failed
        self.lab.start_agent(down[1])
        back = self.until("writes resume", lambda: self.put(survivor, "drill/majority", "after", 3)[0] == 200, 30)
        r.figures["writes_resumed_after_restore_s"] = round(back, 2)
        self.lab.start_agent(down[0])
        got = self.api(survivor).get("/v1/kv/drill/majority")
        r.check(got.get("value") == "after", f"the kv key reads {got.get('value')!r}, not 'after'")
        r.check(serving_lost == 0, f"{serving_lost} business requests failed while the majority was down")

    def drill_agent_kill(self, r: Result) -> None:
        """SIGKILL a worker's agent.

        Its containers keep serving; the host shows reconnecting then disconnected in the API; after
        restart it reconciles without duplicates."""
        chief = self.healthy()
        worker = self.workers(chief)[0]
        on_it = sum(1 for c in self.containers(chief) if c["host"] == worker)
        if on_it == 0:
            raise DrillFailed(f"no container runs on {worker}: the drill would measure nothing")
        mark = self.probe.snapshot()
        self.lab.kill_agent(worker)
        r.happened.append(f"killed the agent of {worker} ({on_it} containers)")
        states: list[str] = []

        def seen() -> bool:
            st = str(self.api(chief).get(f"/v1/hosts/{worker}")["state"])
            if not states or states[-1] != st:
                states.append(st)
            return st == "disconnected"

        took = self.until(f"{worker} disconnected", seen, 30, every=0.05)
        r.figures["disconnected_after_s"] = round(took, 2)
        r.happened.append(f"host states: {' → '.join(states)}")
        lost = self.business(mark).failed
        self.lab.start_agent(worker)
        self.until("exactly one running copy of every instance",
                   lambda: (lambda e: len(e) == self.scale and set(e.values()) == {1})(self.engines()), 30)
        r.check("reconnecting" in states or len(states) > 1, f"states seen: {states}")
        r.check(states[-1] == "disconnected", f"states seen: {states}")
        r.check(lost == 0, f"{lost} business requests failed while the agent was down")

    def drill_api_delete(self, r: Result) -> None:
        """Delete a business container through the API.

        A replacement runs within seconds."""
        chief = self.healthy()
        victim = self.rng.choice(self.containers(chief))
        self.api(chief).delete(f"/v1/containers/{victim['id']}")
        took = self.until("a replacement running", lambda: victim["id"] not in {
            c["id"] for c in self.containers(chief)} and self.running_exactly(chief), 30)
        r.figures["replacement_running_s"] = round(took, 2)
        r.happened.append(f"deleted {victim['name']} on {victim['host']}; {self.scale} running again after "
                          f"{took:.2f} s")
        r.check(took <= REPLACE_TARGET, f"replacement after {took:.2f} s > {REPLACE_TARGET} s")

    def drill_host_rm(self, r: Result) -> None:
        """`docker rm -f` a business container on its host.

        Recreated on the same host within 2 s."""
        chief = self.healthy()
        victim = self.rng.choice(self.containers(chief))
        took = self._rm_and_wait(victim, chief)
        r.figures["recreated_s"] = round(took, 2)
        r.happened.append(f"docker rm -f {victim['name']} on {victim['host']}: running again after {took:.2f} s")
        r.check(took <= RECREATE_TARGET, f"recreated after {took:.2f} s > {RECREATE_TARGET} s")

    def _rm_and_wait(self, victim: dict[str, Any], via: str, start: Callable[[], None] | None = None) -> float:
        out = self.sh(victim["host"], f"docker rm -f {victim['container_id']}")
        if out.returncode != 0:
            raise DrillFailed(f"docker rm -f failed: {out.stderr.strip()}")
        if start is not None:
            start()
        return self.until("recreated on the same host", lambda: any(
            c["id"] == victim["id"] and c["state"] == "running" and c["container_id"] != victim["container_id"]
            and c["host"] == victim["host"] for c in self.containers(via)), 30, every=0.02)

    def drill_agent_down_then_rm(self, r: Result) -> None:
        """Kill the agent, `docker rm -f` one of its containers, restart the agent.

        It recreates the container at once (Rancher 1.x could not notice this)."""
        chief = self.healthy()
        worker = self.workers(chief)[0]
        victim = next((c for c in self.containers(chief) if c["host"] == worker), None)
        if victim is None:
            raise DrillFailed(f"no container runs on {worker}: the drill would measure nothing")
        self.lab.kill_agent(worker)
        r.happened.append(f"killed the agent of {worker}, then docker rm -f {victim['name']}")
        restarted: list[float] = []

        def start() -> None:
            self.lab.start_agent(worker)
            restarted.append(time.monotonic())

        total = self._rm_and_wait(victim, chief, start)
        after_start = time.monotonic() - restarted[0]
        r.figures["recreated_after_agent_start_s"] = round(after_start, 2)
        r.happened.append(f"agent restarted; {victim['name']} recreated {after_start:.2f} s after the agent answered")
        r.check(after_start <= RECREATE_TARGET, f"recreated {after_start:.2f} s after restart > {RECREATE_TARGET} s")
        r.check(total < 30, "took too long")

    def drill_host_loss(self, r: Result) -> None:
        """`stop-host` a worker, later `start-host` it.

        Its containers are rescheduled to other hosts within 10 s; when it is back its stale copies
        are removed and the count is exact."""
        chief = self.healthy()
        victim = self.workers(chief)[0]
        on_it = sum(1 for c in self.containers(chief) if c["host"] == victim)
        if on_it == 0:
            raise DrillFailed(f"no container runs on {victim}: the drill would measure nothing")
        self.lab.stop_host(victim)
        r.happened.append(f"stopped host {victim} ({on_it} containers)")
        took = self.until("its containers running elsewhere", lambda: self.running_exactly(chief, avoid=victim), 60)
        r.figures["rescheduled_s"] = round(took, 2)
        r.happened.append(f"all {self.scale} running without {victim} after {took:.2f} s")
        self.lab.start_host(victim)
        back = self.until("stale copies removed, count exact",
                          lambda: (lambda e: len(e) == self.scale and set(e.values()) == {1})(self.engines()), 60)
        r.figures["stale_removed_after_start_s"] = round(back, 2)
        r.check(took <= HOST_LOSS_TARGET, f"rescheduled after {took:.2f} s > {HOST_LOSS_TARGET} s")

    def drill_partition(self, r: Result) -> None:
        """Cut one worker from the rest.

        The majority reschedules its work; after `heal` the cut host drops its stale copies; no
        instance runs twice after convergence."""
        chief = self.healthy()
        cut = self.workers(chief)[0]
        rest = [h for h in self.hosts if h != cut]
        on_it = sum(1 for c in self.containers(chief) if c["host"] == cut)
        if on_it == 0:
            raise DrillFailed(f"no container runs on {cut}: the drill would measure nothing")
        self.lab.partition([[cut], rest])
        r.happened.append(f"partitioned {cut} ({on_it} containers) from {', '.join(rest)}")
        took = self.until("the majority runs everything", lambda: self.running_exactly(chief, avoid=cut), 60)
        r.figures["rescheduled_s"] = round(took, 2)
        self.lab.heal()
        healed = time.monotonic()
        self.until("one copy of each instance",
                   lambda: (lambda e: len(e) == self.scale and set(e.values()) == {1})(self.engines()), 60)
        r.figures["stale_removed_after_heal_s"] = round(time.monotonic() - healed, 2)
        r.happened.append(f"rescheduled after {took:.2f} s; after heal, stale copies gone in "
                          f"{r.figures['stale_removed_after_heal_s']} s")
        r.check(took <= HOST_LOSS_TARGET, f"rescheduled after {took:.2f} s > {HOST_LOSS_TARGET} s")

    def drill_lossy_network(self, r: Result) -> None:
        """10 % loss on every link, and one agent paused for 2 s.

        No host is declared dead, no container is moved, the business probe's failure rate stays
        below the loss-induced floor (a plain container outside Corral, probed over the same links)
        plus 2 points, beyond chance."""
        chief = self.healthy()
        placement = {c["id"]: c["host"] for c in self.containers(chief)}
        # The floor: a plain container on a host other than the overlay probe's, requested over the
        # same links as each kind of business request. From the root namespace a published port is
        # one lossy link away; from the probe container on h1 another host is two (h1's and its own),
        # exactly as an overlay request from there is.
        control_host = next(h for h in self.hosts if h != self.probe.overlay_host)
        control_address = self.lab.host(control_host).address
        self.sh(control_host, "docker rm -f corral-drill-control >/dev/null 2>&1; docker run -d --name "
                "corral-drill-control -p 18080:80 corral/base sh -c 'mkdir -p /w && echo corral-drill-control > "
                "/w/index.html && exec httpd -f -p 80 -h /w'")
        control = ControlProbe(control_address, 18080)
        control.start()
        deaths: list[str] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                for h in self.hosts:
                    with contextlib.suppress(ApiError, OSError, KeyError):
                        deaths.extend(f"{h} saw {n} {s}" for n, s in self.members(h).items() if s in ("dead", "left"))
                stop.wait(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        mark = self.probe.snapshot()
        try:
            for h in self.hosts:
                self.lab.degrade(h, 10)
            self.probe.floor_url = f"http://{control_address}:18080/"
            r.happened.append(f"10 % loss on every host's link for {self.lossy_seconds:g} s")
            time.sleep(self.lossy_seconds / 2)
            paused = self.workers(chief)[0]
            self.lab.pause(paused)
            time.sleep(2.0)
            self.lab.resume(paused)
            r.happened.append(f"paused the agent of {paused} for 2 s")
            time.sleep(max(0.0, self.lossy_seconds / 2 - 2.0))
        finally:
            self.probe.floor_url = None
            counts = self.business(mark)
            self.lab.heal()
            stop.set()
            watcher.join(5)
            control.stop()
            self.sh(control_host, "docker rm -f corral-drill-control")
        published_sent = counts.sent - counts.overlay_sent
        published_failed = counts.failed - counts.overlay_failed
        rate = published_failed / published_sent if published_sent else 1.0
        floor = control.failed / control.sent if control.sent else 1.0
        moved = {i: h for i, h in placement.items() if {c["id"]: c["host"] for c in self.containers(chief)}.get(i) != h}
        r.figures.update(failure_rate=round(rate, 4), control_failure_rate=round(floor, 4),
                         control_sent=control.sent, deaths_seen=len(deaths), containers_moved=len(moved))
        r.happened.append(f"published ports: failure rate {rate:.2%} of {published_sent} vs {floor:.2%} of "
                          f"{control.sent} for a plain container (one lossy link); "
                          f"{len(deaths)} dead verdicts, {len(moved)} containers moved")
        r.check(not deaths, f"declared dead: {deaths[:3]}")
        r.check(not moved, f"containers moved: {list(moved)[:3]}")
        worse, z = above_floor(published_failed, published_sent, control.failed, control.sent)
        r.figures.update(published_z=round(z, 2) if math.isfinite(z) else None)
        r.check(not worse, f"published-port failure rate {rate:.2%} above the floor {floor:.2%} + 2 points "
                           f"(z = {z:.2f})")
        if self.probe.overlay_host is not None:
            ov_rate = counts.overlay_failed / counts.overlay_sent if counts.overlay_sent else 1.0
            ov_floor = counts.floor_failed / counts.floor_sent if counts.floor_sent else 1.0
            r.figures.update(overlay_failure_rate=round(ov_rate, 4), overlay_lossy_sent=counts.overlay_sent,
                             overlay_floor_rate=round(ov_floor, 4), overlay_floor_sent=counts.floor_sent)
            r.happened.append(f"overlay: failure rate {ov_rate:.2%} of {counts.overlay_sent} vs {ov_floor:.2%} of "
                              f"{counts.floor_sent} for a plain container over the underlay (two lossy links)")
            r.check(counts.overlay_sent > 0 and counts.floor_sent > 0, "the overlay probe sent nothing")
            worse, z = above_floor(counts.overlay_failed, counts.overlay_sent, counts.floor_failed, counts.floor_sent)
            r.figures.update(overlay_z=round(z, 2) if math.isfinite(z) else None)
            r.check(not worse, f"overlay failure rate {ov_rate:.2%} above its floor {ov_floor:.2%} + 2 points "
                               f"(z = {z:.2f})")

    def drill_dns(self, r: Result) -> None:
        """`stop-host` a worker while a watcher on every other host asks that host's DNS server for
        the reference service every 20 ms.

        On every host the lost host's containers leave the answer within 1 s of its being declared
        dead (gossip's detection time, not the rescheduling seconds later), their replacements join as
        they run, and no answer is ever empty or an error."""
        chief = self.healthy()
        victim = self.workers(chief)[0]
        before = self.containers(chief)
        lost = {c["ip"] for c in before if c["host"] == victim and c.get("ip")}
        if not lost:
            raise DrillFailed(f"no container with an address runs on {victim}: the drill would measure nothing")
        name = f"{SERVICE}.{STACK}.default.corral.internal"
        watchers = {h: DnsWatcher(self.lab, h, self.api(h).get("/v1/dns")["server"]["listening"], name)
                    for h in self.hosts if h != victim}
        try:
            self.until("every watcher answered", lambda: all(w.samples for w in watchers.values()), 10)
            for h, w in watchers.items():
                first = w.samples[-1]
                if not lost <= set(first.get("a", ())):
                    raise DrillFailed(f"{h}'s DNS server did not answer {victim}'s containers before the drill: "
                                      f"{first}")
            stopped = time.time()
            self.lab.stop_host(victim)
            r.happened.append(f"stopped host {victim} ({len(lost)} containers: {', '.join(sorted(lost))})")
            self.until(f"{victim} disconnected in the state", lambda: any(  # polled every 50 ms: up to that late
                h["name"] == victim and h["state"] == "disconnected" for h in self.api(chief).items("/v1/hosts")), 30)
            detected = time.time()  # not stopped + until's figure: stop_host itself takes a while
            r.figures["detected_s"] = round(detected - stopped, 2)

            def replaced(w: DnsWatcher) -> bool:
                last = w.samples[-1] if w.samples else {}
                return len(last.get("a", ())) == self.scale and not lost & set(last["a"])

            self.until("every host answers the replacements", lambda: all(replaced(w) for w in watchers.values()), 60)
            time.sleep(0.2)
        finally:
            for w in watchers.values():
                w.stop()
        worst_gone = worst_full = 0.0
        for h, w in watchers.items():
            gone = next((x["t"] for x in w.samples if x["t"] > stopped and "a" in x and not lost & set(x["a"])), None)
            full = next((x["t"] for x in w.samples if x["t"] > stopped and "a" in x and not lost & set(x["a"])
                         and len(x["a"]) == self.scale), None)
            bad = [x for x in w.samples if x.get("rcode") != "NOERROR" or not x.get("a")]
            if gone is None or full is None:
                r.fail(f"{h}: the answer never dropped {victim}'s containers")
                continue
            worst_gone, worst_full = max(worst_gone, gone - detected), max(worst_full, full - stopped)
            r.happened.append(f"{h}: {victim}'s containers gone {gone - stopped:.2f} s after the stop "
                              f"({gone - detected:+.2f} s from its detection), all {self.scale} answered after "
                              f"{full - stopped:.2f} s; {len(w.samples)} queries, {len(bad)} empty or failed")
            r.check(not bad, f"{h}: {len(bad)} answers empty or failed, e.g. {bad[:2]}")
        r.figures.update(gone_after_detection_s=round(worst_gone, 3), all_answered_s=round(worst_full, 2))
        r.check(worst_gone <= DNS_FOLLOW_TARGET,
                f"the answers kept {victim}'s containers {worst_gone:.2f} s after its detection "
                f"> {DNS_FOLLOW_TARGET} s")
        self.lab.start_host(victim)
        r.happened.append(f"restored host {victim}")

    def drill_unhealthy(self, r: Result) -> None:
        """Break the health endpoint of one container of a service with an HTTP health check.

        Reported unhealthy with the reason and replaced by a healthy container within 8 s; its healthy sibling stays."""
        chief = self.healthy()
        client = self.api(chief, timeout=10.0)
        stack = client.post("/v1/stacks", {"name": HEALTH_STACK})
        try:
            svc = client.post("/v1/services", {
                "stack": HEALTH_STACK, "name": "checked", "image": "corral/base", "scale": 2,
                "command": "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 80 -h /www",
                "health_check": {"type": "http", "port": 80, "path": "/healthz", "interval": "1s",
                                 "timeout": "0.5s", "retries": 2}})

            def checked() -> list[dict[str, Any]] | None:
                items = self.api(chief).items("/v1/containers", service=svc["id"])
                ok = [c for c in items if c["state"] == "running" and c.get("health") == "healthy"]
                return items if len(ok) == 2 == len(items) else None

            self.until("2 healthy containers", checked, 60)
            before = checked() or []
            victim, sibling = self.rng.sample(before, 2)
            out = self.sh(victim["host"], f"docker exec {victim['container_id']} rm /www/healthz")
            if out.returncode != 0:
                raise DrillFailed(f"could not break {victim['name']}: {out.stderr.strip()}")
            r.happened.append(f"removed /healthz in {victim['name']} on {victim['host']} (it answers 404 now)")
            took = self.until("a healthy replacement", lambda: any(
                c["id"] == victim["id"] and c["container_id"] != victim["container_id"]
                and c.get("health") == "healthy" for c in (checked() or [])), 60)
            r.figures["replaced_s"] = round(took, 2)
            events = [e["message"] for e in self.api(chief).items("/v1/events")
                      if e["kind"] == "instance.unhealthy" and victim["id"] in e["message"]]
            r.happened.append(f"healthy replacement after {took:.2f} s; event: {events[-1] if events else 'none'}")
            r.check(took <= UNHEALTHY_TARGET, f"replaced after {took:.2f} s > {UNHEALTHY_TARGET} s")
            r.check(any("answered 404" in m for m in events), f"no instance.unhealthy event with the reason: {events}")
            after = {c["id"]: c for c in checked() or []}
            r.check(after.get(sibling["id"], {}).get("container_id") == sibling["container_id"],
                    "the healthy sibling was replaced too")
        finally:
            with contextlib.suppress(Exception):
                self.api(chief, timeout=10.0).delete(f"/v1/stacks/{stack['id']}")

    def drill_garbage(self, r: Result) -> None:
        """Random, truncated, replayed and wrong-key packets at every host's gossip, Raft and overlay ports; bad HTTP.

        Nothing crashes, counters rise, membership and data path unchanged."""
        self.healthy()
        pids = self.agent_pids()
        before = {h: self.api(h).get("/v1/members/stats") for h in self.hosts}
        raft_before = {h: self.api(h).get("/v1/raft").get("drops", {}) for h in self.hosts}
        captured = capture_gossip(self.lab, seconds=1.5)
        rogue = Keyring.from_secret(os.urandom(32)).channel(b"gossip")
        sent = Counter[str]()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for spec in self.lab.hosts():
                for i in range(100):
                    udp.sendto(os.urandom(self.rng.randrange(0, 1400)), (spec.address, 7946))
                    udp.sendto(rogue.seal(os.urandom(40)), (spec.address, 7946))
                    udp.sendto(os.urandom(i % 60), (spec.address, 4500))
                    sent.update(["gossip random", "gossip wrong key", "overlay random"])
                    time.sleep(0.002)  # paced: a burst would only measure the kernel's socket buffer
                for payload in captured.get(spec.address, [])[:50]:
                    udp.sendto(payload, (spec.address, 7946))
                    udp.sendto(payload[: len(payload) // 2], (spec.address, 7946))
                    sent.update(["gossip replayed", "gossip truncated"])
                for blob in (os.urandom(64), struct.pack(">I", 2**31) + os.urandom(8),
                             struct.pack(">I", 48) + rogue.seal(b"x" * 4)):
                    with contextlib.suppress(OSError), socket.create_connection((spec.address, 7947), timeout=2) as s:
                        s.sendall(blob)
                        sent["raft frames"] += 1
                for req in (b"GARBAGE / HTTP/1.1\r\n\r\n",
                            b"POST /v1/services HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad",
                            b"PUT /v1/kv/%ff%fe HTTP/1.1\r\nContent-Length: 2\r\n\r\nxx", os.urandom(300)):
                    with contextlib.suppress(OSError), socket.create_connection((spec.address, 8080), timeout=2) as s:
                        s.sendall(req)
                        with contextlib.suppress(OSError):
                            s.recv(4096)
                        sent["http requests"] += 1
        finally:
            udp.close()
        time.sleep(1.5)
        r.figures["sent"] = dict(sent)
        after = {h: self.api(h).get("/v1/members/stats") for h in self.hosts}
        raft_after = {h: self.api(h).get("/v1/raft").get("drops", {}) for h in self.hosts}
        gossip_dropped = {h: sum(after[h]["drops"].values()) - sum(before[h]["drops"].values()) for h in self.hosts}
        raft_dropped = {h: sum(raft_after[h].values()) - sum(raft_before[h].values()) for h in self.hosts}
        replayed = sum(after[h]["sealing"]["drops"].get("replayed", 0) - before[h]["sealing"]["drops"].get(
            "replayed", 0) for h in self.hosts)
        r.figures.update(gossip_dropped=gossip_dropped, raft_dropped=raft_dropped, replays_dropped=replayed)
        same_pids = self.agent_pids() == pids
        r.happened.append(f"sent {sum(sent.values())} bad packets/requests; gossip drops {gossip_dropped}, "
                          f"raft drops {raft_dropped}, replays dropped {replayed}; agents "
                          f"{'all still running' if same_pids else 'RESTARTED'}")
        r.check(same_pids, "an agent process changed (crashed?)")
        expected = 200 + min(50, len(captured.get(self.lab.host(self.hosts[0]).address, [])))
        r.check(all(v >= 0.8 * expected for v in gossip_dropped.values()),
                f"gossip drop counters rose by less than 80 % of what was sent: {gossip_dropped}")
        r.check(all(v >= 1 for v in raft_dropped.values()), f"raft drop counters did not rise: {raft_dropped}")
        r.check(bool(captured), "no gossip packet was captured to replay")
        r.check(replayed > 0, "replayed packets were not dropped as replays")
        for h in self.hosts:
            r.check(set(self.members(h).values()) == {"alive"}, f"membership changed on {h}")


    def _as(self, host: str, token: str | None, method: str, path: str, body: Any = None) -> int:
        """The status of one request to ``host`` made with ``token`` (None: no Authorization at all)."""
        try:
            Client(self.lab.host(host).api_url, timeout=10.0, token=token or "",
                   cafile=str(self.lab.ca_file)).request(method, path, body)
            return 200
        except ApiError as exc:
            return exc.status

    def drill_auth(self, r: Result) -> None:
        """No token, a wrong one, an expired key, a key revoked on another node a moment before, a read-only
        key writing, a dev key reading prod, a login brute force — each at a different node.

        All refused with the right status (401, 403, 404, 429), counted on the node that refused, nothing
        changed; the revocation is refused by a third node within 1 s of its commit."""
        chief = self.healthy()
        h1, h2, h3 = self.hosts[:3]
        admin = self.api(chief, timeout=10.0)
        for env in ("dev", "prod"):
            with contextlib.suppress(ApiError):
                admin.post("/v1/environments", {"name": env})
        password = "drill " + os.urandom(8).hex()
        admin.post("/v1/users", {"name": AUTH_USER, "password": password})
        try:
            admin.request("PUT", f"/v1/environments/dev/members/user:{AUTH_USER}", {"role": "member"})
            prod = admin.post("/v1/stacks", {"name": AUTH_STACK, "environment": "prod"})

            def key(**body: Any) -> dict[str, Any]:
                made: dict[str, Any] = admin.post("/v1/apikeys", {"user": AUTH_USER, **body})
                return made

            dev_key, ro_key, short_key, doomed = key(environment="dev"), key(role="read-only"), key(ttl=1), key()
            before_stats = {h: self.api(h).get("/v1/auth/stats") for h in self.hosts}
            stacks_before = {s["id"] for s in admin.items("/v1/stacks")}
            got: dict[str, int] = {}
            got["no token"] = self._as(h1, None, "POST", "/v1/stacks", {"name": "drill-anon"})
            got["wrong token"] = self._as(h2, "crl_" + "0" * 16 + "_" + "A" * 43, "GET", "/v1/stacks")
            got["malformed token"] = self._as(h3, "not-a-token", "GET", "/v1/stacks")
            self.until("the short key expires", lambda: time.time() > short_key["expires"] + 0.05, 5)
            got["expired key"] = self._as(h1, short_key["token"], "GET", "/v1/stacks")
            got["read-only key writing"] = self._as(h2, ro_key["token"], "POST", "/v1/stacks",
                                                    {"name": "drill-ro", "environment": "dev"})
            got["dev key reading prod"] = self._as(h3, dev_key["token"], "GET", f"/v1/stacks/{prod['id']}")
            got["dev key writing the kv store"] = self._as(h1, dev_key["token"], "PUT", "/v1/kv/drill-auth", "x")
            self.api(h2).delete(f"/v1/apikeys/{doomed['id']}")
            revoked = time.monotonic()
            took = self.until(f"{h3} refuses the key revoked on {h2}",
                              lambda: self._as(h3, doomed["token"], "GET", "/v1/auth/whoami") == 401, 5, every=0.01)
            r.figures["revocation_refused_s"] = round(time.monotonic() - revoked, 3)
            got["revoked key"] = self._as(h3, doomed["token"], "GET", "/v1/auth/whoami")
            tries = [self._as(h2, None, "POST", "/v1/auth/login",
                              {"user": AUTH_USER, "password": f"guess number {i}"}) for i in range(8)]
            got["the right password after the brute force"] = self._as(h2, None, "POST", "/v1/auth/login",
                                                                       {"user": AUTH_USER, "password": password})
            want = {"no token": 401, "wrong token": 401, "malformed token": 401, "expired key": 401,
                    "read-only key writing": 403, "dev key reading prod": 404, "dev key writing the kv store": 403,
                    "revoked key": 401, "the right password after the brute force": 429}
            r.figures["statuses"] = got
            r.figures["brute_force"] = tries
            r.happened.append(", ".join(f"{k}: {v}" for k, v in got.items()))
            r.happened.append(f"login brute force on {h2}: {tries}; key revoked on {h2} refused by {h3} after "
                              f"{took:.3f} s")
            for what, status in want.items():
                r.check(got[what] == status, f"{what}: {got[what]}, not {status}")
            r.check(tries[:5] == [401] * 5 and set(tries[5:]) == {429}, f"brute force: {tries}")
            r.check(took <= 1.0, f"the revocation took {took:.3f} s > 1 s to reach {h3}")
            after_stats = {h: self.api(h).get("/v1/auth/stats") for h in self.hosts}

            def rose(h: str, field: str, reason: str | None = None) -> int:
                a, b = after_stats[h], before_stats[h]
                if reason is not None:
                    return int(a["rejected"].get(reason, 0)) - int(b["rejected"].get(reason, 0))
                return int(a[field]) - int(b[field])
            counted = {"missing@" + h1: rose(h1, "", "missing"), "unknown@" + h2: rose(h2, "", "unknown"),
                       "malformed@" + h3: rose(h3, "", "malformed"), "expired@" + h1: rose(h1, "", "expired"),
                       "forbidden@" + h2: rose(h2, "forbidden"), "login failures@" + h2: rose(h2, "login_failures"),
                       "limited@" + h2: rose(h2, "logins_limited")}
            r.figures["counted"] = counted
            r.check(all(v >= 1 for v in counted.values()), f"not every refusal was counted: {counted}")
            stacks_after = {s["id"] for s in admin.items("/v1/stacks")}
            r.check(stacks_after == stacks_before, f"the stacks changed: {stacks_before ^ stacks_after}")
            with contextlib.suppress(ApiError):
                admin.get("/v1/kv/drill-auth")
                r.fail("the refused kv write happened")
        finally:
            with contextlib.suppress(ApiError):
                admin.delete(f"/v1/users/{AUTH_USER}")
            with contextlib.suppress(ApiError, UnboundLocalError):
                admin.delete(f"/v1/stacks/{AUTH_STACK}")


    # ------------------------------------------------------------------ lb-continuity

    def drill_lb_continuity(self, r: Result) -> None:
        """Steady requests through two load balancers (keep-alive and new connections, both hosts' addresses)
        while their target is scaled 10 → 20 → 5, a target container is `docker rm -f`'d, a target's host
        is stopped and started, and one load balancer's own host is stopped.

        Zero failed requests for the scale changes and the rm -f (drained, retried); for a stopped host only
        the requests in flight on it at that instant, and for the stopped load balancer one request per
        client of it, which then fails over to the other; no dead backend chosen more than 1 s after it died."""
        chief = self.healthy()
        pool = [h for h in self.hosts if h != chief]
        stoppable = [h for h in pool if h != self.probe.overlay_host]  # hurting it would blind the overlay probe
        if len(pool) < 3 or len(stoppable) < 2:
            raise DrillFailed(f"needs 3 hosts besides the leader (the lab has {len(self.hosts)}): two load "
                              "balancers and a target's host to stop")
        target_host = stoppable[0]
        lb_hosts = [h for h in pool if h != target_host][:2]
        lb_victim = next(h for h in lb_hosts if h in stoppable)
        admin = self.api(chief, timeout=10.0)
        with contextlib.suppress(ApiError):
            admin.delete(f"/v1/stacks/{LB_STACK}")  # left by an interrupted run
        admin.post("/v1/stacks", {"name": LB_STACK})
        try:
            web = admin.post("/v1/services", {"stack": LB_STACK, "name": LB_TARGET, "image": "corral/base",
                                              "scale": 10, "command": WEB_COMMAND})
            lb = admin.post("/v1/services", {
                "stack": LB_STACK, "name": LB_NAME, "kind": "load-balancer", "scale": 2,
                "placement": {"constraints": [f"node.hostname!={h}" for h in self.hosts if h not in lb_hosts]},
                "lb": {"rules": [{"port": LB_PORT, "target": LB_TARGET, "target_port": 80}],
                       "drain_timeout": LB_DRAIN}})
            self._lb_continuity(r, web["id"], lb["id"], target_host, lb_hosts, lb_victim)
        finally:
            with contextlib.suppress(Exception):
                self._restore_all(r)
                self.api(chief, timeout=10.0).delete(f"/v1/stacks/{LB_STACK}")
                self.until(f"stack {LB_STACK}'s containers gone", lambda: not any(
                    "corral.stack=" + LB_STACK in c.get("Labels", "") for h in self.hosts
                    for c in self.engine_containers(h)), 60, every=0.5)

    def _web(self, web: str, via: str | None = None) -> list[dict[str, Any]]:
        for h in ([via] if via else []) + self.answering():
            with contextlib.suppress(ApiError):
                return self.api(h).items("/v1/containers", service=web)
        raise DrillFailed("no agent answers the API")

    def _lb_up(self, lb: str, servers: int, hosts: list[str], via: str | None = None) -> bool:
        """Every load balancer instance on ``hosts`` runs with exactly ``servers`` servers UP."""
        for h in ([via] if via else []) + self.answering():
            with contextlib.suppress(ApiError):
                figures = {f.get("host"): f for f in self.api(h).get(f"/v1/services/{lb}").get("lb_instances", [])}
                return all(h in figures and "error" not in figures[h] and sum(
                    s["state"] == "UP" for b in figures[h]["backends"] for s in b["servers"]) == servers
                    for h in hosts)
        return False

    def _engine_web(self) -> int:
        """Running containers of the drill's stack on every engine (drained ones held included)."""
        return sum(1 for h in self.hosts for c in self.engine_containers(h)
                   if c.get("State") == "running" and "corral.stack=" + LB_STACK in c.get("Labels", ""))

    def _lb_continuity(self, r: Result, web: str, lb: str, target_host: str, lb_hosts: list[str],
                       lb_victim: str) -> None:
        self.until("10 targets running and both load balancers with 10 servers up", lambda: len(
            [c for c in self._web(web) if c["state"] == "running"]) == 10 and self._lb_up(lb, 10, lb_hosts), 90)
        instances = {c["host"]: c["id"] for c in self.api(lb_hosts[0]).items("/v1/containers", service=lb)}
        sockets = {h: self.lab.host(h).agent_data / "lb" / instances[h] / "admin.sock" for h in lb_hosts}
        r.happened.append(f"load balancers {LB_STACK}/{LB_NAME} on {' and '.join(lb_hosts)} (port {LB_PORT}), "
                          f"target {LB_STACK}/{LB_TARGET}; {LB_RATE * 4:g} requests/s")
        marks: list[tuple[str, float]] = []
        self.stopped = {}
        # phase → (died at, dead until, {address: container name}); a fault's instant is when the stop or the
        # rm -f returned (the host's processes are found, killed together, its link cut; the container is
        # killed, then removed), self.stopped[phase] when it began
        faults: dict[str, tuple[float, float, dict[str, str]]] = {}
        picks = Picks(lambda: sockets)
        picks.start()
        clients = Clients({h: self.lab.host(h).address for h in lb_hosts}, LB_PORT, LB_RATE)
        try:
            with clients:
                self._lb_phases(r, clients, marks, faults, web, lb, target_host, lb_hosts, lb_victim)
        finally:
            marks.append(("end", time.monotonic()))
            picks.stop()
            self._lb_verdict(r, clients, picks, marks, faults, lb_victim)

    def _lb_phases(self, r: Result, clients: Clients, marks: list[tuple[str, float]],
                   faults: dict[str, tuple[float, float, dict[str, str]]], web: str, lb: str, target_host: str,
                   lb_hosts: list[str], lb_victim: str) -> None:
        def phase(name: str) -> None:
            marks.append((name, time.monotonic()))
            self.say(f"lb-continuity: {name}")

        phase("steady")
        time.sleep(3)
        phase("scale 10 → 20")
        self.api(lb_hosts[0]).post(f"/v1/services/{web}/scale", {"scale": 20})
        took = self.until("20 servers up on both", lambda: self._lb_up(lb, 20, lb_hosts), 60, every=0.2)
        r.happened.append(f"scaled to 20: 20 servers up on both after {took:.1f} s")
        time.sleep(2)
        phase("scale 20 → 5")
        self.api(lb_hosts[0]).post(f"/v1/services/{web}/scale", {"scale": 5})
        took = self.until("5 servers up on both and the drained containers stopped", lambda: self._lb_up(
            lb, 5, lb_hosts) and self._engine_web() == 5, 60, every=0.5)
        r.happened.append(f"scaled to 5: the 15 drained and stopped after {took:.1f} s "
                          f"(drain timeout {LB_DRAIN} s)")
        time.sleep(2)
        phase("docker rm -f")
        victim = self.rng.choice([c for c in self._web(web) if c["state"] == "running"])
        began = time.monotonic()
        out = self.sh(victim["host"], f"docker rm -f {victim['container_id']}")
        if out.returncode != 0:
            raise DrillFailed(f"docker rm -f failed: {out.stderr.strip()}")
        died = time.monotonic()  # it was killed while the command ran (which, on a busy machine, takes seconds)
        self.stopped[marks[-1][0]] = began
        self.until("recreated", lambda: any(c["id"] == victim["id"] and c["state"] == "running" and c[
            "container_id"] != victim["container_id"] for c in self._web(web)), 30, every=0.02)
        faults["docker rm -f"] = (died, time.monotonic(), {victim["ip"]: victim["name"]})
        self.until("5 servers up on both", lambda: self._lb_up(lb, 5, lb_hosts), 30, every=0.2)
        r.happened.append(f"docker rm -f {victim['name']} on {victim['host']} ({victim['ip']}): recreated "
                          f"and behind both again after {time.monotonic() - began:.1f} s")
        time.sleep(2)
        on_target = [c for c in self._web(web) if c["host"] == target_host and c["state"] == "running"]
        if not on_target:
            raise DrillFailed(f"no target container on {target_host}: stopping it would measure nothing")
        phase(f"stop-host {target_host}")
        began = time.monotonic()
        self.lab.stop_host(target_host)
        died = time.monotonic()  # its processes are found (a scan of /proc), killed together, then its link cut
        self.stopped[marks[-1][0]] = began
        took = self.until(f"5 targets running without {target_host}, 5 servers up on both", lambda: len(
            [c for c in self._web(web, lb_hosts[0]) if c["state"] == "running" and c["host"] != target_host])
            == 5 and self._lb_up(lb, 5, lb_hosts, lb_hosts[0]), 60, every=0.2)
        r.happened.append(f"stopped {target_host} ({len(on_target)} targets): rescheduled and behind both "
                          f"after {took:.1f} s")
        self.lab.start_host(target_host)
        faults[f"stop-host {target_host}"] = (died, time.monotonic(), {c["ip"]: c["name"] for c in on_target})
        took = self.until(f"{target_host} back, its stale copies gone", lambda: self._engine_web() == 5
                          and self._lb_up(lb, 5, lb_hosts), 60, every=0.5)
        self.until("every member alive", lambda: all(
            list(self.members(h).values()).count("alive") == len(self.hosts) for h in self.hosts), 60)
        r.happened.append(f"started {target_host} again: stale copies gone after {took:.1f} s")
        time.sleep(2)
        other = next(h for h in lb_hosts if h != lb_victim)
        on_victim = [c for c in self._web(web) if c["host"] == lb_victim and c["state"] == "running"]
        phase(f"stop-host {lb_victim} (a load balancer's)")
        began = time.monotonic()
        self.lab.stop_host(lb_victim)
        died = time.monotonic()  # its processes are found (a scan of /proc), killed together, then its link cut
        self.stopped[marks[-1][0]] = began
        self.until(f"the clients of {lb_victim} failed over", lambda: {
            c for c, _t, frm, _to in clients.failovers() if frm == lb_victim} == {
            c.name for c in clients.clients if c.name.startswith(lb_victim + "-")}, 30, every=0.1)
        took = self.until(f"5 targets running without {lb_victim}, 5 servers up on {other}", lambda: len(
            [c for c in self._web(web, other) if c["state"] == "running" and c["host"] != lb_victim]) == 5
            and self._lb_up(lb, 5, [other], other), 60, every=0.2)
        r.happened.append(f"stopped {lb_victim} (a load balancer and {len(on_victim)} targets): its clients "
                          f"failed over to {other}; rescheduled behind {other} after {took:.1f} s")
        self.lab.start_host(lb_victim)
        faults[marks[-1][0]] = (died, time.monotonic(), {c["ip"]: c["name"] for c in on_victim})
        took = self.until("both load balancers back with 5 servers up", lambda: self._lb_up(
            lb, 5, lb_hosts), 90, every=0.5)
        r.happened.append(f"started {lb_victim} again: its load balancer back after {took:.1f} s")
        time.sleep(2)

    def _lb_verdict(self, r: Result, clients: Clients, picks: Picks, marks: list[tuple[str, float]],
                    faults: dict[str, tuple[float, float, dict[str, str]]], lb_victim: str) -> None:
        """Per phase — requests by the time they *ended*, so one in flight at a fault counts for that fault
        — sent, failed, failed among those in flight at the fault's instant, and when a dead backend was
        last chosen; then the targets."""
        sent = clients.between(marks[0][1], math.inf)
        by_phase: dict[str, list[Sent]] = {name: [] for name, _ in marks[:-1]}
        for s in sent:
            by_phase[next(name for name, t in reversed(marks[:-1]) if s.end >= t or name == marks[0][0])].append(s)
        phases: dict[str, dict[str, Any]] = {}
        for name, done in by_phase.items():
            failed = [s for s in done if s.error is not None]
            row: dict[str, Any] = {"sent": len(done), "failed": len(failed),
                                   "slowest_s": round(max((s.end - s.start for s in done), default=0.0), 2)}
            if failed:
                row["errors"] = dict(Counter(f"{s.client}: {s.error}" for s in failed))
            if name in faults:
                died, until, addresses = faults[name]
                began = self.stopped.get(name, died)
                row["fault_took_s"] = round(died - began, 2)
                row["in_flight_at_fault"] = sum(1 for s in sent if s.start < died and s.end >= began)
                row["failed_in_flight"] = sum(1 for s in failed if s.start < died)
                row["failures"] = [f"{s.client} +{s.start - died:.2f} s for {s.end - s.start:.2f} s: {s.error}"
                                   for s in failed][:8]
                # each dead backend died between the fault's start and its instant: after the last answer
                # it gave, so lateness is counted from then (or the start), which never flatters it
                lates, after = [], 0
                for address, container in addresses.items():
                    since = max([began] + [s.end for s in sent if s.backend == container and s.end <= died])
                    last = picks.last_pick({address}, since, until)
                    lates.append(last - since if last is not None else 0.0)
                    after += picks.picked_after({address}, since, DEAD_BACKEND_TARGET, until)
                row["dead_backend_last_chosen_s"] = round(max(lates, default=0.0), 2)
                row["dead_backend_chosen_after_1s"] = after
            phases[name] = row
            r.happened.append(f"{name}: {row['failed']} failed / {row['sent']} sent" + (
                f" ({row['in_flight_at_fault']} in flight at the instant, which took {row['fault_took_s']} s; "
                f"{row['failed_in_flight']} of them failed); "
                f"a dead backend last chosen {row['dead_backend_last_chosen_s']} s after it died (or answered last)"
                if name in faults else "") + (f"; {row['errors']}" if failed else ""))
        failovers = clients.failovers()
        r.happened.append("failovers: " + (", ".join(f"{c} {frm}→{to}" for c, _t, frm, to in failovers) or "none"))
        lates = [p["dead_backend_last_chosen_s"] or 0.0 for p in phases.values() if "dead_backend_last_chosen_s" in p]
        r.figures.update(phases=phases, requests_sent=len(sent), requests_failed=sum(s.error is not None for s in sent),
                         failovers=len(failovers), backends_answering=len({s.backend for s in sent if s.backend}),
                         dead_backend_last_chosen_max_s=max(lates, default=0.0))
        r.check(picks.polls > 10, "the load balancers' admin sockets were never read")
        r.check(len(sent) > 500, f"only {len(sent)} requests sent")
        r.check(r.figures["backends_answering"] >= 20,
                f"only {r.figures['backends_answering']} backends answered (20 at once at most)")
        own = {c.name for c in clients.clients if c.name.startswith(lb_victim + "-")}
        for name, done in by_phase.items():
            failed = [s for s in done if s.error is not None]
            p = phases[name]
            if name in faults and p["dead_backend_chosen_after_1s"]:
                r.fail(f"{name}: a dead backend was chosen {p['dead_backend_chosen_after_1s']} times more than "
                       f"{DEAD_BACKEND_TARGET:g} s after it died (last after {p['dead_backend_last_chosen_s']} s)")
            if not name.startswith("stop-host"):  # the scale changes and the rm -f: drained or retried
                r.check(not failed, f"{name}: {len(failed)} requests failed ({p.get('errors')})")
                continue
            if name not in faults:  # the stop did not go through: the drill failed already, saying why
                continue
            died = faults[name][0]
            if lb_victim in name:  # its own clients lose the request they had sent, then fail over
                per_client = Counter(s.client for s in failed if s.client in own)
                r.check(all(n <= 1 for n in per_client.values()),
                        f"{name}: a client of {lb_victim} lost more than one request: {dict(per_client)}")
                r.check({c for c, *_ in failovers} >= own, f"{name}: not every client of {lb_victim} failed over")
                failed = [s for s in failed if s.client not in own]
            late = [s for s in failed if s.start >= died]
            r.check(not late, f"{name}: {len(late)} requests sent after the instant failed "
                              f"({dict(Counter(s.error for s in late))})")


def above_floor(failed: int, sent: int, floor_failed: int, floor_sent: int, margin: float = 0.02,
                z_crit: float = 1.645) -> tuple[bool, float]:
    """Is the failure rate ``failed/sent`` above the floor's rate + ``margin``, beyond chance?

    One-sided test of the difference of two proportions at 5 %, with the Agresti–Caffo adjustment
    (one failure and one success added to each side, so a floor that happened to see no failure
    still has an uncertainty): a few hundred requests at 10 % loss carry a few points of noise, so a
    bare comparison of two rates fails on luck, and a small real excess passes on luck.
    Returns (verdict, z).
    """
    if not sent or not floor_sent:
        return True, math.inf
    p, q = (failed + 1) / (sent + 2), (floor_failed + 1) / (floor_sent + 2)
    se = math.sqrt(p * (1 - p) / (sent + 2) + q * (1 - q) / (floor_sent + 2))
    z = (p - q - margin) / se
    return z > z_crit, z


class ControlProbe(threading.Thread):
    """The same kind of request, to a plain container outside Corral: the loss-induced floor."""

    def __init__(self, address: str, port: int) -> None:
        super().__init__(daemon=True)
        self.address, self.port = address, port
        self.sent = self.failed = 0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)

    def run(self) -> None:
        import http.client

        while not self._stop_event.is_set():
            conn = http.client.HTTPConnection(self.address, self.port, timeout=3.0)
            try:
                conn.request("GET", "/")
                ok = b"corral-drill-control" in conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            self.sent += 1
            self.failed += 0 if ok else 1
            self._stop_event.wait(0.1)


def capture_gossip(lab: Lab, seconds: float) -> dict[str, list[bytes]]:
    """Sealed gossip datagrams seen on the hosts' links, by destination address (for the replay test).

    Read with AF_PACKET on the root side of each host's veth (``crl-hN``): every frame to or from
    that host crosses it.
    """
    out: dict[str, list[bytes]] = {}
    socks = []
    for host in lab.hosts():
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
            sock.bind((host.veth, 0))
            sock.setblocking(False)
            socks.append(sock)
        except OSError:
            continue
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            idle = True
            for sock in socks:
                try:
                    frame = sock.recv(65535)
                except BlockingIOError:
                    continue
                idle = False
                ip = frame[14:]
                if frame[12:14] != b"\x08\x00" or len(ip) < 28 or ip[9] != 17:
                    continue
                ihl = (ip[0] & 0x0F) * 4
                dport = struct.unpack(">H", ip[ihl + 2: ihl + 4])[0]
                if dport == 7946:
                    out.setdefault(socket.inet_ntoa(ip[16:20]), []).append(bytes(ip[ihl + 8:]))
            if idle:
                time.sleep(0.01)
    finally:
        for sock in socks:
            sock.close()
    return out


class DnsWatcher:
    """A process in HOST's namespace asking its DNS server (``listening``: ADDRESS:PORT) for ``name``'s A
    records every 20 ms, over real UDP, each answer a JSON line read by a thread into ``samples``."""

    SCRIPT = """
import json, sys, time
import dns.message, dns.query, dns.rcode
address, port = sys.argv[1].rsplit(":", 1)
while True:
    t = time.time()
    try:
        m = dns.query.udp(dns.message.make_query(sys.argv[2], "A"), address, port=int(port), timeout=0.5)
        out = {"t": t, "rcode": dns.rcode.to_text(m.rcode()), "a": sorted(r.to_text() for rr in m.answer for r in rr)}
    except Exception as exc:
        out = {"t": t, "error": type(exc).__name__}
    print(json.dumps(out), flush=True)
    time.sleep(0.02)
"""

    def __init__(self, lab: Lab, host: str, listening: str | None, name: str) -> None:
        if not listening:
            raise DrillFailed(f"{host} runs no DNS server")
        argv, env = lab.exec_argv(host, [sys.executable, "-c", self.SCRIPT, listening, name])
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.samples: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(json.loads(line))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self._reader.join(5)


ALL = ["leader-kill", "leader-wipe", "manager-majority-loss", "agent-kill", "api-delete", "host-rm",
       "agent-down-then-rm", "host-loss", "partition", "lossy-network", "unhealthy", "garbage", "auth", "dns",
       "lb-continuity", *upgrade_drills.UPGRADE_DRILLS]
