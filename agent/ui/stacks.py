"""Stacks, and a stack's services: what ``corral stack ls`` / ``corral service ls`` show, live."""

from __future__ import annotations

from aiohttp import web

from agent.api.auth import grants
from agent.api.deps import DEPS
from agent.api.views import find_stack, service_view
from agent.model.entities import Status
from agent.model.policy import Permission, allowed
from agent.ui.render import render
from agent.ui.scope import shown

Row = dict[str, object]


def stack_rows(request: web.Request) -> list[Row]:
    state, visible = request.app[DEPS].replica.state, shown(request)
    rows = []
    for stack in sorted(state.stacks.values(), key=lambda s: (s.environment, s.name)):
        if not visible(stack.environment):
            continue
        services = state.services_of(stack.id)
        instances = [i for s in services for i in state.instances_of(s.id)]
        rows.append({"id": stack.id, "name": stack.name, "environment": stack.environment,
                     "services": sorted(s.name for s in services), "containers": len(instances),
                     "running": sum(1 for i in instances if i.status is Status.RUNNING)})
    return rows


async def stacks_page(request: web.Request) -> web.StreamResponse:
    return render(request, "stacks.html", {"stacks": stack_rows(request)})


async def stacks_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_stacks.html", {"stacks": stack_rows(request)})


def _stack_context(request: web.Request) -> dict[str, object]:
    state = request.app[DEPS].replica.state
    stack = find_stack(state, request.match_info["id"], grants(request))  # 404 for one the caller cannot see
    services = [service_view(state, s) for s in sorted(state.services_of(stack.id), key=lambda s: s.name)]
    return {"stack": stack, "services": services,
            "can_deploy": allowed(grants(request), Permission.DEPLOY, stack.environment)}


async def stack_page(request: web.Request) -> web.StreamResponse:
    return render(request, "stack.html", _stack_context(request))


async def stack_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_stack.html", _stack_context(request))


__all__ = ["stack_fragment", "stack_page", "stack_rows", "stacks_fragment", "stacks_page"]
