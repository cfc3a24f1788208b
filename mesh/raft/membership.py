"""Which Raft membership change the leader should make next, from what gossip says is alive.

Pure. Every member gossip sees alive joins Raft as a non-voting learner (so every node holds the
whole state and answers reads locally); the first ``target_voters`` learners that are caught up
(and eligible: started with ``--manager``, or any node when none is) are promoted to voters. One
change at a time, as single-server changes require.

Replacing a lost manager is off by default (``replace_dead_after=None``): a voter that gossip has
seen dead for that long, while a healthy caught-up learner could take its place, is demoted to a
learner; the next call then promotes the learner. Demoting first keeps every step a single-server
change; it needs the remaining voters to form a quorum, which they do whenever a leader exists to
make the change at all. (Off by default because a manager that was only cut off for a while comes
back as a learner and the cluster's voters have moved: operators should choose that.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mesh.raft.messages import ConfChangeOp, NodeId

CATCH_UP_LAG = 16  # a learner within this many entries of the leader's commit may vote


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A member as gossip sees it, with its Raft progress (``match``) if it has any."""

    alive: bool
    manager: bool = False
    match: int = 0
    dead_for: float = 0.0
    """Seconds gossip has seen it dead (0 when alive or suspect)."""


def next_change(voters: frozenset[NodeId], learners: frozenset[NodeId], members: Mapping[NodeId, Candidate],
                commit: int, target_voters: int = 3,
                replace_dead_after: float | None = None) -> tuple[ConfChangeOp, NodeId] | None:
    for name in sorted(members):
        if members[name].alive and name not in voters and name not in learners:
            return ConfChangeOp.ADD_LEARNER, name
    ready = [n for n in sorted(learners) if n in members and members[n].alive
             and members[n].match >= commit - CATCH_UP_LAG]
    if replace_dead_after is not None and ready:
        lost = [v for v in sorted(voters) if v in members and members[v].dead_for >= replace_dead_after]
        if lost:
            return ConfChangeOp.DEMOTE, lost[0]
    if len(voters) >= target_voters:
        return None
    preferred = [n for n in ready if members[n].manager] or ([] if _any_manager(members) else ready)
    return (ConfChangeOp.PROMOTE, preferred[0]) if preferred else None


def _any_manager(members: Mapping[NodeId, Candidate]) -> bool:
    return any(c.manager for c in members.values())
