"""What is wrong with this agent, part by part, and telling the cluster.

Each part registers a function that says what is wrong with it now (``None``: nothing): Raft (its
storage failed, its loop ended), gossip, the leader loop, the reconciler (its loop ended, passes keep
failing), the overlay (it could not start, its worker died). ``GET /v1/health`` answers ``degraded``
with the reasons while any says something; and every ``PERIOD`` seconds the summary (``ok`` or
``degraded: …``) goes into this node's gossip metadata when it changed, so ``corral hosts`` on any
node shows every host's health. Asking costs no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mesh.aio import supervised

log = logging.getLogger("corral.health")

PERIOD = 1.0
MAX_SUMMARY = 160  # characters of reasons carried in gossip metadata


class HealthMonitor:
    def __init__(self, publish: Callable[[str], None]) -> None:
        self._parts: dict[str, Callable[[], str | None]] = {}
        self._publish = publish
        self.summary = "starting"

    def add(self, part: str, problem: Callable[[], str | None]) -> None:
        self._parts[part] = problem

    def problems(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for part, problem in self._parts.items():
            try:
                out[part] = problem()
            except Exception as exc:  # a check that fails is itself a problem, not a crash
                out[part] = f"its health check failed: {exc!r}"
        return out

    def summarize(self) -> str:
        reasons = [f"{part}: {problem}" for part, problem in sorted(self.problems().items()) if problem]
        if not reasons:
            return "ok"
        text = "degraded: " + "; ".join(reasons)
        return text if len(text) <= MAX_SUMMARY else text[:MAX_SUMMARY - 1] + "…"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HealthMonitor]:
        async def loop() -> None:
            while True:
                summary = self.summarize()
                if summary != self.summary:
                    (log.info if summary == "ok" else log.warning)("health: %s", summary)
                    self.summary = summary
                    self._publish(summary)
                await asyncio.sleep(PERIOD)

        async with supervised(loop(), "health"):
            yield self

__all__ = ["HealthMonitor"]
