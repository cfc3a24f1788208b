"""A container's logs in the browser: the page, and its live stream (server-sent events of HTML).

The stream asks the API's own logs route (``GET /v1/containers/{id}/logs?follow=1``) of the agent of
the container's host, with the caller's session as its credential: the same authorization, the same
engine stream, from whichever node the browser talks to (this one's own API when the container is
here). Each chunk's ANSI colours become classes (:mod:`agent.ui.ansi`, the pen kept across chunks) and
go to the page as a ``lines`` event whose data is escaped HTML; ``end`` says the log ended (the
container stopped, or no follow), ``failed`` why it could not be read. The page keeps the last
:data:`KEEP_LINES` events (each a line or the few the engine sent at once).
"""

from __future__ import annotations

import asyncio
import codecs
import json

import aiohttp
from aiohttp import web

from agent.api.auth import authenticate_token, grants
from agent.api.deps import DEPS, streaming
from agent.api.forward import PROXY_TIMEOUT
from agent.api.params import TAIL
from agent.api.views import container_env, container_view, find_container
from agent.errors import Unauthorized, Unavailable
from agent.model.entities import Instance
from agent.model.policy import Permission, allowed
from agent.ui.ansi import AnsiHtml
from agent.ui.guard import session_token
from agent.ui.render import render

DEFAULT_TAIL = 500
SESSION_CHECK = 5.0
"""Seconds between checks, while a log streams, that the session is still live (a logout stops it)."""
KEEP_LINES = 5000
"""Events (a line or a few each) the page keeps, older ones leaving as new ones come: a chatty
container cannot fill the tab."""


def _tail(request: web.Request) -> int:
    """The API's own ``tail`` parameter (a 400 naming it), with the page's default."""
    value = TAIL.find(request)
    return DEFAULT_TAIL if value is None else value


def _container(request: web.Request) -> tuple[Instance, dict[str, object]]:
    state = request.app[DEPS].replica.state
    inst = find_container(state, request.match_info["id"], grants(request))  # 404 for one the caller cannot see
    return inst, container_view(state, inst)


async def logs_page(request: web.Request) -> web.StreamResponse:
    inst, view = _container(request)
    tail = _tail(request)
    may_exec = allowed(grants(request), Permission.DEPLOY, container_env(request.app[DEPS].replica.state, inst))
    return render(request, "logs.html", {"c": view, "tail": tail, "keep": KEEP_LINES, "may_exec": may_exec,
                                         "stream": f"/containers/{inst.id}/logs/stream?tail={tail}"})


async def event_stream(request: web.Request, retry_ms: int) -> web.StreamResponse:
    """A prepared server-sent events answer (``retry:`` is the browser's wait before it connects again)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(f"retry: {retry_ms}\n\n".encode())
    return response


def sse(event: str, data: str) -> bytes:
    """One server-sent event; a line break in ``data`` (LF, CR or CRLF) is one more ``data:`` line (the browser
    joins them), so no text can end the event early or add a field of its own."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # a browser ends a line at CR too
    return (f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


async def logs_stream(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    inst, _ = _container(request)
    tail = _tail(request)
    url = deps.replica.api_of(inst.host)
    response = await event_stream(request, 86_400_000)  # the page reconnects, after saying so: not the browser
    if url is None:
        await response.write(sse("failed", f"host {inst.host} is not reachable (no API address known)"))
        return response
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    ansi = AnsiHtml()
    headers = {"Authorization": f"Bearer {session_token(request) or ''}"}
    query = {"follow": "1", "tail": str(tail)} if tail else {"follow": "1"}
    try:
        with streaming(request):
            async with deps.replica.session.get(f"{url}/v1/containers/{inst.id}/logs", params=query,
                                                headers=headers, timeout=PROXY_TIMEOUT) as upstream:
                if upstream.status != 200:
                    body = await upstream.read()
                    await response.write(sse("failed", _message(upstream.status, body)))
                    return response
                checked = asyncio.get_running_loop().time()
                async for chunk in upstream.content.iter_any():
                    if (now := asyncio.get_running_loop().time()) - checked > SESSION_CHECK:
                        checked = now
                        # logged out, or no longer a reader of the container's environment: the log stops
                        still = authenticate_token(request, session_token(request))
                        env = container_env(deps.replica.state, inst)
                        if not allowed(still.grants, Permission.READ, env):
                            raise Unauthorized(f"you may no longer read environment {env}")
                    html = ansi.feed(decoder.decode(chunk))
                    if html:
                        await response.write(sse("lines", html))
                tail_html = ansi.feed(decoder.decode(b"", final=True)) + ansi.flush()
                if tail_html:
                    await response.write(sse("lines", tail_html))
        await response.write(sse("end", "the log ended (the container stopped)"))
    except (aiohttp.ClientError, TimeoutError, Unavailable) as exc:
        await response.write(sse("failed", f"host {inst.host}'s agent stopped answering: {exc}"))
    except Unauthorized as exc:
        await response.write(sse("failed", f"your session ended ({exc.message}): log in again"))
    return response


def _message(status: int, body: bytes) -> str:
    """What the API's JSON error says (the container not created yet, its host gone…)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return f"{payload['message']} (HTTP {status})"
    return f"HTTP {status}"


__all__ = ["DEFAULT_TAIL", "KEEP_LINES", "event_stream", "logs_page", "logs_stream", "sse"]
