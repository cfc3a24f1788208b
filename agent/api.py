"""The agent's HTTP API (``/v1``): routes in one place, one error middleware, typed app keys.

Every node answers the API; today it tells about the node itself. Errors are always JSON:
``{"error": CODE, "message": TEXT}`` with a 4xx/5xx status, never an HTML page or a traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agent import __version__, api_kv, api_members, api_stacks, hostinfo, keys, openapi, overlay_runtime
from agent.cluster import Cluster
from agent.config import AgentConfig
from agent.datadir import DataDir
from agent.docker import DockerEngine
from agent.errors import BadRequest, CorralError, EngineUnreachable
from agent.spec import SpecError
from mesh.keyring import Keyring
from mesh.node import GossipNode

log = logging.getLogger("corral.api")


@dataclasses.dataclass
class AgentDeps:
    """The long-lived objects the handlers use, made by the agent before the app starts."""

    engine: DockerEngine
    data_dir: DataDir
    started_monotonic: float = dataclasses.field(default_factory=time.monotonic)


CONFIG_KEY = web.AppKey("config", AgentConfig)
DEPS_KEY = web.AppKey("deps", AgentDeps)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, code: str, message: str, **details: Any) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors and aiohttp's own HTTP errors to JSON; log what was not expected."""
    try:
        return await handler(request)
    except CorralError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except SpecError as exc:  # a request field the spec rules refuse: 400 naming it
        bad = BadRequest(str(exc), field=exc.field)
        return web.json_response(bad.to_json(), status=bad.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = f"{request.method} {request.path}: {exc.reason}"
        return json_error(exc.status, code, message)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal", "internal error; see the agent's log")


async def health(request: web.Request) -> web.Response:
    """Liveness and the one dependency that matters today: the Docker Engine.

    Always 200 while the agent runs, with ``status`` ``ok`` or ``degraded`` and the reason, so a
    probe can tell "agent dead" (no answer) from "engine gone" (an answer that says so).
    """
    deps = request.app[DEPS_KEY]
    body: dict[str, Any] = {
        "status": "ok",
        "version": __version__,
        "node": request.app[CONFIG_KEY].name,
        "uptime_s": round(time.monotonic() - deps.started_monotonic, 3),
    }
    try:
        version = await deps.engine.version()
        body["docker"] = {"version": version.get("Version"), "api_version": version.get("ApiVersion")}
    except EngineUnreachable as exc:
        body["status"] = "degraded"
        body["docker"] = {"error": exc.message}
    return web.json_response(body)


async def host(request: web.Request) -> web.Response:
    """What this host is and has: name, underlay address, CPUs, memory, and its engine."""
    config = request.app[CONFIG_KEY]
    deps = request.app[DEPS_KEY]
    return web.json_response(
        {
            "name": config.name,
            "hostname": hostinfo.os_hostname(),
            "node_id": deps.data_dir.node_id,
            "address": config.bind,
            "api_url": config.api_url,
            "cpus": hostinfo.cpu_count(),
            "memory": hostinfo.meminfo(),
            "docker": await deps.engine.info(),
        }
    )


def build_app(config: AgentConfig, deps: AgentDeps, cluster: Cluster, gossip: GossipNode,
              ring: Keyring, overlay: overlay_runtime.OverlayRuntime) -> web.Application:
    """The whole API as the agent serves it (also what the OpenAPI test checks)."""
    app = create_app(config, deps, cluster)
    api_stacks.add_routes(app)
    api_stacks.add_container_io_routes(app, deps.engine, config.name)
    api_members.add_routes(app, gossip)
    keys.add_routes(app, ring)
    overlay_runtime.add_routes(app, overlay)
    openapi.add_routes(app)
    return app


def create_app(config: AgentConfig, deps: AgentDeps, cluster: Cluster | None = None) -> web.Application:
    app = web.Application(middlewares=[api_kv.index_header, error_middleware])
    app[CONFIG_KEY] = config
    app[DEPS_KEY] = deps
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/host", host)
    if cluster is not None:
        api_kv.add_routes(app, cluster)
    return app
