"""A deterministic Raft simulator: N cores, one seeded PRNG, a virtual clock, a faulty network.

Time advances in units (``units_per_tick`` per Raft tick). Each unit delivers the messages due then,
ticks every live node on tick boundaries, and drives each touched node through Ready exactly like
the real driver: persist to its MemoryStorage, send, restore/apply to a key-value state machine,
advance. A crash throws away the core and the state machine; a restart rebuilds them from storage
only, so whatever never reached storage is lost, as on a real machine.

Invariants are checked after every step; a violation raises :class:`InvariantViolation` naming the
seed (TigerBeetle's VOPR habit): election safety, log matching, leader completeness, state-machine
safety, committed entries never change and stay on a quorum of disks. Client operations (put, get
by ReadIndex, cas, delete) form a history for :mod:`mesh.linearizability`.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from mesh.linearizability import Op, OpKind, check_history
from mesh.raft.config import RaftConfig, local
from mesh.raft.core import RaftNode, Ready, Role, sends_before_persisting
from mesh.raft.messages import ConfChangeOp, Entry, EntryKind, Message, NodeId
from mesh.raft.storage import MemoryStorage

UNITS_PER_TICK = 10


class InvariantViolation(AssertionError):
    pass


class KVStateMachine:
    """put/get/delete/cas over str keys; entry data is msgpack ``[client, seq, op, key, value, expected]``."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, entry: Entry) -> object:
        if entry.kind != EntryKind.NORMAL or not entry.data:
            return None
        try:
            _client, _seq, op, key, value, expected = msgpack.unpackb(entry.data, raw=False)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return None  # not a kv command: applied as a no-op, like every replica does
        if op == "put":
            self.data[key] = value
            return None
        if op == "delete":
            self.data.pop(key, None)
            return None
        if op == "cas":
            if self.data.get(key) == expected:
                if value is None:
                    self.data.pop(key, None)
                else:
                    self.data[key] = value
                return True
            return False
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return bytes(msgpack.packb(self.data, use_bin_type=True))

    def restore(self, data: bytes) -> None:
        self.data = dict(msgpack.unpackb(data, raw=False))


@dataclass
class SimNode:
    id: NodeId
    storage: MemoryStorage
    core: RaftNode
    sm: KVStateMachine
    alive: bool = True
    seen_commit: int = 0
    incarnation: int = 0
    inflight: Ready | None = None  # handed to the disk, fsync not yet complete
    inflight_sent: bool = False  # its messages already left (a leader's, sent while its disk writes)


@dataclass(frozen=True, slots=True)
class _DiskDone:
    node: NodeId
    incarnation: int


@dataclass
class _Pending:
    client: int
    kind: OpKind
    key: str
    value: str | None
    expected: str | None
    invoke: int
    node: NodeId
    index: int = 0
    term: int = 0
    data: bytes = b""
    ctx: bytes = b""
    read_index: int | None = None


@dataclass
class Faults:
    loss: float = 0.05
    duplicate: float = 0.02
    min_delay: int = 1
    max_delay: int = 6  # units; delays differ per message, so messages reorder
    crash: float = 0.01  # per tick, a random live node crashes
    restart: float = 0.1  # per tick, a random dead node restarts
    partition: float = 0.01  # per tick, the network splits at random
    heal: float = 0.05
    max_dead: int | None = None  # default: a minority
    crash_mid_ready: float = 0.002  # per Ready: crash after persisting, before sending or applying
    disk_delay: int = 0  # units an fsync takes (random 1..disk_delay); 0: Readys complete at once


@dataclass
class Simulator:
    seed: int
    n: int = 3
    learners: int = 0
    config: RaftConfig = field(default_factory=lambda: replace(local(), snapshot_threshold=16))
    faults: Faults = field(default_factory=Faults)
    clients: int = 3
    keys: tuple[str, ...] = ("a", "b")
    client_rate: float = 0.3  # per client per tick, when idle
    op_timeout_ticks: int = 40
    membership_churn: float = 0.0  # per tick: the leader proposes a random single-server change
    transfer_rate: float = 0.0  # per tick: the leader hands leadership to a random voter
    units_per_tick: int = UNITS_PER_TICK
    #: A leader sends a Ready's messages while its disk writes the entries (as ``RaftDriver`` does).
    leader_sends_early: bool = True

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.now = 0  # units
        self.ids = [f"n{i + 1}" for i in range(self.n + self.learners)]
        voters = self.ids[: self.n]
        self.nodes: dict[NodeId, SimNode] = {}
        # Each node's clock ticks at its own phase, as real timers do; faults and clients act at 0.
        self.phase = {nid: self.rng.randrange(self.units_per_tick) for nid in self.ids}
        self._phases = sorted(set(self.phase.values()) | {0})
        for nid in self.ids:
            core = RaftNode(nid, self.config, random.Random(self.rng.getrandbits(64)),
                            voters=voters if nid in voters else ())
            self.nodes[nid] = SimNode(nid, MemoryStorage(), core, KVStateMachine())
        self._queue: list[tuple[int, int, Message | _DiskDone]] = []
        self._seq = 0
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.leaders: dict[int, NodeId] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.log_ids: dict[tuple[int, int], tuple[int, int, bytes]] = {}
        self.max_commit = 0
        self.max_recorded = 0
        self.commit_term: dict[int, int] = {}  # term of the first node seen committing the index
        self.history: list[Op] = []
        self.pending: dict[int, _Pending] = {}
        self._op_seq = 0
        self.messages_delivered = 0
        self.stats: Counter[str] = Counter()
        self._started = False
        self._chaos = False
        for nid in self.ids:
            self._process(self.nodes[nid])
        self._started = True  # bootstrap entry 1 is on every initial voter's disk now

    # ---- network -----------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        f = self.faults
        if (m.frm, m.to) in self.blocked or self.rng.random() < f.loss:
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            self._seq += 1
            at = self.now + self.rng.randint(f.min_delay, f.max_delay)
            heapq.heappush(self._queue, (at, self._seq, m))

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Only nodes within one group can talk; nodes in no group are cut off from all."""
        sets = [set(g) for g in groups]
        self.stats["partitions"] += 1
        self.blocked = {(a, b) for a in self.ids for b in self.ids if a != b
                        and not any(a in s and b in s for s in sets)}

    def heal(self) -> None:
        self.blocked = set()

    # ---- crash / restart ---------------------------------------------------------------------

    def crash(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        node.alive = False
        node.inflight = None
        node.inflight_sent = False
        node.incarnation += 1
        self.stats["crashes"] += 1
        for p in [p for p in self.pending.values() if p.node == nid]:
            self._finish(p, None, indeterminate=True)

    def restart(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        state = node.storage.load()
        node.core = RaftNode(nid, self.config, random.Random(self.rng.getrandbits(64)), state=state)
        node.sm = KVStateMachine()
        if state.snapshot is not None:
            node.sm.restore(state.snapshot.data)
        node.alive = True
        node.seen_commit = 0
        self.stats["restarts"] += 1
        self._process(node)

    # ---- the loop ----------------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        """The live leader of the highest term, if any."""
        best = None
        for node in self.nodes.values():
            if node.alive and node.core.role == Role.LEADER and (best is None or node.core.term > best.core.term):
                best = node
        return best

    def run_ticks(self, ticks: int, *, random_faults: bool = False, clients: bool = False) -> None:
        end = self.now + ticks * self.units_per_tick
        while self.now < end:
            self.step_event(end, random_faults=random_faults, clients=clients)

    def _may_crash(self) -> bool:
        dead = sum(1 for n in self.nodes.values() if not n.alive)
        return dead < (self.faults.max_dead if self.faults.max_dead is not None else (self.n - 1) // 2)

    def step_event(self, limit: int, *, random_faults: bool = False, clients: bool = False) -> None:
        """Jump to the next delivery or tick boundary (at most ``limit``) and handle what is due;
        nothing happens in between, so this equals stepping every unit."""
        self._chaos = random_faults
        upt = self.units_per_tick
        nxt = min(self.now + ((p - self.now) % upt or upt) for p in self._phases)
        if self._queue and self._queue[0][0] < nxt:
            nxt = max(self._queue[0][0], self.now + 1)
        self.now = min(nxt, limit)
        touched: dict[NodeId, SimNode] = {}
        while self._queue and self._queue[0][0] <= self.now:
            _, _, m = heapq.heappop(self._queue)
            if isinstance(m, _DiskDone):
                disk = self.nodes[m.node]
                if disk.alive and disk.incarnation == m.incarnation and disk.inflight is not None:
                    rd, disk.inflight = disk.inflight, None
                    self._finish_ready(disk, rd)
                    touched[disk.id] = disk
                continue
            dest = self.nodes.get(m.to)
            if dest is None or not dest.alive:
                continue
            dest.core.step(m)
            self.messages_delivered += 1
            touched[dest.id] = dest
        phase = self.now % self.units_per_tick
        if phase == 0 and random_faults:
            self._random_faults()
        for node in self.nodes.values():
            if node.alive and self.phase[node.id] == phase:
                node.core.tick()
                touched[node.id] = node
        if phase == 0 and clients:
            self._clients_act(touched)
        for node in touched.values():
            if node.alive:
                self._process(node)

    def _random_faults(self) -> None:
        f, rng = self.faults, self.rng
        alive = [n for n in self.ids if self.nodes[n].alive]
        dead = [n for n in self.ids if not self.nodes[n].alive]
        if dead and rng.random() < f.restart:
            self.restart(rng.choice(dead))
        elif self._may_crash() and alive and rng.random() < f.crash:
            self.crash(rng.choice(alive))
        if self.membership_churn and rng.random() < self.membership_churn:
            self._churn()
        if self.transfer_rate and rng.random() < self.transfer_rate:
            lead = self.leader()
            if lead is not None and len(lead.core.voters) > 1:
                to = rng.choice(sorted(lead.core.voters - {lead.id}))
                if lead.core.transfer_leadership(to) is None:
                    self.stats["transfers"] += 1
                    self._process(lead)
        if self.blocked and rng.random() < f.heal:
            self.heal()
        elif not self.blocked and rng.random() < f.partition:
            ids = self.ids[:]
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self.partition(ids[:cut], ids[cut:])

    def _churn(self) -> None:
        lead = self.leader()
        if lead is None:
            return
        core, rng = lead.core, self.rng
        others = [n for n in self.ids if n != lead.id]
        node = rng.choice(others)
        if node in core.learners:
            op = ConfChangeOp.PROMOTE if rng.random() < 0.7 else ConfChangeOp.REMOVE
        elif node in core.voters:
            if len(core.voters) <= 2:
                return
            op = ConfChangeOp.DEMOTE if rng.random() < 0.5 else ConfChangeOp.REMOVE
        else:
            op = ConfChangeOp.ADD_LEARNER
        if isinstance(core.propose_conf_change(op, node), int):
            self.stats[f"conf_{op.name.lower()}"] += 1
            self._process(lead)

    def _process(self, node: SimNode) -> None:
        """Drive ``node`` through its Readys. With ``Faults.disk_delay`` a Ready's fsync takes time
        and the node keeps stepping messages and ticks meanwhile (as the asyncio driver does);
        a crash before the fsync completes loses that Ready."""
        core = node.core
        while node.alive and node.inflight is None and core.has_ready():
            rd = core.ready()
            self._check_ready(node, rd)
            if self.faults.disk_delay and self._started:
                node.inflight = rd
                durable = (node.storage.hard_state.term, node.storage.hard_state.vote)
                node.inflight_sent = self.leader_sends_early and sends_before_persisting(core, rd, durable)
                if node.inflight_sent:
                    self.stats["sent_before_persisting"] += 1
                    for m in rd.messages:
                        self._send(m)
                self._seq += 1
                at = self.now + self.rng.randint(1, self.faults.disk_delay)
                heapq.heappush(self._queue, (at, self._seq, _DiskDone(node.id, node.incarnation)))
                break
            self._finish_ready(node, rd)
        if self._started and not self.membership_churn:
            self._check_durability()  # the quorum is only fixed while membership is

    def _finish_ready(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if self._chaos and self.rng.random() < self.faults.crash_mid_ready and self._may_crash():
            self.stats["crash_mid_ready"] += 1
            self.crash(node.id)
            return
        if node.inflight_sent:
            node.inflight_sent = False
        else:
            for m in rd.messages:
                self._send(m)
        if rd.snapshot is not None:
            node.sm.restore(rd.snapshot.data)
            self.stats["snapshots_installed"] += 1
        for e in rd.committed_entries:
            result = node.sm.apply(e)
            self._on_apply(node, e, result)
        core.advance(rd)
        for rs in rd.read_states:
            for p in self.pending.values():
                if p.ctx == rs.context and p.node == node.id:
                    p.read_index = rs.index
        self._serve_reads(node)
        if core.wants_snapshot():
            node.storage.compact(core.compact(core.applied, node.sm.snapshot()))
        self._check_node(node)

    # ---- invariants --------------------------------------------------------------------------

    def _fail(self, what: str) -> None:
        raise InvariantViolation(f"seed={self.seed} t={self.now}: {what}")

    def _check_ready(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        for e in rd.entries:  # log matching: (index, term) names one entry and one predecessor
            prev_term = core.term_at(e.index - 1)
            ident = (prev_term if prev_term is not None else -1, int(e.kind), e.data)
            seen = self.log_ids.get((e.index, e.term))
            if seen is None:
                self.log_ids[(e.index, e.term)] = ident
            elif seen[1:] != ident[1:] or (seen[0] != ident[0] and -1 not in (seen[0], ident[0])):
                self._fail(f"log matching: {node.id} holds ({e.index}, {e.term}) = {ident}, another log {seen}")

    def _check_node(self, node: SimNode) -> None:
        core = node.core
        if core.role == Role.LEADER:
            holder = self.leaders.setdefault(core.term, node.id)
            if holder != node.id:
                self._fail(f"election safety: {holder} and {node.id} both lead term {core.term}")
            # Leader completeness: every entry committed in an earlier term is in this leader's log.
            for i in range(max(core.snapshot_index + 1, 1), self.max_recorded + 1):
                want = self.committed.get(i)
                if want is not None and self.commit_term[i] < core.term and core.term_at(i) != want[0]:
                    self._fail(f"leader completeness: {node.id} (term {core.term}) has term {core.term_at(i)} at "
                               f"index {i}, committed in term {self.commit_term[i]} with entry term {want[0]}")
        if core.commit > node.seen_commit:
            for i in range(max(node.seen_commit, core.snapshot_index) + 1, core.commit + 1):
                e = core.entries_from(i, 1)
                if not e:
                    continue
                ident = (e[0].term, e[0].data)
                seen = self.committed.setdefault(i, ident)
                self.commit_term.setdefault(i, core.term)
                self.max_recorded = max(self.max_recorded, i)
                if seen != ident:
                    self._fail(f"committed entry changed: index {i} was {seen}, {node.id} commits {ident}")
            node.seen_commit = core.commit
            self.max_commit = max(self.max_commit, core.commit)

    def _on_apply(self, node: SimNode, e: Entry, result: object) -> None:
        ident = (e.term, e.data)
        seen = self.applied.setdefault(e.index, ident)
        if seen != ident:
            self._fail(f"state-machine safety: {node.id} applies {ident} at {e.index}, another applied {seen}")
        for p in list(self.pending.values()):
            if p.node == node.id and p.index == e.index and p.kind != "get":
                if p.data == e.data and p.term == e.term:
                    self._finish(p, result)
                else:
                    self._finish(p, None, failed=True)

    def _check_durability(self) -> None:
        c = self.max_recorded
        if c == 0:
            return
        term = self.committed[c][0]
        holders = 0
        for nid in self.ids[: self.n]:
            st = self.nodes[nid].storage
            if (st.snapshot is not None and st.snapshot.meta.index >= c) or st.term_at(c) == term:
                holders += 1
        if holders < self.n // 2 + 1:
            self._fail(f"committed index {c} is on {holders} disks, fewer than a quorum")

    # ---- clients -----------------------------------------------------------------------------

    def _clients_act(self, touched: dict[NodeId, SimNode]) -> None:
        rng = self.rng
        for c in range(self.clients):
            p = self.pending.get(c)
            if p is not None:
                if self.now - p.invoke > self.op_timeout_ticks * self.units_per_tick:
                    self._finish(p, None, indeterminate=True)
                continue
            if rng.random() >= self.client_rate:
                continue
            alive = [n for n in self.ids if self.nodes[n].alive]
            if not alive:
                continue
            node = self.nodes[rng.choice(alive)]
            touched[node.id] = node
            self._invoke(c, node, rng.choice(("put", "put", "get", "get", "cas", "delete")), rng.choice(self.keys))

    def _invoke(self, client: int, node: SimNode, kind: OpKind, key: str) -> None:
        self._op_seq += 1
        value: str | None = f"v{self._op_seq}" if kind in ("put", "cas") else None
        expected: str | None = None
        if kind == "cas":
            expected = self.nodes[node.id].sm.data.get(key) if self.rng.random() < 0.7 else f"v{self._op_seq - 1}"
        p = _Pending(client, kind, key, value, expected, self.now, node.id)
        if kind == "get":
            p.ctx = f"r{self._op_seq}".encode()
            if node.core.read_index(p.ctx) is not None:
                return  # refused outright: never happened
        else:
            p.data = bytes(msgpack.packb([client, self._op_seq, kind, key, value, expected], use_bin_type=True))
            res = node.core.propose(p.data)
            if not isinstance(res, int):
                return
            p.index, p.term = res, node.core.term
        self.pending[client] = p

    def _serve_reads(self, node: SimNode) -> None:
        for p in list(self.pending.values()):
            if p.node == node.id and p.read_index is not None and node.core.applied >= p.read_index:
                self._finish(p, node.sm.data.get(p.key))

    def _finish(self, p: _Pending, result: Any, *, indeterminate: bool = False, failed: bool = False) -> None:
        del self.pending[p.client]
        if failed:
            return
        self.history.append(Op(p.client, p.kind, p.key, p.invoke, None if indeterminate else self.now,
                               p.value, p.expected, result))

    def check_linearizable(self) -> None:
        for p in list(self.pending.values()):
            self._finish(p, None, indeterminate=True)
        res = check_history(self.history)
        self.stats["linearizability_unknown"] += res.unknown
        if not res.ok and not res.unknown:
            self._fail(f"history not linearizable on key {res.key}: {res.reason}")


def run_random(seed: int, ticks: int = 150, n: int = 3, spares: int = 0, churn: float = 0.0,
               disk_delay: int = 0) -> Simulator:
    """One randomized run: faults and clients throughout, then a calm tail; checks everything.
    ``spares`` empty nodes and ``churn`` > 0 add random membership changes; ``disk_delay`` makes
    fsyncs slow so that nodes step messages while a Ready is being persisted."""
    sim = Simulator(seed, n=n, learners=spares, membership_churn=churn, transfer_rate=0.01,
                    faults=Faults(disk_delay=disk_delay))
    sim.run_ticks(ticks, random_faults=True, clients=True)
    sim.heal()
    for nid in sim.ids:
        if not sim.nodes[nid].alive:
            sim.restart(nid)
    sim.run_ticks(40, clients=False)
    sim.check_linearizable()
    return sim
