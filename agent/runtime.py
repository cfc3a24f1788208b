"""Everything one agent runs, started together and stopped in reverse order.

    gossip (membership)  →  Raft (desired state)  →  leader loop (membership, hosts, placements)
                                                  →  reconciler (this host's Docker Engine)
    HTTP API over all of it

Gossip metadata carries what others need to reach this node: its API URL, its Raft address, its
labels and capacity. Raft peers are taken from it as members appear or move.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from agent import hostinfo
from agent.cluster import Cluster
from agent.config import AgentConfig
from agent.docker import DockerEngine
from agent.leader import Leader, MemberInfo
from agent.reconciler import Reconciler
from agent.state import ClusterState, command
from mesh import raft_config
from mesh.raft import RaftNode
from mesh.raft_driver import RaftDriver
from mesh.raft_storage import SqliteStorage
from mesh.raft_transport import RaftTransport, Sealer

log = logging.getLogger("corral.agent")


class Membership(Protocol):
    """The gossip layer as the runtime uses it."""

    def members(self) -> list[MemberInfo]: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...


def local_meta(config: AgentConfig) -> dict[str, Any]:
    mem = hostinfo.meminfo()
    return {
        "api": config.api_url,
        "raft": f"{config.bind}:{config.raft_port}",
        "manager": config.manager,
        "labels": dict(config.labels),
        "cpus": hostinfo.cpu_count(),
        "memory": mem.get("total", 0),
    }


@dataclasses.dataclass
class Runtime:
    config: AgentConfig
    cluster: Cluster
    leader: Leader
    reconciler: Reconciler
    storage: SqliteStorage
    transport: RaftTransport


@contextlib.asynccontextmanager
async def run_cluster(config: AgentConfig, engine: DockerEngine, sealer: Sealer,
                      membership: Membership) -> AsyncIterator[Runtime]:
    """Start Raft, the leader loop and the reconciler; stop them on exit."""
    storage = await SqliteStorage.open(config.data_dir / "raft")
    persistent = await storage.load()
    if storage.truncated_from is not None:
        log.warning("raft log had a torn or corrupt tail: truncated from index %d", storage.truncated_from)
    fresh = persistent.snapshot is None and not persistent.entries and persistent.hard_state.term == 0
    cfg = raft_config.lan()
    core = RaftNode(config.name, cfg, random.Random(), state=persistent,
                    voters=(config.name,) if config.bootstrap and fresh else ())
    state = ClusterState()
    deliver: list[Callable[[Any], None]] = []
    transport = RaftTransport((config.bind, config.raft_port), sealer, lambda m: deliver[0](m))
    reconciler_ref: list[Reconciler] = []
    driver = RaftDriver(core, storage, state, transport, cfg.tick_seconds,
                        on_applied=lambda _i: reconciler_ref[0].kick() if reconciler_ref else None)
    deliver.append(driver.deliver)

    def api_of(node: str) -> str | None:
        for m in membership.members():
            if m.name == node:
                return str(m.meta.get("api")) if m.meta.get("api") else None
        return None

    cluster = Cluster(state, driver, api_of, sealer)
    leader = Leader(driver, state, membership.members, grace=config.host_grace,
                    replace_dead_managers_after=config.replace_dead_managers_after)

    async def report(instance: str, status: dict[str, Any]) -> None:
        await cluster.propose_anywhere(command("instance.status", id=instance, host=config.name, **status))

    reconciler = Reconciler(config.name, state, engine, report)
    reconciler_ref.append(reconciler)

    def membership_changed() -> None:
        for m in membership.members():
            raft_addr = str(m.meta.get("raft") or "")
            if m.name != config.name and ":" in raft_addr:
                host, _, port = raft_addr.rpartition(":")
                transport.set_peer(m.name, (host, int(port)))
        leader.kick()

    await transport.start()
    await driver.start(persistent.snapshot.data if persistent.snapshot else None)
    membership.on_change(membership_changed)
    membership_changed()
    await leader.start()
    await reconciler.start()
    log.info("raft member %s started (%s)", config.name, "bootstrapped a new cluster" if config.bootstrap and fresh
             else f"term {persistent.hard_state.term}, {len(persistent.entries)} entries on disk")
    try:
        yield Runtime(config, cluster, leader, reconciler, storage, transport)
    finally:
        await reconciler.stop()
        await leader.stop()
        await driver.stop()
        await transport.close()
        await storage.close()
