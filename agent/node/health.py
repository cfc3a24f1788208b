"""Health checks of this host's containers: HTTP and TCP probes made by the agent.

A service's ``health_check`` (``agent/model/spec.py``) of type ``http`` or ``tcp`` is probed here, from the
host's network namespace to the container's address on the ``corral`` network, so it needs nothing in
the image (Rancher 1.x checked from outside the container too). ``command`` checks are Docker's own
(``Healthcheck`` in the container's config, run in the container); the reconciler reads their result
from the engine. Either way the reconciler sees one of ``starting``, ``healthy``, ``unhealthy`` per
container and replaces an unhealthy one when the service says ``on_unhealthy: recreate``.

``Track`` is the pure part (what a run of results means); ``HealthProber`` runs one task per checked
container and calls ``on_change`` when a container's health changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Set

import aiohttp

from agent.model.spec import HealthCheck, HealthType
from mesh.aio import cancel_and_wait

log = logging.getLogger(__name__)

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


class Track:
    """The health of one container from its probe results, as Docker counts them.

    ``starting`` until the first success; ``retries`` failures in a row make it ``unhealthy``, except
    within ``start_period`` of the container's start while it has never succeeded; one success makes
    it ``healthy`` again.
    """

    def __init__(self, retries: int, start_period: float, started: float) -> None:
        self.retries = retries
        self.grace_until = started + start_period
        self.state = STARTING
        self.failures = 0
        self.ever_healthy = False
        self.last_error: str | None = None

    def result(self, ok: bool, now: float, error: str | None = None) -> bool:
        """Record one probe; True if the state changed."""
        before = self.state
        if ok:
            self.failures = 0
            self.ever_healthy = True
            self.last_error = None
            self.state = HEALTHY
        else:
            self.last_error = error
            if not self.ever_healthy and now < self.grace_until:
                return False  # still starting: failures in the start period do not count
            self.failures += 1
            if self.failures >= self.retries:
                self.state = UNHEALTHY
        return self.state != before


class ReplaceBackoff:
    """When to replace an instance's unhealthy container again, so one that never gets healthy is not
    recreated every few seconds forever (a Raft write and an event each time).

    The first replacement is at once; each further one without the instance having been healthy in
    between waits ``first`` × 2^(n−1) seconds, at most ``cap``. Turning healthy starts over.
    """

    def __init__(self, first: float = 10.0, cap: float = 300.0) -> None:
        self.first = first
        self.cap = cap
        self._streak: dict[str, tuple[int, float]] = {}  # instance → (replacements in a row, when the last)

    def wait(self, instance: str, now: float) -> float:
        """Seconds until ``instance`` may be replaced again (0: now)."""
        streak = self._streak.get(instance)
        if streak is None:
            return 0.0
        count, last = streak
        return max(0.0, last + min(self.cap, self.first * 2.0 ** (count - 1)) - now)

    def replaced(self, instance: str, now: float) -> None:
        count = self._streak.get(instance, (0, 0.0))[0]
        self._streak[instance] = (count + 1, now)

    def healthy(self, instance: str) -> None:
        self._streak.pop(instance, None)

    def streak(self, instance: str) -> int:
        return self._streak.get(instance, (0, 0.0))[0]

    def forget_except(self, instances: set[str]) -> None:
        for gone in set(self._streak) - instances:
            del self._streak[gone]


async def probe(check: HealthCheck, address: str, session: aiohttp.ClientSession) -> str | None:
    """One probe of ``check`` against ``address``; None when healthy, else why not."""
    timeout = check.timeout
    port = check.port
    if port is None:  # spec.health_check gives every http and tcp check a port
        return "the check names no port"
    try:
        if check.type == HealthType.TCP:
            async with asyncio.timeout(timeout):  # not wait_for: in 3.11 it can swallow a cancellation
                _reader, writer = await asyncio.open_connection(address, port)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return None
        url = f"http://{address}:{port}{check.path}"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as resp:
            if 200 <= resp.status < 400:
                return None
            return f"GET {check.path} answered {resp.status}"
    except TimeoutError:
        return f"no answer on port {port} within {timeout:g} s"
    except aiohttp.ClientConnectorError as exc:
        return f"cannot connect to port {port}: {_why(exc.os_error)}"
    except OSError as exc:
        return f"cannot connect to port {port}: {_why(exc)}"
    except aiohttp.ClientError as exc:
        return f"GET {check.path} failed: {type(exc).__name__}: {exc}"[:200]


def _why(exc: OSError) -> str:
    """``connection refused``, ``no route to host`` (asyncio's own message names the address again)."""
    return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()


class HealthProber:
    """One probing task per (container id, check); ``sync`` says which containers to probe."""

    def __init__(self, on_change: Callable[[], None], clock: Callable[[], float] = time.monotonic,
                 stagger: Callable[[float], float] | None = None) -> None:
        self.on_change = on_change
        self.clock = clock
        #: Delay before a container's first probe, from its interval: a random phase, so the probes
        #: of many containers (all new after an agent restart) do not fire in one burst each interval.
        self.stagger = stagger or (lambda interval: random.uniform(0.0, interval))
        self.tracks: dict[str, Track] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def health(self, container_id: str) -> str | None:
        track = self.tracks.get(container_id)
        return track.state if track else None

    def detail(self, container_id: str) -> str | None:
        """The last failed probe's reason while the container is not healthy."""
        track = self.tracks.get(container_id)
        return track.last_error if track and track.state != HEALTHY else None

    def sync(self, wanted: Mapping[str, tuple[HealthCheck, str]], fresh: Set[str] = frozenset()) -> None:
        """Probe exactly ``wanted``: container id → (health check, address). A ``fresh`` one (just started
        by this host) is probed at once rather than at a random phase: an upgrade's batch, or a
        replacement, waits for its first healthy answer (the phase spreads the probes of containers
        found running, after an agent restart)."""
        for cid in list(self._tasks):
            if cid not in wanted:
                self._tasks.pop(cid).cancel()
                self.tracks.pop(cid, None)
        for cid, (check, address) in wanted.items():
            if cid not in self._tasks:
                self.tracks[cid] = Track(check.retries, check.start_period, self.clock())
                delay = 0.0 if cid in fresh else self.stagger(check.interval)
                self._tasks[cid] = asyncio.get_running_loop().create_task(self._run(cid, check, address, delay))

    async def _run(self, cid: str, check: HealthCheck, address: str, delay: float) -> None:
        if self._session is None:
            # No pool limit (aiohttp's default of 100 connections would queue the probes of a host
            # running more checked containers than that, and the queued ones would time out as
            # unhealthy) and no keep-alive: each probe opens its own connection, as a client would.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        interval = check.interval
        await asyncio.sleep(delay)
        while True:
            started = self.clock()
            try:
                error = await probe(check, address, self._session)
            except Exception as exc:  # never let one odd failure end the container's probing
                error = f"probe failed: {type(exc).__name__}: {exc}"[:200]
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # the cancel landed as the probe finished: honour it
            track = self.tracks.get(cid)
            if track is None:
                return
            if track.result(error is None, self.clock(), error):
                log.info("container %s is %s%s", cid[:12], track.state, f" ({error})" if error else "")
                self.on_change()
            await asyncio.sleep(max(0.0, interval - (self.clock() - started)))

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks.values(), timeout=3.0)
        self._tasks.clear()
        self.tracks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["HEALTHY", "STARTING", "UNHEALTHY", "HealthProber", "ReplaceBackoff", "Track", "probe"]
