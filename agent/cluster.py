"""The agent's view of the cluster: the replicated state, Raft, and where the leader's API is.

Reads are local (``stale``, the default) or linearizable (``consistent``: a ReadIndex barrier
through the leader first). Writes are proposed locally when this node leads; otherwise the API
forwards the HTTP request to the leader's API (see :mod:`agent.api_kv`), so any node answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent.errors import Unavailable
from agent.state import ClusterState
from mesh.raft import Role
from mesh.raft_driver import NotLeaderError, ProposalDropped, RaftDriver


class NoLeader(Unavailable):
    code = "no_leader"


@dataclasses.dataclass
class Cluster:
    state: ClusterState
    raft: RaftDriver
    api_of: Callable[[str], str | None]
    """Maps a Raft node id to the API URL it advertises (from gossip metadata)."""

    @property
    def applied_index(self) -> int:
        return self.raft.applied

    @property
    def is_leader(self) -> bool:
        return self.raft.core.role == Role.LEADER

    def leader_api(self) -> str | None:
        leader = self.raft.core.leader
        return self.api_of(leader) if leader else None

    async def write(self, command: bytes, timeout: float = 5.0) -> dict[str, Any]:
        """Propose on this node (it must lead); the state machine's result once applied."""
        try:
            result: dict[str, Any] = await self.raft.propose(command, timeout)
        except NotLeaderError as exc:
            raise NoLeader(f"this node is not the leader (leader: {exc.leader or 'none known'})") from exc
        except ProposalDropped as exc:
            raise NoLeader(f"leadership changed before the write committed: {exc}; retry") from exc
        except TimeoutError as exc:
            raise NoLeader(f"the write did not commit within {timeout:g} s (no quorum?)") from exc
        return result

    async def consistent(self, timeout: float = 5.0) -> int:
        """A ReadIndex barrier: after it, local reads reflect every write acknowledged before it."""
        try:
            return await self.raft.read_barrier(timeout)
        except NotLeaderError as exc:
            raise NoLeader(f"no leader to confirm a consistent read (leader: {exc.leader or 'none known'})") from exc
        except TimeoutError as exc:
            raise NoLeader(f"a consistent read was not confirmed within {timeout:g} s (no quorum?)") from exc
