"""The hosts page: each host's state, health, labels, and — kept apart, because people confuse them
(Nomad #8939) — the CPU and memory its containers **reserve** (their specs' ``cpus``/``memory``, what
the scheduler places by) against the CPU and memory they **use** (measured by Docker on the host,
with sparklines from the stats history)."""

from __future__ import annotations

from aiohttp import web

from agent.api.deps import DEPS
from agent.api.hosts import gossip_health
from agent.model.state import ClusterState
from agent.ui.render import render
from agent.ui.scope import shown

Row = dict[str, object]


def reserved(state: ClusterState, host: str) -> tuple[float, int]:
    """CPUs and bytes of memory the containers placed on ``host`` reserve (their specs' requests)."""
    cpus, memory = 0.0, 0
    for inst in state.instances_on(host):
        if inst.service in state.services:
            spec = state.spec_of(inst)
            cpus, memory = cpus + spec.cpus, memory + spec.memory
    return cpus, memory


def host_rows(request: web.Request) -> list[Row]:
    state, visible = request.app[DEPS].replica.state, shown(request)
    health = gossip_health(request)
    rows = []
    for host in sorted(state.hosts.values(), key=lambda h: h.name):
        if not visible(host.environment):
            continue
        cpus, memory = reserved(state, host.name)
        rows.append({"name": host.name, "address": host.address, "state": host.state.value,
                     "health": health.get(host.name) or "unknown", "environment": host.environment,
                     "labels": dict(sorted(host.labels.items())), "manager": host.manager,
                     "containers": state.count_on(host.name), "cpus": host.cpus, "memory": host.memory,
                     "reserved_cpus": cpus, "reserved_memory": memory})
    return rows


async def hosts_page(request: web.Request) -> web.StreamResponse:
    return render(request, "hosts.html", {"hosts": host_rows(request)})


async def hosts_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_hosts.html", {"hosts": host_rows(request)})


__all__ = ["host_rows", "hosts_fragment", "hosts_page", "reserved"]
