"""Environments and hosts, as the replicated state holds them; a host's engine figures from its agent."""

from __future__ import annotations

import asyncio

from aiohttp import web

from agent.api import forward
from agent.api.auth import grants, write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.params import ENVIRONMENT, NAME, STATE
from agent.api.views import find_host, host_view, page, wire
from agent.model import spec as specs
from agent.model.commands import HostMove
from agent.model.entities import Host
from agent.model.errors import not_found
from agent.model.policy import role_in
from agent.node.stats import summarize


async def list_environments(request: web.Request) -> web.Response:
    """The environments the caller has a role in (an administrator: all), with the caller's role."""
    g = grants(request)
    rows = ({**wire(e), "role": r.value} for e in request.app[DEPS].replica.state.environments.values()
            if (r := role_in(g, e.name)) is not None)
    return page(request, rows)


def gossip_health(request: web.Request) -> dict[str, object]:
    """Each member's health as it advertises it in gossip (``ok``, or ``degraded: …``)."""
    return {m.name: m.meta.get("health") for m in request.app[DEPS].gossip.members()}


async def list_hosts(request: web.Request) -> web.Response:
    """The hosts of the environments the caller has a role in (an administrator: all)."""
    state, g = request.app[DEPS].replica.state, grants(request)
    health = gossip_health(request)
    rows = [{**host_view(state, h), "health": health.get(h.name)} for h in sorted(state.hosts.values(),
                                                                                  key=lambda h: h.name)
            if role_in(g, h.environment) is not None]
    return page(request, rows, (STATE, ENVIRONMENT))


def _visible_host(request: web.Request) -> Host:
    state = request.app[DEPS].replica.state
    name = NAME.get(request)
    host = find_host(state, name)
    if role_in(grants(request), host.environment) is None:
        raise not_found("host", name)
    return host


async def get_host(request: web.Request) -> web.Response:
    state = request.app[DEPS].replica.state
    host = _visible_host(request)
    return web.json_response({**host_view(state, host), "health": gossip_health(request).get(host.name)})


async def move_host(request: web.Request) -> web.Response:
    """``{"environment": NAME}``: the host's containers of its old environment are placed elsewhere, then
    the new one's may land on it."""
    deps = request.app[DEPS]
    host = find_host(deps.replica.state, NAME.get(request))
    body = await json_object(request, ("environment",))
    environment = specs.name(body.get("environment"), "environment")
    await write(request, HostMove(host.name, environment))
    state = deps.replica.state
    return web.json_response({**host_view(state, state.hosts[host.name]), "draining": state.foreign_on(host.name)})


async def host_stats(request: web.Request) -> web.StreamResponse:
    """A host's Docker-side figures: its engine's capacity and the sum over Corral's containers on it."""
    deps = request.app[DEPS]
    host = _visible_host(request)
    if host.name != deps.node.name:
        return await forward.to_owner(request, host.name)
    engine = deps.engine
    info = await engine.info()
    containers = [c for c in await engine.containers.list() if c.state == "running"]
    samples = await asyncio.gather(*(engine.containers.stats(c.id) for c in containers), return_exceptions=True)
    per = [summarize(s) for s in samples if isinstance(s, dict)]
    return web.json_response({
        "host": host.name,
        "cpus": info.get("NCPU"),
        "memory_total": info.get("MemTotal"),
        "containers": {"running": len(containers), "sampled": len(per)},
        "cpu_percent": round(sum(p.cpu_percent for p in per), 2),
        "memory": {"usage": sum(p.memory_usage for p in per)},
        "network": {"rx_bytes": sum(p.rx_bytes for p in per), "tx_bytes": sum(p.tx_bytes for p in per)},
        "block_io": {"read_bytes": sum(p.read_bytes for p in per), "write_bytes": sum(p.write_bytes for p in per)},
    })


__all__ = ["get_host", "gossip_health", "host_stats", "list_environments", "list_hosts", "move_host"]
