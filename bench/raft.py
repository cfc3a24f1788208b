"""Raft in the lab (issue 4): leader failover and write throughput, Corral beside etcd in the same run.

Run as root: ``python -m bench.raft [--quick]``. It builds its own 3-host lab (``CORRAL_LAB_ID=3``
unless set), so it can run beside the test suite's lab, and takes it down at the end.

- **Failover**: SIGKILL the leader's agent (``Lab.kill_agent``), then start a write attempt every
  20 ms on the survivors (alternately) until one is committed (HTTP 200); the figure is from just
  before the kill to that answer. Attempts overlap, so one stuck in a dead connection does not
  hide a later success. The moment a survivor's ``/v1/raft`` says ``leader`` is shown too (election
  vs. write path). The killed agent is restarted and the cluster is healthy (3 voters, every member
  alive everywhere, one agreed leader) before the next run. A cluster that is not healthy again
  within 30 s is a product failure: logged with every member's ``/v1/raft``, every agent restarted
  (to go on measuring), and listed in the report.
- **Throughput**: 32 clients (aiohttp, keep-alive, one connection each) write ``PUT /v1/kv/…`` to
  the leader back to back for the measured window (after a 1 s warm-up); committed writes per
  second and the latency of each, and the CPU the leader's process used meanwhile (is it CPU-bound?).
  The same client code drives etcd. Then one client alone, to show the latency of a lone write.
- **etcd** (Debian ``etcd-server``): 3 members inside the same three lab namespaces, defaults
  (heartbeat 100 ms, election 1000 ms, fsync on), through the v3 JSON gateway ``POST /v3/kv/put``;
  writes to the leader's client URL; failover by ``kill -9`` of the etcd leader, same attempt loop.
- The simulator's failover distribution (``bench.raft_sim``) is run after the lab is down and its
  output included.

The client runs in the root namespace on the same machine: both systems share its CPU with it, so
the ratio is fairer than either absolute figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

# bench.labutil picks the lab id before agent.lab is imported: take Lab and HostSpec from it
from bench.labutil import (
    HostSpec,
    Lab,
    LabError,
    auth,
    get_json,
    in_thread,
    lab_up,
    log,
    machine_load,
    percentile,
    table,
    tail,
    tls,
    until,
    verdict,
    wait_healthy,
)

CLIENTS = 32
VALUE = b"v" * 100
KEYS_PER_CLIENT = 1000
ATTEMPT_EVERY = 0.02
FAILOVER_LIMIT = 30.0
IDLE_SECONDS = 5.0
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


@dataclass
class Load:
    """What one load window measured."""

    system: str
    seconds: float
    clients: int = CLIENTS
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds of the leader's process during the counted window
    client_cpu: float = 0.0  # CPU seconds of this (client) process during the counted window

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- shared measuring loops


async def load(system: str, url: str, request: Callable[[aiohttp.ClientSession, str, int, int], Awaitable[bool]],
               seconds: float, server_pid: int, warmup: float = 1.0, clients: int = CLIENTS) -> Load:
    """``clients`` writers back to back for ``warmup + seconds``; only the last ``seconds`` count."""
    result = Load(system, seconds, clients=clients)
    start = time.monotonic()
    counted_from, end = start + warmup, start + warmup + seconds

    async def cpu_meter() -> None:
        await asyncio.sleep(max(0.0, counted_from - time.monotonic()))
        s0, c0 = cpu_seconds(server_pid), time.process_time()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        result.server_cpu, result.client_cpu = cpu_seconds(server_pid) - s0, time.process_time() - c0

    async def client(c: int) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            i = 0
            while True:
                t = time.monotonic()
                if t >= end:
                    return
                try:
                    ok = await request(session, url, c, i % KEYS_PER_CLIENT)
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                done = time.monotonic()
                if t >= counted_from and done <= end:
                    if ok:
                        result.ok += 1
                        result.latencies.append(done - t)
                    else:
                        result.errors += 1
                i += 1

    await asyncio.gather(cpu_meter(), *(client(c) for c in range(clients)))
    return result


async def first_commit(attempt: Callable[[aiohttp.ClientSession, int], Awaitable[bool]], t0: float,
                       timeout: float = 30.0) -> float:
    """Start ``attempt(session, n)`` every ATTEMPT_EVERY s until one returns True; seconds since ``t0``
    (infinity if none did within ``timeout``: a failure, kept in the percentiles, not dropped)."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def one(n: int) -> None:
            try:
                ok = await attempt(session, n)
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok and not done.done():
                done.set_result(time.monotonic() - t0)

        n = 0
        try:
            while not done.done():
                if time.monotonic() - t0 > timeout:
                    return math.inf
                task = asyncio.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                await asyncio.sleep(ATTEMPT_EVERY)
            return done.result()
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------- corral


async def corral_put(session: aiohttp.ClientSession, url: str, c: int, k: int) -> bool:
    async with session.put(f"{url}/v1/kv/bench/{c}/{k}", data=VALUE, headers=auth(), ssl=tls()) as resp:
        await resp.read()
        return resp.status == 200


async def healthy_or_restart(session: aiohttp.ClientSession, lab: Lab, problems: list[str]) -> str:
    """The leader of a healthy cluster; if it does not become healthy within 30 s, that is a product
    failure: log every member's Raft status, restart every agent (to keep measuring) and say so."""
    try:
        return await wait_healthy(session, lab, timeout=30)
    except TimeoutError as exc:
        problems.append(f"cluster not healthy within 30 s ({exc}); every agent restarted")
        log(f"NOT HEALTHY: {exc}")
        for h in lab.hosts():
            log(f"  {h.name}/v1/raft: {await get_json(session, h.api_url + '/v1/raft')}")
        for h in lab.hosts():
            with contextlib.suppress(Exception):
                await in_thread(lab.kill_agent, h.name)
            await restart_agent(lab, h.name, problems)
        return await wait_healthy(session, lab, timeout=60)


async def new_leader_seen(session: aiohttp.ClientSession, survivors: list[str], t0: float) -> float:
    """Seconds from ``t0`` until a survivor's ``/v1/raft`` says it is the leader (polled every 20 ms):
    separates the election from the write path in the failover figure."""
    while time.monotonic() - t0 < FAILOVER_LIMIT:
        for url in survivors:
            body = await get_json(session, url + "/v1/raft", timeout=0.5)
            if body and body.get("role") == "leader":
                return time.monotonic() - t0
        await asyncio.sleep(0.02)
    return math.inf


async def corral_failover(lab: Lab, runs: int, problems: list[str],
                          elected_at: list[float]) -> list[float]:
    names = [h.name for h in lab.hosts()]
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        for run in range(runs):
            chief = await healthy_or_restart(session, lab, problems)
            survivors = [lab.host(n).api_url for n in names if n != chief]
            t0 = time.monotonic()
            await in_thread(lab.kill_agent, chief)

            async def attempt(s: aiohttp.ClientSession, n: int, survivors: list[str] = survivors,
                              run: int = run) -> bool:
                return await corral_put(s, survivors[n % 2], 999, run)

            elected = asyncio.create_task(new_leader_seen(session, survivors, t0))
            took = await first_commit(attempt, t0, FAILOVER_LIMIT)
            times.append(took)
            elected_at.append(await elected)
            raft = await get_json(session, survivors[0] + "/v1/raft")
            log(f"corral failover {run + 1}/{runs}: leader {chief} killed, write committed after {took:.3f} s "
                f"(new leader {raft and raft.get('leader')}, term {raft and raft.get('term')})")
            if took == math.inf:
                for url in survivors:
                    status = await get_json(session, url + "/v1/raft")
                    log(f"  NO COMMIT within {FAILOVER_LIMIT:g} s; {url}/v1/raft: {status}")
                problems.append(f"run {run + 1}: leader {chief} killed, no write committed within "
                                f"{FAILOVER_LIMIT:g} s")
            await restart_agent(lab, chief, problems)
        await healthy_or_restart(session, lab, problems)
    return times


async def restart_agent(lab: Lab, name: str, problems: list[str]) -> None:
    """``start_agent``; an agent that does not come up is a failure to report, then tried once more."""
    try:
        await in_thread(lab.start_agent, name)
    except LabError as exc:
        problems.append(f"start-agent {name} failed: {exc} (tail of its log: {tail(lab.host(name).agent_log)})")
        log(f"START FAILED: {problems[-1]}")
        await asyncio.sleep(2.0)
        await in_thread(lab.start_agent, name)


async def corral_load(lab: Lab, seconds: float, problems: list[str], clients: int = CLIENTS) -> Load:
    async with aiohttp.ClientSession() as session:
        chief = await healthy_or_restart(session, lab, problems)
    pid = int(lab.host(chief).agent_pidfile.read_text().strip() or 0)
    return await load("corral", lab.host(chief).api_url, corral_put, seconds, pid, clients=clients)


# ---------------------------------------------------------------------- etcd


@dataclass
class EtcdMember:
    name: str
    host: HostSpec
    data_dir: Path
    cluster: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.host.address}:{ETCD_CLIENT_PORT}"

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter", f"--net={self.host.netns_path}", "etcd",
            "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-peer-urls", f"http://{self.host.address}:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{self.host.address}:{ETCD_PEER_PORT}",
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--initial-cluster", self.cluster, "--initial-cluster-token", "corral-bench",
            "--initial-cluster-state", "new", "--log-outputs", "stderr", "--logger", "zap",
        ]
        logf = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # nsenter execs etcd: this pid is etcd's
            self.proc.wait(10)
        self.proc = None


class Etcd:
    def __init__(self, lab: Lab) -> None:
        hosts = lab.hosts()[:3]
        cluster = ",".join(f"e{i}=http://{h.address}:{ETCD_PEER_PORT}" for i, h in enumerate(hosts, 1))
        root = lab.root / "etcd"
        self.members = [EtcdMember(f"e{i}", h, root / f"e{i}", cluster) for i, h in enumerate(hosts, 1)]

    async def status(self, session: aiohttp.ClientSession, member: EtcdMember) -> dict[str, str] | None:
        try:
            async with session.post(member.client_url + "/v3/maintenance/status", json={},
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json()
                return {"id": body["header"]["member_id"], "leader": body.get("leader", "0")}
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return None

    async def leader(self, session: aiohttp.ClientSession) -> EtcdMember | None:
        """The member every member agrees leads, when all three answer."""
        statuses = [await self.status(session, m) for m in self.members]
        if any(s is None for s in statuses):
            return None
        leaders = {s["leader"] for s in statuses if s}
        if len(leaders) != 1:
            return None
        (lead,) = leaders
        for m, s in zip(self.members, statuses, strict=True):
            if s and s["id"] == lead:
                return m
        return None

    async def healthy(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> EtcdMember:
        async def ready() -> EtcdMember | None:
            chief = await self.leader(session)
            if chief is None:
                return None
            return chief if await etcd_put(session, chief.client_url, 998, 0) else None

        return await until("etcd: 3 members and a leader", ready, timeout)

    def stop(self) -> None:
        for m in self.members:
            m.kill()


async def etcd_put(session: aiohttp.ClientSession, url: str, c: int, k: int) -> bool:
    key = base64.b64encode(f"bench/{c}/{k}".encode()).decode()
    body = {"key": key, "value": base64.b64encode(VALUE).decode()}
    async with session.post(url + "/v3/kv/put", json=body) as resp:
        payload = await resp.read()
        return resp.status == 200 and b'"error"' not in payload


async def etcd_failover(etcd: Etcd, runs: int) -> list[float]:
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        for run in range(runs):
            chief = await etcd.healthy(session)
            survivors = [m.client_url for m in etcd.members if m is not chief]
            t0 = time.monotonic()
            chief.kill()

            async def attempt(s: aiohttp.ClientSession, n: int, survivors: list[str] = survivors,
                              run: int = run) -> bool:
                return await etcd_put(s, survivors[n % 2], 999, run)

            took = await first_commit(attempt, t0, FAILOVER_LIMIT)
            times.append(took)
            log(f"etcd failover {run + 1}/{runs}: leader {chief.name} killed, put succeeded after {took:.3f} s")
            chief.start()
        await etcd.healthy(session)
    return times


async def etcd_load(etcd: Etcd, seconds: float, clients: int = CLIENTS) -> Load:
    async with aiohttp.ClientSession() as session:
        chief = await etcd.healthy(session)
    return await load("etcd", chief.client_url, etcd_put, seconds, chief.proc.pid if chief.proc else 0,
                      clients=clients)


# ---------------------------------------------------------------------- main


def etcd_version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].split(":", 1)[1].strip()


async def measure(lab: Lab, args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    log(f"corral failover: {args.runs} runs")
    problems: list[str] = []
    results["problems"] = problems
    elected: list[float] = []
    results["corral_elected"] = elected
    results["corral_failover"] = await corral_failover(lab, args.runs, problems, elected)
    loads: list[Load] = []
    etcd = Etcd(lab)
    try:
        for m in etcd.members:
            m.start()
        async with aiohttp.ClientSession() as session:
            await etcd.healthy(session)
        async with aiohttp.ClientSession() as session:
            chief = await healthy_or_restart(session, lab, problems)
            echief = await etcd.healthy(session)
        pids = {"corral": int(lab.host(chief).agent_pidfile.read_text().strip() or 0),
                "etcd": echief.proc.pid if echief.proc else 0}
        before = {k: cpu_seconds(v) for k, v in pids.items()}
        await asyncio.sleep(IDLE_SECONDS)
        results["idle_cpu"] = {k: 100 * (cpu_seconds(v) - before[k]) / IDLE_SECONDS for k, v in pids.items()}
        log(f"idle leader CPU %: {results['idle_cpu']}")
        for rnd in range(args.rounds):  # alternate, so a noisy moment does not land on one side only
            log(f"load round {rnd + 1}/{args.rounds}: corral, {args.seconds:g} s")
            loads.append(await corral_load(lab, args.seconds, problems))
            log(f"load round {rnd + 1}/{args.rounds}: etcd, {args.seconds:g} s")
            loads.append(await etcd_load(etcd, args.seconds))
            log(f"  corral {loads[-2].rate:.0f}/s, etcd {loads[-1].rate:.0f}/s")
        log("one client, back to back: the commit latency of a lone write")
        lone = [await corral_load(lab, args.seconds / 2, problems, clients=1),
                await etcd_load(etcd, args.seconds / 2, clients=1)]
        results["lone"] = lone
        log(f"etcd failover: {args.etcd_runs} runs")
        results["etcd_failover"] = await etcd_failover(etcd, args.etcd_runs)
    finally:
        etcd.stop()
    results["loads"] = loads
    return results


def report(results: dict[str, object], sim_output: str, args: argparse.Namespace, version: str) -> None:
    cf: list[float] = results["corral_failover"]  # type: ignore[assignment]
    ef: list[float] = results["etcd_failover"]  # type: ignore[assignment]
    loads: list[Load] = results["loads"]  # type: ignore[assignment]
    ce: list[float] = results["corral_elected"]  # type: ignore[assignment]
    print(f"Raft in the lab: 3 managers (network namespaces on one {_cpus()}-CPU machine), fsync on both sides;"
          f" etcd {version} (defaults: heartbeat 100 ms, election 1000 ms) in the same namespaces, same run")
    print()
    print("Failover: SIGKILL of the leader until a write is committed again (attempts every 20 ms on survivors)")
    rows = [
        ["corral", len(cf), percentile(cf, 50), percentile(cf, 99), min(cf), max(cf)],
        ["corral: a survivor says leader", len(ce), percentile(ce, 50), percentile(ce, 99), min(ce), max(ce)],
        ["etcd", len(ef), percentile(ef, 50), percentile(ef, 99), min(ef), max(ef)],
        ["ratio corral/etcd", "", percentile(cf, 50) / percentile(ef, 50), percentile(cf, 99) / percentile(ef, 99),
         "", ""],
    ]
    print(table(["seconds", "runs", "p50", "p99", "min", "max"], rows))
    print(f"target corral p99 <= 1.0 s: {verdict(percentile(cf, 99) <= 1.0)} ({percentile(cf, 99):.3f} s)")
    print()
    print(f"Throughput: {loads[0].clients} clients, keep-alive, {len(VALUE)}-byte values, writes to the leader, "
          f"{args.seconds:g} s windows after 1 s warm-up, rounds alternate corral/etcd")
    rows = []
    for n, ld in enumerate(loads):
        rows.append([f"{ld.system} round {n // 2 + 1}", ld.ok, ld.errors, ld.rate,
                     percentile(ld.latencies, 50) * 1000, percentile(ld.latencies, 99) * 1000,
                     100 * ld.server_cpu / ld.seconds, 100 * ld.client_cpu / ld.seconds])
    total: dict[str, Load] = {}
    for ld in loads:
        t = total.setdefault(ld.system, Load(ld.system, 0.0))
        t.seconds += ld.seconds
        t.ok += ld.ok
        t.errors += ld.errors
        t.latencies += ld.latencies
        t.server_cpu += ld.server_cpu
        t.client_cpu += ld.client_cpu
    for t in total.values():
        rows.append([f"{t.system} all", t.ok, t.errors, t.rate, percentile(t.latencies, 50) * 1000,
                     percentile(t.latencies, 99) * 1000, 100 * t.server_cpu / t.seconds,
                     100 * t.client_cpu / t.seconds])
    c, e = total["corral"], total["etcd"]
    rows.append(["ratio corral/etcd", "", "", c.rate / e.rate,
                 percentile(c.latencies, 50) / percentile(e.latencies, 50),
                 percentile(c.latencies, 99) / percentile(e.latencies, 99), c.server_cpu / e.server_cpu, ""])
    print(table(["system", "writes", "errors", "writes/s", "p50 ms", "p99 ms", "leader CPU %", "client CPU %"],
                rows))
    print("(leader CPU %: the leader's process, user + system, over the window; 100 % = one core of the "
          f"{_cpus()}; client CPU %: this benchmark's own process)")
    print(f"target corral >= 0.5 x etcd writes/s: {verdict(c.rate >= 0.5 * e.rate)} ({c.rate / e.rate:.2f} x)")
    idle: dict[str, float] = results["idle_cpu"]  # type: ignore[assignment]
    print(f"idle leader CPU over {IDLE_SECONDS:g} s with no client: corral {idle['corral']:.1f} %, "
          f"etcd {idle['etcd']:.1f} % (the baseline inside the leader CPU % columns)")
    lone: list[Load] = results["lone"]  # type: ignore[assignment]
    print()
    print(f"One client, back to back ({lone[0].seconds:g} s each): the latency of a lone write")
    rows = [[ld.system, ld.ok, ld.errors, ld.rate, percentile(ld.latencies, 50) * 1000,
             percentile(ld.latencies, 99) * 1000, 100 * ld.server_cpu / ld.seconds] for ld in lone]
    rows.append(["ratio corral/etcd", "", "", lone[0].rate / lone[1].rate,
                 percentile(lone[0].latencies, 50) / percentile(lone[1].latencies, 50),
                 percentile(lone[0].latencies, 99) / percentile(lone[1].latencies, 99), ""])
    print(table(["system", "writes", "errors", "writes/s", "p50 ms", "p99 ms", "leader CPU %"], rows))
    print()
    problems: list[str] = results["problems"]  # type: ignore[assignment]
    print(f"Problems seen (each is a product failure, kept in the figures above): {len(problems) or 'none'}")
    for p in problems:
        print(f"  {p}")
    print()
    print(f"Simulator (python -m bench.raft_sim {args.seeds}):")
    print(sim_output.rstrip())


def _cpus() -> int:
    return os.cpu_count() or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under ~2 minutes)")
    args = parser.parse_args()
    args.runs, args.etcd_runs = (5, 3) if args.quick else (20, 20)
    args.seconds, args.rounds = (3.0, 1) if args.quick else (10.0, 2)
    args.seeds = 200 if args.quick else 1000
    version = etcd_version()
    started = time.monotonic()
    load_before = machine_load()
    with lab_up(3) as lab:
        results = asyncio.run(measure(lab, args))
    log(f"simulator: {args.seeds} seeds")
    sim = subprocess.run([sys.executable, "-m", "bench.raft_sim", str(args.seeds)], capture_output=True, text=True,
                         check=True).stdout
    report(results, sim, args, version)
    print(f"({time.monotonic() - started:.0f} s wall in all; machine before: {load_before}; after: {machine_load()})")


if __name__ == "__main__":
    main()
