"""What only the leader does, each time something changes (and twice a second regardless):

1. Raft membership: every live member becomes a learner; caught-up learners are promoted until
   there are three voters (:mod:`mesh.raft_membership`).
2. Hosts: every member is registered in the state with its address, labels and capacity; its
   state follows gossip (alive → active, suspect → reconnecting, dead or left → disconnected).
3. Placements: a host disconnected for longer than the grace period is *lost*; the scheduler places
   every missing slot and every slot on a lost host (:mod:`agent.placement`).

All three are proposals through Raft; a follower runs none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.placement import decide
from agent.state import ClusterState, command
from mesh.aio import wait_event
from mesh.raft import NotLeader, Rejected, Role
from mesh.raft_driver import NotLeaderError, ProposalDropped, RaftDriver
from mesh.raft_membership import Candidate, next_change

log = logging.getLogger("corral.leader")

PERIOD = 0.5
GOSSIP_TO_HOST = {"alive": "active", "suspect": "reconnecting", "dead": "disconnected", "left": "disconnected"}


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    """A member as gossip sees it: what the leader needs to register it and to reach it."""

    name: str
    address: str
    state: str  # alive, suspect, dead, left
    meta: Mapping[str, Any]


class Leader:
    def __init__(self, raft: RaftDriver, state: ClusterState, members: Callable[[], list[MemberInfo]],
                 grace: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 replace_dead_managers_after: float | None = None) -> None:
        self.replace_dead_managers_after = replace_dead_managers_after
        self.raft = raft
        self.state = state
        self._members = members
        self.grace = grace
        self._clock = clock
        self._down_since: dict[str, float] = {}
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        self._kick.set()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            wait = PERIOD
            now = self._clock()
            pending = [t + self.grace - now for t in self._down_since.values() if t + self.grace > now]
            if pending:  # wake when the next grace period runs out, not up to PERIOD later
                wait = min(PERIOD, max(0.01, min(pending)))
            await wait_event(self._kick, wait)
            self._kick.clear()
            if self.raft.core.role != Role.LEADER:
                self._down_since.clear()
                continue
            try:
                await self.step()
            except (NotLeaderError, ProposalDropped, TimeoutError) as exc:
                log.info("leader step interrupted: %s", exc)
            except Exception:
                log.exception("leader step failed")

    async def step(self) -> None:
        members = {m.name: m for m in self._members()}
        self._membership(members)
        await self._hosts(members)
        lost = self._lost(members)
        for cmd in decide(self.state, lost):
            fields = {k: v for k, v in cmd.items() if k != "op"}
            result = await self.raft.propose(command(cmd["op"], **fields))
            if result.get("placed"):
                log.info("placed %d instance(s) of %s", len(result["placed"]), cmd["service"])

    def _membership(self, members: Mapping[str, MemberInfo]) -> None:
        core = self.raft.core
        progress = core.status().get("progress", {})
        assert isinstance(progress, dict)
        now = self._clock()
        candidates = {
            name: Candidate(alive=m.state == "alive", manager=bool(m.meta.get("manager")),
                            match=int(progress.get(name, {}).get("match", 0)),
                            dead_for=now - self._down_since[name]
                            if m.state in ("dead", "left") and name in self._down_since else 0.0)
            for name, m in members.items()
        }
        change = next_change(core.voters, core.learners, candidates, core.commit,
                             replace_dead_after=self.replace_dead_managers_after)
        if change is not None:
            op, node = change
            outcome = core.propose_conf_change(op, node)
            if not isinstance(outcome, NotLeader | Rejected):
                log.info("raft membership: %s %s", op.name.lower(), node)
                self.raft.kick()

    async def _hosts(self, members: Mapping[str, MemberInfo]) -> None:
        for name, m in sorted(members.items()):
            host = self.state.hosts.get(name)
            labels = dict(m.meta.get("labels") or {})
            cpus, memory = float(m.meta.get("cpus") or 0), int(m.meta.get("memory") or 0)
            overlay_key = m.meta.get("overlay_key") or None
            if host is None or (host["address"], host["labels"], host["cpus"], host["memory"],
                                host.get("overlay_key")) != (m.address, labels, cpus, memory, overlay_key):
                await self.raft.propose(command("host.register", name=name, address=m.address, labels=labels,
                                                cpus=cpus, memory=memory, overlay_key=overlay_key))
            wanted = GOSSIP_TO_HOST.get(m.state, "disconnected")
            if self.state.hosts.get(name, {}).get("state") != wanted:
                await self.raft.propose(command("host.state", name=name, state=wanted))
        for name, host in sorted(self.state.hosts.items()):
            if name not in members and host["state"] != "disconnected":
                await self.raft.propose(command("host.state", name=name, state="disconnected"))

    def _lost(self, members: Mapping[str, MemberInfo]) -> set[str]:
        now = self._clock()
        lost = set()
        for name, host in self.state.hosts.items():
            member = members.get(name)
            down = host["state"] == "disconnected" or member is None or member.state in ("dead", "left")
            if not down:
                self._down_since.pop(name, None)
                continue
            since = self._down_since.setdefault(name, now)
            if now - since >= self.grace:
                lost.add(name)
        return lost
