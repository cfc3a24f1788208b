"""What the lb-continuity drill sends and watches: steady requests through two load balancers, and
which backend each HAProxy picked when.

* :class:`Clients` — threads in the drill process (the root namespace reaches every lab host), each a
  client of one load balancer's address at a steady rate, half over one keep-alive connection, half a
  new connection per request. A request succeeds when it answers 200 with a page naming a container
  (``<h1>NAME</h1>``): the backend that answered. A client that cannot connect to its load balancer,
  or whose connection it drops unanswered, **fails over** to the other load balancer's address, as a
  client with two addresses for one name would (and back, should that one fail); failovers are
  counted apart. A request that times out on an open connection is failed, not failed over.
* :class:`Picks` — polls both HAProxies' admin sockets (``show stat``, every 0.1 s) for each server's
  ``lbtot`` (times HAProxy chose it, for a new request or a redispatch) and its state: the last time
  a dead backend was still chosen after it died is read from it, by address (to 0.1 s).

Every request is a :class:`Sent` with its start and end on the monotonic clock, so a phase's figures
are the requests *started* in its window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.node.lb import parse_stat

TIMEOUT = 5.0
"""A request not answered in this is failed (a retried connect to a dead server takes 1 s a try)."""
PAGE = re.compile(r"<h1>([^<]+)</h1>")
PICKS_PERIOD = 0.1


def show_stat(path: Path, timeout: float = 1.0) -> list[dict[str, str]]:
    """The rows of an HAProxy's ``show stat`` read over its admin socket, blocking (for the drill's and the
    benchmark's threads; the agent's own, asynchronous reader is :class:`agent.node.lb.AdminSocket`)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return parse_stat(data.decode(errors="replace"))


@dataclasses.dataclass(frozen=True)
class Sent:
    client: str
    lb: str
    """The load balancer's host the request went to."""
    keep_alive: bool
    start: float
    end: float
    backend: str | None
    """The container that answered (None: failed)."""
    error: str | None


class Client(threading.Thread):
    def __init__(self, name: str, lb: str, address: str, other: tuple[str, str], port: int, rate: float,
                 keep_alive: bool, out: list[Sent], lock: threading.Lock) -> None:
        super().__init__(name=name, daemon=True)
        self.lb, self.address, self.other, self.port = lb, address, other, port
        self.rate, self.keep_alive = rate, keep_alive
        self.out, self.lock = out, lock
        self.stop_event = threading.Event()
        self.failovers: list[tuple[float, str, str]] = []  # (when, from host, to host)
        self._conn: http.client.HTTPConnection | None = None

    def _one(self) -> tuple[str | None, str | None, bool]:
        """(the backend that answered, the error, whether to fail over). A client fails over when it cannot
        reach its load balancer or the load balancer drops the connection unanswered; a request that times
        out on an open connection (its backend died under it) or an error answer is failed, and the next
        goes to the same load balancer on a new connection."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.address, self.port, timeout=TIMEOUT)
        conn = self._conn
        try:
            if conn.sock is None:
                conn.connect()
        except OSError as exc:
            self._drop()
            return None, f"connect: {'timeout' if isinstance(exc, TimeoutError) else type(exc).__name__}", True
        try:
            conn.request("GET", "/", headers={} if self.keep_alive else {"Connection": "close"})
            answer = conn.getresponse()
            body = answer.read().decode(errors="replace")
            if not self.keep_alive or answer.will_close:
                self._drop()
            found = PAGE.search(body)
            if answer.status != 200 or found is None:
                return None, f"HTTP {answer.status}", False
            return found.group(1), None, False
        except TimeoutError:
            self._drop()
            return None, "timeout", False
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            return None, type(exc).__name__, True

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self) -> None:
        period = 1.0 / self.rate
        due = time.monotonic()
        while not self.stop_event.is_set():
            start = time.monotonic()
            backend, error, fail_over = self._one()
            end = time.monotonic()
            with self.lock:
                self.out.append(Sent(self.name, self.lb, self.keep_alive, start, end, backend, error))
            if fail_over:  # to the other load balancer (and back again, should that one fail)
                self.failovers.append((end, self.lb, self.other[0]))
                (self.lb, self.address), self.other = self.other, (self.lb, self.address)
            due = max(due + period, time.monotonic())  # steady: no burst to catch up after a slow one
            self.stop_event.wait(max(0.0, due - time.monotonic()))
        if self._conn is not None:
            self._conn.close()


class Clients:
    """``per_kind`` keep-alive and ``per_kind`` new-connection clients on each of two load balancers."""

    def __init__(self, lbs: dict[str, str], port: int, rate: float, per_kind: int = 1) -> None:
        (h1, a1), (h2, a2) = sorted(lbs.items())
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self.clients = [Client(f"{h}-{'ka' if ka else 'new'}-{n}", h, a, other, port, rate, ka, self.sent, self.lock)
                        for h, a, other in ((h1, a1, (h2, a2)), (h2, a2, (h1, a1)))
                        for ka in (True, False) for n in range(per_kind)]

    def __enter__(self) -> Clients:
        for c in self.clients:
            c.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.clients:
            c.stop_event.set()
        for c in self.clients:
            c.join(TIMEOUT + 2)

    def between(self, start: float, end: float) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if start <= s.start < end]

    def failovers(self) -> list[tuple[str, float, str, str]]:
        return [(c.name, *f) for c in self.clients for f in c.failovers]


class Picks(threading.Thread):
    """Each HAProxy server's ``lbtot`` rises and state changes, by (load balancer host, server address), polled.

    A dead backend's address may come back: a container recreated after ``docker rm -f`` is given the
    first free address of its host, often the one it had. Its dead time ends, for one load balancer,
    when that load balancer shows the address UP again after it was not (DOWN, DRAIN, MAINT, gone)."""

    def __init__(self, sockets: Callable[[], dict[str, Path]]) -> None:
        super().__init__(name="lb-picks", daemon=True)
        self._sockets = sockets
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self._last: dict[tuple[str, str, str], int] = {}
        self.rises: dict[tuple[str, str], list[float]] = {}
        """(load balancer host, server address) → times its lbtot was seen higher than at the poll before."""
        self.states: dict[tuple[str, str], list[tuple[float, str]]] = {}
        """(load balancer host, server address) → (time, state) at each change seen; ``GONE`` when deleted."""
        self.polls = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            for host, path in self._sockets().items():
                with contextlib.suppress(OSError):
                    self._poll(host, path)
            self.polls += 1
            self.stop_event.wait(PICKS_PERIOD)

    def _poll(self, host: str, path: Path) -> None:
        rows = show_stat(path)
        now = time.monotonic()
        seen: dict[str, str] = {}
        with self.lock:
            for row in rows:
                if row.get("svname") in ("FRONTEND", "BACKEND", None) or not row.get("addr"):
                    continue
                address = row["addr"].rsplit(":", 1)[0]
                key = (host, row.get("pxname", ""), row["svname"])
                total = int(row.get("lbtot") or 0)
                before = self._last.get(key)
                if before is not None and total > before:
                    self.rises.setdefault((host, address), []).append(now)
                self._last[key] = total
                state = row.get("status", "").split()[0] if row.get("status") else ""
                seen[address] = "UP" if state == "UP" or seen.get(address) == "UP" else state
            for (lb, address), history in self.states.items():
                if lb == host and address not in seen and history[-1][1] != "GONE":
                    history.append((now, "GONE"))
            for address, state in seen.items():
                history = self.states.setdefault((host, address), [])
                if not history or history[-1][1] != state:
                    history.append((now, state))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)

    def _dead(self, addresses: set[str], died: float, until: float) -> list[tuple[tuple[str, str], float]]:
        """(load balancer, address) and the end of its dead time: UP again after not UP, or ``until``."""
        out = []
        for key, history in self.states.items():
            if key[1] not in addresses:
                continue
            end, down = until, False
            for t, state in history:
                if t < died:
                    continue
                if state != "UP":
                    down = True
                elif down:
                    end = min(end, t)
                    break
            out.append((key, end))
        return out

    def last_pick(self, addresses: set[str], died: float, until: float) -> float | None:
        """The last time one of ``addresses`` was chosen while dead (None: never)."""
        with self.lock:
            times = [t for key, end in self._dead(addresses, died, until) for t in self.rises.get(key, [])
                     if died <= t < end]
        return max(times, default=None)

    def picked_after(self, addresses: set[str], died: float, grace: float, until: float) -> int:
        """Polls that saw one of ``addresses`` chosen more than ``grace`` seconds after it died, while dead."""
        with self.lock:
            return sum(1 for key, end in self._dead(addresses, died, until) for t in self.rises.get(key, [])
                       if died + grace <= t < end)


__all__ = ["Clients", "Picks", "Sent"]
