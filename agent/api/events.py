"""``/v1/events``: what happened in the cluster, from the replicated state's last 1000 events.

``?index=N`` only events after N; ``&wait=30s`` blocks until there is one (or the time is up);
``?stream=1`` streams them as newline-delimited JSON as they are applied (from the change feed).
"""

from __future__ import annotations

import json

from aiohttp import web

from agent.api.deps import DEPS, streaming
from agent.api.params import INDEX, KIND, STREAM, WAIT
from agent.api.views import event_view, page
from agent.model.changes import Topic

EVENT_TOPICS = frozenset({Topic.EVENT, Topic.ALL})


async def events(request: web.Request) -> web.StreamResponse:
    replica = request.app[DEPS].replica
    after = INDEX.get(request)
    stream, wait = STREAM.get(request), WAIT.get(request) if WAIT.raw(request) is not None else None
    kind = KIND.find(request)
    changes = replica.feed.subscribe(lambda c: c.topic in EVENT_TOPICS, name="events")
    try:
        if stream:
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            with streaming(request):
                while True:
                    for event in [e for e in replica.state.events if e.index > after]:
                        if kind is None or event.kind == kind:
                            await response.write((json.dumps(event_view(event)) + "\n").encode())
                        after = event.index
                    await changes.next()
        if wait is not None and not any(e.index > after for e in replica.state.events):
            await changes.next(wait)
        return page(request, (event_view(e) for e in replica.state.events if e.index > after), (KIND,))
    finally:
        changes.close()


__all__ = ["events"]
