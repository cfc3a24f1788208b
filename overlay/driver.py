"""Drivers of the data path engine: a poll(2) loop for a thread or a worker process, or an asyncio loop.

``OverlayService`` picks one by ``mode``; ``bench/overlay.py`` measures them.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

from overlay.datapath import Datapath


def run_blocking(dp: Datapath, extra: dict[int, Callable[[], None]], stopped: Callable[[], bool],
                 tick: Callable[[float], None] | None = None) -> None:
    """Drive ``dp`` from this thread with poll(2) until ``stopped()``.

    ``extra`` fds get their own handlers (a control socket, a wake-up pipe); ``tick(now)`` runs after
    every wake-up (publishing a status snapshot, say).
    """
    dp.blocking_send = True
    poller = select.poll()
    handlers: dict[int, Callable[[], None]] = {dp.tun.fd: dp.on_tun_readable, dp.sock.fileno(): dp.on_udp_readable}
    handlers.update(extra)
    for fd in handlers:
        poller.register(fd, select.POLLIN)
    clock = dp.clock
    deadline = dp.next_deadline()
    while not stopped():
        timeout = max(0.0, deadline - clock())
        for fd, _ev in poller.poll(timeout * 1000 + 1):
            handlers[fd]()
        now = clock()
        if now >= deadline or not timeout:
            dp.on_timer()
        if tick is not None:
            tick(now)
        deadline = dp.next_deadline()


def attach_to_loop(dp: Datapath, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Drive ``dp`` from an asyncio loop (readers + one re-armed timer); returns the detach function."""
    handle: list[asyncio.TimerHandle] = []
    armed_at = [float("inf")]

    def fire() -> None:
        handle.clear()
        armed_at[0] = float("inf")
        dp.on_timer()
        arm()

    def arm() -> None:
        at = dp.next_deadline()
        if handle and at >= armed_at[0]:
            return  # the armed timer fires first anyway
        if handle:
            handle[0].cancel()
            handle.clear()
        armed_at[0] = at
        handle.append(loop.call_later(max(0.0, at - dp.clock()) + 0.0005, fire))

    def on_tun() -> None:
        dp.on_tun_readable()

    def on_udp() -> None:
        dp.on_udp_readable()
        arm()  # a handshake may have changed the earliest deadline

    loop.add_reader(dp.tun.fd, on_tun)
    loop.add_reader(dp.sock.fileno(), on_udp)
    arm()

    def detach() -> None:
        loop.remove_reader(dp.tun.fd)
        loop.remove_reader(dp.sock.fileno())
        for h in handle:
            h.cancel()

    return detach


__all__ = ["attach_to_loop", "run_blocking"]
