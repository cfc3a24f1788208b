"""The change feed: every applied change, handed to the parts of the agent that want it.

After each batch of applied Raft entries, :class:`Feed` takes the state machine's outbox
(:meth:`~agent.model.state.ClusterState.take_changes`) and offers each change to every
:class:`Subscription`; a subscription keeps the ones its ``wants`` predicate accepts and wakes its
reader. The predicate runs right after the batch was applied, so it may read the state; it must be
cheap (it sees every change) and must not block.

A reader that falls behind never makes the feed hold memory without bound: past ``MAX_PENDING``
changes a subscription collapses to one ``Topic.ALL`` change ("read everything again"), as it does
when a snapshot was installed. So each subscriber does work in proportion to the changes that
concern it, never to the size of the state (STYLE.md point 24).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.model.changes import Change, Topic
from mesh.aio import wait_event

MAX_PENDING = 10_000

Wants = Callable[[Change], bool]


class Subscription:
    def __init__(self, feed: Feed, wants: Wants | None, name: str, notify: Callable[[], None] | None) -> None:
        self.name = name
        self._feed = feed
        self._wants = wants
        self._notify = notify
        self._pending: list[Change] = []
        self._ready = asyncio.Event()
        self.delivered = 0
        """Changes handed to the reader so far (a counter for tests and status pages)."""

    def offer(self, change: Change) -> None:
        if change.topic is not Topic.ALL and self._wants is not None and not self._wants(change):
            return
        if change.topic is Topic.ALL or len(self._pending) >= MAX_PENDING:
            self._pending = [Change(change.index, Topic.ALL)]
        elif not (self._pending and self._pending[0].topic is Topic.ALL):
            self._pending.append(change)
        self._ready.set()
        if self._notify is not None:
            self._notify()

    def take(self) -> list[Change]:
        """The changes pending now (possibly none), oldest first."""
        out, self._pending = self._pending, []
        self._ready.clear()
        self.delivered += len(out)
        return out

    async def next(self, timeout: float | None = None) -> list[Change]:
        """Wait for at least one wanted change (or ``timeout`` seconds: then maybe none) and take them."""
        if not self._pending:
            if timeout is None:
                await self._ready.wait()
            else:
                await wait_event(self._ready, timeout)
        return self.take()

    @property
    def ready(self) -> asyncio.Event:
        """Set while changes are pending: for loops that wait on several things at once."""
        return self._ready

    def close(self) -> None:
        self._feed.unsubscribe(self)


class Feed:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def subscribe(self, wants: Wants | None = None, name: str = "",
                  notify: Callable[[], None] | None = None) -> Subscription:
        """A new reader of the changes ``wants`` accepts (all of them when None); ``notify`` is called
        whenever one is added (a loop that waits on its own event sets it there)."""
        sub = Subscription(self, wants, name, notify)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def publish(self, changes: list[Change]) -> None:
        for change in changes:
            for sub in list(self._subscriptions):
                sub.offer(change)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)


__all__ = ["MAX_PENDING", "Feed", "Subscription", "Wants"]
