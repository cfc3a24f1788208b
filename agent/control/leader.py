"""What only the leader does, as the cluster changes:

1. Raft membership: every live member becomes a learner; caught-up learners are promoted until
   there are three voters (:mod:`mesh.raft.membership`).
2. Hosts: every member is registered in the state with its address, labels and capacity; its
   state follows gossip (alive → active, suspect → reconnecting, dead or left → disconnected).
3. Placements: a host disconnected for longer than the grace period is *lost*; the scheduler places
   every missing slot and every slot on a lost host (:func:`agent.model.placement.decide`).
4. Upgrades: every upgrade under way moves on as its planner says (:func:`agent.model.rollout.next_batch`),
   looked at on every step (each change of an instance wakes one) and when the planner's timer is due.

All three are proposals through Raft; a follower runs none of this. The loop wakes when gossip
membership changes, when the state changes in a way placements depend on (hosts, services,
instances: the change feed), when a host's grace period runs out, and at least every ``PERIOD``
(membership and host records only, which cost a look at each member): placements are recomputed
only when something they depend on changed, or a proposal of them failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from agent.cluster.feed import Subscription
from agent.cluster.members import MemberInfo
from agent.cluster.replica import NoLeader, Replica
from agent.model.changes import Topic
from agent.model.commands import HostRegister, HostSetState
from agent.model.entities import HostState
from agent.model.errors import CommandError
from agent.model.placement import decide
from agent.model.rollout import current_plans
from mesh.aio import supervised, wait_event
from mesh.raft.membership import Candidate, next_change

log = logging.getLogger("corral.leader")

PERIOD = 0.5
GOSSIP_TO_HOST = {"alive": HostState.ACTIVE, "suspect": HostState.RECONNECTING, "dead": HostState.DISCONNECTED,
                  "left": HostState.DISCONNECTED}
PLACEMENT_TOPICS = frozenset({Topic.ALL, Topic.HOST, Topic.SERVICE, Topic.INSTANCE})
WAKE_TOPICS = PLACEMENT_TOPICS | {Topic.UPGRADE}


class Leader:
    def __init__(self, replica: Replica, members: Callable[[], list[MemberInfo]], grace: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 replace_dead_managers_after: float | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.replica = replica
        self.raft = replica.raft
        self.state = replica.state
        self.replace_dead_managers_after = replace_dead_managers_after
        self._members = members
        self.grace = grace
        self._clock = clock
        self._wall = wall_clock  # upgrades' times are in the state, read by whichever leader comes next
        self._upgrade_wake: float | None = None
        self.upgrade_steps = 0
        self._down_since: dict[str, float] = {}
        self._kick = asyncio.Event()
        self._placements_due = True
        self._lost: set[str] = set()
        self.steps = 0
        self.placement_runs = 0
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        self._kick.set()

    def problem(self) -> str | None:
        if self._task is not None and self._task.done():
            return "the leader loop stopped"
        return None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Leader]:
        """The leader loop, for as long as the context is open (on every node: it idles unless leading)."""
        changes = self.replica.feed.subscribe(lambda c: c.topic in WAKE_TOPICS, name="leader", notify=self.kick)
        try:
            async with supervised(self._loop(changes), "leader") as self._task:
                yield self
        finally:
            changes.close()

    async def _loop(self, changes: Subscription) -> None:
        while True:
            wait = PERIOD
            now = self._clock()
            pending = [t + self.grace - now for t in self._down_since.values() if t + self.grace > now]
            if pending:  # wake when the next grace period runs out, not up to PERIOD later
                wait = min(PERIOD, max(0.01, min(pending)))
            if self._upgrade_wake is not None:  # and when an upgrade's timer is due
                wait = min(wait, max(0.01, self._upgrade_wake - self._wall()))
            await wait_event(self._kick, wait)
            self._kick.clear()
            if any(c.topic in PLACEMENT_TOPICS for c in changes.take()):
                self._placements_due = True
            if not self.raft.is_leader:
                self._down_since.clear()
                self._placements_due = True  # a new term: the next leadership starts with a full look
                continue
            try:
                await self.step()
            except (NoLeader, CommandError) as exc:
                log.info("leader step interrupted: %s", exc.message if isinstance(exc, NoLeader) else exc)
                self._placements_due = True
            except Exception:
                log.exception("leader step failed")
                self._placements_due = True

    async def step(self) -> None:
        self.steps += 1
        members = {m.name: m for m in self._members()}
        self._membership(members)
        await self._hosts(members)
        lost = self._lost_hosts(members)
        if lost != self._lost:
            self._lost = lost
            self._placements_due = True
        if self._placements_due:
            self._placements_due = False  # set again by a change applied while these are proposed
            self.placement_runs += 1
            for cmd in decide(self.state, lost):
                outcome = await self.replica.write(cmd)
                if outcome.placed:
                    log.info("placed %d instance(s) of %s", len(outcome.placed), cmd.service)
        await self._upgrades(lost)

    async def _upgrades(self, lost: set[str]) -> None:
        """Move every upgrade under way on (a refused advance was planned on an older state: the next
        step plans again on the new one)."""
        self._upgrade_wake = None
        wakes = []
        for plan in current_plans(self.state, self._wall(), lost):
            if plan.wake is not None:
                wakes.append(plan.wake)
            if plan.command is None:
                continue
            try:
                await self.replica.write(plan.command)
                self.upgrade_steps += 1
            except CommandError as exc:
                log.info("upgrade step refused (planned again): %s", exc)
                wakes.append(self._wall())
        self._upgrade_wake = min(wakes) if wakes else None

    def _membership(self, members: Mapping[str, MemberInfo]) -> None:
        match = self.raft.match_index()
        now = self._clock()
        candidates = {
            name: Candidate(alive=m.state == "alive", manager=bool(m.meta.get("manager")),
                            match=match.get(name, 0),
                            dead_for=now - self._down_since[name]
                            if m.state in ("dead", "left") and name in self._down_since else 0.0)
            for name, m in members.items()
        }
        change = next_change(self.raft.voters, self.raft.learners, candidates, self.raft.commit,
                             replace_dead_after=self.replace_dead_managers_after)
        if change is not None:
            op, node = change
            if self.raft.propose_conf_change(op, node):
                log.info("raft membership: %s %s", op.name.lower(), node)

    async def _hosts(self, members: Mapping[str, MemberInfo]) -> None:
        for name, m in sorted(members.items()):
            host = self.state.hosts.get(name)
            labels = _labels(m.meta.get("labels"))
            cpus, memory = float(_number(m.meta.get("cpus"))), int(_number(m.meta.get("memory")))
            overlay_key = m.meta_str("overlay_key")
            manager = bool(m.meta.get("manager"))
            if host is None or (host.address, dict(host.labels), host.cpus, host.memory, host.overlay_key,
                                host.manager) != (m.address, labels, cpus, memory, overlay_key, manager):
                await self.replica.write(HostRegister(name, m.address, labels, cpus, memory, overlay_key, manager))
            wanted = GOSSIP_TO_HOST.get(m.state, HostState.DISCONNECTED)
            current = self.state.hosts.get(name)
            if current is not None and current.state != wanted:
                await self.replica.write(HostSetState(name, wanted))
        for name, host in sorted(self.state.hosts.items()):
            if name not in members and host.state != HostState.DISCONNECTED:
                await self.replica.write(HostSetState(name, HostState.DISCONNECTED))

    def _lost_hosts(self, members: Mapping[str, MemberInfo]) -> set[str]:
        now = self._clock()
        lost = set()
        for name, host in self.state.hosts.items():
            member = members.get(name)
            down = host.state == HostState.DISCONNECTED or member is None or member.state in ("dead", "left")
            if not down:
                self._down_since.pop(name, None)
                continue
            since = self._down_since.setdefault(name, now)
            if now - since >= self.grace:
                lost.add(name)
        return lost


def _number(value: object) -> float:
    """A capacity figure from gossip metadata (another agent's, so checked): 0 when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _labels(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


__all__ = ["GOSSIP_TO_HOST", "PERIOD", "Leader"]
