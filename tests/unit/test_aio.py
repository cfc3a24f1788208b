"""mesh.aio.wait_event: a bounded event wait that never swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from mesh.aio import wait_event


async def test_returns_true_when_set_and_false_on_timeout() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, ev.set)
    assert await wait_event(ev, 5.0) is True


async def test_a_cancel_that_lands_as_the_event_is_set_still_cancels() -> None:
    """The case 3.11's wait_for gets wrong: set and cancel in the same loop iteration."""
    for _ in range(50):
        ev = asyncio.Event()
        rounds = 0

        async def loop(ev: asyncio.Event = ev) -> None:
            nonlocal rounds
            while True:
                await wait_event(ev, 1.0)
                ev.clear()
                rounds += 1

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)
        ev.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)
        assert task.cancelled()


async def test_no_waiter_is_left_behind() -> None:
    ev = asyncio.Event()
    before = len(asyncio.all_tasks())
    for _ in range(20):
        await wait_event(ev, 0.001)
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
