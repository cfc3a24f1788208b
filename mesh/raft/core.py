"""The Raft core: sans-I/O, ticks for time, an injected ``random.Random`` for chance.

Theory of operation (see ``mesh/raft/design.md`` for the role table). The driver feeds inputs —
``tick()``, ``step(msg)``, ``propose(data)``, ``read_index(ctx)``, ``propose_conf_change(op, node)``,
``transfer_leadership(to)`` — then pulls one :class:`Ready` and handles it in etcd's order:
persist ``hard_state``/``entries``/``snapshot``, send ``messages``, apply ``committed_entries``
(restore ``snapshot`` first), answer ``read_states``, and call ``advance(ready)``. Nothing the
core decides is visible outside until it is in a Ready, and nothing in a Ready that depends on
durable state (a vote, an append ack) goes out before that state is persisted.

Roles swap behaviour through ``self._step`` and ``self._tick`` (etcd-io/raft ``raft.go``).
Configuration changes take effect when their entry is applied (in ``advance``), one at a time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from mesh.raft.config import RaftConfig
from mesh.raft.log import RaftLog
from mesh.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    NodeId,
    PreVote,
    PreVoteResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
    decode_conf_change,
    encode_conf_change,
)
from mesh.raft.progress import Progress, ProgressState


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the local applied index reaches ``index``."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class PersistentState:
    """What storage hands back at start: the core is rebuilt from exactly this."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None
    """Persist if not None."""
    entries: tuple[Entry, ...]
    """Persist, replacing any stored entries at or after ``entries[0].index``."""
    snapshot: Snapshot | None
    """Received from the leader: persist (replacing the whole stored log), then restore the state
    machine from it before applying ``committed_entries``."""
    messages: tuple[Message, ...]
    """Send after persisting."""
    committed_entries: tuple[Entry, ...]
    """Apply in order after persisting."""
    read_states: tuple[ReadState, ...]
    """Serve each read once the applied index reaches its index."""


@dataclass(frozen=True, slots=True)
class NotLeader:
    leader_hint: NodeId | None


class RejectCode(IntEnum):
    """Why a leader refused a proposal (the ``reason`` is the same in words)."""

    CONF_CHANGE_PENDING = 1
    INVALID_CONF_CHANGE = 2
    TRANSFERRING_LEADERSHIP = 3
    NOT_A_VOTER = 4


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    code: RejectCode = field(repr=False)


class StateMachine(Protocol):
    """What the driver applies committed entries to."""

    def apply(self, entry: Entry) -> object: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@dataclass(slots=True)
class _PendingRead:
    index: int
    requester: NodeId
    acks: set[NodeId]


class RaftNode:
    """One Raft member. All inputs are method calls; all outputs come out of :meth:`ready`."""

    def __init__(self, node_id: NodeId, config: RaftConfig, rng: random.Random, *,
                 state: PersistentState | None = None, voters: Iterable[NodeId] = ()) -> None:
        self.id = node_id
        self.cfg = config
        self._rng = rng
        self.term = 0
        self.vote: NodeId | None = None
        self.leader: NodeId | None = None
        self.role = Role.FOLLOWER
        self.commit = 0
        self.applied = 0
        self.voters: frozenset[NodeId] = frozenset()
        self.learners: frozenset[NodeId] = frozenset()
        self.log = RaftLog()
        self._prev_hs = HardState()
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._needs_bcast = False
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._pending_conf_index = 0
        self._transferee: NodeId | None = None
        self.lost_log_resets = 0  # followers that came back with less log than they had acknowledged
        self._reads: dict[bytes, _PendingRead] = {}
        self._read_order: list[bytes] = []
        self._reads_awaiting_commit: list[tuple[bytes, NodeId]] = []
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        if state is not None and (state.snapshot or state.entries or state.hard_state != HardState()):
            self._load(state)
        else:
            initial = tuple(sorted(set(voters)))
            if initial:
                cc = ConfChange(ConfChangeOp.BOOTSTRAP, "-", initial)
                self.log.append([Entry(1, 1, EntryKind.CONF_CHANGE, encode_conf_change(cc))])
                self.term = 1
                self.commit = 1
        self._become_follower(self.term, None)

    def _load(self, st: PersistentState) -> None:
        self.log.load(st.snapshot, st.entries)
        if st.snapshot is not None:
            self.voters, self.learners = st.snapshot.meta.conf.voters, st.snapshot.meta.conf.learners
        hs = st.hard_state
        self.term, self.vote = hs.term, hs.vote
        self.commit = min(max(hs.commit, self.log.snap.index), self.last_index)
        self.applied = self.log.snap.index
        self._prev_hs = hs

    # ---- log ---------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def last_term(self) -> int:
        return self.log.last_term

    @property
    def snapshot_index(self) -> int:
        return self.log.snap.index

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the log."""
        return self.log.term_at(index)

    def entries_from(self, lo: int, max_count: int) -> list[Entry]:
        return self.log.slice(lo, max_count)

    def _is_up_to_date(self, last_index: int, last_term: int) -> bool:
        return self.log.is_up_to_date(last_index, last_term)

    # ---- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def ticks_until_timer(self) -> int:
        """How many ticks from now the next one may do something (1: the next one).

        A leader heartbeats (and counts its quorum and snapshot timers) on every tick; a follower or
        candidate only acts when its election timeout runs out, and a learner never campaigns. A driver
        may sleep that long, as long as it still calls :meth:`tick` once for every tick period that
        passed, before it hands over the next message (so the election timer is reset exactly as if
        it had ticked all along).
        """
        if self.role == Role.LEADER:
            return max(1, self.cfg.heartbeat_ticks - self._heartbeat_elapsed) if not any(
                pr.state == ProgressState.SNAPSHOT for pr in self._progress.values()) else 1
        if self.id not in self.voters:
            return self.cfg.election_ticks
        return max(1, self._randomized_timeout - self._election_elapsed)

    def step(self, m: Message) -> None:
        """Handle one message from a peer (already decoded and unsealed)."""
        if m.to != self.id:
            return
        if m.term > self.term:
            if isinstance(m, RequestVote | PreVote):
                force = isinstance(m, RequestVote) and m.transfer
                in_lease = (self.cfg.check_quorum and self.leader is not None
                            and self._election_elapsed < self.cfg.election_ticks)
                if in_lease and not force:
                    return
            if isinstance(m, PreVote) or (isinstance(m, PreVoteResponse) and not m.reject):
                pass  # a pre-vote changes nobody's term
            elif isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if isinstance(m, AppendEntries | Heartbeat) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader learns our term and steps down (etcd: needed with PreVote).
                self._send(AppendEntriesResponse(self.id, m.frm, self.term, 0))
            elif isinstance(m, PreVote):
                self._send(PreVoteResponse(self.id, m.frm, self.term, True))
            return
        if isinstance(m, RequestVote | PreVote):
            self._handle_vote_request(m)
            return
        self._step(m)

    def propose(self, data: bytes) -> int | NotLeader | Rejected:
        """Append a normal entry; returns its index (not yet committed) or why not."""
        return self._propose(EntryKind.NORMAL, data)

    def propose_conf_change(self, op: ConfChangeOp, node: NodeId) -> int | NotLeader | Rejected:
        """One single-server change at a time; takes effect when its entry is applied."""
        if self.role != Role.LEADER:
            return NotLeader(self.leader)
        if self._pending_conf_index > self.applied:
            return Rejected("a configuration change is already in progress", RejectCode.CONF_CHANGE_PENDING)
        members = self.voters | self.learners
        ok = {
            ConfChangeOp.ADD_LEARNER: node not in members,
            ConfChangeOp.PROMOTE: node in self.learners,
            ConfChangeOp.DEMOTE: node in self.voters and node != self.id and len(self.voters) > 1,
            ConfChangeOp.REMOVE: node in members and node != self.id and (
                node not in self.voters or len(self.voters) > 1),
        }.get(op, False)
        if not ok:
            hint = " (transfer leadership first)" if node == self.id else ""
            return Rejected(f"{op.name} {node} is not valid for voters={sorted(self.voters)} "
                            f"learners={sorted(self.learners)}{hint}", RejectCode.INVALID_CONF_CHANGE)
        result = self._propose(EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(op, node)))
        if isinstance(result, int):
            self._pending_conf_index = result
        return result

    def _propose(self, kind: EntryKind, data: bytes) -> int | NotLeader | Rejected:
        if self.role != Role.LEADER:
            return NotLeader(self.leader)
        if self._transferee is not None:
            return Rejected(f"leadership is being transferred to {self._transferee}",
                            RejectCode.TRANSFERRING_LEADERSHIP)
        e = Entry(self.term, self.last_index + 1, kind, data)
        self.log.append([e])
        self._needs_bcast = True
        return e.index

    def read_index(self, context: bytes) -> NotLeader | None:
        """Ask for a linearizable read point; the answer is a ReadState with this context."""
        if self.role == Role.LEADER:
            self._leader_read(context, self.id)
            return None
        if self.leader is None:
            return NotLeader(None)
        self._send(ReadIndexRequest(self.id, self.leader, self.term, context))
        return None

    def transfer_leadership(self, to: NodeId) -> NotLeader | Rejected | None:
        if self.role != Role.LEADER:
            return NotLeader(self.leader)
        if to == self.id:
            return None
        if to not in self.voters or to not in self._progress:
            return Rejected(f"{to} is not a voter", RejectCode.NOT_A_VOTER)
        self._transferee = to
        self._election_elapsed = 0  # the transfer must finish within one election timeout
        if self._progress[to].match == self.last_index:
            self._send(TimeoutNow(self.id, to, self.term))
        else:
            self._send_append(to)
        return None

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Record the state machine's image at ``index`` (== applied) and drop the log up to it.
        The driver persists the returned snapshot with ``storage.compact(snapshot)``."""
        if index != self.applied:
            raise ValueError(f"compact({index}) needs index == applied ({self.applied})")
        return self.log.compact(index, ConfState(self.voters, self.learners), data)

    def wants_snapshot(self) -> bool:
        return self.applied - self.log.snap.index >= self.cfg.snapshot_threshold

    # ---- outputs -----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._msgs or self._read_states or self._needs_bcast or self.log.unstable_snapshot
                    or self.log.stable < self.last_index or self._hard_state() != self._prev_hs
                    or self.commit > max(self.applied, self.log.snap.index))

    def ready(self) -> Ready:
        """Everything to persist, send and apply; call once, handle it, then ``advance`` it.
        ``step``/``tick``/``propose`` may be called while the Ready is being persisted: whatever they
        produce goes into the next Ready."""
        if self._needs_bcast:
            self._needs_bcast = False
            if self.role == Role.LEADER:
                self._bcast_append()
        hs = self._hard_state()
        start = max(self.applied, self.log.snap.index)
        committed = tuple(self.entries_from(start + 1, self.commit - start)) if self.commit > start else ()
        rd = Ready(
            hard_state=hs if hs != self._prev_hs else None,
            entries=tuple(self.log.unstable()),
            snapshot=self.log.unstable_snapshot,
            messages=tuple(self._msgs),
            committed_entries=committed,
            read_states=tuple(self._read_states),
        )
        self._msgs.clear()
        self._read_states.clear()
        return rd

    @property
    def stable_hard_state(self) -> HardState:
        """The hard state last made durable: loaded from disk, or in a Ready since advanced (its commit may
        be ahead of the disk's: a commit alone need not be written)."""
        return self._prev_hs

    def take_heartbeats(self, durable_term: int) -> list[Message]:
        """The heartbeats and heartbeat answers of ``durable_term`` made since the last Ready, taken out of
        the next one so that they can leave now, while a Ready is still being written.

        They promise nothing that must be on disk first: a heartbeat carries the term (durable) and a
        commit index a quorum's durable copies made; an answer says this member heard the leader of that
        term. Held back behind a slow fsync (a disk busy with other writes: 0.3-0.5 s seen in the lab),
        the leader's heartbeats stop for longer than an election timeout and its followers campaign, and
        the followers' answers stop and a CheckQuorum leader steps down (etcd's raft sends them apart from
        its storage writes so too, with ``AsyncStorageWrites``)."""
        taken: list[Message] = []
        kept: list[Message] = []
        for m in self._msgs:
            (taken if isinstance(m, Heartbeat | HeartbeatResponse) and m.term == durable_term else kept).append(m)
        if taken:
            self._msgs = kept
        return taken

    def advance(self, rd: Ready) -> None:
        """The Ready was persisted, sent and applied."""
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            self.applied = max(self.applied, rd.snapshot.meta.index)
        self.log.stable_to(rd.entries, rd.snapshot)
        pending_snapshot = self.log.unstable_snapshot
        for e in rd.committed_entries:
            if e.index <= self.applied or (pending_snapshot is not None and e.index <= pending_snapshot.meta.index):
                continue  # a snapshot installed since this Ready was made supersedes the entry
            if e.kind == EntryKind.CONF_CHANGE:
                self._apply_conf_change(e)
            self.applied = e.index
        if self.role == Role.LEADER and self.id in self._progress:
            self._progress[self.id].maybe_update(self.log.stable)
            if self._maybe_commit():
                self._bcast_append()

    def match_index(self) -> dict[NodeId, int]:
        """On a leader: the highest log index known to be stored on each member (empty elsewhere)."""
        return {k: p.match for k, p in self._progress.items()}

    def status(self) -> dict[str, object]:
        """For ``GET /v1/raft``."""
        return {
            "id": self.id, "role": self.role.name.lower(), "term": self.term, "leader": self.leader,
            "commit": self.commit, "applied": self.applied, "last_index": self.last_index,
            "snapshot_index": self.log.snap.index, "voters": sorted(self.voters), "learners": sorted(self.learners),
            "lost_log_resets": self.lost_log_resets,
            "progress": {k: {"match": p.match, "next": p.next, "state": p.state.name.lower()}
                         for k, p in sorted(self._progress.items())},
        }

    # ---- role changes ------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.cfg.election_ticks + self._rng.randrange(self.cfg.election_ticks)
        self._votes = {}
        self._transferee = None
        self._progress = {}
        self._reads.clear()
        self._read_order.clear()
        self._reads_awaiting_commit.clear()

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        self._votes = {}
        self.leader = None
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        for peer in self.voters | self.learners | {self.id}:
            self._progress[peer] = self._new_progress()
        self._progress[self.id].match = self.log.stable
        self._progress[self.id].recent_active = True
        self._pending_conf_index = self.last_index
        self.log.append([Entry(self.term, self.last_index + 1, EntryKind.NOOP, b"")])
        self._needs_bcast = True

    def _new_progress(self) -> Progress:
        return Progress(self.cfg.max_inflight_appends, next=self.last_index + 1, recent_active=True)

    def _campaign(self, *, skip_pre_vote: bool = False, transfer: bool = False) -> None:
        """``transfer`` (after TimeoutNow) also tells voters to ignore their leader lease."""
        if self.id not in self.voters:
            return
        if self.cfg.pre_vote and not (skip_pre_vote or transfer):
            self._become_pre_candidate()
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term
        self._votes[self.id] = True
        if self._poll() is not None:
            return
        for peer in sorted(self.voters - {self.id}):
            if self.role == Role.PRE_CANDIDATE:
                self._send(PreVote(self.id, peer, vote_term, self.last_index, self.last_term))
            else:
                self._send(RequestVote(self.id, peer, vote_term, self.last_index, self.last_term, transfer))

    def _poll(self) -> bool | None:
        """Count votes; act on a win or a loss; None while undecided."""
        granted = sum(1 for v, ok in self._votes.items() if ok and v in self.voters)
        rejected = sum(1 for v, ok in self._votes.items() if not ok and v in self.voters)
        q = len(self.voters) // 2 + 1
        if granted >= q:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(skip_pre_vote=True)
            else:
                self._become_leader()
            return True
        if rejected > len(self.voters) - q:
            self._become_follower(self.term, None)
            return False
        return None

    # ---- ticks -------------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self.id in self.voters and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._campaign()

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.cfg.election_ticks:
            self._election_elapsed = 0
            if self.cfg.check_quorum:
                active = sum(1 for v in self.voters if v in self._progress and self._progress[v].recent_active)
                if active < len(self.voters) // 2 + 1:
                    self._become_follower(self.term, None)
                    return
                for peer, pr in self._progress.items():
                    pr.recent_active = peer == self.id
            self._transferee = None
        for pr in self._progress.values():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= 2 * self.cfg.election_ticks:
                    pr.become_probe()  # the snapshot was probably lost; offer it again
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(self._read_order[-1] if self._read_order else b"")

    # ---- votes -------------------------------------------------------------------------------

    def _handle_vote_request(self, m: RequestVote | PreVote) -> None:
        pre = isinstance(m, PreVote)
        can_vote = (self.vote == m.frm or (self.vote is None and self.leader is None)
                    or (pre and m.term > self.term))
        if can_vote and self._is_up_to_date(m.last_index, m.last_term):
            if pre:
                self._send(PreVoteResponse(self.id, m.frm, m.term, False))
            else:
                self._send(RequestVoteResponse(self.id, m.frm, m.term, False))
                self._election_elapsed = 0
                self.vote = m.frm
        elif pre:
            self._send(PreVoteResponse(self.id, m.frm, self.term, True))
        else:
            self._send(RequestVoteResponse(self.id, m.frm, self.term, True))

    # ---- follower / candidate ----------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self._election_elapsed = 0
            self.leader = m.frm
            if isinstance(m, AppendEntries):
                self._handle_append(m)
            elif isinstance(m, Heartbeat):
                self.commit = max(self.commit, min(m.commit, self.last_index))
                self._send(HeartbeatResponse(self.id, m.frm, self.term, m.context))
            else:
                self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            self._campaign(transfer=True)
        elif isinstance(m, ReadIndexResponse):
            self._read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif (isinstance(m, PreVoteResponse) and self.role == Role.PRE_CANDIDATE) or (
                isinstance(m, RequestVoteResponse) and self.role == Role.CANDIDATE):
            self._votes.setdefault(m.frm, not m.reject)
            self._poll()

    def _handle_append(self, m: AppendEntries) -> None:
        if m.prev_index < self.commit:
            self._send(AppendEntriesResponse(self.id, m.frm, self.term, self.commit))
            return
        if self.term_at(m.prev_index) == m.prev_term:
            conflict = next((e.index for e in m.entries if self.term_at(e.index) != e.term), None)
            if conflict is not None:
                if conflict <= self.commit:
                    raise RuntimeError(f"leader {m.frm} would overwrite committed entry {conflict}")
                self.log.append(e for e in m.entries if e.index >= conflict)
            last_new = m.prev_index + len(m.entries)
            self.commit = max(self.commit, min(m.commit, last_new))
            self._send(AppendEntriesResponse(self.id, m.frm, self.term, last_new))
            return
        hint = self.log.find_conflict_by_term(min(m.prev_index, self.last_index), m.prev_term)
        self._send(AppendEntriesResponse(self.id, m.frm, self.term, m.prev_index, True, hint,
                                         self.term_at(hint) or 0))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        s = m.snapshot
        if s.meta.index <= self.commit:
            self._send(InstallSnapshotResponse(self.id, m.frm, self.term, self.commit))
            return
        if self.term_at(s.meta.index) == s.meta.term:
            self.commit = s.meta.index  # we already hold that prefix: fast-forward only
            self._send(InstallSnapshotResponse(self.id, m.frm, self.term, self.commit))
            return
        self.log.restore(s)
        self.commit = s.meta.index
        self.voters, self.learners = s.meta.conf.voters, s.meta.conf.learners
        self._send(InstallSnapshotResponse(self.id, m.frm, self.term, s.meta.index))

    # ---- leader ------------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, ReadIndexRequest):
            self._leader_read(m.context, m.frm)
            return
        pr = self._progress.get(m.frm)
        if pr is None:
            return
        if isinstance(m, AppendEntriesResponse):
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.is_paused() and pr.inflights:
                pr.inflights.popleft()
            if pr.match < self.last_index:
                self._send_append(m.frm)
            if m.context:
                self._handle_read_ack(m.context, m.frm)
        elif isinstance(m, InstallSnapshotResponse):
            pr.recent_active = True
            if pr.state == ProgressState.SNAPSHOT:
                pr.maybe_update(m.index)
                pr.become_probe()
                self._send_append(m.frm)

    def _handle_append_response(self, m: AppendEntriesResponse, pr: Progress) -> None:
        if m.reject and m.reject_hint < pr.match:
            # The follower's log now ends before what it acknowledged: it lost its storage (a wiped
            # data dir) or this is a late reject. Either way start over from what it has: lowering
            # match only delays commit (the commit index never goes back), and the follower gets a
            # snapshot when its next index is below our first. etcd would ignore this as stale and
            # never repair such a member without a remove and re-add.
            self.lost_log_resets += 1
            pr.match = m.reject_hint
            pr.become_probe()
            self._send_append(m.frm)
            return
        if m.reject:
            probe = m.reject_hint
            if m.hint_term > 0:
                probe = self.log.find_conflict_by_term(m.reject_hint, m.hint_term)
            if pr.maybe_decr_to(m.index, probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= self.log.snap.index:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append()
        elif was_paused:
            self._send_append(m.frm)
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self._transferee and pr.match == self.last_index:
            self._send(TimeoutNow(self.id, m.frm, self.term))

    def _maybe_commit(self) -> bool:
        matches = sorted((self._progress[v].match for v in self.voters if v in self._progress), reverse=True)
        if not matches:
            return False
        q = len(self.voters) // 2 + 1
        if len(matches) < q:
            return False
        idx = matches[q - 1]
        if idx > self.commit and self.term_at(idx) == self.term:
            self.commit = idx
            self._release_reads_awaiting_commit()
            return True
        return False

    def _send_append(self, to: NodeId, send_if_empty: bool = True) -> bool:
        pr = self._progress[to]
        if pr.is_paused():
            return False
        pr.next = min(pr.next, self.last_index + 1)
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        if prev_term is None:
            assert self.log.snap_data is not None  # prev < snapshot index: we compacted, so we hold one
            self._send(InstallSnapshot(self.id, to, self.term, self.log.snap_data))
            pr.become_snapshot(self.log.snap.index)
            return True
        entries = self.entries_from(pr.next, self.cfg.max_entries_per_append)
        if not entries and not send_if_empty:
            return False
        self._send(AppendEntries(self.id, to, self.term, prev, prev_term, tuple(entries), self.commit))
        pr.sent_append(entries[-1].index if entries else None)
        return True

    def _bcast_append(self) -> None:
        for peer in sorted(self._progress):
            if peer != self.id:
                self._send_append(peer)

    def _bcast_heartbeat(self, context: bytes) -> None:
        for peer, pr in sorted(self._progress.items()):
            if peer != self.id:
                self._send(Heartbeat(self.id, peer, self.term, min(pr.match, self.commit), context))

    # ---- ReadIndex ---------------------------------------------------------------------------

    def _leader_read(self, context: bytes, requester: NodeId) -> None:
        if self.term_at(self.commit) != self.term:
            self._reads_awaiting_commit.append((context, requester))  # Raft thesis §6.4 step 1
            return
        if len(self.voters) == 1:
            self._deliver_read(ReadState(self.commit, context), requester)
            return
        if context not in self._reads:
            self._reads[context] = _PendingRead(self.commit, requester, {self.id})
            self._read_order.append(context)
        self._bcast_heartbeat(context)

    def _release_reads_awaiting_commit(self) -> None:
        if self._reads_awaiting_commit and self.term_at(self.commit) == self.term:
            waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            for context, requester in waiting:
                self._leader_read(context, requester)

    def _handle_read_ack(self, context: bytes, frm: NodeId) -> None:
        pending = self._reads.get(context)
        if pending is None or frm not in self.voters:
            return
        pending.acks.add(frm)
        if len(pending.acks & self.voters) < len(self.voters) // 2 + 1:
            return
        pos = self._read_order.index(context)
        released, self._read_order = self._read_order[:pos + 1], self._read_order[pos + 1:]
        for ctx in released:
            r = self._reads.pop(ctx)
            self._deliver_read(ReadState(r.index, ctx), r.requester)

    def _deliver_read(self, rs: ReadState, requester: NodeId) -> None:
        if requester == self.id:
            self._read_states.append(rs)
        else:
            self._send(ReadIndexResponse(self.id, requester, self.term, rs.context, rs.index))

    # ---- membership --------------------------------------------------------------------------

    def _apply_conf_change(self, e: Entry) -> None:
        cc = decode_conf_change(e.data)
        if not isinstance(cc, ConfChange):
            return
        voters, learners = set(self.voters), set(self.learners)
        if cc.op == ConfChangeOp.BOOTSTRAP:
            voters, learners = set(cc.voters), set()
        elif cc.op == ConfChangeOp.ADD_LEARNER and cc.node not in voters:
            learners.add(cc.node)
        elif cc.op == ConfChangeOp.PROMOTE:
            learners.discard(cc.node)
            voters.add(cc.node)
        elif cc.op == ConfChangeOp.DEMOTE and cc.node in voters:
            voters.discard(cc.node)
            learners.add(cc.node)
        elif cc.op == ConfChangeOp.REMOVE:
            voters.discard(cc.node)
            learners.discard(cc.node)
        self.voters, self.learners = frozenset(voters), frozenset(learners)
        if self.role != Role.LEADER:
            return
        if self.id not in voters:
            # Removed or demoted while leading (the change was proposed under an earlier leader):
            # stop leading; the remaining voters elect one of themselves.
            self._become_follower(self.term, None)
            return
        for peer in list(self._progress):
            if peer not in voters and peer not in learners and peer != self.id:
                del self._progress[peer]
                if peer == self._transferee:
                    self._transferee = None
        for peer in voters | learners:
            if peer not in self._progress:
                self._progress[peer] = self._new_progress()
                self._send_append(peer)
        if self._maybe_commit():
            self._bcast_append()

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

def sends_before_persisting(core: RaftNode, rd: Ready, durable_term_vote: tuple[int, str | None] | None) -> bool:
    """May this Ready's messages leave while its entries are still being written (Raft thesis §10.2.1)?

    Only a leader's, and only when nothing in the Ready must be durable before anyone hears of it:
    term and vote unchanged since they were last made durable, no snapshot. The leader's own copy
    counts toward a commit only once ``advance`` reports it stable, so an entry a follower receives
    early is committed only by a quorum of durable copies, whatever happens to the leader meanwhile.
    A follower's acknowledgement must never leave before its entries are durable: it promises they are.
    """
    if core.role != Role.LEADER or rd.snapshot is not None:
        return False
    hs = rd.hard_state
    return hs is None or (durable_term_vote is not None and (hs.term, hs.vote) == durable_term_vote)
