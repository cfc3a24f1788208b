"""The agent's HTTP API (``/v1``): one app factory over the route table, one error path, typed app keys.

Every route but ``GET /v1/health`` and ``POST /v1/auth/login`` needs a bearer token
(:mod:`agent.api.auth`); the agent's internal routes are sealed with the cluster's key instead.
Every response carries ``X-Corral-Index`` (the Raft index this node has applied) and
``X-Corral-Leader``; while no leader is known, ``X-Corral-Stale`` says the answer may be behind.
"""

from __future__ import annotations

from aiohttp import web

from agent.api.auth import PRINCIPAL, authenticate, authorize
from agent.api.deps import DEPS, DOCUMENT, STREAMS, ApiDeps, Streams
from agent.api.errors import Handler, error_middleware
from agent.api.metrics import METRICS, Metrics, http_middleware
from agent.api.openapi import document
from agent.api.routes import ROUTES, Route
from agent.errors import Forbidden
from agent.model.policy import Permission

PATH_PATTERNS = {"{key}": r"{key:[\s\S]+}"}  # a kv key may hold "/" (and any other character)
MAX_LINE_SIZE = 128 * 1024
"""The HTTP server's request line limit (``web.AppRunner(app, max_line_size=MAX_LINE_SIZE)``): as long as the
longest the document allows, percent-encoded (an exec's command is in its query: 16 arguments of 512
characters, 12 bytes each at worst, and a 256-character id), not aiohttp's 8190 bytes."""


@web.middleware
async def index_header(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        replica = request.app[DEPS].replica
        response.headers["X-Corral-Index"] = str(replica.applied_index)
        leader = replica.leader
        response.headers["X-Corral-Leader"] = leader or ""
        if leader is None:  # a read answered now may miss writes: say so on every response
            response.headers["X-Corral-Stale"] = "no leader known: this node's replica may be behind"
    return response


async def _end_streams(app: web.Application) -> None:
    """A stream never ends by itself (an events feed, a followed log): end them all when the agent stops,
    instead of waiting out aiohttp's shutdown timeout for each."""
    for task in list(app[STREAMS].tasks):
        task.cancel()


def _checked(route: Route) -> Handler:
    """The route's handler, after the caller was authenticated (401), the route's cluster-wide
    permission checked (403) and every parameter it declares parsed (400): all before the handler
    starts anything (a stream, a blocking wait, a write)."""
    public = route.permission in (Permission.PUBLIC, Permission.SYSTEM)  # system: sealed, checked by its handler
    asks_here = route.permission in (Permission.ADMIN, Permission.METRICS) or route.environment is not None
    internal = route.permission is Permission.SYSTEM

    async def handler(request: web.Request) -> web.StreamResponse:
        if internal and request.secure:
            transport = request.transport
            if transport is None or not transport.get_extra_info("peercert"):
                raise Forbidden("internal routes take agents' requests only: present this cluster's node certificate")
        if not public:
            request[PRINCIPAL] = caller = authenticate(request)
            if caller.grants.scraper and route.permission is not Permission.METRICS:
                request.app[DEPS].auth.stats.forbidden += 1
                raise Forbidden("a metrics key may only scrape GET /metrics", permission=route.permission.value)
            if asks_here:
                authorize(request, route.permission, route.environment)
        for param in route.params:
            param.check(request)
        return await route.handler(request)

    return handler


def aiohttp_path(route: Route) -> str:
    path = route.path
    for name, pattern in PATH_PATTERNS.items():
        path = path.replace(name, pattern)
    return path


def create_app(deps: ApiDeps) -> web.Application:
    app = web.Application(middlewares=[http_middleware, index_header, error_middleware])
    app[DEPS] = deps
    app[METRICS] = Metrics(deps)
    app[DOCUMENT] = document(ROUTES)
    app[STREAMS] = Streams()
    app.on_shutdown.append(_end_streams)
    for route in ROUTES:
        app.router.add_route(route.method, aiohttp_path(route), _checked(route))
    return app


__all__ = ["MAX_LINE_SIZE", "create_app", "index_header"]
