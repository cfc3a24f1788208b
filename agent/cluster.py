"""The agent's view of the cluster: the replicated state, Raft, and where the leader's API is.

Reads are local (``stale``, the default) or linearizable (``consistent``: a ReadIndex barrier
through the leader first). Writes are proposed locally when this node leads; otherwise the API
forwards the HTTP request to the leader's API (see :mod:`agent.api_kv`), so any node answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack

from agent.errors import Unavailable
from agent.state import ClusterState
from mesh.raft import Role
from mesh.raft_driver import NotLeaderError, ProposalDropped, RaftDriver
from mesh.raft_transport import Sealer

INTERNAL_PROPOSE = "/v1/internal/propose"


class NoLeader(Unavailable):
    code = "no_leader"


@dataclasses.dataclass
class Cluster:
    state: ClusterState
    raft: RaftDriver
    api_of: Callable[[str], str | None]
    """Maps a Raft node id to the API URL it advertises (from gossip metadata)."""
    sealer: Sealer | None = None
    """Seals commands a follower sends to the leader's internal endpoint (cluster members only)."""

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

    async def propose_anywhere(self, cmd: bytes, timeout: float = 5.0) -> dict[str, Any]:
        """Propose from any node: locally on the leader, else sealed to the leader's internal endpoint."""
        if self.is_leader:
            return await self.write(cmd, timeout)
        url = self.leader_api()
        if url is None or self.sealer is None:
            raise NoLeader("no leader known to send the command to")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, session.post(
            url + INTERNAL_PROPOSE, data=self.sealer.seal(cmd),
            headers={"Content-Type": "application/octet-stream"},
        ) as resp:
            if resp.status != 200:
                raise NoLeader(f"the leader refused the command: HTTP {resp.status} {await resp.text()}")
            result: dict[str, Any] = msgpack.unpackb(await resp.read(), raw=False)
            return result
