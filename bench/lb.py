"""What Corral's load balancer costs on the request path (issue 17): ``wrk`` through it, through a
hand-written HAProxy with the same backends, and straight to one container, same host, same run.

Run as root: ``python -m bench.lb [--quick] [--rounds 3] [--seconds 10] [--hosts 3]``. It builds its own
lab (``CORRAL_LAB_ID=3`` unless set; ``--existing`` uses the lab that is up and leaves it up), deploys
the README's example (``agent/examples/web-server.yml``: nginx-cluster × 10 — busybox ``httpd``, a page
naming the container — and the load balancer ``lb`` on port 80 of every host), and on ``--on`` (h1):

- **corral**: ``wrk`` to the host's port 80, Corral's HAProxy (its generated config, its servers added
  through the admin socket);
- **reference**: Debian's ``haproxy`` started by this benchmark in the same host namespace on port 8081,
  from a config written here the way an operator writes one by hand (``REFERENCE``): the same 10
  containers' addresses, the same timeouts, ``option forwardfor`` (Corral's default), HAProxy's
  default checks (every 2 s) — and nothing else;
- **direct**: ``wrk`` to one container's 10.42 address on another host (over the overlay, as most of
  the load balancers' requests go): what one backend gives alone.

Every ``wrk`` runs in the same host's namespace with the same threads, connections and duration. Two
loads, each in ``--rounds`` interleaved rounds (each kind twice for half the time, mirrored: corral,
reference, direct, direct, reference, corral; the order rotated from round to round): a
**saturating** one (``-t 2 -c 32``: requests/s, and p99 with queueing) and a **single connection**
(``-t 1 -c 1``: one request after another, so p99 is the latency a request gets, no queueing: what
the load balancer adds to it). Requests/s are medians over rounds, and their ratio the median of the
rounds' own ratios (both in the same minute), since the machine's load moves from round to round; a
p99 is of every round's latencies pooled (wrk's own histogram, dumped by a ``done()`` script), so it
ranks thousands of requests rather than one round's few hundred.

What Corral's config has and the reference lacks (printed with the figures): master-worker with a
stats socket (``expose-fd listeners``), checks every 250 ms, ``retries 3`` + ``option redispatch`` +
``retry-on conn-failure empty-response``, ``X-Forwarded-Proto``, ``timeout http-request`` /
``http-keep-alive``, dynamic (runtime-added) servers.

Targets (issue 17): Corral ≥ 0.9 × the hand-written HAProxy's requests/s, p99 added ≤ 1 ms over it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

# bench.labutil picks the lab id before agent.lab is imported: take Lab from it
from bench.labutil import (
    Lab,
    get_json,
    lab_up,
    log,
    machine_load,
    send_json,
    table,
    until,
    verdict,
    wait_healthy,
)

# isort: split
from agent.drill.lbtraffic import show_stat
from agent.model import compose

EXAMPLE = Path(__file__).resolve().parent.parent / "agent" / "examples" / "web-server.yml"
STACK, SERVICE, LB = "web-server", "nginx-cluster", "lb"
LB_PORT, REFERENCE_PORT = 80, 8081
TARGET_RATIO, TARGET_P99_MS = 0.9, 1.0
LOADS = {"saturating": (2, 32), "one connection": (1, 1)}  # wrk -t, -c
KINDS = ("corral", "reference", "direct")

REFERENCE = """\
# the reference: what an operator writes by hand for the same backends (bench/lb.py)
global
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    option forwardfor

frontend web
    bind :{port}
    default_backend nginx

backend nginx
    balance roundrobin
{servers}
"""

EQUAL_DEFAULTS = """\
    timeout http-request 10s
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
"""
EQUAL_FRONTEND = "    http-request set-header X-Forwarded-Proto http\n"
EQUAL_BACKEND = "    retry-on conn-failure empty-response\n"
EQUAL_CHECK = "check inter 250ms fastinter 250ms downinter 500ms fall 2 rise 1"

DIFFERENCES = ("master-worker + expose-fd listeners", "check inter 250ms (reference: 2 s)",
               "retries 3, option redispatch, retry-on conn-failure empty-response",
               "X-Forwarded-Proto header", "timeout http-request/http-keep-alive 10s", "servers added at run time")


# ---------------------------------------------------------------------- wrk

HISTOGRAM = """\
-- every latency wrk recorded (microseconds, count), so that rounds can be pooled for one p99
done = function(summary, latency, requests)
   for i = 1, #latency do
      local v, c = latency(i)
      io.write(string.format("HIST %d %d\\n", v, c))
   end
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """requests/s, p50/p99 (ms), requests, errors and the latency histogram (µs → count) from ``wrk
    --latency``'s report and :data:`HISTOGRAM`'s lines."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if rps is None or p50 is None or p99 is None or total is None:
        raise ValueError(f"wrk said: {out[-600:]}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        errors += int(bad.group(1))
    hist = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"^HIST (\d+) (\d+)$", out, re.M)}
    return {"rps": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "requests": float(total.group(1)), "errors": float(errors), "hist": hist}


def pooled_percentile(hists: list[dict[int, int]], p: float) -> float:
    """The nearest-rank percentile (ms) of every latency of ``hists`` together."""
    merged: dict[int, int] = {}
    for h in hists:
        for v, c in h.items():
            merged[v] = merged.get(v, 0) + c
    total = sum(merged.values())
    if not total:
        return float("nan")
    rank, seen = max(1, -(-total * p // 100)), 0
    for v in sorted(merged):
        seen += merged[v]
        if seen >= rank:
            return v / 1e3
    return max(merged) / 1e3


def wrk(lab: Lab, host: str, url: str, threads: int, connections: int, seconds: float,
        script: Path | None = None) -> dict[str, Any]:
    extra = ["-s", str(script)] if script is not None else []
    argv, env = lab.exec_argv(host, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
                                     "--latency", *extra, url])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise SystemExit(f"wrk {url} failed: {done.stderr.strip()[-400:]}")
    return parse_wrk(done.stdout)


# ---------------------------------------------------------------------- the reference HAProxy


def servers(path: Path) -> list[dict[str, str]]:
    """The server rows of an HAProxy's ``show stat`` (none if it does not answer)."""
    try:
        rows = show_stat(path, 2.0)
    except OSError:
        return []
    return [r for r in rows if r.get("svname") not in ("FRONTEND", "BACKEND", None)]


def check_counts(path: Path) -> dict[str, int]:
    """Failed checks and UP → DOWN transitions, summed over the servers (``chkfail``, ``chkdown``)."""
    rows = servers(path)
    return {k: sum(int(r.get(k) or 0) for r in rows) for k in ("chkfail", "chkdown")}


class Reference:
    """Debian's haproxy in ``host``'s namespace on REFERENCE_PORT, with the hand-written config."""

    def __init__(self, lab: Lab, host: str, backends: list[str], equal: bool = False) -> None:
        self.lab, self.host, self.backends, self.equal = lab, host, backends, equal
        self.dir = Path(tempfile.mkdtemp(prefix="corral-bench-lb-"))
        self.config = self.dir / "haproxy.cfg"
        self.socket = self.dir / "admin.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def text(self) -> str:
        check = EQUAL_CHECK if self.equal else "check"
        servers = "\n".join(f"    server s{n} {address} {check}" for n, address in enumerate(self.backends, 1))
        text = REFERENCE.format(socket=self.socket, port=REFERENCE_PORT, servers=servers)
        if self.equal:  # Corral's options, so that only the way servers are added differs
            text = text.replace("    option forwardfor\n", "    option forwardfor\n" + EQUAL_DEFAULTS)
            text = text.replace("    default_backend nginx\n", EQUAL_FRONTEND + "    default_backend nginx\n")
            text = text.replace("    balance roundrobin\n", "    balance roundrobin\n" + EQUAL_BACKEND)
        return text

    def start(self) -> None:
        self.config.write_text(self.text())
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"haproxy refused the reference config: {check.stdout}{check.stderr}")
        argv, env = self.lab.exec_argv(self.host, ["haproxy", "-db", "-f", str(self.config)])
        with open(self.dir / "haproxy.out", "wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=out)

    def up(self) -> int:
        """Servers UP, from its stats socket (0 until it answers)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise SystemExit(f"the reference haproxy exited: {(self.dir / 'haproxy.out').read_text()[-400:]}")
        return sum(r.get("status") == "UP" for r in servers(self.socket))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------- the cluster side


async def service_of(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, Any] | None:
    body = await get_json(session, url + "/v1/services")
    if body is None:
        return None
    return next((s for s in body["items"] if s["stack_name"] == STACK and s["name"] == name), None)


async def deploy(session: aiohttp.ClientSession, lab: Lab, on: str) -> tuple[list[dict[str, Any]], str]:
    """The example deployed and converged: every instance of ``lb`` runs and the one on ``on`` has all 10
    servers UP. Returns the web containers and the load balancer's config file on ``on``."""
    url = lab.host("h1").api_url
    services = compose.load(EXAMPLE.read_text())
    status, body = await send_json(session, "POST", url + f"/v1/stacks/{STACK}/deploy",
                                   {"environment": "default", "services": services, "configs": {}, "prune": False},
                                   timeout=60)
    if status != 200:
        raise SystemExit(f"the example's deploy failed: {status} {body}")
    scale = int(services[SERVICE]["scale"])

    async def ready() -> list[dict[str, Any]] | None:
        web, lb = await service_of(session, url, SERVICE), await service_of(session, url, LB)
        if web is None or lb is None:
            return None
        detail = await get_json(session, url + f"/v1/services/{lb['id']}")
        items = await get_json(session, url + f"/v1/containers?service={web['id']}")
        if detail is None or items is None or detail["running"] != detail["scale"]:
            return None
        mine = [f for f in detail.get("lb_instances", []) if f.get("host") == on and "error" not in f]
        ups = sum(s["state"] == "UP" for f in mine for b in f["backends"] for s in b["servers"])
        running = [c for c in items["items"] if c["state"] == "running" and c.get("ip")]
        return running if len(running) == scale and ups == scale else None

    containers = await until("the example running, the load balancer with every server up", ready, 300, 0.5)
    found = sorted(lab.host(on).agent_data.glob("lb/*/haproxy.cfg"))
    if not found:
        raise SystemExit(f"no load balancer config on {on}")
    return containers, str(found[0])


# ---------------------------------------------------------------------- the run


def combine(halves: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's figure from its two halves: requests/s averaged, latencies pooled, errors summed."""
    hist: dict[int, int] = {}
    for h in halves:
        for v, c in h["hist"].items():
            hist[v] = hist.get(v, 0) + c
    return {"rps": statistics.mean(h["rps"] for h in halves), "p50_ms": pooled_percentile([hist], 50),
            "p99_ms": pooled_percentile([hist], 99), "requests": sum(h["requests"] for h in halves),
            "errors": sum(h["errors"] for h in halves), "hist": hist, "halves": [h["rps"] for h in halves]}


def rounds(lab: Lab, on: str, urls: dict[str, str], count: int, seconds: float,
           script: Path) -> dict[str, dict[str, list[Any]]]:
    """``count`` rounds of every load; per load and kind, the rounds' wrk figures. A round runs each kind
    twice for half the time, mirrored (corral, reference, direct, direct, reference, corral), so that a
    load that rises or falls through the round weighs on every kind alike."""
    out: dict[str, dict[str, list[Any]]] = {load: {k: [] for k in KINDS} for load in LOADS}
    for n in range(count):
        for load, (threads, connections) in LOADS.items():
            order = KINDS[n % 3:] + KINDS[:n % 3]
            halves: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
            for kind in (*order, *reversed(order)):
                halves[kind].append(wrk(lab, on, urls[kind], threads, connections, max(1, round(seconds / 2)),
                                        script))
            for kind in KINDS:
                got = combine(halves[kind])
                out[load][kind].append(got)
                log(f"round {n + 1}/{count} {load:>14} {kind:>9}: {got['rps']:7.0f} req/s  p50 "
                    f"{got['p50_ms']:.2f} ms  p99 {got['p99_ms']:.2f} ms  errors {got['errors']:.0f}")
    return out


def summarize(figures: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for load, kinds in figures.items():
        med = {k: {f: statistics.median(r[f] for r in runs) for f in ("rps", "p50_ms", "p99_ms")}
               for k, runs in kinds.items()}
        ratios = [c["rps"] / r["rps"] for c, r in zip(kinds["corral"], kinds["reference"], strict=True)]
        added = [c["p99_ms"] - r["p99_ms"] for c, r in zip(kinds["corral"], kinds["reference"], strict=True)]
        errors = {k: sum(r["errors"] for r in runs) for k, runs in kinds.items()}
        pooled = {k: pooled_percentile([r["hist"] for r in runs], 99) for k, runs in kinds.items()}
        for k in kinds:
            med[k]["p99_ms"] = pooled[k]  # every round's latencies together: a p99 of thousands, not of one round
        out[load] = {"median": med, "rps_ratio": statistics.median(ratios), "ratios": ratios,
                     "p99_added_ms": pooled["corral"] - pooled["reference"], "p99_added": added, "errors": errors}
    return out


async def prepare(lab: Lab, on: str) -> tuple[list[dict[str, Any]], str]:
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, lab, timeout=120)
        return await deploy(session, lab, on)


def run(lab: Lab, on: str, count: int, seconds: float, equal: bool = False) -> dict[str, Any]:
    containers, config = asyncio.run(prepare(lab, on))
    backends = [f"{c['ip']}:80" for c in sorted(containers, key=lambda c: c["ip"])]
    direct = next((c for c in containers if c["host"] != on), containers[0])
    address = lab.host(on).address
    urls = {"corral": f"http://{address}:{LB_PORT}/", "reference": f"http://{address}:{REFERENCE_PORT}/",
            "direct": f"http://{direct['ip']}:80/"}
    reference = Reference(lab, on, backends, equal)
    try:
        reference.start()
        deadline = time.monotonic() + 30
        while reference.up() != len(backends):
            if time.monotonic() > deadline:
                raise SystemExit("the reference haproxy's servers did not come up in 30 s")
            time.sleep(0.2)
        log(f"wrk from {on}: corral {urls['corral']}, reference {urls['reference']}, direct {urls['direct']} "
            f"({direct['name']} on {direct['host']})")
        for url in urls.values():  # warm: connections, ARP, the overlay's sessions
            wrk(lab, on, url, 1, 4, 2)
        script = reference.dir / "histogram.lua"
        script.write_text(HISTOGRAM)
        corral_socket, reference_socket = Path(config).parent / "admin.sock", reference.socket
        before = {"corral": check_counts(corral_socket), "reference": check_counts(reference_socket)}
        figures = rounds(lab, on, urls, count, seconds, script)
        checks = {k: {c: n - before[k][c] for c, n in check_counts(sock).items()}
                  for k, sock in (("corral", corral_socket), ("reference", reference_socket))}
        for runs in figures.values():
            for kind in runs.values():
                for r in kind:
                    r["hist_samples"] = sum(r["hist"].values())
    finally:
        reference.stop()
    return {"on": on, "equal": equal, "direct": {"name": direct["name"], "host": direct["host"], "ip": direct["ip"]},
            "backends": backends, "corral_config": Path(config).read_text(), "reference_config": reference.text(),
            "figures": figures, "summary": summarize(figures), "checks": checks}


def report(result: dict[str, Any], count: int, seconds: float) -> list[str]:
    lines = [f"wrk from {result['on']}'s namespace, {count} mirrored rounds × {seconds:g} s per figure (medians); "
             f"direct = {result['direct']['name']} on {result['direct']['host']} over the overlay"]
    rows = []
    for load, s in result["summary"].items():
        threads, connections = LOADS[load]
        for kind in KINDS:
            m = s["median"][kind]
            rows.append([f"{load} (-t{threads} -c{connections})", kind, f"{m['rps']:.0f}", f"{m['p50_ms']:.2f}",
                         f"{m['p99_ms']:.2f}", f"{s['errors'][kind]:.0f}"])
    lines.append(table(["load", "to", "req/s", "p50 ms", "p99 ms", "errors"], rows))
    for load, s in result["summary"].items():
        lines.append(f"{load}: corral/reference req/s per round {', '.join(f'{r:.2f}' for r in s['ratios'])}; "
                     f"p99 added per round {', '.join(f'{a:+.2f}' for a in s['p99_added'])} ms")
    lines.append("health checks during the rounds (failed / servers taken down): " + ", ".join(
        f"{k} {v['chkfail']} / {v['chkdown']}" for k, v in result["checks"].items()))
    if result["equal"]:
        lines.append("the reference has corral's options (--equal): checks, retries, X-Forwarded-Proto, timeouts")
    else:
        lines.append("corral's config has, the reference not: " + "; ".join(DIFFERENCES))
    sat, one = result["summary"]["saturating"], result["summary"]["one connection"]
    ok = sat["rps_ratio"] >= TARGET_RATIO and one["p99_added_ms"] <= TARGET_P99_MS \
        and sum(sat["errors"].values()) + sum(one["errors"].values()) == 0
    c, r, d = (sat["median"][k] for k in KINDS)
    lines.append(
        f"lb: Corral {sat['rps_ratio']:.2f}× the hand-written HAProxy ({c['rps']:.0f} req/s vs {r['rps']:.0f}), "
        f"p99 {one['p99_added_ms']:+.2f} ms on one connection ({one['median']['corral']['p99_ms']:.2f} vs "
        f"{one['median']['reference']['p99_ms']:.2f} ms; {sat['p99_added_ms']:+.1f} ms saturated); direct to one "
        f"container {d['rps']:.0f} req/s, p99 {one['median']['direct']['p99_ms']:.2f} ms; target ≥ {TARGET_RATIO}× "
        f"and ≤ +{TARGET_P99_MS:g} ms, no errors: {verdict(ok)} ({machine_load()})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 4 s per figure")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure (median reported)")
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk's time per figure and round (two halves)")
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts (the example's load balancer runs on each)")
    parser.add_argument("--on", default="h1", help="the host whose load balancer wrk goes through (and runs on)")
    parser.add_argument("--existing", action="store_true", help="use the lab that is up; leave it up")
    parser.add_argument("--equal", action="store_true",
                        help="give the reference Corral's options too (checks every 250 ms, retries, headers)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    args = parser.parse_args()
    count, seconds = (1, 4.0) if args.quick else (args.rounds, args.seconds)
    if count < 1 or seconds < 2 or not 1 <= args.hosts <= 16:
        raise SystemExit("--rounds ≥ 1, --seconds ≥ 2, --hosts 1-16")
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (apt-get install {tool})")
    if args.on not in {f"h{i}" for i in range(1, args.hosts + 1)}:
        raise SystemExit(f"--on: one of h1…h{args.hosts}, not {args.on!r}")
    print(f"lb: {args.hosts}-host lab, the example web-server stack; {machine_load()}", flush=True)
    with contextlib.ExitStack() as stack:
        if args.existing:
            lab = Lab()
            if (lab.read_state() or {}).get("status") != "up":
                raise SystemExit("--existing: no lab is up (CORRAL_LAB_ID)")
            os.environ["CORRAL_TOKEN"] = lab.admin_token()
            os.environ["CORRAL_CACERT"] = str(lab.ca_file)
        else:
            lab = stack.enter_context(lab_up(args.hosts))
        started = time.monotonic()
        result = run(lab, args.on, count, seconds, args.equal)
        log(f"measured in {time.monotonic() - started:.0f} s")
    print("\n".join(report(result, count, seconds)))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
