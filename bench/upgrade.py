"""Rolling upgrades on the lab: how close to its floor an upgrade runs, and what it costs the users.

On a lab of 3 hosts (``CORRAL_LAB_ID=3`` unless told), the README's example (web-server: nginx-cluster
behind its load balancer on every host) at ``--sizes`` containers is upgraded (a changed page, start-first
behind the load balancer) with each ``--batches`` parallelism and ``min_healthy`` 1 s, while a client
sends GET / through one host's load balancer back to back (a new connection each).

Reference, measured in the same run: **container start**, the median over ``--starts`` scale-ups of a
one-container service of the same image and command, from the write to its running status in the
state (what a batch waits for before ``min_healthy``). Floor = batches × (container start +
min_healthy). Figures: the upgrade's total time (the record's start to its end, the leader's clock)
against the floor, and failed requests through the load balancer. Then a bad release (its containers
exit) with ``healthy_deadline`` 15 s: the time from its start until it is rolled back.

Targets (issue 18): total ≤ 1.2 × the floor; zero failed requests; rollback within healthy_deadline + 5 s.

    CORRAL_LAB_ID=6 python -m bench.upgrade [--sizes 10 50] [--batches 1 2 5] [--starts 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.labutil import lab_up, log, machine_load, table, verdict  # noqa: E402, I001  (sets the lab id first)
from agent.cli.client import Client  # noqa: E402
from agent.drill.upgrades import LbProbe, page  # noqa: E402
from agent.lab import Lab  # noqa: E402
from agent.model import compose  # noqa: E402
from mesh.waiting import until  # noqa: E402

EXAMPLE = HERE / "agent" / "examples" / "web-server.yml"
MIN_HEALTHY = 1.0
DEADLINE = 15.0


def client(lab: Lab, host: str = "h1") -> Client:
    return Client(lab.host(host).api_url, timeout=30, token=lab.admin_token(), cafile=str(lab.ca_file))


def servers_up(api: Client, lb_id: str, want: int) -> bool:
    figures = api.get(f"/v1/services/{lb_id}").get("lb_instances", [])
    return bool(figures) and all("error" not in f and sum(s["state"] == "UP" for b in f["backends"]
                                                          for s in b["servers"]) == want for f in figures)


def container_start(api: Client, stack: str, n: int) -> float:
    """Median seconds from a scale-up's write to its container running, over ``n`` tries."""
    spec = compose.load(EXAMPLE.read_text())["nginx-cluster"]
    made = api.post("/v1/services", {"stack": stack, "name": "start-probe", "image": spec["image"],
                                      "command": spec["command"], "scale": 0})
    times = []
    for _ in range(n):
        began = time.monotonic()
        api.post(f"/v1/services/{made['id']}/scale", {"scale": 1})
        until("the probe container running", lambda: any(
            c["state"] == "running" for c in api.items("/v1/containers", service=made["id"])), 60, 0.02)
        times.append(time.monotonic() - began)
        api.post(f"/v1/services/{made['id']}/scale", {"scale": 0})
        until("the probe gone", lambda: not api.items("/v1/containers", service=made["id"]), 60, 0.05)
    api.delete(f"/v1/services/{made['id']}")
    return statistics.median(times)


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
    args = parser.parse_args()
    rows: list[list[Any]] = []
    with lab_up(3) as lab:
        api = client(lab)
        spec = compose.load(EXAMPLE.read_text())
        api.request("POST", "/v1/stacks/web-server/deploy", {"environment": "default", "services": spec})
        services = {s["name"]: s["id"] for s in api.items("/v1/services")}
        sid, lb = services["nginx-cluster"], services["lb"]
        start = container_start(api, "web-server", args.starts)
        log(f"container start (median of {args.starts}): {start:.2f} s")
        version = 1
        for size in args.sizes:
            api.post(f"/v1/services/{sid}/scale", {"scale": size})
            until(f"{size} servers up behind every load balancer", lambda n=size: servers_up(api, lb, n), 300, 0.2)
            for batch in args.batches:
                version += 1
                load = LbProbe(lab.host("h2").address, 80)
                load.start()
                up = upgrade(api, sid, {"spec": {"command": page(f"v{version}")}, "strategy": {
                    "parallelism": batch, "min_healthy": MIN_HEALTHY, "order": "start-first"}}, 1800)
                time.sleep(6)  # the last old containers are drained (5 s) and stopped under the load too
                load.stop()
                ok, failed = load.ok, len(load.failures)
                batches = math.ceil(size / batch)
                floor = batches * (start + MIN_HEALTHY)
                total = (up["finished_at"] or time.time()) - up["started_at"]
                log(f"{size} containers, batch {batch}: {up['state']} in {total:.1f} s (floor {floor:.1f} s), "
                    f"{failed} of {ok + failed} requests failed")
                rows.append([f"{size} × batch {batch}", batches, f"{floor:.1f}", f"{total:.1f}",
                             f"{total / floor:.2f}", f"{failed}/{ok + failed}",
                             verdict(up["state"] == "done" and total <= 1.2 * floor and failed == 0)])
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
        print(table(["upgrade", "batches", "floor s", "total s", "× floor", "failed", "target"], rows))
        print(f"bad release: {bad['state']} after {took:.1f} s (target ≤ healthy_deadline {DEADLINE:g} + 5 s: "
              f"{verdict(bad['state'] == 'rolled-back' and took <= DEADLINE + 5)}); {failed} of {ok + failed} "
              f"requests failed; reason: {bad['reason']}")


if __name__ == "__main__":
    main()
