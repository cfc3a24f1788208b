"""asyncio helpers shared by the long-running loops of the agent and of the mesh's drivers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine

log = logging.getLogger("corral.tasks")


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


async def cancel_and_wait(*tasks: asyncio.Task[object] | None, timeout: float | None = None) -> None:
    """Cancel the tasks and wait until each has ended (at most ``timeout`` seconds in all, if given).

    A task that had already failed is logged, not raised: the caller is stopping, and the failure was
    the task's own (its owner reports it while it runs).
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if not live:
        return
    done, pending = await asyncio.wait(live, timeout=timeout)
    for task in pending:
        log.error("task %s did not stop within %g s", task.get_name(), timeout or 0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s had failed: %r", task.get_name(), task.exception())


@contextlib.asynccontextmanager
async def supervised(coro: Coroutine[object, object, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``coro`` as a task for as long as the context is open; cancelled and awaited on exit."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        await cancel_and_wait(task)


__all__ = ["cancel_and_wait", "supervised", "wait_event"]
