"""``GET /live``: the change feed as server-sent events, so a page fetches again only the parts that changed.

One event per kind of record that changed (``host``, ``stack``, ``service``, ``instance``,
``upgrade``, ``environment``; ``all`` after a snapshot), its data the Raft index this node has applied;
never the records themselves (the page asks for its fragment, authorized as any request is). Changes
that arrive together within :data:`COALESCE` seconds go out as one event per kind. A caller is told
only of changes in the environments it has a role in (and of those it cannot place: a removed
record). A ``ping`` every :data:`PING` seconds lets the page tell a live connection from a dead one
(``ui.js`` shows its banner when neither comes), and ``session`` says the session ended (revoked or
expired): the stream stops and the page asks for a new login.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from agent.api.auth import authenticate_token, grants
from agent.api.deps import DEPS, streaming
from agent.api.views import service_env
from agent.errors import Unauthorized
from agent.model.changes import Change, Topic
from agent.model.policy import role_in
from agent.ui.guard import session_token

LIVE_TOPICS = frozenset({Topic.HOST, Topic.STACK, Topic.SERVICE, Topic.INSTANCE, Topic.UPGRADE, Topic.ENVIRONMENT})
EVERY = tuple(sorted(LIVE_TOPICS))
COALESCE = 0.05
PING = 10.0
RETRY_MS = 1000
"""What the browser waits before it connects again after losing the stream (``retry:``)."""


async def live(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    replica = deps.replica
    g = [grants(request)]  # read again with every batch: a role taken away stops its records' notices

    def visible(env: str | None) -> bool:
        return env is None or role_in(g[0], env) is not None

    def wants(change: Change) -> bool:
        if change.topic not in LIVE_TOPICS:
            return False
        state = replica.state
        if change.topic is Topic.INSTANCE:
            return change.service is None or visible(state.environment_of_service(change.service))
        if change.topic in (Topic.SERVICE, Topic.UPGRADE):
            service = state.services.get(change.key)
            return service is None or visible(service_env(state, service))
        if change.topic is Topic.STACK:
            stack = state.stacks.get(change.key)
            return stack is None or visible(stack.environment)
        if change.topic is Topic.HOST:
            host = state.hosts.get(change.key)
            return host is None or visible(host.environment)
        return visible(change.key)

    changes = replica.feed.subscribe(wants, name="ui-live")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\nevent: hello\ndata: {replica.applied_index}\n\n".encode())
        with streaming(request):
            while True:
                batch = await changes.next(PING)
                try:
                    g[0] = authenticate_token(request, session_token(request)).grants
                except Unauthorized as exc:
                    await response.write(f"event: session\ndata: {exc.message}\n\n".encode())
                    return response
                if not batch:
                    await response.write(b"event: ping\ndata: \n\n")
                    continue
                await asyncio.sleep(COALESCE)  # what is applied with it comes in the same events
                batch += changes.take()
                topics = {c.topic for c in batch}
                names = EVERY if Topic.ALL in topics else sorted(t for t in topics if t in LIVE_TOPICS)
                index = replica.applied_index
                await response.write("".join(f"event: {t}\ndata: {index}\n\n" for t in names).encode())
    except ConnectionResetError:  # the page went away (closed, reloaded, navigated): nothing to tell anyone
        return response
    finally:
        changes.close()


__all__ = ["COALESCE", "LIVE_TOPICS", "PING", "live"]
