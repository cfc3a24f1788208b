"""Requests this node answers by asking another agent: writes go to the leader, a container's logs and
stats to the agent of its host. Both use the agent's one client session (keep-alive connections)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from agent.api.deps import DEPS, streaming
from agent.cluster.replica import NoLeader
from agent.errors import Unavailable

FORWARDED = "X-Corral-Forwarded"
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)
PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5)


async def to_leader(request: web.Request) -> web.Response:
    """Replay a write on the leader's API and hand its answer back unchanged."""
    replica = request.app[DEPS].replica
    if request.headers.get(FORWARDED):
        raise NoLeader("forwarded write reached a node that is not the leader; leadership is changing, retry")
    url = replica.leader_api()
    if url is None:
        raise NoLeader("no leader is elected (or known to this node): writes cannot be accepted now")
    body = await request.read()
    try:
        async with replica.session.request(
            request.method, url + request.path_qs, data=body, timeout=FORWARD_TIMEOUT,
            headers={FORWARDED: "1", "Content-Type": request.content_type},
        ) as resp:
            payload = await resp.read()
            out = web.Response(status=resp.status, body=payload, content_type=resp.content_type)
            if "X-Corral-Index" in resp.headers:
                out.headers["X-Corral-Leader-Index"] = resp.headers["X-Corral-Index"]
            return out
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NoLeader(f"the leader's API at {url} did not answer: {exc}") from exc


async def to_owner(request: web.Request, host: str) -> web.StreamResponse:
    """Stream the same request from the agent of the host that runs the container."""
    replica = request.app[DEPS].replica
    url = replica.api_of(host)
    if url is None:
        raise Unavailable(f"host {host} is not reachable (no API address known)", field="host")
    response = web.StreamResponse()
    try:
        async with replica.session.get(url + request.path_qs, timeout=PROXY_TIMEOUT) as upstream:
            response.set_status(upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            with streaming(request):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        if not response.prepared:
            raise Unavailable(f"host {host}'s agent at {url} did not answer: {exc}", field="host") from exc
    return response


__all__ = ["FORWARDED", "to_leader", "to_owner"]
