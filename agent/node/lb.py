"""This host's load balancers: one HAProxy per load-balancer instance placed here, run and kept in line.

Theory of operation. HAProxy runs as a **host process** (Debian's ``haproxy``), not a container: in
the host's network namespace it binds the host's ports directly (no docker-proxy, no NAT) and reaches
containers' 10.42 addresses through the overlay exactly as the agent's own health checks do
(``agent/node/health.py``); nothing needs building or pulling, and ``haproxy -c`` checks the very
binary that runs. A host without the binary says so in its ``corral.haproxy`` label (``missing``) and
the scheduler places no load balancer there.

Each instance has a folder ``DATA_DIR/lb/INSTANCE`` with ``haproxy.cfg``, the master's pid file and
the admin socket. HAProxy runs in master-worker mode, daemonised, so it outlives the agent (as
containers do: the data path never depends on the agent); the next agent adopts it by its pid file
(the pid's command line must name this config). The config is rendered from the rules and the
current servers (``agent/node/lbconfig.py``) and checked with ``haproxy -c`` before any start or
reload: a refused one is never loaded, the running HAProxy keeps serving, and the instance's status
says why. When only servers change (a container started, went unhealthy, was scaled away) the change
goes through the admin socket: ``add server``/``set server … state drain``/``del server``, no reload.
When listeners or backends change the master reloads (SIGUSR2): the new worker takes the listening
sockets over (``expose-fd listeners``), the old one finishes its connections.

A pass runs when the change feed brings an instance, service, stack or this host's record, when a
draining server may be done (every 0.5 s while any drains), and every ``SAFETY_PERIOD`` seconds (a
master that died is started again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

from agent.cluster.feed import Feed, Subscription
from agent.model.changes import Change, Topic
from agent.model.entities import Desired, Instance, Status
from agent.model.lb import LbProtocol, LbSpec, ServiceKind
from agent.model.state import ClusterState
from agent.node.lbconfig import (
    Backend,
    Draining,
    Server,
    backend_list,
    backends,
    delete_commands,
    drained,
    render,
    runtime_commands,
)
from agent.node.plan import Observed
from mesh.aio import supervised, wait_event

log = logging.getLogger("corral.lb")

SAFETY_PERIOD = 5.0
DRAIN_PERIOD = 0.5
START_TIMEOUT = 5.0
RETRY_MAX = 30.0  # seconds between tries of a load balancer that fails to start, at most
OK_ANSWERS = ("", "New server registered.", "Server deleted.")
"""What HAProxy's admin socket answers to a command it carried out (anything else is a refusal)."""

Reporter = Callable[[str, Observed], Awaitable[None]]


def haproxy_binary() -> str | None:
    return shutil.which("haproxy")


class AdminSocket:
    """HAProxy's runtime API: one command per connection (its non-interactive mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def ask(self, command: str, timeout: float = 2.0) -> str:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), timeout)
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), timeout)).decode(errors="replace")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@dataclasses.dataclass
class Balancer:
    """One load-balancer instance's HAProxy, as this agent knows it."""

    instance: str
    folder: Path
    layout: str | None = None
    """The config without servers last loaded (None: not loaded): a change of it needs a reload."""
    refused: str | None = None
    """A layout HAProxy would not take (not tried again until the rules change once more)."""
    loaded: tuple[LbSpec, list[Backend]] | None = None
    """The rules and backends HAProxy runs with now: run-time server changes follow them."""
    have: dict[str, Server] = dataclasses.field(default_factory=dict)
    draining: dict[str, Draining] = dataclasses.field(default_factory=dict)
    error: str | None = None
    drain_timeout: float = 10.0
    failures: int = 0
    """Starts in a row that failed (a port in use…): the next is tried only after a back-off."""
    retry_at: float = 0.0

    @property
    def config(self) -> Path:
        return self.folder / "haproxy.cfg"

    @property
    def pidfile(self) -> Path:
        return self.folder / "haproxy.pid"

    @property
    def socket(self) -> AdminSocket:
        return AdminSocket(self.folder / "admin.sock")

    pid: int | None = None
    """The master's pid as last found (the pid file is rewritten at each reload)."""

    def master(self) -> int | None:
        """The pid of this instance's HAProxy master, if one runs (its command line names our config)."""
        candidates = [self.pid] if self.pid else []
        with contextlib.suppress(OSError, ValueError, IndexError):
            candidates.append(int(self.pidfile.read_text().split()[0]))
        for pid in candidates:
            if pid is not None and _is_haproxy_of(pid, self.config):
                self.pid = pid
                return pid
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def _alerts(path: Path) -> str:
    """What HAProxy said before it gave up: its ALERT lines (its master writes them as the starting
    process exits, so the file is read again for a moment until they are there)."""
    text = ""
    for _ in range(10):
        text = _read(path)
        alerts = [line.split(":", 1)[1].strip() if ":" in line else line
                  for line in text.splitlines() if "[ALERT]" in line]
        if alerts:
            return "; ".join(alerts[-2:])[-400:]
        await asyncio.sleep(0.05)
    return text.strip()[-300:] or "it exited at once with nothing said"


def _is_haproxy_of(pid: int, config: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return argv[0].endswith(b"haproxy") and str(config).encode() in argv and state != "Z" and b"-sf" not in argv[:3]


class LoadBalancers:
    """Runs the HAProxy of every load-balancer instance assigned to this host."""

    def __init__(self, host: str, state: ClusterState, data_dir: Path, report: Reporter,
                 binary: str | None = None, reserved: Mapping[int, str] | None = None) -> None:
        self.host = host
        self.reserved = dict(reserved or {})
        """This agent's own ports (``{8080: "the agent's API"}``): a rule listening on one is refused here."""
        self.state = state
        self.root = data_dir / "lb"
        self.binary = binary
        self._report = report
        self._reported: dict[str, Observed] = {}
        self._kick = asyncio.Event()
        self.balancers: dict[str, Balancer] = {}
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self.failed_passes = 0
        self.last_error: str | None = None

    def kick(self) -> None:
        self._kick.set()

    def _wake_at(self, delay: float) -> None:
        """A pass after ``delay`` seconds (a retry that is due then)."""
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay + 0.05, self.kick)

    def concerns(self, change: Change) -> bool:
        if change.topic is Topic.HOST:
            return change.key == self.host
        return change.topic in (Topic.INSTANCE, Topic.SERVICE, Topic.STACK, Topic.ALL)

    @contextlib.asynccontextmanager
    async def running(self, feed: Feed) -> AsyncIterator[LoadBalancers]:
        changes = feed.subscribe(self.concerns, name="load-balancers", notify=self.kick)
        try:
            async with supervised(self._loop(changes), "load-balancers") as self._task:
                self.kick()
                yield self
        finally:
            changes.close()

    def problem(self) -> str | None:
        if self._task is not None and self._task.done():
            return "the load balancer loop stopped"
        if self.failed_passes >= 3:
            return f"{self.failed_passes} load balancer passes in a row failed: {self.last_error}"
        return None

    async def _loop(self, changes: Subscription) -> None:
        while True:
            period = DRAIN_PERIOD if any(b.draining for b in self.balancers.values()) else SAFETY_PERIOD
            await wait_event(self._kick, period)
            self._kick.clear()
            changes.take()
            try:
                await self.sync_once()
                self.failed_passes, self.last_error = 0, None
            except Exception as exc:
                self.failed_passes += 1
                self.last_error = repr(exc)
                log.exception("load balancer pass failed")

    # ------------------------------------------------------------------ one pass

    def mine(self) -> list[Instance]:
        out = []
        for inst in self.state.instances_on(self.host):
            service = self.state.services.get(inst.service)
            if service is not None and service.spec.kind is ServiceKind.LOAD_BALANCER:
                out.append(inst)
        return out

    async def sync_once(self) -> None:
        now = asyncio.get_running_loop().time()
        wanted = {i.id: i for i in self.mine() if i.desired == Desired.RUNNING}
        for gone in [k for k in self.balancers if k not in wanted]:
            await self._stop(self.balancers.pop(gone))
        for inst in sorted(wanted.values(), key=lambda i: i.id):
            balancer = self.balancers.get(inst.id)
            if balancer is None:
                balancer = self.balancers[inst.id] = Balancer(inst.id, self.root / inst.id)
            await self._sync(balancer, inst, now)
        for inst in self.mine():
            await self._report_one(inst, self.balancers.get(inst.id))

    async def _sync(self, b: Balancer, inst: Instance, now: float) -> None:
        if self.binary is None:
            b.error = "haproxy is not installed on this host (apt-get install haproxy)"
            return
        service = self.state.services[inst.service]
        stack = self.state.stacks[service.stack]
        spec = service.spec.lb
        assert spec is not None
        taken = sorted(p for p in spec.ports() if p in self.reserved)
        if taken:  # HAProxy would take the port from the agent (or fail to bind): never started
            b.error = (f"port {taken[0]} is {self.reserved[taken[0]]} on this host: a load balancer cannot "
                       "listen there (change the rule's port)")
            return
        b.drain_timeout = spec.drain_timeout
        items = backend_list(spec, stack.name, self.state, stack.environment)
        want = backends(self.state, items)
        modes = {i.name: i.mode for i in items}
        paths = (str(b.folder / "admin.sock"), str(b.pidfile), service.id)
        layout = render(spec, stack.name, items, [], *paths)
        alive = b.master() is not None
        if not alive and layout == b.refused and now < b.retry_at:
            self._wake_at(b.retry_at - now)  # it failed to start: not again at every pass
            return
        if (not alive or (layout != b.layout and layout != b.refused)) and \
                await self._load(b, render(spec, stack.name, items, want.values(), *paths), layout):
            b.loaded, b.have, b.draining = (spec, items), dict(want), {}
            return
        if b.master() is None or b.loaded is None:
            return
        spec, items = b.loaded  # a refused config leaves the running one's backends to follow the containers
        want, modes = backends(self.state, items), {i.name: i.mode for i in items}
        try:
            await self._runtime(b, want, modes, spec, now)
        except RuntimeRefused as exc:  # the running HAProxy lost track: load its config again
            log.warning("%s: runtime command refused (%s); reloading", inst.id, exc)
            b.layout = None
            self.kick()

    async def _runtime(self, b: Balancer, want: dict[str, Server], modes: dict[str, LbProtocol], spec: LbSpec,
                       now: float) -> None:
        commands, added, drain = runtime_commands(b.have, b.draining, want, modes, spec)
        for command in commands:
            await self._ask(b, command)
        for key in added:
            b.draining.pop(key, None)
            b.have[key] = want[key]
        for key in drain:
            b.draining[key] = Draining(b.have.pop(key), now)
        if b.draining:
            sessions = await self.sessions(b)
            for key in drained(b.draining, sessions, now, b.drain_timeout):
                answers = [(await b.socket.ask(c)).strip() for c in delete_commands(key)]
                if answers[-1] in OK_ANSWERS or answers[-1].startswith("No such"):
                    del b.draining[key]
                else:  # connections still closing: again next pass
                    log.info("%s: %s not deleted yet: %s", b.instance, key, answers[-1])

    async def _ask(self, b: Balancer, command: str) -> str:
        answer = (await b.socket.ask(command)).strip()
        if answer not in OK_ANSWERS:
            raise RuntimeRefused(f"{command}: {answer}")
        return answer

    async def sessions(self, b: Balancer) -> dict[str, int]:
        """Current sessions of every server (``backend/server`` → count), from ``show stat``."""
        out: dict[str, int] = {}
        for row in parse_stat(await b.socket.ask("show stat")):
            if row.get("svname") not in ("FRONTEND", "BACKEND"):
                with contextlib.suppress(ValueError):
                    out[f"{row['pxname']}/{row['svname']}"] = int(row.get("scur") or 0)
        return out

    async def _load(self, b: Balancer, text: str, layout: str) -> bool:
        """Check the config; start HAProxy with it, or reload the running master; True if it runs it.
        A refused config is never loaded: the running HAProxy keeps the one it has, and the error
        says why."""
        assert self.binary is not None
        b.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        candidate = b.folder / "haproxy.cfg.new"
        candidate.write_text(text)
        check = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-q", "-f", str(candidate), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await check.communicate()
        if check.returncode != 0:
            text = output.decode(errors="replace")
            lines = [ln for ln in text.splitlines() if "ALERT" in ln or "error" in ln.lower()]
            b.error = "haproxy refused the new config: " + ("; ".join(lines[-3:]) or f"exit {check.returncode}")
            b.refused = layout
            log.warning("%s: %s", b.instance, b.error)
            return False
        master = b.master()
        old = b.config.read_text() if master is not None and b.config.exists() else None
        os.replace(candidate, b.config)
        if master is not None:
            before = await self._worker(b)
            os.kill(master, signal.SIGUSR2)  # hitless: the new worker takes the listeners over
            try:
                await self._until(lambda: self._worker(b), lambda pid: pid is not None and pid != before)
            except TimeoutError:  # the new worker did not start (a port taken…): the old one still serves
                if old is not None:
                    b.config.write_text(old)
                b.refused = layout
                b.error = ("haproxy's new worker did not start with the new config (a listen port in use by "
                           "another program?); the running one keeps serving the config it had")
                log.warning("%s: %s", b.instance, b.error)
                return False
        else:
            # its output goes to a file, not a pipe: the daemonized worker keeps a copy of the descriptor,
            # so a pipe would never reach its end and the agent would wait for it forever
            out = os.open(b.folder / "haproxy.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                start = await asyncio.create_subprocess_exec(
                    self.binary, "-W", "-D", "-f", str(b.config), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            finally:
                os.close(out)
            await asyncio.wait_for(start.wait(), START_TIMEOUT)
            if start.returncode != 0:
                b.error = "haproxy did not start: " + await _alerts(b.folder / "haproxy.out")
                b.refused = layout
                b.failures += 1
                b.retry_at = asyncio.get_running_loop().time() + min(RETRY_MAX, 2.0 ** (b.failures - 1))
                log.warning("%s: %s", b.instance, b.error)
                return False
            await self._until(lambda: self._worker(b), lambda pid: pid is not None)
        b.layout, b.refused, b.error, b.failures = layout, None, None, 0
        log.info("%s: haproxy %s", b.instance, "reloaded" if master else "started")
        return True

    async def _worker(self, b: Balancer) -> int | None:
        try:
            info = await b.socket.ask("show info", timeout=0.5)
        except (TimeoutError, OSError):
            return None
        for line in info.splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    @staticmethod
    async def _until(ask: Callable[[], Awaitable[int | None]], ok: Callable[[int | None], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not ok(await ask()):
            if loop.time() > deadline:
                raise TimeoutError("haproxy's admin socket did not answer")
            await asyncio.sleep(0.05)

    async def _stop(self, b: Balancer) -> None:
        """Soft stop: the master tells its workers to finish their connections and exit (SIGUSR1);
        whatever still runs after the drain timeout is ended."""
        master = b.master()
        if master is None:
            return
        log.info("%s: stopping haproxy (pid %d)", b.instance, master)
        os.kill(master, signal.SIGUSR1)

        def force() -> None:
            if b.master() == master:
                os.kill(master, signal.SIGTERM)
        asyncio.get_running_loop().call_later(b.drain_timeout + 1.0, force)

    async def stop_and_wait(self, b: Balancer) -> None:
        """:meth:`_stop`, and wait until the master is gone: a soft stop asked again every 0.2 s (a
        SIGUSR1 that reaches a master still setting up is lost), ended by SIGTERM after the drain
        timeout and SIGKILL a second later. For tests and for a host that shuts its balancers down."""
        master = b.master()
        if master is None:
            return
        await self._stop(b)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while b.master() == master:
            waited = loop.time() - started
            sig = (signal.SIGKILL if waited > b.drain_timeout + 1.0 else
                   signal.SIGTERM if waited > b.drain_timeout else signal.SIGUSR1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(master, sig)
            await asyncio.sleep(0.2)

    async def _report_one(self, inst: Instance, b: Balancer | None) -> None:
        service = self.state.services.get(inst.service)
        ports = tuple(f"{p}/tcp" for p in service.spec.lb.ports()) if service and service.spec.lb else ()
        master = b.master() if b is not None else None
        if master is not None:
            observed = Observed(Status.RUNNING, container_id=f"haproxy:{master}", ports=ports,
                                error=b.error if b else None)
        elif inst.desired == Desired.STOPPED:
            observed = Observed(Status.EXITED, exit_code=0)
        else:
            observed = Observed(Status.MISSING, error=b.error if b else None)
        if self._reported.get(inst.id) == observed and inst.status == observed.status:
            return
        try:
            await self._report(inst.id, observed)
            self._reported[inst.id] = observed
        except Exception as exc:
            log.warning("status report for %s failed: %s", inst.id, getattr(exc, "message", exc))

    async def stats(self, instance: str) -> list[dict[str, str]]:
        """HAProxy's ``show stat`` of one instance here, as rows (empty if it does not run)."""
        b = self.balancers.get(instance)
        if b is None or b.master() is None:
            return []
        return parse_stat(await b.socket.ask("show stat"))


class RuntimeRefused(Exception):
    """HAProxy's admin socket refused a command (a server it does not know…)."""


def parse_stat(text: str) -> list[dict[str, str]]:
    """``show stat``'s CSV (first line ``# pxname,svname,…``) as one map per row."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    return [dict(zip(header, ln.split(","), strict=False)) for ln in lines[1:]]


__all__ = ["AdminSocket", "Balancer", "LoadBalancers", "haproxy_binary", "parse_stat"]
