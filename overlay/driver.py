"""Drivers of the data path engine: a poll(2) loop for a thread or a worker process, or an asyncio loop.

``OverlayService`` picks one by ``mode``; ``bench/overlay.py`` measures them.
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import Callable

from overlay.datapath import Datapath


class SpinPolicy:
    """How long to poll before sleeping, adapted like the kernel's haltpoll governor.

    The window doubles (up to ``max_window``) when polling caught the next event or the event came
    soon after polling gave up, and halves (down to a 16th) when the sleep after it was long: a
    request/response flow keeps the full window, sparse traffic (probes once a second) costs little.
    """

    def __init__(self, max_window: float) -> None:
        self.max_window = max_window
        self.min_window = max_window / 16
        self.window = max_window
        self.caught = self.missed = 0

    def after_spin(self, caught: bool) -> None:
        if caught:
            self.caught += 1
            self.window = min(self.max_window, self.window * 2)

    def after_sleep(self, slept: float) -> None:
        """Polling gave up and the next event came ``slept`` seconds later."""
        self.missed += 1
        if slept < self.max_window:
            self.window = min(self.max_window, self.window * 2)
        elif slept > 8 * self.max_window:
            self.window = max(self.min_window, self.window / 2)


def run_blocking(dp: Datapath, extra: dict[int, Callable[[], None]], stopped: Callable[[], bool],
                 tick: Callable[[float], None] | None = None, spin_us: int = 0) -> None:
    """Drive ``dp`` from this thread with poll(2) until ``stopped()``.

    ``extra`` fds get their own handlers (a control socket, a wake-up pipe); ``tick(now)`` runs after
    every wake-up (publishing a status snapshot, say).

    ``spin_us``: after a wake-up that found something to read, poll without sleeping (yielding the
    CPU to anything runnable between polls) for up to this long before blocking again. A request's
    answer usually comes back within a few hundred µs; catching it without a sleep saves the wake-up
    (an IPI and a scheduler round trip, dear in a VM). At most ``spin_us`` of CPU per wake-up, less
    when ``SpinPolicy`` sees the spins wasted. Only for a process of its own: in a thread it would
    contend for the GIL with the agent.
    """
    dp.blocking_send = True
    poller = select.poll()
    handlers: dict[int, Callable[[], None]] = {dp.tun.fd: dp.on_tun_readable, dp.sock.fileno(): dp.on_udp_readable}
    handlers.update(extra)
    for fd in handlers:
        poller.register(fd, select.POLLIN)
    clock = dp.clock
    deadline = dp.get_timer()
    policy = SpinPolicy(spin_us / 1e6) if spin_us > 0 else None
    busy_until = 0.0
    gave_up_at: float | None = None  # polling found nothing; the next event tells how far off it was
    poll = poller.poll
    sched_yield = os.sched_yield
    while not stopped():
        events = None
        if policy is not None and busy_until:
            while True:
                events = poll(0)
                if events or clock() >= busy_until:
                    break
                sched_yield()
            policy.after_spin(bool(events))
            if not events:
                gave_up_at = busy_until
        if not events:
            events = poll(max(0.0, deadline - clock()) * 1000 + 1)
            if events and gave_up_at is not None and policy is not None:
                policy.after_sleep(clock() - gave_up_at)
                gave_up_at = None
        for fd, _ev in events:
            handlers[fd]()
        now = clock()
        busy_until = now + policy.window if policy is not None and events else 0.0
        if now >= deadline:
            dp.handle_timer(now)
        if tick is not None:
            tick(now)
        deadline = dp.get_timer()


def attach_to_loop(dp: Datapath, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Drive ``dp`` from an asyncio loop (readers + one re-armed timer); returns the detach function."""
    handle: list[asyncio.TimerHandle] = []
    armed_at = [float("inf")]

    def fire() -> None:
        handle.clear()
        armed_at[0] = float("inf")
        dp.handle_timer(dp.clock())
        arm()

    def arm() -> None:
        at = dp.get_timer()
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


__all__ = ["SpinPolicy", "attach_to_loop", "run_blocking"]
