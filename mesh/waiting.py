"""Waiting for a condition: poll it with a deadline, never sleep a fixed time and hope (STYLE.md, 20).

One rule in two flavours, for plain and for async probes: call ``probe`` every ``every`` seconds until
it returns something truthy, and return that; an exception of ``retry_on`` counts as "not yet"; past
``timeout`` seconds raise :class:`TimeoutError` naming ``what`` and the last answer or error seen.
Used by the tests, the benchmarks, the drills and the lab.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.05,
          retry_on: tuple[type[BaseException], ...] = (OSError,)) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except retry_on as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s (last: {last!r})")
        time.sleep(every)


async def until_async(what: str, probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None], timeout: float,
                      every: float = 0.02, retry_on: tuple[type[BaseException], ...] = (OSError,)) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except retry_on as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s (last: {last!r})")
        await asyncio.sleep(every)


__all__ = ["until", "until_async"]
