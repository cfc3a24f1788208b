"""Services: N containers of one spec across the hosts, and what can be done to them."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from agent.api.auth import authorize, grants, write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.params import ID, STACK, STATE
from agent.api.views import find_service, find_stack, page, readable, service_env, service_view
from agent.errors import BadRequest
from agent.model import spec as specs
from agent.model.commands import ServiceCreate, ServiceRemove, ServiceScale, ServiceSetState, ServiceUpdate
from agent.model.entities import Instance, Service, ServiceState
from agent.model.images import reference_problem
from agent.model.lb import ServiceKind
from agent.model.policy import Permission
from agent.model.spec import SERVICE_FIELDS
from agent.node.docker import Engine
from agent.node.lbconfig import summarize as summarize_lb


async def list_services(request: web.Request) -> web.Response:
    state, g = request.app[DEPS].replica.state, grants(request)
    return page(request, (service_view(state, s) for s in state.services.values()
                          if readable(g, service_env(state, s))), (STACK, STATE))


async def get_service(request: web.Request) -> web.Response:
    state = request.app[DEPS].replica.state
    service = find_service(state, ID.get(request), grants(request))
    view = service_view(state, service)
    if service.spec.kind is ServiceKind.LOAD_BALANCER:
        view["lb_instances"] = await asyncio.gather(*(_lb_figures(request, i) for i in state.instances_of(service.id)))
    return web.json_response(view)


LB_FIGURES_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


async def _lb_figures(request: web.Request, inst: Instance) -> dict[str, object]:
    """A load balancer instance's figures from HAProxy's stats on its host (asked there, as a container's
    stats are), or why there are none."""
    deps = request.app[DEPS]
    base: dict[str, object] = {"instance": inst.id, "host": inst.host, "status": inst.status.value}
    try:
        if inst.host == deps.node.name:
            rows = await deps.load_balancers.stats(inst.id) if deps.load_balancers else []
            return {**base, **summarize_lb(rows)} if rows else {**base, "error": "its HAProxy is not running"}
        url = deps.replica.api_of(inst.host)
        if url is None:
            return {**base, "error": f"host {inst.host} is not reachable"}
        credential = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        async with deps.replica.session.get(f"{url}/v1/containers/{inst.id}/stats", headers=credential,
                                            timeout=LB_FIGURES_TIMEOUT) as answer:
            body = await answer.json()
            if answer.status != 200:
                return {**base, "error": str(body.get("message", answer.status))}
            return {**base, **{k: v for k, v in body.items() if k not in ("instance", "host")}}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return {**base, "error": f"no figures from {inst.host}: {exc!r}"}


def changing(request: web.Request, key: str | None = None) -> Service:
    """The service ``key`` (or the path) names, which the caller must be allowed to deploy to (404 for
    one it may not see, 403 for one it may only read)."""
    state = request.app[DEPS].replica.state
    service = find_service(state, ID.get(request) if key is None else key, grants(request))
    authorize(request, Permission.DEPLOY, service_env(state, service))
    return service


async def create_service(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await json_object(request, ("stack", "name", *SERVICE_FIELDS))
    name = specs.name(body.get("name"))
    stack_key = body.get("stack")
    if not isinstance(stack_key, str):
        raise BadRequest("stack is required (an id or a name)", field="stack")
    stack = find_stack(deps.replica.state, stack_key, grants(request))
    authorize(request, Permission.DEPLOY, stack.environment)
    raw = {k: v for k, v in body.items() if k not in ("stack", "name")}
    spec = specs.parse(raw)  # 400 naming the field before anything is proposed
    await check_image(deps.engine, spec.image)
    outcome = await write(request, ServiceCreate(stack.id, name, raw))
    assert outcome.id is not None
    return web.json_response(service_view(deps.replica.state, deps.replica.state.services[outcome.id]), status=201)


async def check_image(engine: Engine, image: str) -> None:
    """A reference Docker can pull (or an image id), else a 400 naming what is wrong. Whether an image
    exists is the hosts' to find out (the catalog, a peer, the registry): a missing one is a
    ``pull-failed`` container with the registry's reason, retried, not a refused service."""
    problem = reference_problem(image)
    if problem is not None:
        raise BadRequest(problem, field="image")


async def update_service(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    service = changing(request)
    changes = await json_object(request, SERVICE_FIELDS)
    if not changes:
        raise BadRequest("name at least one field to change", field="body")
    spec = service.spec.changed(changes)  # 400 naming the field before anything is proposed
    if "image" in changes:
        await check_image(deps.engine, spec.image)
    await write(request, ServiceUpdate(service.id, changes))
    return web.json_response(service_view(deps.replica.state, deps.replica.state.services[service.id]))


async def scale_service(request: web.Request) -> web.Response:
    service = changing(request)
    body = await json_object(request, ("scale",))
    return web.json_response(await scale(request, service, body.get("scale")))


async def scale(request: web.Request, service: Service, value: object) -> dict[str, object]:
    """Set ``service``'s scale for the caller (the API's route and the web UI's form): a 400 for a bad
    one before anything is proposed; the service's view once this node has applied it."""
    new_scale = service.spec.changed({"scale": value}).scale  # 400 for a bad scale
    await write(request, ServiceScale(service.id, new_scale))
    replica = request.app[DEPS].replica
    return service_view(replica.state, replica.state.services[service.id])


async def set_state(request: web.Request, service: Service, state: ServiceState, restart: bool) -> dict[str, object]:
    """Stop, start or restart ``service`` for the caller (the API's routes and the web UI's buttons)."""
    await write(request, ServiceSetState(service.id, state, restart))
    replica = request.app[DEPS].replica
    return service_view(replica.state, replica.state.services[service.id])


async def stop_service(request: web.Request) -> web.Response:
    return web.json_response(await set_state(request, changing(request), ServiceState.STOPPED, restart=False))


async def start_service(request: web.Request) -> web.Response:
    return web.json_response(await set_state(request, changing(request), ServiceState.ACTIVE, restart=False))


async def restart_service(request: web.Request) -> web.Response:
    return web.json_response(await set_state(request, changing(request), ServiceState.ACTIVE, restart=True))


async def delete_service(request: web.Request) -> web.Response:
    service = changing(request)
    await write(request, ServiceRemove(service.id))
    return web.json_response({"removed": service.id})


__all__ = ["changing", "check_image", "create_service", "delete_service", "get_service", "list_services",
           "restart_service", "scale", "scale_service", "set_state", "start_service", "stop_service", "update_service"]
