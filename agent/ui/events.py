"""The events and audit feed: the cluster's last events (what ``/v1/events`` answers), newest first,
filtered on the server, and followed live.

Filters (query parameters, kept in the page's links): ``kind`` (one event kind), ``audit=1`` (only what
users' requests did, each with the user, the key and the client's address), ``user`` (one user's),
the environment switcher's environment; ``before=INDEX`` pages back (:data:`PAGE_SIZE` a page). A
caller sees exactly the events ``/v1/events`` shows it (:func:`agent.api.auth.visible_events`). The
live part is ``/events/stream``: server-sent events, one ``row`` (the table row, HTML) per new
matching event, from the change feed (no polling), ``session`` when the session ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from agent.api.auth import PRINCIPAL, authenticate_token, grants, visible_events
from agent.api.deps import DEPS, streaming
from agent.errors import BadRequest, Unauthorized
from agent.model.changes import Topic
from agent.model.entities import Event, EventKind
from agent.ui.guard import session_token
from agent.ui.logs import event_stream, sse
from agent.ui.render import current_environment, render

PAGE_SIZE = 100
PING = 15.0
KINDS = tuple(k.value for k in EventKind)


@dataclasses.dataclass(frozen=True)
class Filter:
    kind: str | None
    audit: bool
    user: str | None
    environment: str | None

    def matches(self, e: Event) -> bool:
        return ((self.kind is None or e.kind == self.kind) and (not self.audit or e.actor is not None)
                and (self.user is None or e.actor == self.user)
                and (self.environment is None or e.environment == self.environment))

    def query(self) -> str:
        parts = [("kind", self.kind), ("audit", "1" if self.audit else None), ("user", self.user)]
        return urlencode([(k, v) for k, v in parts if v])


def _index(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequest(f"{name} is a log index (a whole number)", field=name)
    return int(raw)


def read_filter(request: web.Request) -> Filter:
    kind = request.query.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"kind {kind!r} is not an event kind", field="kind")
    audit = request.query.get("audit", "") in ("1", "true", "on")
    user = request.query.get("user") or None
    if user is not None and len(user) > 64:
        raise BadRequest("user is a user's name", field="user")
    return Filter(kind, audit, user, current_environment(request, grants(request)))


def shown(request: web.Request, events: Iterable[Event], f: Filter) -> list[Event]:
    return [e for e in visible_events(request, events) if f.matches(e)]


async def events_page(request: web.Request) -> web.StreamResponse:
    f = read_filter(request)
    before = _index(request, "before")
    state = request.app[DEPS].replica.state
    matching = shown(request, (e for e in state.events if before is None or e.index < before), f)
    rows = list(reversed(matching[-PAGE_SIZE:]))
    older = rows[-1].index if len(matching) > PAGE_SIZE and rows else None
    users = sorted({e.actor for e in visible_events(request, state.events) if e.actor})
    last = state.events[-1].index if state.events else 0
    return render(request, "events.html", {
        "rows": rows, "f": f, "kinds": KINDS, "users": users, "older": older, "before": before,
        "stream": f"/events/stream?after={last}" + (f"&{f.query()}" if f.query() else "") if before is None else None,
        "total": len(matching), "page_size": PAGE_SIZE})


async def events_stream(request: web.Request) -> web.StreamResponse:
    f = read_filter(request)
    after = _index(request, "after") or 0
    replica = request.app[DEPS].replica
    changes = replica.feed.subscribe(lambda c: c.topic in (Topic.EVENT, Topic.ALL), name="ui-events")
    try:
        response = await event_stream(request, 2000)
        await response.write(sse("hello", ""))
        with streaming(request):
            while True:
                fresh = [e for e in replica.state.events if e.index > after]
                if fresh:
                    after = fresh[-1].index
                for event in shown(request, fresh, f):
                    row = aiohttp_jinja2.render_string("_event_row.html", request, {"e": event, "fresh": True})
                    await response.write(sse("row", row.strip()))
                batch = await changes.next(PING)
                try:  # the session still live, and its roles as they are now (a role taken away applies)
                    request[PRINCIPAL] = authenticate_token(request, session_token(request))
                except Unauthorized as exc:
                    await response.write(sse("session", exc.message))
                    return response
                if not batch:
                    await response.write(b"event: ping\ndata: \n\n")
    finally:
        changes.close()


__all__ = ["PAGE_SIZE", "Filter", "events_page", "events_stream", "read_filter"]
