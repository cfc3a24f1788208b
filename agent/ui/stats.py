"""The figures behind the sparklines: a host's or a container's stats history, asked of this node's API
as the caller (its session is the bearer credential), so the API authorizes it and forwards it to the
host that measures it, exactly as for ``corral``. The answer is always ``{"interval_seconds", "samples":
[{"t", "cpu_percent", "memory": {"usage", "limit"}, …}]}``: an API that knows no history yet (only the
current sample) gives one sample, and the page says "no history yet"."""

from __future__ import annotations

import time
from urllib.parse import quote

import aiohttp
from aiohttp import web

from agent.api.deps import DEPS
from agent.errors import Unavailable
from agent.ui.guard import session_token

SINCE = "15m"
TIMEOUT = aiohttp.ClientTimeout(total=10)


def samples(body: dict[str, object], now: float) -> dict[str, object]:
    """The history form of a stats answer (a history already is one; a single sample becomes one)."""
    if isinstance(body.get("samples"), list):
        return {"interval_seconds": body.get("interval_seconds"), "samples": body["samples"]}
    memory = body.get("memory") if isinstance(body.get("memory"), dict) else {}
    assert isinstance(memory, dict)
    limit = memory.get("limit", body.get("memory_total"))
    sample = {"t": now, "cpu_percent": body.get("cpu_percent"), "memory": {**memory, "limit": limit},
              "network": body.get("network"), "block_io": body.get("block_io")}
    return {"interval_seconds": None, "samples": [sample] if body.get("cpu_percent") is not None else []}


async def _history(request: web.Request, path: str) -> web.Response:
    deps = request.app[DEPS]
    base = deps.replica.api_of(deps.node.name) or deps.node.api_url
    headers = {"Authorization": f"Bearer {session_token(request)}", "Accept": "application/json"}
    try:
        async with deps.replica.session.get(f"{base}{path}", params={"since": SINCE}, headers=headers,
                                            timeout=TIMEOUT) as answer:
            body = await answer.json(content_type=None)
            status = answer.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise Unavailable(f"no figures from this node's API: {exc!r}") from exc
    if status != 200 or not isinstance(body, dict):
        return web.json_response(body, status=status if status >= 400 else 502)
    return web.json_response(samples(body, time.time()))


async def host_history(request: web.Request) -> web.Response:
    return await _history(request, f"/v1/hosts/{quote(request.match_info['name'], safe='')}/stats")


async def container_history(request: web.Request) -> web.Response:
    return await _history(request, f"/v1/containers/{quote(request.match_info['id'], safe='')}/stats")


__all__ = ["SINCE", "container_history", "host_history", "samples"]
