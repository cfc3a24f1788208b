"""What an idle cluster costs (issue 13): agents' and engines' CPU, and the Docker API calls agents make.

Run as root: ``python -m bench.idle [--per-host 10,100,250] [--window 30]``. It builds its own 3-host
lab (``CORRAL_LAB_ID=3`` unless set) and takes it down at the end. For each count N it scales one
service of ``corral/base`` (busybox ``httpd``, as the README's example) to 3·N containers, N on each
host, waits until every container runs and the Raft index has stood still for a few seconds, then over
one window (30 s) measures, per host:

- the agent's CPU (user + system, from ``/proc/PID/stat``; % of one core);
- its dockerd's CPU, and the same dockerd's CPU over a second window with **no agent** (every agent
  SIGKILLed, the containers left running): the direct-Docker floor of those containers;
- the Docker API requests the agent made, counted by a proxy the benchmark puts in front of each
  host's Docker socket (the socket is renamed and the proxy listens on its path, so an agent of any
  version is counted the same way without knowing it);
- the Raft index before and after (an idle cluster commits nothing).

First, with ``--writes`` (on by default), kv writes with 64 keep-alive clients sent to a follower
against the same writes sent to the leader, in alternating rounds of the same run (on the cluster
before any container runs: the machine's throughput moves a lot once hundreds do).

Targets (issue 13): an idle agent ≤ 2 % of a core at 100 containers per host; its Docker calls at most
one container list per safety period; both flat as containers grow; writes through a follower
≥ 0.9 × writes to the leader.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

# bench.labutil picks the lab id before agent.lab is imported: take Lab from it
from bench.labutil import (
    Lab,
    auth,
    get_json,
    in_thread,
    lab_up,
    log,
    machine_load,
    send_json,
    table,
    tls,
    until,
    verdict,
    wait_healthy,
)
from bench.raft import Load, cpu_seconds, load

IMAGE = "corral/base"
COMMAND = "mkdir -p /www && echo $CORRAL_CONTAINER > /www/index.html && exec httpd -f -p 80 -h /www"
REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD|PATCH) (\S+) HTTP/1\.[01]\r?$")
WRITERS = 64  # as the measurement (wrk, 64 connections)
SAFETY_PERIOD = 30.0  # the reconciler's slow safety pass (agent.node.reconciler.SAFETY_PERIOD)


class DockerProxy:
    """A counting proxy on a host's Docker socket path: every request line an agent sends is counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.real = path.with_name(path.name + ".real")
        self.counts: collections.Counter[str] = collections.Counter()
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        os.rename(self.path, self.real)  # dockerd keeps listening on the renamed socket
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        self.path.unlink(missing_ok=True)
        os.rename(self.real, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.real))
        except OSError:
            writer.close()
            return

        async def upstream() -> None:
            buffer = b""
            while data := await reader.read(65536):
                up_writer.write(data)
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                buffer = buffer[-4096:]  # a body without newlines must not grow it without bound
                for line in lines:
                    match = REQUEST_LINE.match(line)
                    if match:
                        self.counts[_endpoint(match.group(1).decode(), match.group(2).decode())] += 1
                await up_writer.drain()
            up_writer.write_eof()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (OSError, RuntimeError):
            pass
        finally:
            writer.close()
            up_writer.close()


def _endpoint(method: str, path: str) -> str:
    """``GET /v1.43/containers/json?…`` → ``GET /containers/json``; ids become ``{id}``."""
    path = path.split("?", 1)[0]
    path = re.sub(r"^/v\d+\.\d+", "", path)
    path = re.sub(r"/containers/[0-9a-f]{12,64}", "/containers/{id}", path)
    path = re.sub(r"/containers/[a-z0-9][a-z0-9_.-]*-\d+(/|$)", r"/containers/{name}\1", path)
    return f"{method} {path}"


def pid_of(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


async def raft_index(session: aiohttp.ClientSession, lab: Lab) -> int:
    body = await get_json(session, lab.host("h1").api_url + "/v1/raft")
    return int(body["commit"]) if body else -1


async def settle(session: aiohttp.ClientSession, lab: Lab, quiet: float = 5.0, timeout: float = 120.0) -> None:
    """Until the Raft commit index has stood still for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = await raft_index(session, lab), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            log(f"the raft index still moves after {timeout:g} s (at {last}); measuring anyway")
            return
        await asyncio.sleep(0.5)
        now = await raft_index(session, lab)
        if now != last:
            last, since = now, time.monotonic()


async def scale_to(session: aiohttp.ClientSession, lab: Lab, api: str, service: str | None, total: int) -> str:
    if service is None:
        status, stack = await send_json(session, "POST", api + "/v1/stacks", {"name": "idle"})
        assert status == 201, stack
        status, svc = await send_json(session, "POST", api + "/v1/services", {
            "stack": "idle", "name": "web", "image": IMAGE, "scale": total, "command": COMMAND}, timeout=60)
        assert status == 201, svc
        service = str(svc["id"])
    else:
        status, svc = await send_json(session, "POST", api + f"/v1/services/{service}/scale", {"scale": total},
                                      timeout=60)
        assert status == 200, svc

    async def running() -> bool:
        body = await get_json(session, f"{api}/v1/services/{service}", timeout=10)
        return bool(body and body["running"] == total)

    await until(f"{total} containers running", running, timeout=60 + total * 1.0, every=1.0)
    return service


async def window(lab: Lab, proxies: dict[str, DockerProxy], seconds: float, agents: bool) -> dict[str, Any]:
    hosts = [h.name for h in lab.hosts()]
    pids = {h: (pid_of(lab.host(h).agent_pidfile) if agents else 0, pid_of(lab.host(h).dockerd_pidfile))
            for h in hosts}
    before = {h: (cpu_seconds(a) if a else 0.0, cpu_seconds(d)) for h, (a, d) in pids.items()}
    counts0 = {h: collections.Counter(p.counts) for h, p in proxies.items()}
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    out: dict[str, Any] = {"elapsed": elapsed, "hosts": {}}
    for h, (a, d) in pids.items():
        calls = proxies[h].counts - counts0[h]
        out["hosts"][h] = {
            "agent_cpu": 100 * (cpu_seconds(a) - before[h][0]) / elapsed if a else None,
            "dockerd_cpu": 100 * (cpu_seconds(d) - before[h][1]) / elapsed,
            "calls": dict(calls),
        }
    return out


Results = list[tuple[int, dict[str, Any], dict[str, Any], int]]


async def measure(lab: Lab, args: argparse.Namespace) -> tuple[Results, list[Load]]:
    counts = [int(x) for x in args.per_host.split(",") if x.strip()]
    results: Results = []
    writes: list[Load] = []
    proxies = {h.name: DockerProxy(Path(h.docker_host.removeprefix("unix://"))) for h in lab.hosts()}
    for name, proxy in proxies.items():  # every agent restarted, so all its requests pass the proxy
        await in_thread(lab.kill_agent, name)
        await proxy.start()
    try:
        for name in proxies:
            await in_thread(lab.start_agent, name)
        async with aiohttp.ClientSession() as session:
            chief = await wait_healthy(session, lab)
            api = lab.host(chief).api_url
            if args.writes:  # first, on a quiet cluster: the idle windows leave hundreds of containers behind
                writes = await follower_writes(session, lab, args)
            service: str | None = None
            for n in counts:
                log(f"{n} containers per host: scaling to {3 * n}")
                service = await scale_to(session, lab, api, service, 3 * n)
                await settle(session, lab)
                index0 = await raft_index(session, lab)
                log(f"{n} per host: measuring {args.window:g} s with the agents")
                with_agents = await window(lab, proxies, args.window, agents=True)
                committed = await raft_index(session, lab) - index0
                for name in proxies:
                    await in_thread(lab.kill_agent, name)
                log(f"{n} per host: measuring {args.window:g} s with no agent (the floor)")
                floor = await window(lab, proxies, args.window, agents=False)
                for name in proxies:
                    await in_thread(lab.start_agent, name)
                chief = await wait_healthy(session, lab)
                api = lab.host(chief).api_url
                results.append((n, with_agents, floor, committed))
                log(f"{n} per host: " + "; ".join(
                    f"{h} agent {f['agent_cpu']:.2f} % dockerd {f['dockerd_cpu']:.2f} % (floor "
                    f"{floor['hosts'][h]['dockerd_cpu']:.2f} %) docker req {sum(f['calls'].values())}"
                    for h, f in sorted(with_agents['hosts'].items())) + f"; raft commits {committed}")
    finally:
        for proxy in proxies.values():
            await proxy.stop()
    return results, writes


async def follower_writes(session: aiohttp.ClientSession, lab: Lab, args: argparse.Namespace) -> list[Load]:
    """kv writes to the leader and to a follower, rounds alternating, ``CLIENTS`` keep-alive clients each."""

    async def put(s: aiohttp.ClientSession, url: str, c: int, k: int) -> bool:
        async with s.put(f"{url}/v1/kv/bench/{c}/{k}", data=b"x" * 64, headers=auth(), ssl=tls()) as resp:
            await resp.read()
            return resp.status == 200

    out: list[Load] = []
    for rnd in range(args.write_rounds):
        chief = await wait_healthy(session, lab)
        follower = next(h.name for h in lab.hosts() if h.name != chief)
        for system, host in (("leader", chief), ("follower", follower)):
            pid = pid_of(lab.host(chief).agent_pidfile)
            log(f"writes round {rnd + 1}/{args.write_rounds}: to the {system} ({host}), {args.write_seconds:g} s")
            result = await load(system, lab.host(host).api_url, put, args.write_seconds, pid, clients=WRITERS)
            log(f"  {result.rate:.0f}/s, {result.errors} errors")
            out.append(result)
    return out


def report(results: Results, writes: list[Load],
           args: argparse.Namespace) -> None:
    print(f"Idle cluster: 3 lab hosts on one machine ({machine_load()}), {args.window:g} s windows; "
          "busybox httpd containers, N per host; Docker API requests counted by a proxy on each engine's socket")
    print()
    rows = []
    flat: dict[int, float] = {}
    lists_per_period: dict[int, float] = {}
    for n, agents, floor, committed in results:
        for host, figures in sorted(agents["hosts"].items()):
            calls = figures["calls"]
            total = sum(calls.values()) / agents["elapsed"]
            lists = calls.get("GET /containers/json", 0) / agents["elapsed"]
            rows.append([n, host, figures["agent_cpu"], figures["dockerd_cpu"], floor["hosts"][host]["dockerd_cpu"],
                         total, lists, lists * SAFETY_PERIOD, committed])
        flat[n] = max(f["agent_cpu"] for f in agents["hosts"].values())
        lists_per_period[n] = max(f["calls"].get("GET /containers/json", 0) for f in agents["hosts"].values()) \
            / agents["elapsed"] * SAFETY_PERIOD
    print(table(["per host", "host", "agent CPU %", "dockerd CPU %", "dockerd floor %", "docker req/s",
                 "lists/s", f"lists per {SAFETY_PERIOD:g} s", "raft commits"], rows))
    print("(floor: the same dockerd and containers over a second window with every agent killed)")
    print()
    print("Docker requests by endpoint, all hosts, per window with the agents:")
    for n, agents, _floor, _c in results:
        by: collections.Counter[str] = collections.Counter()
        for figures in agents["hosts"].values():
            by.update(figures["calls"])
        print(f"  {n:>4} per host: " + (", ".join(f"{k} {v}" for k, v in by.most_common()) or "none"))
    print()
    if 100 in flat:
        print(f"target idle agent <= 2 % of a core at 100 containers per host: {verdict(flat[100] <= 2.0)} "
              f"({flat[100]:.2f} %, the busiest agent)")
    worst = max(lists_per_period.values()) if lists_per_period else float("nan")
    print(f"target <= 1 container list per {SAFETY_PERIOD:g} s safety period: {verdict(worst <= 1.0)} "
          f"(at most {worst:.2f})")
    if len(flat) > 1:
        lo, hi = min(flat), max(flat)
        print(f"flatness: busiest agent at {hi} per host / at {lo} per host = {flat[hi] / max(flat[lo], 0.01):.2f} x "
              f"({flat[lo]:.2f} % -> {flat[hi]:.2f} %)")
    if writes:
        print()
        print(f"kv writes, {WRITERS} keep-alive clients, {args.write_seconds:g} s windows after 1 s warm-up, "
              "rounds alternate leader / follower (a follower forwards to the leader)")
        total = {s: [w for w in writes if w.system == s] for s in ("leader", "follower")}
        rows = [[w.system, w.ok, w.errors, w.rate, _p50(w.latencies)] for w in writes]
        rate = {s: sum(w.ok for w in ws) / sum(w.seconds for w in ws) for s, ws in total.items()}
        print(table(["sent to", "writes", "errors", "writes/s", "p50 ms"], rows))
        ratio = rate["follower"] / rate["leader"]
        print(f"target follower >= 0.9 x leader writes/s: {verdict(ratio >= 0.9)} ({rate['follower']:.0f} vs "
              f"{rate['leader']:.0f}/s = {ratio:.2f} x)")


def _p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] * 1000 if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-host", default="10,100,250",
                        help="containers per host, comma-separated (a host's /24 holds at most 253)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per measuring window")
    parser.add_argument("--writes", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure kv writes through a follower against the leader")
    parser.add_argument("--write-rounds", type=int, default=4)
    parser.add_argument("--write-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with lab_up(3) as lab:  # outside the event loop: the lab's plumbing runs pyroute2's own
        results, writes = asyncio.run(measure(lab, args))
    report(results, writes, args)


if __name__ == "__main__":
    main()
