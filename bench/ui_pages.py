"""The pure work behind two of the UI's pages, each against a reference measured in the same run:

- **logs**: converting a colourful log (every line with SGR colours, bold, 256-colour and 24-bit
  escapes, as a chatty service writes them) to HTML with :class:`agent.ui.ansi.AnsiHtml`, chunk by
  chunk as a followed log arrives, against ``html.escape`` of the same chunks (the least any page
  showing a log as text must do). Printed: MB/s of each and the ratio.
- **topology**: building a stack's graph (:func:`agent.model.topology.build`) and drawing it as SVG
  (:func:`agent.ui.diagram.render`) for a stack of 40 services (load balancers, links, depends_on,
  external services) and 1,000 containers over 4 hosts, made through the real state machine, against
  ``json.dumps`` of the API's service views of the same stack (what ``GET /v1/services?stack=`` serialises).
  Printed: ms per render of each and the ratio.

    python -m bench.ui_pages [--rounds 5]
"""

from __future__ import annotations

import argparse
import html
import json
import statistics
import time
from typing import Any

from agent.api.views import service_view
from agent.model import topology
from agent.model.commands import HostRegister, InstanceStatus, PlacementsCommit, ServiceCreate, StackCreate
from agent.model.entities import Status
from agent.model.state import ClusterState
from agent.ui.ansi import AnsiHtml
from agent.ui.diagram import render

E = "\x1b"


def log_chunks(lines: int = 20_000, per_chunk: int = 8) -> list[str]:
    palette = [f"{E}[32mINFO{E}[0m", f"{E}[1;33mWARN{E}[0m", f"{E}[1;31mERROR{E}[0m", f"{E}[38;5;39mDEBUG{E}[m"]
    out, chunk = [], []
    for i in range(lines):
        chunk.append(f"2026-12-03T14:{i % 60:02d}:00Z {palette[i % 4]} {E}[38;2;120;{i % 256};200mreq-{i}{E}[0m "
                     f"GET /api/items?id={i}&q=<x> 200 {i % 997} ms\n")
        if len(chunk) == per_chunk:
            out.append("".join(chunk))
            chunk = []
    return out


def bench_logs(rounds: int) -> tuple[float, float]:
    chunks = log_chunks()
    size = sum(len(c.encode()) for c in chunks) / 1e6
    ours, ref = [], []
    for _ in range(rounds):  # interleaved: the machine's load falls on both alike
        t = time.perf_counter()
        conv = AnsiHtml()
        for c in chunks:
            conv.feed(c)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        for c in chunks:
            html.escape(c, quote=False)
        ref.append(time.perf_counter() - t)
    return size / statistics.median(ours), size / statistics.median(ref)


class Log:
    """Commands applied by the real state machine, one log index each."""

    def __init__(self) -> None:
        self.state, self.index = ClusterState(), 0

    def __call__(self, cmd: Any) -> Any:
        self.index += 1
        return self.state.execute(cmd, self.index)


def big_stack() -> tuple[ClusterState, str]:
    log = Log()
    hosts = [f"h{i}" for i in range(1, 5)]
    for i, h in enumerate(hosts):
        log(HostRegister(h, f"10.77.0.{11 + i}", {"corral.haproxy": "yes"}, 64.0, 2**40, "ab" * 32))
    stack = log(StackCreate("big", "default")).id
    names = [f"svc{i}" for i in range(32)]
    for i, name in enumerate(names):
        links = {f"dep{j}": names[j] for j in range(i + 1, min(i + 3, len(names)))}
        count = 31 if i < 31 else 39  # 1,000 containers in all
        spec = {"image": "corral/base", "scale": count, "links": links,
                "depends_on": {names[i + 1]: "started"} if i + 1 < len(names) else {}}
        sid = log(ServiceCreate(stack, name, spec)).id
        placed = log(PlacementsCommit(sid, tuple((s + 1, hosts[s % 4]) for s in range(count)))).placed
        for inst in placed:
            log(InstanceStatus(inst, log.state.instances[inst].host, Status.RUNNING))
    for i in range(4):
        external = {"kind": "external", "external": {"addresses": [f"192.0.2.{i + 1}"]}}
        log(ServiceCreate(stack, f"ext{i}", external))
    for i in range(4):
        rules = [{"port": 8000 + i, "path": f"/{names[k]}", "target": names[k], "target_port": 80}
                 for k in range(i * 4, i * 4 + 4)]
        lb = {"kind": "load-balancer", "mode": "global", "lb": {"rules": rules}}
        log(ServiceCreate(stack, f"lb{i}", lb))
    return log.state, stack


def bench_topology(rounds: int) -> tuple[float, float, int, int]:
    state, stack = big_stack()
    ours, ref = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        svg = render(topology.build(state, stack))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        json.dumps([service_view(state, s) for s in state.services_of(stack)], default=str)
        ref.append(time.perf_counter() - t)
    return statistics.median(ours) * 1000, statistics.median(ref) * 1000, len(state.instances), len(svg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours, ref = bench_logs(args.rounds)
    print(f"logs: ANSI → HTML {ours:.1f} MB/s; reference html.escape {ref:.1f} MB/s; ratio {ref / ours:.2f}× slower")
    ms, ref_ms, containers, size = bench_topology(args.rounds)
    print(f"topology: {containers} containers, 40 services: graph + SVG {ms:.1f} ms ({size // 1024} KiB); "
          f"reference json.dumps of the API's service views {ref_ms:.1f} ms; ratio {ms / ref_ms:.2f}×")


if __name__ == "__main__":
    main()
