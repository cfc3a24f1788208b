"""What the host's DNS server costs and how fast it follows the state.

1. Queries: ``dnsperf`` (Debian's) against Corral's server and against ``dnsmasq`` serving the same
   records from a hosts file, on 127.0.0.1, same machine, same run, in interleaved rounds: queries/s
   and p99 latency (from ``dnsperf -v``'s per-query lines). Corral's server runs in a process of its
   own under uvloop, as in the agent, over a state of ``--containers`` running containers written
   straight into a ClusterState (10 per service); its per-source rate limit is lifted for the run
   (dnsperf is one source). The query mix is every service name and as many container names.
2. Propagation: two agents' replicas in one process (the unit tests' harness: real Raft over loopback
   TCP, h1 leading, h2 a learner), each with its DNS server on a loopback port, over a state of 100 and
   of 1,000 running containers (written through Raft, as hosts report them). ``--changes`` times a
   container's status flips (running → exited → running …), reported through h2 (forwarded to the
   leader, as a host's report is); the clock runs from the report until both servers' UDP answers for
   the service name have changed (polled back to back). With it: the index's records touched per change.

Targets (issue 17): ≥ 0.5 × dnsmasq's queries/s; propagation p99 ≤ 1 s; per-change work independent of
the state's size.

    python -m bench.dns [--seconds 8] [--rounds 2] [--containers 1000] [--changes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

PER_SERVICE = 10

from mesh.waiting import until_async  # noqa: E402  (after the tree is on the path)


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def build_state(containers: int) -> Any:
    """A ClusterState with ``containers`` running containers on three hosts, 10 per service."""
    from agent.model.commands import HostRegister, InstanceStatus, PlacementsCommit, ServiceCreate, StackCreate
    from agent.model.entities import Status
    from agent.model.state import ClusterState

    state = ClusterState()
    index = 0

    def run(cmd: Any) -> Any:
        nonlocal index
        index += 1
        return state.execute(cmd, index)

    for h in ("h1", "h2", "h3"):
        run(HostRegister(h, f"10.77.0.1{h[1]}", {}, 64.0, 2**40, None))
    stack = run(StackCreate("bench")).id
    for s in range(containers // PER_SERVICE):
        service = run(ServiceCreate(stack, f"svc{s}", {"image": "corral/base", "scale": PER_SERVICE})).id
        run(PlacementsCommit(service, tuple((i, ("h1", "h2", "h3")[i % 3]) for i in range(1, PER_SERVICE + 1))))
    for n, inst in enumerate(sorted(state.instances.values(), key=lambda i: i.id)):
        subnet = state.hosts[inst.host].subnet.rsplit(".", 1)[0]
        run(InstanceStatus(inst.id, inst.host, Status.RUNNING, ip=f"{subnet}.{2 + n // 3 % 250}"))
    state.take_changes()
    return state


def records(state: Any) -> dict[str, list[str]]:
    """Every A name of the state and its addresses (what dnsmasq's hosts file gets)."""
    from agent.model.dns import DnsIndex

    index = DnsIndex()
    index.rebuild(state)
    out: dict[str, list[str]] = {}
    for service in state.services.values():
        name = f"{service.name}.bench.default.corral.internal"
        out[name] = [r.value for r in index.answer(name, "A").records]
    for inst in state.instances.values():
        name = f"{state.container_name(inst)}.bench.default.corral.internal"
        out[name] = [r.value for r in index.answer(name, "A").records]
    return out


def serve(port: int, containers: int) -> None:
    """The server process: Corral's DNS server over a built state, until killed."""
    import uvloop

    from agent.cluster.feed import Feed
    from agent.node.dns import DnsConfig, DnsServer

    async def main() -> None:
        state = build_state(containers)
        config = DnsConfig(port=port, address="127.0.0.1", upstreams=(), rate=1e12, burst=1e12)
        server = DnsServer("h1", state, config)
        async with server.running(Feed()):
            await until_async("the server listens", lambda: server.address is not None, 10)
            print("ready", flush=True)
            await asyncio.Event().wait()

    uvloop.run(main())


def dnsperf(port: int, queries: Path, seconds: float) -> dict[str, float]:
    done = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
                           "-c", "4", "-q", "100", "-v"], capture_output=True, text=True, timeout=seconds + 60)
    qps = re.search(r"Queries per second:\s+([\d.]+)", done.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", done.stdout)
    latencies = sorted(float(m.group(1)) for m in re.finditer(r"^> \S+ \S+ \S+ ([\d.]+)$", done.stdout, re.M))
    if qps is None or not latencies:
        raise SystemExit(f"dnsperf said: {done.stdout[-800:]} {done.stderr[-400:]}")
    return {"qps": float(qps.group(1)), "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3, "lost": float(lost.group(1)) if lost else 0.0}


def queries_bench(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("dnsperf") is None or shutil.which("dnsmasq") is None:
        raise SystemExit("needs dnsperf and dnsmasq (scripts/install.sh installs them)")
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-dns-"))
    os.chmod(tmp, 0o755)
    answers = records(build_state(args.containers))
    hosts = tmp / "hosts"
    hosts.write_text("".join(f"{ip} {name}\n" for name, ips in answers.items() for ip in ips))
    os.chmod(hosts, 0o644)
    services = [n for n in answers if n.startswith("svc")]
    containers = [n for n in answers if not n.startswith("svc")][:len(services)]
    queries = tmp / "queries"
    queries.write_text("".join(f"{n} A\n" for n in services + containers))
    corral_port, dnsmasq_port = free_port(), free_port()
    corral = subprocess.Popen([sys.executable, "-m", "bench.dns", "--serve", str(corral_port),
                               "--containers", str(args.containers)], cwd=HERE, stdout=subprocess.PIPE, text=True)
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file",
                                f"--addn-hosts={hosts}", "--listen-address=127.0.0.1", f"--port={dnsmasq_port}",
                                "--bind-interfaces", "--local=/corral.internal/", "--cache-size=10000",
                                "--log-facility=/dev/null"])
    try:
        assert corral.stdout is not None and corral.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        rounds: dict[str, list[dict[str, float]]] = {"corral": [], "dnsmasq": []}
        for _ in range(args.rounds):
            rounds["dnsmasq"].append(dnsperf(dnsmasq_port, queries, args.seconds))
            rounds["corral"].append(dnsperf(corral_port, queries, args.seconds))
    finally:
        for proc in (corral, dnsmasq):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: max(v, key=lambda r: r["qps"]) for k, v in rounds.items()}
    return {"names": len(services) + len(containers), "rounds": rounds, "best": best,
            "qps_ratio": best["corral"]["qps"] / best["dnsmasq"]["qps"]}


async def propagation(containers: int, changes: int) -> dict[str, Any]:
    import dns.asyncquery
    import dns.message

    from agent.model.commands import HostRegister, InstanceStatus, PlacementsCommit, ServiceCreate, StackCreate
    from agent.model.entities import Status
    from agent.node.dns import DnsConfig, DnsServer
    from tests.unit.fakes import running_pair

    async with running_pair() as (h1, h2):
        r1 = h1.replica
        await r1.write(HostRegister("h2", "127.0.0.2", {}, 64.0, 2**40, None))
        stack = (await r1.write(StackCreate("bench"))).id
        for s in range(containers // PER_SERVICE):
            service = (await r1.write(ServiceCreate(stack, f"svc{s}", {"image": "corral/base",
                                                                        "scale": PER_SERVICE}))).id
            await r1.write(PlacementsCommit(service, tuple((i, ("h1", "h2")[i % 2])
                                                           for i in range(1, PER_SERVICE + 1))))
        insts = sorted(r1.state.instances.values(), key=lambda i: i.id)
        await asyncio.gather(*(r1.write(InstanceStatus(
            inst.id, inst.host, Status.RUNNING, ip=f"10.42.{1 + n % 2}.{2 + n // 2 % 250}"))
            for n, inst in enumerate(insts)))
        await asyncio.sleep(0.5)
        servers = [DnsServer(h, rep.state, DnsConfig(port=free_port(), address="127.0.0.1", upstreams=()))
                   for h, rep in (("h1", r1), ("h2", h2.replica))]
        async with servers[0].running(r1.feed), servers[1].running(h2.replica.feed):
            await until_async("both servers listen", lambda: all(s.address is not None for s in servers), 10)
            targets = [i for i in insts if i.host == "h2"][:changes]
            times: list[float] = []
            updates: list[int] = []
            for n in range(changes):
                inst = r1.state.instances[targets[n % len(targets)].id]
                name = f"{r1.state.services[inst.service].name}.bench.default.corral.internal"
                ip = inst.ip if inst.ip else f"10.42.2.{n}"
                going = inst.status == Status.RUNNING
                before = servers[1].index.updates
                start = time.perf_counter()
                await h2.replica.propose_anywhere(InstanceStatus(
                    inst.id, inst.host, Status.EXITED if going else Status.RUNNING, ip=ip))
                query = dns.message.make_query(name, "A")
                for server in servers:
                    while True:
                        got = await dns.asyncquery.udp(query, "127.0.0.1", port=server.config.port, timeout=2)
                        present = any(r.to_text() == ip for rrset in got.answer for r in rrset)
                        if present != going:
                            break
                times.append(time.perf_counter() - start)
                updates.append(servers[1].index.updates - before)
            times.sort()
            return {"containers": containers, "changes": changes, "p50_ms": times[len(times) // 2] * 1e3,
                    "p99_ms": times[int(len(times) * 0.99)] * 1e3, "max_ms": times[-1] * 1e3,
                    "index_updates_per_change": statistics.mean(updates),
                    "names": servers[1].index.names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-queries", action="store_true")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.containers)
        return
    out: dict[str, Any] = {}
    if not args.skip_queries:
        q = queries_bench(args)
        out["queries"] = q
        c, d = q["best"]["corral"], q["best"]["dnsmasq"]
        print(f"queries ({q['names']} names, {args.containers} containers, best of {args.rounds} × "
              f"{args.seconds:g} s, dnsperf -c 4 -q 100):")
        print(f"  dnsmasq (reference): {d['qps']:9.0f} q/s  p50 {d['p50_ms']:.3f} ms  p99 {d['p99_ms']:.3f} ms  "
              f"lost {d['lost']:.0f}")
        print(f"  corral:              {c['qps']:9.0f} q/s  p50 {c['p50_ms']:.3f} ms  p99 {c['p99_ms']:.3f} ms  "
              f"lost {c['lost']:.0f}")
        print(f"  ratio corral/dnsmasq: {q['qps_ratio']:.2f} × the queries/s (target ≥ 0.5)")
    out["propagation"] = []
    for size in (100, 1000):
        p = asyncio.run(propagation(size, args.changes))
        out["propagation"].append(p)
        print(f"propagation, {size:5d} containers in the state, {p['changes']} changes: p50 {p['p50_ms']:.1f} ms  "
              f"p99 {p['p99_ms']:.1f} ms  max {p['max_ms']:.1f} ms  index records touched per change "
              f"{p['index_updates_per_change']:.1f} ({p['names']} names)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
