"""``OverlayService``: what the agent embeds to put its host on the overlay.

Lifecycle: ``await start()`` (TUN, route, iptables, UDP socket, data path running), ``set_peers()``
whenever the host records change (the full desired set; the host's own record is ignored),
``status()`` for ``GET /v1/overlay``, ``await stop()`` (removes everything it created).

The data path runs in one of three places (``mode``); ``bench/overlay.py`` measures them:

* ``process`` (default): a worker process (``overlay/worker.py``) with the TUN and UDP fds
  inherited. It does not share the agent's GIL or loop, so a busy API, gossip or Raft does not
  add its latency to every tunnelled packet (and the reverse); status arrives as pushed snapshots;
  a worker that dies is started again after ``RESTART_DELAY`` (the TUN stays: the service holds it).
* ``thread``: a thread in the agent's process, blocking in poll(2). Simple, but every Python
  instruction of the data path competes with the agent's loop for the GIL.
* ``loop``: readers on the agent's own asyncio loop. No thread, no process, slowest under load.

Blocking work (pyroute2, iptables, opening the TUN) runs in ``asyncio.to_thread``, never on the
loop's thread: pyroute2's sync API refuses to run inside a running loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from mesh.aio import cancel_and_wait
from overlay.config import OverlayConfig
from overlay.datapath import Datapath, DatapathConfig, PeerRoute
from overlay.driver import attach_to_loop, run_blocking
from overlay.plumbing import HostPlumbing, underlay_mtu
from overlay.tun import Tun, open_tun
from overlay.udp import open_udp
from overlay.worker import SNAPSHOT_EVERY, build_datapath, peers_to_wire

log = logging.getLogger(__name__)
Mode = Literal["process", "thread", "loop"]
#: How often the host plumbing is checked and repaired (s).
CHECK_EVERY = 10.0
#: A dead process-mode worker is started again after this long (s).
RESTART_DELAY = 1.0


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's parent is gone, and init may reap it late)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclasses.dataclass(frozen=True)
class PeerInfo:
    name: str
    underlay: str
    subnet: ipaddress.IPv4Network
    public_key: bytes


class OverlayService:
    """One host's overlay: TUN, plumbing and data path, driven from the agent's event loop."""

    def __init__(self, *, host: str, underlay: str, subnet: ipaddress.IPv4Network, private_key: bytes,
                 cluster_secret: bytes, bridge: str | None, port: int = 4500, tun_name: str = "corral-tun",
                 mode: Mode = "process", config: OverlayConfig | None = None,
                 datapath_config: DatapathConfig | None = None, state_dir: str | None = None) -> None:
        """``state_dir``: where the worker's pid file lives (the agent's data dir). With it, a worker
        left running by an agent that died is found and replaced at the next start, and workers
        outlive a dead agent (containers stay reachable meanwhile); without it, they die with it."""
        self.state_dir = state_dir
        self.host = host
        self.underlay = underlay
        self.subnet = subnet
        self.bridge = bridge
        self.port = port
        self.tun_name = tun_name
        self.mode: Mode = mode
        self._private_key = private_key
        self._secret = cluster_secret
        self._config = config or OverlayConfig(port=port)
        self._dp_config = datapath_config or DatapathConfig()
        self._tun: Tun | None = None
        self._sock: socket.socket | None = None
        self._plumbing: HostPlumbing | None = None
        self._peers: list[PeerRoute] = []
        self._mtu = 0
        self._last_check: dict[str, Any] = {}
        self._check_task: asyncio.Task[None] | None = None
        # mode-specific
        self._dp: Datapath | None = None
        self._detach: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._wake: tuple[int, int] | None = None
        self._stop_flag = False
        self._snapshot: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._restart: asyncio.TimerHandle | None = None
        #: Times the process-mode worker died and was started again.
        self.worker_restarts = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def _pidfile(self) -> str | None:
        return os.path.join(self.state_dir, "overlay-worker.pid") if self.state_dir else None

    def _orphans(self) -> list[int]:
        """Workers left by an earlier agent of this host, in this network namespace: the one its pid
        file names (a worker from before workers carried ``--tun-name``), and any worker of this TUN
        (the pid file is gone with a wiped data directory). Never another namespace's worker, even
        if a stale pid file names one."""
        try:
            my_ns = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            return []
        tun_arg = b"\0--tun-name\0" + self.tun_name.encode() + b"\0"

        def ours(pid: int, need_tun: bool) -> bool:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read() + b"\0"
                return (b"overlay.worker" in cmdline and (not need_tun or tun_arg in cmdline)
                        and os.stat(f"/proc/{pid}/ns/net").st_ino == my_ns and pid != os.getpid())
            except OSError:
                return False

        found = []
        if self._pidfile is not None:
            try:
                with open(self._pidfile) as pf:
                    pid = int(pf.read().strip())
                if ours(pid, need_tun=False):
                    found.append(pid)
            except (OSError, ValueError):
                pass
        found += [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) not in found and ours(int(e), True)]
        return found

    def _replace_orphan(self) -> None:
        """Stop workers that outlived a previous agent (they hold the TUN and port 4500)."""
        for pid in self._orphans():
            log.info("stopping the data path worker (pid %d) left by a previous agent", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 3.0
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError):
                if _running(pid):
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.1)

    async def start(self) -> None:
        await asyncio.to_thread(self._replace_orphan)
        await asyncio.to_thread(self._setup)
        assert self._tun is not None and self._sock is not None
        init = self._init_message()
        if self.mode == "process":
            self._start_process(init)
        else:
            self._dp = build_datapath(init, self._tun, self._sock)
            self._dp.set_peers(self._peers)
            if self.mode == "thread":
                self._start_thread()
            else:
                self._detach = attach_to_loop(self._dp, asyncio.get_running_loop())
        self._check_task = asyncio.create_task(self._check_loop())

    def _setup(self) -> None:
        under = underlay_mtu(self.underlay)
        v6 = ":" in self.underlay
        mtu = self._config.tun_mtu(under, v6)
        if self._dp_config.chunk_size:  # chunks of a large sealed message fill one underlay packet each
            self._dp_config = dataclasses.replace(self._dp_config, chunk_size=under - (48 if v6 else 28))
        tun = open_tun(self.tun_name)
        plumbing = HostPlumbing(tun.name, self.subnet, self.bridge, mtu)
        try:
            self._last_check = {"at": time.time(), "changed": plumbing.apply()}
            self._sock = open_udp(self.underlay, self.port)  # e.g. EADDRINUSE: undo what apply() did
        except BaseException:
            with contextlib.suppress(Exception):
                plumbing.remove()
            tun.close()
            raise
        self._tun, self._plumbing, self._mtu = tun, plumbing, mtu

    def _init_message(self) -> dict[str, Any]:
        assert self._tun is not None
        skip = {"port"}
        return {"op": "init", "private_key": self._private_key.hex(), "cluster_secret": self._secret.hex(),
                "subnet": str(self.subnet),
                "tun": {"name": self._tun.name, "vnet_hdr": self._tun.vnet_hdr, "offloads": self._tun.offloads,
                        "multi_queue": self._tun.multi_queue},
                "session_config": {f.name: getattr(self._config, f.name) for f in dataclasses.fields(self._config)
                                   if f.name not in skip},
                "datapath_config": {f.name: getattr(self._dp_config, f.name)
                                    for f in dataclasses.fields(self._dp_config) if f.name != "probe"}}

    async def stop(self) -> None:
        await cancel_and_wait(self._check_task)
        self._check_task = None
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._thread is not None:
            self._stop_flag = True
            self._wakeup()
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._proc is not None:
            await self._stop_process()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self._plumbing is not None:
            await asyncio.to_thread(self._plumbing.remove)
            self._plumbing = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tun is not None:
            self._tun.close()  # the TUN is not persistent: it goes away with its last fd
            self._tun = None

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            if self._plumbing is None:
                return
            try:
                changed = await asyncio.to_thread(self._plumbing.check)
            except Exception as e:  # report, keep checking: the next round may succeed
                log.warning("overlay plumbing check failed: %s", e)
                self._last_check = {"at": time.time(), "error": str(e)}
                continue
            if changed:
                log.warning("overlay plumbing drifted, repaired: %s", changed)
            self._last_check = {"at": time.time(), "changed": changed}

    # ------------------------------------------------------------------ peers and status
    def set_peers(self, peers: Sequence[PeerInfo]) -> None:
        """The full desired peer set (this host's own record, if present, is skipped)."""
        routes = [PeerRoute(p.name, p.subnet, (p.underlay, self.port), p.public_key) for p in peers
                  if p.name != self.host]
        self._peers = routes
        if self._dp is None and self._proc is None:
            return  # not started: start() applies them
        if self.mode == "process":
            self._send_ctl({"op": "set_peers", "peers": peers_to_wire(routes)})
        elif self.mode == "thread":
            dp = self._dp
            assert dp is not None
            self._commands.append(lambda: dp.set_peers(routes))
            self._wakeup()
        elif self._dp is not None:
            self._dp.set_peers(routes)

    def problem(self) -> str | None:
        """What is wrong with the data path now (a worker that died and is being restarted, a failed
        plumbing check), or None."""
        error = self._snapshot.get("error") if self.mode == "process" else None
        if error:
            return str(error)
        if "error" in self._last_check:
            return f"overlay plumbing check failed: {self._last_check['error']}"
        return None

    def status(self) -> dict[str, Any]:
        """JSON for ``GET /v1/overlay``."""
        dp = self._dp.status() if self.mode == "loop" and self._dp is not None else dict(self._snapshot)
        return {"host": self.host, "underlay": f"{self.underlay}:{self.port}", "subnet": str(self.subnet),
                "mode": self.mode, "tun_mtu": self._mtu, "plumbing": self._last_check,
                "datapath_pid": self._proc.pid if self._proc is not None else os.getpid(),
                "worker_restarts": self.worker_restarts, **dp}

    # ------------------------------------------------------------------ thread mode
    def _start_thread(self) -> None:
        dp = self._dp
        assert dp is not None
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        rfd = self._wake[0]
        last = [0.0]

        def on_wake() -> None:
            with contextlib.suppress(BlockingIOError):
                os.read(rfd, 4096)
            while self._commands:
                self._commands.popleft()()
            publish(time.monotonic(), force=True)

        def publish(now: float, force: bool = False) -> None:
            if force or now - last[0] >= SNAPSHOT_EVERY:
                last[0] = now
                self._snapshot = dp.status()

        self._stop_flag = False
        self._thread = threading.Thread(target=run_blocking, args=(dp, {rfd: on_wake}, lambda: self._stop_flag,
                                                                     publish), name="overlay-datapath", daemon=True)
        self._thread.start()

    def _wakeup(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake[1], b"x")

    # ------------------------------------------------------------------ process mode
    def _start_process(self, init: dict[str, Any]) -> None:
        assert self._tun is not None and self._sock is not None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = (self._tun.fd, self._sock.fileno(), child.fileno())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "overlay.worker", "--tun-fd", str(fds[0]), "--udp-fd", str(fds[1]),
             "--ctl-fd", str(fds[2]), "--tun-name", self._tun.name], pass_fds=fds,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        child.close()
        self._ctl = parent
        if self._pidfile is not None:
            with open(self._pidfile, "w") as f:
                f.write(f"{self._proc.pid}\n")
        parent.send(json.dumps({**init, "outlive_parent": self.state_dir is not None}).encode())
        if self._peers:
            self._send_ctl({"op": "set_peers", "peers": peers_to_wire(self._peers)})
        parent.setblocking(False)
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_ctl)

    def _on_ctl(self) -> None:
        assert self._ctl is not None
        while True:
            try:
                raw = self._ctl.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                raw = b""
            if not raw:  # the worker died: report it and start another (peers re-handshake)
                loop = asyncio.get_running_loop()
                loop.remove_reader(self._ctl.fileno())
                self._ctl.close()
                self._ctl = None
                code = self._proc.poll() if self._proc is not None else None
                log.error("overlay data path worker exited (%s); restarting in %.1f s", code, RESTART_DELAY)
                self._snapshot = {**self._snapshot, "error": f"data path worker exited ({code}), restarting"}
                self._restart = loop.call_later(RESTART_DELAY, self._respawn)
                return
            msg = json.loads(raw)
            if msg.get("op") == "status":
                self._snapshot = msg["status"]

    def _respawn(self) -> None:
        self._restart = None
        if self._proc is None or self._tun is None:
            return  # stopped meanwhile
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(0.1)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.worker_restarts += 1
        self._start_process(self._init_message())

    def _send_ctl(self, msg: dict[str, Any]) -> None:
        if self._ctl is None:
            return
        try:
            self._ctl.send(json.dumps(msg).encode())
        except OSError as e:
            log.warning("overlay worker control send failed: %s", e)

    async def _stop_process(self) -> None:
        proc, ctl = self._proc, self._ctl
        assert proc is not None
        if ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(ctl.fileno())
            self._send_ctl({"op": "stop"})
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        if ctl is not None:
            ctl.close()
        self._proc = self._ctl = None


__all__ = ["CHECK_EVERY", "Mode", "OverlayService", "PeerInfo"]
