"""The business probe: keeps asking every web container for its page, as a user of the service would.

It runs in a thread of the drill process (the root namespace, which reaches every lab host over the
underlay). Targets come from the cluster's API (any host that answers): each running container of
the reference service through its host's published port. A request fails when it does not connect,
times out, or the page does not name the container it should. Drills read the counters over a window
(``mark``/``since``), so every drill reports its own sent/failed figures.
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import time
from collections.abc import Callable

from agent.client import ApiError, Client

TIMEOUT = 3.0
ROUND_PAUSE = 0.1
REFRESH = 1.0


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    host: str
    address: str
    port: int


@dataclasses.dataclass
class Counts:
    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)

    def minus(self, other: Counts) -> Counts:
        errors = {k: v - other.errors.get(k, 0) for k, v in self.errors.items() if v - other.errors.get(k, 0)}
        return Counts(self.sent - other.sent, self.failed - other.failed, errors)


class BusinessProbe(threading.Thread):
    def __init__(self, urls: Callable[[], list[str]], service: str, host_address: Callable[[str], str]) -> None:
        super().__init__(name="business-probe", daemon=True)
        self._urls = urls
        self._service = service
        self._host_address = host_address
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.counts = Counts()
        self.targets: list[Target] = []
        self._refreshed = 0.0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(self.counts.sent, self.counts.failed, dict(self.counts.errors))

    def _refresh(self) -> None:
        for url in self._urls():
            try:
                items = Client(url, timeout=2.0).items("/v1/containers", service=self._service)
            except ApiError:
                continue
            targets = []
            for c in items:
                if c.get("state") != "running" or not c.get("ports"):
                    continue
                public = str(c["ports"][0]).split(":", 1)[0]
                targets.append(Target(c["name"], c["host"], self._host_address(c["host"]), int(public)))
            self.targets = targets
            self._refreshed = time.monotonic()
            return

    def _one(self, target: Target) -> str | None:
        conn = http.client.HTTPConnection(target.address, target.port, timeout=TIMEOUT)
        try:
            conn.request("GET", "/")
            body = conn.getresponse().read().decode(errors="replace")
            return None if target.name in body else "wrong page"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return type(exc).__name__
        except http.client.HTTPException as exc:
            return type(exc).__name__
        finally:
            conn.close()

    def run(self) -> None:
        while not self._stop_event.is_set():
            if time.monotonic() - self._refreshed > REFRESH:
                self._refresh()
            for target in list(self.targets):
                if self._stop_event.is_set():
                    return
                error = self._one(target)
                with self._lock:
                    self.counts.sent += 1
                    if error is not None:
                        self.counts.failed += 1
                        key = f"{target.host}: {error}"
                        self.counts.errors[key] = self.counts.errors.get(key, 0) + 1
            self._stop_event.wait(ROUND_PAUSE)
