"""asyncio helpers shared by the agent's long-running loops."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """``event.wait()`` for at most ``timeout`` seconds; True if the event was set.

    Unlike ``asyncio.wait_for`` on Python 3.11, it never swallows a cancellation that lands just as
    the event is set: a loop built on it (``while True: await wait_event(...)``) always stops when
    its task is cancelled, so a ``stop()`` awaiting that task cannot hang.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)


__all__ = ["wait_event"]
