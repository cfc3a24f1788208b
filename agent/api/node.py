"""This node: ``/v1/health`` (is the agent and each of its parts working) and ``/v1/host``."""

from __future__ import annotations

import time

from aiohttp import web

from agent import __version__
from agent.api.deps import DEPS, DOCUMENT
from agent.errors import EngineUnreachable
from agent.node import hostinfo


async def health(request: web.Request) -> web.Response:
    """Always 200 while the agent runs, with ``status`` ``ok`` or ``degraded`` and the reasons, so a
    probe can tell "agent dead" (no answer) from "a part of it failed" (an answer that says which)."""
    deps = request.app[DEPS]
    checks = dict(deps.health.problems())
    body: dict[str, object] = {"version": __version__, "node": deps.node.name,
                               "uptime_s": round(time.monotonic() - deps.node.started, 3)}
    try:
        version = await deps.engine.version()
        body["docker"] = {"version": version.get("Version"), "api_version": version.get("ApiVersion")}
        checks["docker"] = None
    except EngineUnreachable as exc:
        body["docker"] = {"error": exc.message}
        checks["docker"] = exc.message
    reasons = [f"{part}: {problem}" for part, problem in sorted(checks.items()) if problem]
    body["status"] = "degraded" if reasons else "ok"
    body["checks"] = {part: problem or "ok" for part, problem in sorted(checks.items())}
    body["reasons"] = reasons
    return web.json_response(body)


async def host(request: web.Request) -> web.Response:
    """What this host is and has: name, underlay address, CPUs, memory, and its engine."""
    deps = request.app[DEPS]
    return web.json_response({
        "name": deps.node.name,
        "hostname": hostinfo.os_hostname(),
        "node_id": deps.node.node_id,
        "address": deps.node.address,
        "api_url": deps.node.api_url,
        "cpus": hostinfo.cpu_count(),
        "memory": hostinfo.meminfo(),
        "docker": await deps.engine.info(),
    })


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


__all__ = ["health", "host", "openapi"]
