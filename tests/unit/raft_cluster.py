"""A hand-stepped Raft cluster for scenario tests: synchronous delivery, explicit ticks.

Each node is driven exactly like the real driver: persist the Ready to MemoryStorage, send, restore
and apply to a KV state machine, advance. Messages are queued and delivered by ``stabilize()``
until the network is quiet; ``drop`` filters and ``blocked`` links cut the network.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from mesh.raft.config import RaftConfig, local
from mesh.raft.core import RaftNode, ReadState, Role
from mesh.raft.messages import Entry, Message, NodeId, TimeoutNow
from mesh.raft.sim import KVStateMachine
from mesh.raft.storage import MemoryStorage


def cfg(**kw: object) -> RaftConfig:
    return replace(local(), **kw)  # type: ignore[arg-type]


class Cluster:
    def __init__(self, n: int, *, learners: int = 0, config: RaftConfig | None = None, seed: int = 0,
                 extra: int = 0, storage_factory: Callable[[], MemoryStorage] = MemoryStorage) -> None:
        """``n`` voters, ``learners`` nodes that start empty (added by conf change later),
        ``extra`` spare ids as well."""
        self.config = config or cfg()
        self.rng = random.Random(seed)
        self.ids = [f"n{i + 1}" for i in range(n + learners + extra)]
        self.voter_ids = self.ids[:n]
        self.nodes: dict[NodeId, RaftNode] = {}
        self.storage: dict[NodeId, MemoryStorage] = {}
        self.sm: dict[NodeId, KVStateMachine] = {}
        self.applied: dict[NodeId, list[Entry]] = {}
        self.reads: dict[NodeId, list[ReadState]] = {}
        self.alive: set[NodeId] = set(self.ids)
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.drop: Callable[[Message], bool] = lambda m: False
        self.sent: list[Message] = []
        self.queue: list[Message] = []
        self.auto_compact = True
        for nid in self.ids:
            self.storage[nid] = storage_factory()
            self.sm[nid] = KVStateMachine()
            self.applied[nid] = []
            self.reads[nid] = []
            self.nodes[nid] = RaftNode(nid, self.config, random.Random(self.rng.getrandbits(32)),
                                       voters=self.voter_ids if nid in self.voter_ids else ())
            self.process(nid)

    def process(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        while node.has_ready():
            rd = node.ready()
            self.storage[nid].save(rd.hard_state, rd.entries, rd.snapshot)
            self.queue.extend(rd.messages)
            self.sent.extend(rd.messages)
            if rd.snapshot is not None:
                self.sm[nid].restore(rd.snapshot.data)
            for e in rd.committed_entries:
                self.sm[nid].apply(e)
                self.applied[nid].append(e)
            self.reads[nid].extend(rd.read_states)
            node.advance(rd)
            if self.auto_compact and node.wants_snapshot():
                self.storage[nid].compact(node.compact(node.applied, self.sm[nid].snapshot()))

    def stabilize(self, limit: int = 100_000) -> None:
        for nid in sorted(self.alive):
            self.process(nid)
        steps = 0
        while self.queue:
            m = self.queue.pop(0)
            steps += 1
            assert steps < limit, "cluster did not quiesce"
            if m.to not in self.alive or (m.frm, m.to) in self.blocked or self.drop(m):
                continue
            self.nodes[m.to].step(m)
            self.process(m.to)

    def tick(self, times: int = 1, only: list[NodeId] | None = None) -> None:
        for _ in range(times):
            for nid in sorted(only if only is not None else self.alive):
                if nid in self.alive:
                    self.nodes[nid].tick()
            self.stabilize()

    def elect(self, nid: NodeId) -> None:
        """Make ``nid`` campaign now, as a TimeoutNow would (skipping PreVote and leader leases)."""
        node = self.nodes[nid]
        node.step(TimeoutNow("tester", nid, node.term))
        self.stabilize()
        assert node.role == Role.LEADER, f"{nid} did not become leader: {node.status()}"

    def leaders(self) -> list[NodeId]:
        return [nid for nid in sorted(self.alive) if self.nodes[nid].role == Role.LEADER]

    def leader(self) -> NodeId:
        live = self.leaders()
        assert live, "no leader"
        return max(live, key=lambda nid: self.nodes[nid].term)

    def propose(self, nid: NodeId, data: bytes) -> int:
        res = self.nodes[nid].propose(data)
        assert isinstance(res, int), res
        self.stabilize()
        return res

    def put(self, nid: NodeId, key: str, value: str) -> int:
        import msgpack
        return self.propose(nid, msgpack.packb([0, 0, "put", key, value, None]))

    def crash(self, nid: NodeId) -> None:
        self.alive.discard(nid)
        self.queue = [m for m in self.queue if m.frm != nid]

    def restart(self, nid: NodeId) -> None:
        st = self.storage[nid].load()
        self.nodes[nid] = RaftNode(nid, self.config, random.Random(self.rng.getrandbits(32)), state=st)
        self.sm[nid] = KVStateMachine()
        if st.snapshot is not None:
            self.sm[nid].restore(st.snapshot.data)
        self.alive.add(nid)
        self.stabilize()

    def isolate(self, nid: NodeId) -> None:
        for other in self.ids:
            if other != nid:
                self.blocked |= {(nid, other), (other, nid)}

    def heal(self) -> None:
        self.blocked = set()
