"""``GET /v1/hosts/{name}/stats?since=`` and ``GET /v1/containers/{id}/stats?since=``: the samples this
host's history holds (``agent/node/history.py``), answered by the agent of the host they are about."""

from __future__ import annotations

from aiohttp import web

from agent.api.deps import DEPS
from agent.api.params import POINTS
from agent.errors import Unavailable


def answer(request: web.Request, key: str, start: float) -> web.Response:
    """``{"interval_seconds": …, "samples": [{"t": …, "cpu_percent": …, …}, …]}`` from ``start`` on."""
    deps = request.app[DEPS]
    if deps.history is None:
        raise Unavailable(f"the agent of {deps.node.name} keeps no stats history", field="since")
    return web.json_response(deps.history.answer(key, start, POINTS.find(request)))


__all__ = ["answer"]
