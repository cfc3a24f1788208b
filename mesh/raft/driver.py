"""The asyncio driver of one Raft member: ticks, the transport, storage and the state machine.

It feeds the core (``tick``, ``step``, ``propose``, ``read_index``) and drains every Ready in
etcd's order: persist (hard state, entries, snapshot: one fsynced SQLite transaction), then send,
then restore/apply, then advance — except that a leader sends first when nothing in the Ready must be
durable before it is heard of (``sends_before_persisting``, Raft thesis §10.2.1, as etcd's server does):
the followers' fsyncs then overlap the leader's. While a Ready is being written, heartbeats and their
answers made meanwhile leave at once (:meth:`RaftNode.take_heartbeats`): a slow fsync must not silence a
leader, or its followers, for an election timeout. A proposal's caller waits for its entry to be applied and gets
the state machine's result; if another leader's entry took that index, the caller learns the
proposal was dropped (never a result that is not its own).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

from mesh.aio import cancel_and_wait, wait_event
from mesh.raft.core import (
    HardState,
    NotLeader,
    RaftNode,
    RejectCode,
    Rejected,
    Role,
    StateMachine,
    sends_before_persisting,
)
from mesh.raft.messages import ConfChangeOp, EntryKind, Message, NodeId
from mesh.raft.storage import AsyncStorage
from mesh.raft.transport import RaftTransport

log = logging.getLogger("corral.raft")

COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds: a commit on this lab is a few ms (one fsync on a quorum); a slow disk or a lost follower
shows in the last buckets."""


STALL_TICKS = 2
"""The loop ran its ticker this many ticks (or more) after the time it was planned for: it was stalled."""


class NotLeaderError(Exception):
    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(Exception):
    """The entry was replaced by a new leader's log before it committed: it will never apply."""


class RaftDriver:
    """``on_applied(index)`` runs after each Ready that applied entries or installed a snapshot (never
    for a heartbeat): the state machine then holds everything up to ``index``."""

    def __init__(self, core: RaftNode, storage: AsyncStorage, sm: StateMachine, transport: RaftTransport,
                 tick_interval: float, on_applied: Callable[[int], None] | None = None) -> None:
        self.core = core
        self.storage = storage
        self.sm = sm
        self.transport = transport
        self.tick_interval = tick_interval
        self.applied = core.applied
        self._on_applied = on_applied
        self._kick = asyncio.Event()
        self._retimer = asyncio.Event()  # the core's next timer may have come nearer (a new role)
        self._ticked_at = 0.0
        self._plan = 0.0
        """``loop.time()`` the ticker is due to run at (0: not planned yet)."""
        self._counted = float("inf")
        """Seconds of ticks counted since the last stall dropped."""
        self._role = core.role
        self.stalls = 0
        self.stalled_seconds = 0.0
        """How often, and how long in all, this member's loop could not run when its ticker was due."""
        self.ticker_wakeups = 0
        """How often the ticker woke (a follower that hears its leader wakes only at its election timeout)."""
        self._proposals: dict[int, tuple[int, asyncio.Future[Any], float]] = {}
        self.commit_seconds = Histogram("corral_raft_commit_seconds", "From a proposal on this leader to its "
                                        "entry applied (committed by a quorum)", buckets=COMMIT_BUCKETS, registry=None)
        """Not registered anywhere: the agent's metrics collector reads it at scrape time."""
        self.persist_seconds = Histogram("corral_raft_persist_seconds", "One Ready written to this member's disk "
                                         "(one fsynced transaction)", buckets=COMMIT_BUCKETS, registry=None)
        self.leader_changes = 0
        """How often the leader this member knows changed to another (a new term's leader, not a loss)."""
        self._leader_seen: NodeId | None = None
        self.leader_contact: float | None = None
        """``loop.time()`` of the last message from the leader (the leader itself: None)."""
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_waits: list[tuple[int, asyncio.Future[int]]] = []
        self._applied_waits: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.failed: BaseException | None = None
        """Why the driver stopped taking part (its storage failed); None while it runs."""
        stable = core.stable_hard_state  # what the member was started from is on its disk
        self._durable_term_vote: tuple[int, str | None] | None = (stable.term, stable.vote) if stable.term else None
        self._persisting = False
        """A Ready (or a compaction) is being written to disk now."""
        self.heartbeats_unheld = 0
        """Heartbeats and answers sent while a Ready was being written, not held back until it was."""
        self._unsaved_commit: HardState | None = None

    async def start(self, snapshot_data: bytes | None = None) -> None:
        """Start ticking; ``snapshot_data`` is the stored snapshot the state machine starts from."""
        if snapshot_data is not None:
            self.sm.restore(snapshot_data)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._process())]
        self._kick.set()

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)

    # ------------------------------------------------------------------ what the agent reads

    @property
    def role(self) -> Role:
        return self.core.role

    @property
    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    @property
    def leader(self) -> NodeId | None:
        return self.core.leader

    @property
    def voters(self) -> frozenset[NodeId]:
        return frozenset(self.core.voters)

    @property
    def learners(self) -> frozenset[NodeId]:
        return frozenset(self.core.learners)

    @property
    def commit(self) -> int:
        return self.core.commit

    def match_index(self) -> dict[NodeId, int]:
        """On the leader: how far each member's log is known to match its own."""
        return self.core.match_index()

    def problem(self) -> str | None:
        """Why this member does not take part any more (storage failed, its loop ended), or None."""
        if self.failed is not None:
            return f"raft stopped: {type(self.failed).__name__}: {self.failed}"
        if self._tasks and any(t.done() for t in self._tasks):
            return "raft stopped: its loop ended"
        return None

    # ------------------------------------------------------------------ inputs

    def deliver(self, msg: Message) -> None:
        if msg.to != self.core.id:
            return
        self._catch_up_ticks()  # every tick that passed counts before the message (it may reset a timer)
        self.core.step(msg)
        if msg.frm == self.core.leader:
            self.leader_contact = asyncio.get_running_loop().time()
        self._send_heartbeats_now()
        if self.core.has_ready():  # a heartbeat's answer usually leaves nothing to do: no wake-up
            self._kick.set()

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        """Append ``data`` to the log; return what the state machine made of it once applied."""
        future = self._append(data)
        self._kick.set()
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            future.cancel()

    def _append(self, data: bytes) -> asyncio.Future[Any]:
        """Append ``data`` as the next entry; the future of its result (dropped from ``_proposals`` when done)."""
        result = self.core.propose(data)
        if isinstance(result, NotLeader):
            raise NotLeaderError(result.leader_hint)
        if isinstance(result, Rejected):  # a normal entry is only refused while leadership moves
            assert result.code is RejectCode.TRANSFERRING_LEADERSHIP, result
            raise NotLeaderError(self.core.leader)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._proposals[result] = (self.core.term, future, loop.time())
        index: int = result
        future.add_done_callback(lambda _done: self._proposals.pop(index, None))
        return future

    async def propose_many(self, datas: list[bytes], timeout: float = 5.0) -> list[Any]:
        """Append several entries at once (in order); each one's result, or the exception it ended with
        (:class:`NotLeaderError`, :class:`ProposalDropped`, :class:`TimeoutError`)."""
        futures: list[asyncio.Future[Any] | BaseException] = []
        for data in datas:
            try:
                futures.append(self._append(data))
            except NotLeaderError as exc:
                futures.append(exc)
        self._kick.set()
        pending = [f for f in futures if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        out: list[Any] = []
        for f in futures:
            if isinstance(f, BaseException):
                out.append(f)
            elif not f.done():
                f.cancel()
                out.append(TimeoutError(f"the entry did not commit within {timeout:g} s"))
            else:
                out.append(f.exception() or f.result())
        return out

    def propose_conf_change(self, op: ConfChangeOp, node: NodeId) -> bool:
        """Start a single-server membership change on the leader; False if the core refused it now."""
        outcome = self.core.propose_conf_change(op, node)
        if isinstance(outcome, NotLeader | Rejected):
            return False
        self._kick.set()
        return True

    async def read_barrier(self, timeout: float = 5.0) -> int:
        """ReadIndex: once this returns, local reads are linearizable; returns the read index."""
        ctx = os.urandom(8)
        refused = self.core.read_index(ctx)
        if isinstance(refused, NotLeader):
            raise NotLeaderError(refused.leader_hint)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = future
        self._kick.set()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._reads.pop(ctx, None)

    async def wait_applied(self, index: int, timeout: float) -> bool:
        """Block until the applied index reaches ``index`` (a blocking read); False on timeout."""
        if self.applied >= index:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._applied_waits, (index, self._seq, future))
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            future.cancel()

    def status(self) -> dict[str, Any]:
        st = dict(self.core.status())
        st.update(role=Role(self.core.role).name.lower(), applied=self.applied, peers=self.transport.peers(),
                  drops=dict(self.transport.drops))
        return st

    # ------------------------------------------------------------------ the loop

    def _catch_up_ticks(self, now: float | None = None) -> None:
        """Tick once for every tick period since the last tick (time is counted, not wake-ups), but for
        the time this member's own loop could not run.

        A loop that gets to its due ticker ``STALL_TICKS`` late or more was stalled (its process had no
        CPU, a callback ran long): what the peers sent meanwhile is still unread in its sockets, so that
        time is not their silence. Counted, it made a starved leader step down (CheckQuorum: no quorum
        heard for an election timeout, their answers unread) and a starved follower campaign and grant
        votes outside its lease, the moment it got the CPU back (a loop stalled for a few election
        timeouts elected a new leader every time). The stalled time is dropped, as etcd's ticker drops
        the ticks it could not deliver, and the next timer is left one tick on, so the messages that
        came are read first. Only when at least as much time as the stall (or an election timeout) has
        been counted since the last stall dropped, though: a member that is late at every wake still
        counts at least half of its time, so its timers run out at worst about twice as late (a leader
        that is really gone is noticed as before by the members that are not stalled, and soon after by
        those that are)."""
        if now is None:
            now = asyncio.get_running_loop().time()
        overdue = now - self._plan
        if self._plan and overdue >= STALL_TICKS * self.tick_interval:
            self.stalls += 1
            self.stalled_seconds += overdue
            if self._counted >= min(overdue, self.core.cfg.election_ticks * self.tick_interval):
                self._counted = 0.0
                self._ticked_at = min(now, self._ticked_at + overdue + self.tick_interval)
            self._plan = now + self.tick_interval  # a stall is seen once (the ticker plans anew when it runs)
        # A timer may fire a little early (libuv counts whole milliseconds): within 2 % of the period
        # the tick is due, or the ticker would wake a second time for a few microseconds.
        due = int((now - self._ticked_at) / self.tick_interval + 0.02)
        if due <= 0:
            return
        self._ticked_at += due * self.tick_interval
        self._counted += due * self.tick_interval
        for _ in range(due):
            self.core.tick()
        self._send_heartbeats_now()
        if self.core.has_ready():
            self._kick.set()

    def _send_heartbeats_now(self) -> None:
        """While a Ready is being written, heartbeats and their answers leave at once instead of after the
        fsync (:meth:`RaftNode.take_heartbeats` says why that is safe and needed)."""
        if self._persisting and self._durable_term_vote is not None:
            for m in self.core.take_heartbeats(self._durable_term_vote[0]):
                self.transport.send(m)
                self.heartbeats_unheld += 1

    def _replan(self) -> int:
        """When the ticker is due next (``_plan``); the ticks until then."""
        ticks = self.core.ticks_until_timer()
        self._plan = self._ticked_at + ticks * self.tick_interval
        return ticks

    async def _ticker(self) -> None:
        """Wake only when the core's next timer can fire: every tick on a leader (heartbeats); on a
        follower at its election timeout, which heartbeats keep pushing back, so an idle follower does
        not wake twenty times a second to count."""
        self._ticked_at = asyncio.get_running_loop().time()
        loop = asyncio.get_running_loop()
        while True:
            ticks = self._replan()
            delay = max(0.0, self._plan - loop.time())
            if ticks == 1:  # the next tick acts anyway (a leader's heartbeat): nothing can come sooner
                await asyncio.sleep(delay)
            else:
                await wait_event(self._retimer, delay)
            self._retimer.clear()
            self.ticker_wakeups += 1
            self._catch_up_ticks()

    async def _process(self) -> None:
        try:
            while True:
                await self._kick.wait()
                self._kick.clear()
                while self.core.has_ready():
                    await self._handle_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # storage failed: stop taking part rather than lie
            self.failed = exc
            log.exception("raft stopped: %s", exc)
            raise

    async def _handle_ready(self) -> None:
        rd = self.core.ready()
        applied_before = self.applied
        early = sends_before_persisting(self.core, rd, self._durable_term_vote)
        if early:  # a leader replicates while its own disk writes (one fsync off a write's latency)
            for msg in rd.messages:
                self.transport.send(msg)
        hard_state = rd.hard_state
        if hard_state is not None and (hard_state.term, hard_state.vote) == self._durable_term_vote:
            # Only the commit index moved. Raft needs term and vote durable, not commit (a restarted
            # node learns it again from the leader), so no fsync for it on the write path: it is
            # kept and saved with the next entries or term/vote change.
            self._unsaved_commit = hard_state
            hard_state = None
        if hard_state is None and self._unsaved_commit is not None and (rd.entries or rd.snapshot is not None):
            hard_state = self._unsaved_commit
        began = asyncio.get_running_loop().time()
        self._persisting = True
        try:
            await self.storage.save(hard_state, rd.entries, rd.snapshot)
        finally:
            self._persisting = False
        self.persist_seconds.observe(asyncio.get_running_loop().time() - began)
        if hard_state is not None:
            self._durable_term_vote = (hard_state.term, hard_state.vote)
            if self._unsaved_commit is not None and hard_state.commit >= self._unsaved_commit.commit:
                self._unsaved_commit = None
        if not early:
            for msg in rd.messages:
                self.transport.send(msg)
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data)
            self.applied = rd.snapshot.meta.index
        for entry in rd.committed_entries:
            result = self.sm.apply(entry) if entry.kind == EntryKind.NORMAL else None
            self.applied = entry.index
            waiter = self._proposals.get(entry.index)
            if waiter is not None and not waiter[1].done():
                term, future, proposed = waiter
                if entry.term == term:
                    self.commit_seconds.observe(asyncio.get_running_loop().time() - proposed)
                    future.set_result(result)
                else:
                    future.set_exception(ProposalDropped(f"entry {entry.index} was replaced by a new leader"))
        for rs in rd.read_states:
            read = self._reads.get(rs.context)
            if read is not None:
                self._read_waits.append((rs.index, read))
        self.core.advance(rd)
        leader = self.core.leader
        if leader != self._leader_seen:
            if leader is not None and self._leader_seen is not None:
                self.leader_changes += 1
            if leader is not None:
                log.info("raft: %s leads term %d (before: %s)", leader, self.core.term, self._leader_seen or "none")
                self._leader_seen = leader
        self._wake_waiters()
        if self.core.role != self._role:  # a leader ticks every tick: the ticker must not sleep on
            self._role = self.core.role
            self._retimer.set()
        if self.core.wants_snapshot():
            snap = self.core.compact(self.applied, self.sm.snapshot())
            self._persisting = True
            try:
                await self.storage.compact(snap)
            finally:
                self._persisting = False
        if self._on_applied is not None and self.applied != applied_before:
            self._on_applied(self.applied)

    def _wake_waiters(self) -> None:
        keep_reads = []
        for index, future in self._read_waits:
            if future.done():
                continue
            if self.applied >= index:
                future.set_result(index)
            else:
                keep_reads.append((index, future))
        self._read_waits = keep_reads
        waits = self._applied_waits  # a heap by index: only the ones now reached are looked at
        while waits and waits[0][0] <= self.applied:
            _index, _seq, waiter = heapq.heappop(waits)
            if not waiter.done():
                waiter.set_result(None)
