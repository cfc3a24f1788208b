"""The agent's part of the overlay: its X25519 key, its /24, its peers, and ``GET /v1/overlay``.

The host's static key is made once and kept 0600 in the data dir; its public half travels in gossip
metadata (``overlay_key``) and the leader copies it into the host's replicated record. The /24 is
leased in the replicated state when the host registers. Once this host has its lease, the
:class:`overlay.service.OverlayService` starts (TUN, routes, iptables, data path); from then on every
applied change to the host records becomes the overlay's peer set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from agent.cluster.feed import Feed, Subscription
from agent.model.changes import Topic
from agent.model.state import ClusterState
from agent.node.docker import BRIDGE
from mesh.aio import supervised
from mesh.files import write_private
from overlay.service import OverlayService, PeerInfo

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
        write_private(path, private)
    return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class OverlayRuntime:
    """Starts the overlay once this host has a subnet, then keeps its peers in line with the host records."""

    def __init__(self, host: str, underlay: str, data_dir: Path, enabled: bool, state: ClusterState,
                 private_key: bytes, secret: bytes) -> None:
        self.host = host
        self.underlay = underlay
        self.data_dir = data_dir
        self.enabled = enabled
        self.state = state
        self._private_key = private_key
        self._secret = secret
        self.service: OverlayService | None = None
        self.error: str | None = None
        self._peers_seen: list[PeerInfo] | None = None
        self._task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def running(self, feed: Feed) -> AsyncIterator[OverlayRuntime]:
        """The overlay for as long as the context is open (its data-path worker stops with it)."""
        if not self.enabled:
            self.error = "the overlay is off on this host (--no-overlay)"
            yield self
            return
        hosts = feed.subscribe(lambda c: c.topic in (Topic.HOST, Topic.ALL), name="overlay")
        try:
            async with supervised(self._run(hosts), "overlay") as self._task:
                yield self
        finally:
            hosts.close()
            if self.service is not None:
                try:
                    await self.service.stop()
                except Exception:
                    log.exception("overlay stop failed")
                self.service = None

    async def _run(self, hosts: Subscription) -> None:
        while (me := self.state.hosts.get(self.host)) is None or not me.subnet:
            await hosts.next()
        subnet = ipaddress.ip_network(me.subnet)
        assert isinstance(subnet, ipaddress.IPv4Network)
        delay = 1.0
        while True:  # a busy TUN or port (something still holding them) may free up: keep trying, say why
            service = OverlayService(host=self.host, underlay=self.underlay, subnet=subnet,
                                     private_key=self._private_key, cluster_secret=self._secret, bridge=BRIDGE,
                                     state_dir=str(self.data_dir))
            try:
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
        log.info("overlay up: %s via %s:4500", subnet, self.underlay)
        while True:
            self._sync_peers(service)
            await hosts.next()

    def _sync_peers(self, service: OverlayService) -> None:
        """Peers are the hosts of this host's environment only: a host of another environment gets no
        session, so nothing it sends is accepted (and what this host's containers send to its /24 has
        no route); within a session, an inner source outside the peer's /24 is dropped as spoofed."""
        me = self.state.hosts.get(self.host)
        environment = me.environment if me is not None else "default"
        peers = []
        for name, host in sorted(self.state.hosts.items()):
            if name == self.host or not host.subnet or not host.overlay_key or host.environment != environment:
                continue
            peers.append(PeerInfo(name, host.address, ipaddress.IPv4Network(host.subnet),
                                  bytes.fromhex(host.overlay_key)))
        if peers != self._peers_seen:
            service.set_peers(peers)
            self._peers_seen = peers
            log.info("overlay peers: %s", ", ".join(f"{p.name} {p.subnet}" for p in peers) or "none")

    def problem(self) -> str | None:
        """Why this host's containers cannot reach the others' now (None: up, or off on purpose)."""
        if not self.enabled:
            return None
        if self._task is not None and self._task.done():
            return "the overlay stopped"
        if self.error is not None:
            return self.error
        if self.service is not None:
            return self.service.problem()
        return None

    def status(self) -> dict[str, object]:
        if self.service is None:
            state = "off" if not self.enabled else "starting" if self.error is None else "retrying"
            return {"state": state, "error": self.error}
        return self.service.status()


__all__ = ["KEY_FILE", "OverlayRuntime", "load_or_make_key"]
