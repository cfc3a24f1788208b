"""The overview: how many hosts, stacks, services and containers the caller's environments have, by state."""

from __future__ import annotations

import collections

from aiohttp import web

from agent.api.deps import DEPS
from agent.api.views import container_env, service_env
from agent.ui.render import render
from agent.ui.scope import shown


def counts(request: web.Request) -> dict[str, object]:
    state, visible = request.app[DEPS].replica.state, shown(request)
    hosts = collections.Counter(h.state.value for h in state.hosts.values() if visible(h.environment))
    stacks = sum(1 for s in state.stacks.values() if visible(s.environment))
    services = collections.Counter(s.state.value for s in state.services.values() if visible(service_env(state, s)))
    containers = collections.Counter(i.status.value for i in state.instances.values()
                                     if visible(container_env(state, i)))
    return {"hosts": dict(sorted(hosts.items())), "host_total": sum(hosts.values()), "stacks": stacks,
            "services": dict(sorted(services.items())), "service_total": sum(services.values()),
            "containers": dict(sorted(containers.items())), "container_total": sum(containers.values())}


async def overview(request: web.Request) -> web.StreamResponse:
    return render(request, "overview.html", counts(request))


async def overview_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_overview.html", counts(request))


__all__ = ["counts", "overview", "overview_fragment"]
