"""How many streams one session may hold open at once: a live feed, an events or logs stream, a shell.

Each is a task, a socket and (for logs and shells) a connection to another host held for as long as the
page stays open; without a bound one session could open them until the agent runs out of file
descriptors. A page needs one or two; :data:`PER_SESSION` leaves room for many tabs, and one more is a
429 saying why (the browser's ``EventSource`` tries again by itself once a tab is closed)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from agent.api.auth import PRINCIPAL
from agent.errors import TooManyRequests

PER_SESSION = 16
OPEN = web.AppKey("ui-open-streams", Counter[str])


@contextlib.contextmanager
def stream_slot(request: web.Request) -> Iterator[None]:
    """Hold one of the caller's session's stream slots for the ``with`` block, or a 429 at once."""
    counts = request.app[OPEN]
    key = request[PRINCIPAL].key.id
    if counts[key] >= PER_SESSION:
        raise TooManyRequests(f"this session has {PER_SESSION} live streams open already (pages, logs, shells): "
                              "close a tab and try again", retry_after=5, limit=PER_SESSION)
    counts[key] += 1
    try:
        yield
    finally:
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]


__all__ = ["OPEN", "PER_SESSION", "stream_slot"]
