"""What authentication and TLS cost the API: ``GET /v1/containers`` over 1,000 containers, served by the
code of the commit before access control (plain HTTP, no credential) and by this tree (HTTPS with a
node certificate from a cluster CA, a bearer API key checked and authorized on every request), in the
same run, in interleaved rounds; and logins per second with Argon2id at the chosen parameters.

Each server is the agent's real app over an in-memory cluster (the unit tests' harness: a single-voter
Raft on loopback, a fake engine) in a process of its own; the load is ``--clients`` keep-alive
connections back to back from this process. Targets (issue 14): p50 ≤ 1.15 × and requests/s ≥ 0.85 × the
plain API; the login rate is reported, with the hasher's bound (2 at once, 19 MiB each).

    python -m bench.api_auth [--before /tmp/pre-auth] [--rounds 3] [--seconds 8] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent.parent
CONTAINERS = 1000
SERVICES = 10

SERVER = r'''
import asyncio, json, os, ssl, sys
sys.path.insert(0, os.getcwd())
from tests.unit import fakes
from agent.model.commands import StackCreate, ServiceCreate, PlacementsCommit

async def main():
    tls = json.loads(sys.argv[1])
    extra = json.loads(sys.argv[2])  # more keyword arguments of running_api (bench.metrics: parts)
    if tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls["cert"], tls["key"])
        extra["ssl_context"] = ctx
    async with fakes.running_api(**extra) as h:
        r = h.replica
        stack = (await r.write(StackCreate("bench"))).id
        for s in range(SERVICES):
            svc = (await r.write(ServiceCreate(stack, f"svc{s}", {"image": "corral/base", "scale": PER}))).id
            await r.write(PlacementsCommit(svc, tuple((i, "h1") for i in range(1, PER + 1))))
        assert len(r.state.instances) == SERVICES * PER, len(r.state.instances)
        print(json.dumps({"url": h.url, "token": getattr(h, "token", ""), "pid": os.getpid()}), flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
'''


def tls_files(directory: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    """A CA and a certificate for 127.0.0.1 from it, as the agent makes them (mesh.pki)."""
    sys.path.insert(0, str(HERE))
    from mesh import pki

    now = time.time()
    ca_pem, ca_key = pki.make_ca("bench", now)
    key = pki.new_key()
    issued = pki.sign(ca_pem, ca_key, pki.make_csr("bench", key), "bench", "manager", ["127.0.0.1"], now)
    files = {"cert": str(directory / "node.pem"), "key": str(directory / "node-key.pem")}
    Path(files["cert"]).write_bytes(issued.cert_pem)
    Path(files["key"]).write_bytes(pki.key_pem(key))
    (directory / "ca.pem").write_bytes(ca_pem)
    return files, ssl.create_default_context(cafile=str(directory / "ca.pem"))


def start(tree: Path, tls: dict[str, str] | None, containers: int = CONTAINERS,
          **harness: Any) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The agent's app over an in-memory cluster holding ``containers`` instances on its host (h1), in a
    process of its own running ``tree``'s code; ``harness``: more arguments of ``running_api``."""
    code = SERVER.replace("SERVICES", str(SERVICES)).replace("PER", str(containers // SERVICES))
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(tls or {}), json.dumps(harness)], cwd=tree,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the server from {tree} did not start")
    return proc, json.loads(line)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(url: str, headers: dict[str, str], ctx: ssl.SSLContext | None, seconds: float, clients: int,
                 pid: int, method: str = "GET", path: str = "/v1/containers", body: Any = None,
                 warmup: float = 1.0) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    counted_from, end = start + warmup, start + warmup + seconds
    cpu: list[float] = []

    async def meter() -> None:
        await asyncio.sleep(warmup)
        c0 = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        cpu.append(cpu_seconds(pid) - c0)

    async def client() -> None:
        nonlocal errors
        connector = aiohttp.TCPConnector(limit=1, ssl=ctx if ctx is not None else False)
        async with aiohttp.ClientSession(connector=connector, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            while True:
                t = time.monotonic()
                if t >= end:
                    return
                async with session.request(method, url + path, json=body) as resp:
                    await resp.read()
                    ok = resp.status == 200
                done = time.monotonic()
                if counted_from <= t and done <= end:
                    if ok:
                        latencies.append(done - t)
                    else:
                        errors += 1

    await asyncio.gather(meter(), *(client() for _ in range(clients)))
    latencies.sort()
    return {"rps": len(latencies) / seconds, "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0, "errors": errors,
            "server_cpu": cpu[0] / seconds if cpu else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, default=Path("/tmp/pre-auth"),
                        help="a worktree of the commit before access control (git worktree add --detach DIR c5ad003)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if not (args.before / "tests" / "unit" / "fakes.py").exists():
        raise SystemExit(f"{args.before} is not a Corral tree: git worktree add --detach {args.before} c5ad003")
    with tempfile.TemporaryDirectory() as d:
        files, ctx = tls_files(Path(d))
        before_proc, before = start(args.before, None)
        after_proc, after = start(HERE, files)
        try:
            rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for r in range(args.rounds):
                for name, server, tls, headers in (
                        ("before", before, None, {}),
                        ("after", after, ctx, {"Authorization": f"Bearer {after['token']}"})):
                    got = asyncio.run(hammer(server["url"], headers, tls, args.seconds, args.clients, server["pid"]))
                    rows[name].append(got)
                    print(f"[round {r + 1}] {name}: {got['rps']:.0f} req/s, p50 {got['p50_ms']:.2f} ms, "
                          f"p99 {got['p99_ms']:.2f} ms, errors {got['errors']}, server CPU {got['server_cpu']:.2f}",
                          file=sys.stderr, flush=True)
            logins = asyncio.run(hammer(after["url"], {}, ctx, args.seconds, 4, after["pid"], method="POST",
                                        path="/v1/auth/login",
                                        body={"user": "admin", "password": "correct horse battery staple"}))
        finally:
            for proc in (before_proc, after_proc):
                proc.terminate()
                proc.wait(10)
    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50_ms", "p99_ms", "server_cpu")}
           for name, rs in rows.items()}
    p50, rps = med["after"]["p50_ms"] / med["before"]["p50_ms"], med["after"]["rps"] / med["before"]["rps"]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"GET /v1/containers over {CONTAINERS} containers (a page of 100), {args.clients} keep-alive clients, "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s, {os.cpu_count()} CPUs, load {load}")
    print(f"{'API':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU':>11}")
    for name, label in (("before", "before (c5ad003): plain HTTP, no credential"),
                        ("after", "after: HTTPS + bearer key + policy")):
        m = med[name]
        print(f"{label:<44} {m['rps']:>8.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {m['server_cpu']:>11.2f}")
    print(f"after / before: p50 {p50:.3f} × (target ≤ 1.15: {'met' if p50 <= 1.15 else 'MISSED'}), "
          f"req/s {rps:.3f} × (target ≥ 0.85: {'met' if rps >= 0.85 else 'MISSED'})")
    print(f"logins (Argon2id m=19 MiB t=2 p=1, at most 2 at once, 4 clients): {logins['rps']:.1f}/s, "
          f"p50 {logins['p50_ms']:.0f} ms, errors {logins['errors']:.0f}")


if __name__ == "__main__":
    main()
