"""Containers (the instances of services), and their logs and stats streamed from their host."""

from __future__ import annotations

from aiohttp import web

from agent.api import forward, history
from agent.api.auth import authorize, grants, write
from agent.api.deps import DEPS, streaming
from agent.api.params import FOLLOW, HOST, ID, SERVICE, SINCE, STACK, STATE, TAIL
from agent.api.views import container_env, container_view, find_container, page, readable
from agent.errors import NotFound
from agent.model.commands import InstanceRemove
from agent.model.entities import Instance
from agent.model.lb import ServiceKind
from agent.model.policy import Permission
from agent.node.lbconfig import summarize as summarize_lb
from agent.node.stats import summarize


async def list_containers(request: web.Request) -> web.Response:
    state, g = request.app[DEPS].replica.state, grants(request)
    rows = (container_view(state, i) for i in sorted(state.instances.values(), key=lambda i: (i.service, i.slot))
            if readable(g, container_env(state, i)))
    return page(request, rows, (STACK, SERVICE, HOST, STATE))


async def get_container(request: web.Request) -> web.Response:
    state = request.app[DEPS].replica.state
    return web.json_response(container_view(state, find_container(state, ID.get(request), grants(request))))


async def delete_container(request: web.Request) -> web.Response:
    replica = request.app[DEPS].replica
    inst = find_container(replica.state, ID.get(request), grants(request))
    authorize(request, Permission.DEPLOY, container_env(replica.state, inst))
    await write(request, InstanceRemove(inst.id))
    return web.json_response({"removed": inst.id})


def _created(inst: Instance) -> str:
    if not inst.container_id:
        raise NotFound(f"container {inst.id} has not been created on {inst.host} yet", field="id")
    return inst.container_id


async def logs(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    inst = find_container(deps.replica.state, ID.get(request), grants(request))
    tail, follow = TAIL.find(request), FOLLOW.get(request)
    if inst.host != deps.node.name:
        return await forward.to_owner(request, inst.host)
    container_id = _created(inst)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    with streaming(request):
        async for line in deps.engine.containers.logs(container_id, tail, follow):
            await response.write(line.encode())
    return response


async def stats(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    inst = find_container(deps.replica.state, ID.get(request), grants(request))
    start = SINCE.find(request)
    if inst.host != deps.node.name:
        return await forward.to_owner(request, inst.host)
    service = deps.replica.state.services.get(inst.service)
    if service is not None and service.spec.kind is ServiceKind.LOAD_BALANCER:  # an HAProxy: its own figures
        if start is not None:
            raise NotFound(f"{inst.id} is a load balancer's HAProxy, a host process: it has no stats history",
                           field="since")
        if deps.load_balancers is None:
            raise NotFound(f"{inst.id} runs no HAProxy on {inst.host}", field="id")
        rows = await deps.load_balancers.stats(inst.id)
        if not rows:
            raise NotFound(f"{inst.id}'s HAProxy is not running on {inst.host}", field="id")
        return web.json_response({"instance": inst.id, "host": inst.host, **summarize_lb(rows)})
    if start is not None:
        return history.answer(request, _created(inst), start)
    raw = await deps.engine.containers.stats(_created(inst))
    return web.json_response(summarize(raw).to_json())


__all__ = ["delete_container", "get_container", "list_containers", "logs", "stats"]
