"""The business probe: keeps asking every web container for its page, as a user of the service would.

It runs in a thread of the drill process, two ways each round:

* from outside: the root namespace (which reaches every lab host over the underlay) requests each
  running container of the reference service through its host's published port;
* over the overlay, in threads of their own: a plain container on the probe host
  (``corral-drill-probe``, started with ``docker run`` on the ``corral`` network, not managed by
  Corral) fetches the page of every container on *other* hosts by its 10.42 address, in parallel,
  in one ``docker exec`` per round, several rounds in flight. A drill may also give it a
  ``floor_url``: a plain container on another host reached over the underlay, fetched the same way
  in the same rounds, so it crosses the same links as the overlay requests without the overlay
  (``lossy-network``'s floor).

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

from agent.cli.client import ApiError, Client

TIMEOUT = 3.0
ROUND_PAUSE = 0.1
REFRESH = 1.0
#: Floor requests per overlay round: enough samples for a floor that is not mostly noise.
FLOOR_PER_ROUND = 3
#: Overlay rounds in flight at once: a round lasts as long as its slowest request (up to TIMEOUT
#: under loss), so one loop alone would sample every container only every few seconds.
OVERLAY_LOOPS = 3


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    host: str
    address: str
    port: int


@dataclasses.dataclass
class Counts:
    """Requests so far. ``sent``/``failed`` are all business requests; ``overlay_*`` the part of them
    sent over the overlay; ``floor_*`` the control requests of the overlay rounds (not business)."""

    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    overlay_sent: int = 0
    overlay_failed: int = 0
    floor_sent: int = 0
    floor_failed: int = 0
    #: Overlay rounds that reached a verdict (a drill's window stays open until one has).
    overlay_rounds: int = 0

    def minus(self, other: Counts) -> Counts:
        errors = {k: v - other.errors.get(k, 0) for k, v in self.errors.items() if v - other.errors.get(k, 0)}
        counters = {f.name: getattr(self, f.name) - getattr(other, f.name)
                    for f in dataclasses.fields(self) if f.name != "errors"}
        return Counts(errors=errors, **counters)

    def copy(self) -> Counts:
        return dataclasses.replace(self, errors=dict(self.errors))


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
        #: A URL outside the overlay fetched from the probe container in every overlay round (or None).
        self.floor_url: str | None = None
        self._overlay_threads = [threading.Thread(target=self._overlay_loop, name=f"overlay-probe-{i}", daemon=True)
                                 for i in range(OVERLAY_LOOPS)]

    def start(self) -> None:
        super().start()
        if self.overlay_host is not None and self._docker is not None:
            for i, t in enumerate(self._overlay_threads):
                if i:
                    time.sleep(ROUND_PAUSE)  # staggered, so rounds do not start in lockstep
                t.start()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        for t in self._overlay_threads:
            if t.is_alive():
                t.join(timeout=10)

    @property
    def probes_overlay(self) -> bool:
        return self.overlay_host is not None and self._docker is not None

    def wait_overlay_round(self, since: Counts, timeout: float) -> bool:
        """Wait until an overlay round has reached its verdict after ``since`` was taken (a drill
        shorter than one round would otherwise have measured nothing over the overlay)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.counts.overlay_rounds > since.overlay_rounds:
                    return True
            time.sleep(0.05)
        return False

    def snapshot(self) -> Counts:
        with self._lock:
            return self.counts.copy()

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
        floor_url = self.floor_url
        lines = []
        for key, url, marker in [*((f"t{i}", f"http://{ip}/", f">{name}<") for i, (_, ip, name) in enumerate(targets)),
                                 *((f"f{i}", floor_url, "corral-drill-control") for i in range(FLOOR_PER_ROUND)
                                   if floor_url)]:
            lines.append(f'(o=$(timeout {TIMEOUT:g} wget -qO- {shlex.quote(url)} 2>/dev/null); '
                         f'case "$o" in *{shlex.quote(marker)}*) echo ok {key};; *) echo fail {key};; esac) &')
        script = "\n".join([*lines, "wait"])
        try:
            out = self._docker(["exec", PROBE_CONTAINER, "sh", "-c", script]).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        if self._stop_event.is_set() and not out:
            return  # the exec was cut short by the end of the run: no verdict
        ok = {line.split()[1] for line in out.splitlines() if line.startswith("ok ")}
        with self._lock:
            c = self.counts
            c.overlay_rounds += 1
            for i, (host, _ip, _) in enumerate(targets):
                c.sent += 1
                c.overlay_sent += 1
                if f"t{i}" not in ok:
                    c.failed += 1
                    c.overlay_failed += 1
                    key = f"overlay {self.overlay_host}→{host}"
                    c.errors[key] = c.errors.get(key, 0) + 1
            if floor_url:
                c.floor_sent += FLOOR_PER_ROUND
                c.floor_failed += sum(f"f{i}" not in ok for i in range(FLOOR_PER_ROUND))

    def _overlay_loop(self) -> None:
        while not self._stop_event.is_set():
            self._overlay_round()
            self._stop_event.wait(ROUND_PAUSE)

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
