"""Rolling upgrades on the lab: how close to its floor an upgrade runs, and what it costs the users.

On a lab of 3 hosts (``CORRAL_LAB_ID=3`` unless told), the README's example (web-server: nginx-cluster
behind its load balancer on every host) at ``--sizes`` containers is upgraded (a changed page, start-first
behind the load balancer) with each ``--batches`` parallelism and ``min_healthy`` 1 s, while a client
sends GET / through one host's load balancer back to back (a new connection each).

References, measured in the same run, from a scale-up's write to its containers running in the state
(what a batch waits for before ``min_healthy``), of a service of the same image and command:

- **batch start** (the floor): ``parallelism`` containers at once, spread over the hosts as the upgraded
  slots are, the median of ``--batch-starts`` measured just before and as many just after each upgrade
  (the load of the machine moves during a long one), under the same client load through the load
  balancer as the upgrade (its requests cost the hosts' CPU too). Floor = batches ×
  (batch start + min_healthy). Five containers started at once on loaded hosts take longer than one
  (the engines and the agents share 2 CPUs), and the machine's load moves during a run (other labs), so
  a batch is measured as a batch, at the time of its upgrade.
- **container start** (the old floor, printed beside it): one container, the median of ``--starts`` at
  the run's beginning; old floor = batches × (container start + min_healthy).

Figures: the upgrade's total time (the record's start to its end, the leader's clock) against both
floors, failed requests through the load balancer, and where a batch's time goes (:data:`STAGES`).
Then a bad release (its containers exit) with ``healthy_deadline`` 15 s: the time from its start until
it is rolled back.

Targets (issue 18): total ≤ 1.2 × the floor; zero failed requests; rollback within healthy_deadline + 5 s.

    CORRAL_LAB_ID=3 python -m bench.upgrade [--sizes 10 50] [--batches 1 2 5] [--starts 5] [--batch-starts 3]
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.labutil import lab_up, log, machine_load, table, verdict  # noqa: E402, I001  (sets the lab id first)
from agent.cli.client import ApiError, Client  # noqa: E402
from agent.drill.upgrades import LbProbe, page  # noqa: E402
from agent.lab import Lab  # noqa: E402
from agent.model import compose  # noqa: E402
from mesh.waiting import until  # noqa: E402

EXAMPLE = HERE / "agent" / "examples" / "web-server.yml"
MIN_HEALTHY = 1.0
DEADLINE = 15.0


class PatientClient(Client):
    """A write that met an election (503: no leader, nothing committed) is sent again for a while: on a
    loaded machine gossip sometimes sees a false death and the managers elect again."""

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        deadline = time.monotonic() + 30
        while True:
            try:
                return super().request(method, path, body, query)
            except ApiError as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def client(lab: Lab, host: str = "h1") -> Client:
    return PatientClient(lab.host(host).api_url, timeout=30, token=lab.admin_token(), cafile=str(lab.ca_file))


def _rfc3339(text: str) -> float:
    """Docker's times (nanoseconds, Z) as Unix seconds."""
    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))


STAGES = ("to create", "create→start", "start→seen", "seen→next")
"""Where a batch's time goes: from its planning (the leader's clock) to its last container created on its
host (the advance committed, the host's reconciler woken, its pass, the create); created to started (the
address announced through Raft, the start); started to the leader seeing it running (the host's list and
status report through Raft, the leader's wake-up: ``healthy_since``); seen to the next batch planned
(``min_healthy``, then the finishing advance's planning)."""


def timeline(lab: Lab, up: dict[str, Any]) -> list[dict[str, float]]:
    """Per batch, the latest container's time in each of :data:`STAGES` (docker's Created and StartedAt of
    the new containers, the record's times; every clock is this machine's)."""
    names: dict[str, list[str]] = {}
    for p in up["slots"]:
        if p["new_name"] and p["host"]:
            names.setdefault(p["host"], []).append(p["new_name"])
    seen: dict[str, tuple[float, float]] = {}
    for host, batch in names.items():
        out = subprocess.run(["docker", "-H", lab.host(host).docker_host, "inspect", "--format",
                              "{{.Name}} {{.Created}} {{.State.StartedAt}}", *batch],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            name, made_at, started_at = line.split()
            seen[name.lstrip("/")] = (_rfc3339(made_at), _rfc3339(started_at))
    batches: dict[int, list[dict[str, Any]]] = {}
    for p in up["slots"]:
        if p["new_name"] in seen and p["healthy_since"]:
            batches.setdefault(p["batch"], []).append(p)
    rows = []
    order = sorted(batches)
    for k, b in enumerate(order):
        planned = min(p["started"] for p in batches[b])
        nxt = min(p["started"] for p in batches[order[k + 1]]) if k + 1 < len(order) else up["finished_at"]
        created = max(seen[p["new_name"]][0] for p in batches[b])
        started = max(seen[p["new_name"]][1] for p in batches[b])
        healthy = max(p["healthy_since"] for p in batches[b])
        rows.append({"to create": created - planned, "create→start": started - created,
                     "start→seen": healthy - started, "seen→next": nxt - healthy, "batch": nxt - planned})
    return rows


def summarize(rows: list[dict[str, float]]) -> str:
    """The mean over the batches of each stage, and of a whole batch."""
    if not rows:
        return "no timeline"
    return ", ".join(f"{k} {statistics.mean(r[k] for r in rows):.2f}" for k in (*STAGES, "batch")) + " s"


def servers_up(api: Client, lb_id: str, want: int) -> bool:
    figures = api.get(f"/v1/services/{lb_id}").get("lb_instances", [])
    return bool(figures) and all("error" not in f and sum(s["state"] == "UP" for b in f["backends"]
                                                          for s in b["servers"]) == want for f in figures)


def start_probe(api: Client, stack: str) -> str:
    """A service of the upgraded one's image and command at scale 0: what the references scale up."""
    spec = compose.load(EXAMPLE.read_text())["nginx-cluster"]
    made = api.post("/v1/services", {"stack": stack, "name": "start-probe", "image": spec["image"],
                                      "command": spec["command"], "scale": 0})
    return str(made["id"])


def container_start(api: Client, probe: str, n: int, count: int = 1) -> float:
    """Median seconds from a scale-up of ``probe`` to ``count`` containers to all of them running, over
    ``n`` tries (the scheduler spreads them over the hosts, as the upgraded service's slots are)."""
    return statistics.median(start_times(api, probe, n, count))


def start_times(api: Client, probe: str, n: int, count: int = 1) -> list[float]:
    """Seconds from a scale-up of ``probe`` to ``count`` containers to all of them running, ``n`` times."""
    times = []
    for _ in range(n):
        began = time.monotonic()
        api.post(f"/v1/services/{probe}/scale", {"scale": count})
        until(f"{count} probe container(s) running", lambda: sum(
            c["state"] == "running" for c in api.items("/v1/containers", service=probe)) >= count, 60, 0.02)
        times.append(time.monotonic() - began)
        api.post(f"/v1/services/{probe}/scale", {"scale": 0})
        until("the probes gone", lambda: not api.items("/v1/containers", service=probe), 60, 0.05)
    return times


def upgrade(api: Client, sid: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    made = api.post(f"/v1/services/{sid}/upgrade", body)
    up: dict[str, Any] = until("the upgrade ended", lambda: (lambda u: u if u["id"] == made["id"] and u["state"] in (
        "done", "rolled-back", "failed", "paused") else None)(api.get(f"/v1/services/{sid}/upgrade")["current"]),
        timeout, 0.1)
    return up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--batch-starts", type=int, default=3,
                        help="batch starts measured before each upgrade, and as many after it")
    args = parser.parse_args()
    rows: list[list[Any]] = []
    timelines: list[str] = []
    with lab_up(3) as lab:
        api = client(lab)
        spec = compose.load(EXAMPLE.read_text())
        api.request("POST", "/v1/stacks/web-server/deploy", {"environment": "default", "services": spec})
        services = {s["name"]: s["id"] for s in api.items("/v1/services")}
        sid, lb = services["nginx-cluster"], services["lb"]
        probe = start_probe(api, "web-server")
        start = container_start(api, probe, args.starts)
        log(f"container start (median of {args.starts}): {start:.2f} s")
        version = 1
        for size in args.sizes:
            api.post(f"/v1/services/{sid}/scale", {"scale": size})
            until(f"{size} servers up behind every load balancer", lambda n=size: servers_up(api, lb, n), 300, 0.2)
            for batch in args.batches:
                version += 1
                # the references under the same client load as the upgrade (its requests cost the hosts CPU too)
                load = LbProbe(lab.host("h2").address, 80)
                load.start()
                before = start_times(api, probe, args.batch_starts, batch)
                up = upgrade(api, sid, {"spec": {"command": page(f"v{version}")}, "strategy": {
                    "parallelism": batch, "min_healthy": MIN_HEALTHY, "order": "start-first"}}, 1800)
                time.sleep(6)  # the last old containers are drained (5 s) and stopped under the load too
                after = start_times(api, probe, args.batch_starts, batch)
                load.stop()
                batch_start = statistics.median(before + after)
                log(f"{batch} container(s) started at once, just before and after the upgrade (median of "
                    f"{len(before + after)}): {batch_start:.2f} s (before {statistics.median(before):.2f}, "
                    f"after {statistics.median(after):.2f})")
                ok, failed = load.ok, len(load.failures)
                batches = math.ceil(size / batch)
                floor = batches * (start + MIN_HEALTHY)
                fair = batches * (batch_start + MIN_HEALTHY)
                total = (up["finished_at"] or time.time()) - up["started_at"]
                log(f"{size} containers, batch {batch}: {up['state']} in {total:.1f} s (floor {fair:.1f} s; "
                    f"{floor:.1f} s with one container's start at the run's beginning), "
                    f"{failed} of {ok + failed} requests failed")
                steps = summarize(timeline(lab, up))
                log(f"  where a batch's time went (mean over batches of its slowest container): {steps}")
                timelines.append(f"{size} × batch {batch}: {steps}")
                rows.append([f"{size} × batch {batch}", batches, f"{batch_start:.2f}", f"{fair:.1f}", f"{total:.1f}",
                             f"{total / fair:.2f}", f"{floor:.1f}", f"{total / floor:.2f}", f"{failed}/{ok + failed}",
                             verdict(up["state"] == "done" and total <= 1.2 * fair and failed == 0)])
        api.delete(f"/v1/services/{probe}")
        load = LbProbe(lab.host("h2").address, 80)
        load.start()
        bad = upgrade(api, sid, {"spec": {"command": "exit 3"}, "strategy": {
            "parallelism": min(args.batches[-1], args.sizes[-1]), "min_healthy": MIN_HEALTHY,
            "healthy_deadline": DEADLINE}}, 600)
        load.stop()
        ok, failed = load.ok, len(load.failures)
        took = (bad["finished_at"] or time.time()) - bad["started_at"]
        print(machine_load())
        print(f"container start (reference, median of {args.starts} scale-ups): {start:.2f} s; "
              f"min_healthy {MIN_HEALTHY:g} s")
        print(table(["upgrade", "batches", "batch start s", "floor s", "total s", "× floor", "old floor s",
                     "× old", "failed", "target"], rows))
        print("floor = batches × (batch start + min_healthy), the batch start measured just before and after each "
              "upgrade (that many containers at once, spread over the hosts); old floor = batches × (one container's "
              "start at the run's beginning + min_healthy)")
        print("where a batch's time went (mean over batches of its slowest container; see STAGES):")
        for line in timelines:
            print(f"  {line}")
        print(f"bad release: {bad['state']} after {took:.1f} s (target ≤ healthy_deadline {DEADLINE:g} + 5 s: "
              f"{verdict(bad['state'] == 'rolled-back' and took <= DEADLINE + 5)}); {failed} of {ok + failed} "
              f"requests failed; reason: {bad['reason']}")


if __name__ == "__main__":
    main()
