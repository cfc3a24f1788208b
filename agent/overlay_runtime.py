"""The agent's part of the overlay: its X25519 key, its /24, its peers, and ``GET /v1/overlay``.

The host's static key is made once and kept 0600 in the data dir; its public half travels in gossip
metadata (``overlay_key``) and the leader copies it into the host's replicated record. The /24 is
leased in the replicated state when the host registers. Once this host has its lease, the
:class:`overlay.service.OverlayService` starts (TUN, routes, iptables, data path); from then on every
applied change to the host records becomes the overlay's peer set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from agent.cluster import Cluster
from agent.config import AgentConfig
from agent.docker import BRIDGE

log = logging.getLogger("corral.overlay")

KEY_FILE = "overlay.key"


def load_or_make_key(data_dir: Path) -> tuple[bytes, bytes]:
    """(private, public) raw X25519 keys; made on first start, then read back."""
    path = data_dir / KEY_FILE
    try:
        private = path.read_bytes()
        if len(private) != 32:
            raise ValueError(f"{path} is {len(private)} bytes, not 32")
        key = X25519PrivateKey.from_private_bytes(private)
    except FileNotFoundError:
        key = X25519PrivateKey.generate()
        private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
            f.flush()
            os.fsync(f.fileno())
    return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class OverlayRuntime:
    """Starts the overlay once this host has a subnet, then keeps its peers in line with the state."""

    def __init__(self, config: AgentConfig, cluster: Cluster, private_key: bytes, secret: bytes) -> None:
        self.config = config
        self.cluster = cluster
        self._private_key = private_key
        self._secret = secret
        self.service: Any = None
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._peers_seen: Any = None

    async def start(self) -> None:
        if not self.config.overlay:
            self.error = "the overlay is off on this host (--no-overlay)"
            return
        self._task = asyncio.create_task(self._run(), name="overlay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.service is not None:
            try:
                await self.service.stop()
            except Exception:
                log.exception("overlay stop failed")

    async def _run(self) -> None:
        from overlay.service import OverlayService

        state, raft = self.cluster.state, self.cluster.raft
        while (me := state.hosts.get(self.config.name)) is None or not me.get("subnet"):
            await raft.wait_applied(raft.applied + 1, 1.0)
        subnet = ipaddress.ip_network(me["subnet"])
        assert isinstance(subnet, ipaddress.IPv4Network)
        delay = 1.0
        while True:  # a busy TUN or port (something still holding them) may free up: keep trying, say why
            try:
                service = OverlayService(host=self.config.name, underlay=self.config.bind, subnet=subnet,
                                         private_key=self._private_key, cluster_secret=self._secret, bridge=BRIDGE,
                                         state_dir=str(self.config.data_dir))
                await service.start()
                break
            except Exception as exc:
                self.error = f"overlay did not start (retrying in {delay:g} s): {exc}"
                log.exception("overlay did not start; retrying in %g s", delay)
                try:  # whatever it did open (TUN, socket, worker) must not block the next try
                    await service.stop()
                except Exception:
                    log.exception("cleaning up after a failed overlay start")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.error = None
        self.service = service
        log.info("overlay up: %s via %s:4500", subnet, self.config.bind)
        while True:
            self._sync_peers()
            await raft.wait_applied(raft.applied + 1, 2.0)

    def _sync_peers(self) -> None:
        from overlay.service import PeerInfo

        peers = []
        for name, host in sorted(self.cluster.state.hosts.items()):
            if name == self.config.name or not host.get("subnet") or not host.get("overlay_key"):
                continue
            peers.append(PeerInfo(name, host["address"], ipaddress.IPv4Network(host["subnet"]),
                                  bytes.fromhex(host["overlay_key"])))
        if peers != self._peers_seen:
            self.service.set_peers(peers)
            self._peers_seen = peers
            log.info("overlay peers: %s", ", ".join(f"{p.name} {p.subnet}" for p in peers) or "none")

    def status(self) -> dict[str, Any]:
        if self.service is None:
            state = "off" if not self.config.overlay else "starting" if self.error is None else "retrying"
            return {"state": state, "error": self.error}
        body: dict[str, Any] = self.service.status()
        return body


OVERLAY_KEY = web.AppKey("overlay", OverlayRuntime)


async def overlay_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[OVERLAY_KEY].status())


def add_routes(app: web.Application, runtime: OverlayRuntime) -> None:
    app[OVERLAY_KEY] = runtime
    app.router.add_get("/v1/overlay", overlay_status)
