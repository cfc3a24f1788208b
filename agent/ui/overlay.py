"""The overlay's peer matrix: every host's ``/v1/overlay``, asked of each host's agent (with the caller's
session as its credential, as the API's forwarding does) at once, drawn as a matrix
(:mod:`agent.ui.matrix`). The caller sees the hosts of the environments it has a role in (as
``/v1/hosts`` shows them). RTTs are measurements, not state: the fragment is fetched again every
:data:`REFRESH` seconds (and when a host changes), not from the change feed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from agent.api.auth import grants
from agent.api.deps import DEPS
from agent.api.views import readable
from agent.ui.guard import session_token
from agent.ui.matrix import STATES, Matrix, build
from agent.ui.render import current_environment, render

ASK_TIMEOUT = aiohttp.ClientTimeout(total=4, sock_connect=2)
REFRESH = 10


async def _ask(request: web.Request, host: str) -> dict[str, Any] | str:
    replica = request.app[DEPS].replica
    url = replica.api_of(host)
    if url is None:
        return "no API address known (not a live gossip member)"
    headers = {"Authorization": f"Bearer {session_token(request) or ''}"}
    try:
        async with replica.session.get(url + "/v1/overlay", headers=headers, timeout=ASK_TIMEOUT) as resp:
            body = await resp.read()
            if resp.status != 200:
                return f"its agent answered HTTP {resp.status}"
            answer = json.loads(body)
            return answer if isinstance(answer, dict) else "its agent's answer is not a JSON object"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"its agent at {url} did not answer: {exc or type(exc).__name__}"


async def gather(request: web.Request) -> Matrix:
    state, g = request.app[DEPS].replica.state, grants(request)
    env = current_environment(request, g)
    hosts = sorted(h.name for h in state.hosts.values() if readable(g, h.environment)
                   and (env is None or h.environment == env))
    answers = await asyncio.gather(*(_ask(request, h) for h in hosts))
    return build(hosts, dict(zip(hosts, answers, strict=True)))


async def overlay_page(request: web.Request) -> web.StreamResponse:
    return render(request, "overlay.html", {"m": await gather(request), "states": STATES, "refresh": REFRESH})


async def overlay_fragment(request: web.Request) -> web.StreamResponse:
    return render(request, "_overlay.html", {"m": await gather(request), "states": STATES})


__all__ = ["REFRESH", "gather", "overlay_fragment", "overlay_page"]
