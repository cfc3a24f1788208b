"""The business probe: keeps asking every web container for its page, as a user of the service would.

It runs in a thread of the drill process, two ways each round:

* from outside: the root namespace (which reaches every lab host over the underlay) requests each
  running container of the reference service through its host's published port;
* over the overlay: a plain container on the probe host (``corral-drill-probe``, started with
  ``docker run`` on the ``corral`` network, not managed by Corral) fetches the page of every
  container on *other* hosts by its 10.42 address, in parallel, in one ``docker exec`` per round.

Targets come from the cluster's API (any host that answers), refreshed every second. A request fails
when it does not connect, times out, or the page does not name the container it should. Drills read
the counters over a window (``snapshot`` before and after), so every drill reports its own figures.
"""

from __future__ import annotations

import dataclasses
import http.client
import shlex
import subprocess
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


PROBE_CONTAINER = "corral-drill-probe"
Exec = Callable[[list[str]], subprocess.CompletedProcess[str]]


class BusinessProbe(threading.Thread):
    def __init__(self, urls: Callable[[], list[str]], service: str, host_address: Callable[[str], str],
                 overlay_host: str | None = None, docker: Exec | None = None) -> None:
        super().__init__(name="business-probe", daemon=True)
        self._urls = urls
        self._service = service
        self._host_address = host_address
        self.overlay_host = overlay_host
        self._docker = docker
        self.overlay_targets: list[tuple[str, str, str]] = []  # (host, ip, name)
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
            self.overlay_targets = [(c["host"], c["ip"], c["name"]) for c in items
                                    if c.get("state") == "running" and c.get("ip") and c["host"] != self.overlay_host]
            self._refreshed = time.monotonic()
            return

    def _one(self, target: Target) -> str | None:
        conn = http.client.HTTPConnection(target.address, target.port, timeout=TIMEOUT)
        try:
            conn.request("GET", "/")
            body = conn.getresponse().read().decode(errors="replace")
            return None if f">{target.name}<" in body else "wrong page"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return type(exc).__name__
        except http.client.HTTPException as exc:
            return type(exc).__name__
        finally:
            conn.close()

    def start_overlay_probe(self) -> None:
        """The probe container on the overlay host (replaced if one is left from an earlier run)."""
        if self._docker is None or self.overlay_host is None:
            return
        self._docker(["rm", "-f", PROBE_CONTAINER])
        made = self._docker(["run", "-d", "--name", PROBE_CONTAINER, "--network", "corral", "corral/base",
                             "sleep", "1000000"])
        if made.returncode != 0:
            raise RuntimeError(f"cannot start the overlay probe container: {made.stderr.strip()}")

    def remove_overlay_probe(self) -> None:
        if self._docker is not None and self.overlay_host is not None:
            self._docker(["rm", "-f", PROBE_CONTAINER])

    def _overlay_round(self) -> None:
        targets = list(self.overlay_targets)
        if self._docker is None or self.overlay_host is None or not targets:
            return
        lines = []
        for _, ip, name in targets:
            page = shlex.quote(f">{name}<")
            lines.append(f'(o=$(timeout 3 wget -qO- http://{ip}/ 2>/dev/null); case "$o" in *{page}*) '
                         f"echo ok {ip};; *) echo fail {ip};; esac) &")
        script = "\n".join([*lines, "wait"])
        try:
            out = self._docker(["exec", PROBE_CONTAINER, "sh", "-c", script]).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        ok = {line.split()[1] for line in out.splitlines() if line.startswith("ok ")}
        with self._lock:
            for host, ip, _ in targets:
                self.counts.sent += 1
                if ip not in ok:
                    self.counts.failed += 1
                    key = f"overlay {self.overlay_host}→{host}"
                    self.counts.errors[key] = self.counts.errors.get(key, 0) + 1

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
            if not self._stop_event.is_set():
                self._overlay_round()
            self._stop_event.wait(ROUND_PAUSE)
