"""Requests this node answers by asking another agent: a container's logs and stats come from the agent
of its host, through the agent's one client session (keep-alive connections). (Writes are not
forwarded as HTTP requests: any node builds the command and commits it through the leader,
``agent/cluster/replica.py``.)"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from agent.api.deps import DEPS, streaming
from agent.errors import Unavailable

PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5)


async def to_owner(request: web.Request, host: str) -> web.StreamResponse:
    """Stream the same request from the agent of the host that runs the container."""
    replica = request.app[DEPS].replica
    url = replica.api_of(host)
    if url is None:
        raise Unavailable(f"host {host} is not reachable (no API address known)", field="host")
    response = web.StreamResponse()
    try:
        # the caller's own credential goes along: the owner's agent authorizes the request itself
        credential = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        async with replica.session.get(url + request.path_qs, timeout=PROXY_TIMEOUT, headers=credential) as upstream:
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


__all__ = ["to_owner"]
