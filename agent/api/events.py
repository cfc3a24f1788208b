"""``/v1/events``: what happened in the cluster, from the replicated state's last 1000 events.

``?index=N`` only events after N; ``&wait=30s`` blocks until there is one (or the time is up);
``?stream=1`` streams them as newline-delimited JSON as they are applied (from the change feed);
``?audit=1`` only those a user's request made (each names the user, the key and the client's address).
A caller sees the events of the environments it has a role in, and the cluster's own.
"""

from __future__ import annotations

import json

from aiohttp import web

from agent.api.auth import visible_events
from agent.api.deps import DEPS, streaming
from agent.api.params import AUDIT, INDEX, KIND, STREAM, WAIT
from agent.api.views import event_view, page
from agent.model.changes import Topic

EVENT_TOPICS = frozenset({Topic.EVENT, Topic.ALL})


async def events(request: web.Request) -> web.StreamResponse:
    replica = request.app[DEPS].replica
    after = INDEX.get(request)
    stream, wait = STREAM.get(request), WAIT.get(request) if WAIT.raw(request) is not None else None
    kind, audit = KIND.find(request), AUDIT.get(request)
    changes = replica.feed.subscribe(lambda c: c.topic in EVENT_TOPICS, name="events")
    try:
        if stream:
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            with streaming(request):
                while True:
                    for event in [e for e in replica.state.events if e.index > after]:
                        if (kind is None or event.kind == kind) and (not audit or event.actor is not None) and \
                                any(visible_events(request, (event,))):
                            await response.write((json.dumps(event_view(event)) + "\n").encode())
                        after = event.index
                    await changes.next()
        if wait is not None and not any(e.index > after for e in replica.state.events):
            await changes.next(wait)
        shown = visible_events(request, (e for e in replica.state.events if e.index > after))
        return page(request, (event_view(e) for e in shown if not audit or e.actor is not None), (KIND,))
    finally:
        changes.close()


__all__ = ["events"]
