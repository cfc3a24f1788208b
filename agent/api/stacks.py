"""Stacks: a named group of services in an environment."""

from __future__ import annotations

from aiohttp import web

from agent.api.auth import authorize, grants, write
from agent.api.body import json_object
from agent.api.deps import DEPS
from agent.api.params import ENVIRONMENT, ID, VOLUMES
from agent.api.views import find_stack, page, readable, stack_view
from agent.model import spec as specs
from agent.model.commands import StackCreate, StackRemove
from agent.model.policy import Permission


async def list_stacks(request: web.Request) -> web.Response:
    state, g = request.app[DEPS].replica.state, grants(request)
    return page(request, (stack_view(state, s) for s in state.stacks.values() if readable(g, s.environment)),
                (ENVIRONMENT,))


async def get_stack(request: web.Request) -> web.Response:
    state = request.app[DEPS].replica.state
    return web.json_response(stack_view(state, find_stack(state, ID.get(request), grants(request))))


async def create_stack(request: web.Request) -> web.Response:
    replica = request.app[DEPS].replica
    body = await json_object(request, ("name", "environment"))
    name = specs.name(body.get("name"))
    environment = specs.name(body.get("environment", "default"), "environment")
    authorize(request, Permission.DEPLOY, environment, hidden=("environment", environment))
    outcome = await write(request, StackCreate(name, environment))
    assert outcome.id is not None
    return web.json_response(stack_view(replica.state, replica.state.stacks[outcome.id]), status=201)


async def delete_stack(request: web.Request) -> web.Response:
    replica = request.app[DEPS].replica
    stack = find_stack(replica.state, ID.get(request), grants(request))
    authorize(request, Permission.DEPLOY, stack.environment)
    await write(request, StackRemove(stack.id, VOLUMES.get(request)))
    return web.json_response({"removed": stack.id})


__all__ = ["create_stack", "delete_stack", "get_stack", "list_stacks"]
