"""What the API's handlers use, made by the agent before the app starts, and the app's keys.

Every handler reaches its dependencies through ``request.app[DEPS]``; there are no module globals.
A unit test builds the same bundle from real parts (a single-voter Raft on loopback, an unstarted
gossip node, a keyring) and a fake Docker Engine (``tests/unit/fakes.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Protocol

from aiohttp import web

from agent.api.passwords import Auth
from agent.cluster.replica import Replica
from agent.node.dns import DnsServer
from agent.node.docker import Engine
from agent.node.history import History
from agent.node.images import ImageManager
from agent.node.lb import LoadBalancers
from agent.node.reconciler import Reconciler
from mesh.gossip.node import GossipNode
from mesh.keyring import Keyring


class HealthSource(Protocol):
    def problems(self) -> dict[str, str | None]:
        """Each part of the agent (raft, gossip, reconciler, overlay) → what is wrong with it, or None."""
        ...


class OverlayView(Protocol):
    def status(self) -> dict[str, object]: ...


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    api_url: str
    node_id: str
    started: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass(frozen=True)
class ApiDeps:
    node: NodeInfo
    replica: Replica
    engine: Engine
    gossip: GossipNode
    ring: Keyring
    overlay: OverlayView
    health: HealthSource
    auth: Auth = dataclasses.field(default_factory=Auth)
    secret: bytes = dataclasses.field(default=b"", repr=False)
    """The cluster secret: it opens the CA's key (``mesh.pki``) and goes to a host that joins."""
    images: ImageManager | None = None
    """This host's image manager (pulls, peer transfers, uploads)."""
    dns: DnsServer | None = None
    """This host's DNS server (``agent/node/dns.py``)."""
    load_balancers: LoadBalancers | None = None
    """This host's HAProxy instances (their figures for ``/v1/containers/{id}/stats``)."""
    history: History | None = None
    """This host's stats history (``…/stats?since=``), fed by its sampler."""
    reconciler: Reconciler | None = None
    """This host's reconciler (its passes and actions for ``/metrics``)."""


DEPS = web.AppKey("deps", ApiDeps)
DOCUMENT = web.AppKey("openapi", dict[str, object])
class Streams:
    """The handlers streaming an answer now (events, logs -f): cancelled at shutdown, not waited for."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()


STREAMS = web.AppKey("streams", Streams)


@contextlib.contextmanager
def streaming(request: web.Request) -> Iterator[None]:
    """Mark this handler as one that streams until its client goes: the agent's stop ends it."""
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS].tasks
    streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)


__all__ = ["DEPS", "DOCUMENT", "STREAMS", "ApiDeps", "HealthSource", "NodeInfo", "OverlayView", "streaming"]
