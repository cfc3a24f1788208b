"""The overview: how many hosts, stacks, services and containers the caller's environments have, by state."""

from __future__ import annotations

import collections

from aiohttp import web

from agent.api.auth import grants
from agent.api.deps import DEPS
from agent.api.views import container_env, readable, service_env
from agent.ui.render import current_environment, render


def counts(request: web.Request) -> dict[str, object]:
    state, g = request.app[DEPS].replica.state, grants(request)
    env = current_environment(request, g)

    def shown(e: str | None) -> bool:
        return readable(g, e) and (env is None or e == env)

    hosts = collections.Counter(h.state.value for h in state.hosts.values() if shown(h.environment))
    stacks = sum(1 for s in state.stacks.values() if shown(s.environment))
    services = collections.Counter(s.state.value for s in state.services.values() if shown(service_env(state, s)))
    containers = collections.Counter(i.status.value for i in state.instances.values()
                                     if shown(container_env(state, i)))
    return {"hosts": dict(sorted(hosts.items())), "host_total": sum(hosts.values()), "stacks": stacks,
            "services": dict(sorted(services.items())), "service_total": sum(services.values()),
            "containers": dict(sorted(containers.items())), "container_total": sum(containers.values())}


async def overview(request: web.Request) -> web.StreamResponse:
    return render(request, "overview.html", counts(request))


async def overview_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_overview.html", counts(request))


__all__ = ["counts", "overview", "overview_fragment"]
