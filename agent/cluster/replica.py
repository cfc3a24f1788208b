"""This node's replica of the desired state, and the ways to change it.

Reads are local (stale by up to a heartbeat, the default) or linearizable (:meth:`Replica.consistent`:
a ReadIndex barrier through the leader first). Writes are proposed on the leader
(:meth:`Replica.write`); any other node either forwards the user's HTTP request to the leader's API
(``agent/api/forward.py``) or, for the agent's own commands (a status report), sends the command
sealed with the cluster's Raft key to the leader's internal endpoint (:meth:`Replica.propose_anywhere`).

After every batch of applied entries the state machine's outbox goes to the change feed
(:meth:`Replica.on_applied`): nothing in the agent polls the applied index.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from agent.cluster.feed import Feed
from agent.errors import Unavailable
from agent.model.commands import Command, Outcome, decode_result, encode
from agent.model.errors import CommandError
from agent.model.state import ClusterState
from mesh.raft.driver import NotLeaderError, ProposalDropped, RaftDriver
from mesh.raft.messages import NodeId
from mesh.raft.transport import Sealer

INTERNAL_PROPOSE = "/v1/internal/propose"


class NoLeader(Unavailable):
    code = "no_leader"


class Replica:
    def __init__(self, state: ClusterState, raft: RaftDriver, feed: Feed, api_of: Callable[[NodeId], str | None],
                 sealer: Sealer, session: aiohttp.ClientSession) -> None:
        self.state = state
        self.raft = raft
        self.feed = feed
        self.api_of = api_of
        """Maps a Raft node id to the API URL it advertises (from gossip metadata)."""
        self.sealer = sealer
        """Seals commands sent to the leader's internal endpoint (cluster members only)."""
        self.session = session
        """The agent's one HTTP client session (keep-alive to the leader and the other agents)."""

    # ------------------------------------------------------------------ reading

    @property
    def applied_index(self) -> int:
        return self.raft.applied

    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    @property
    def leader(self) -> NodeId | None:
        return self.raft.leader

    def leader_api(self) -> str | None:
        leader = self.raft.leader
        return self.api_of(leader) if leader else None

    async def consistent(self, timeout: float = 5.0) -> int:
        """A ReadIndex barrier: after it, local reads reflect every write acknowledged before it."""
        try:
            return await self.raft.read_barrier(timeout)
        except NotLeaderError as exc:
            raise NoLeader(f"no leader to confirm a consistent read (leader: {exc.leader or 'none known'})") from exc
        except TimeoutError as exc:
            raise NoLeader(f"a consistent read was not confirmed within {timeout:g} s (no quorum?)") from exc

    async def wait_applied(self, index: int, timeout: float) -> bool:
        """Until this replica has applied ``index`` (a blocking read); False after ``timeout`` seconds."""
        return await self.raft.wait_applied(index, timeout)

    def on_applied(self, _index: int) -> None:
        """The Raft driver applied entries (or installed a snapshot): hand what changed to the feed."""
        self.feed.publish(self.state.take_changes())

    # ------------------------------------------------------------------ writing

    async def write(self, cmd: Command, timeout: float = 5.0) -> Outcome:
        """Propose on this node (it must lead); the state machine's outcome once applied.

        Raises :class:`~agent.model.errors.CommandError` when the state machine refused it and
        :class:`NoLeader` when it could not be committed (not the leader, leadership moved, no quorum).
        """
        return _outcome(await self._propose(encode(cmd), timeout))

    async def _propose(self, data: bytes, timeout: float) -> object:
        try:
            return await self.raft.propose(data, timeout)
        except NotLeaderError as exc:
            raise NoLeader(f"this node is not the leader (leader: {exc.leader or 'none known'})") from exc
        except ProposalDropped as exc:
            raise NoLeader(f"leadership changed before the write committed: {exc}; retry") from exc
        except TimeoutError as exc:
            raise NoLeader(f"the write did not commit within {timeout:g} s (no quorum?)") from exc

    async def propose_sealed(self, sealed: bytes, timeout: float = 5.0) -> object:
        """A command another member sent to this node's internal endpoint; None if not sealed with our key."""
        plain = self.sealer.open(sealed)
        if plain is None:
            return None
        return await self._propose(plain, timeout)

    async def propose_anywhere(self, cmd: Command, timeout: float = 5.0) -> Outcome:
        """Propose from any node: locally on the leader, else sealed to the leader's internal endpoint."""
        if self.is_leader:
            return await self.write(cmd, timeout)
        url = self.leader_api()
        if url is None:
            raise NoLeader("no leader known to send the command to")
        try:
            async with self.session.post(url + INTERNAL_PROPOSE, data=self.sealer.seal(encode(cmd)),
                                         headers={"Content-Type": "application/octet-stream"},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise NoLeader(f"the leader refused the command: HTTP {resp.status} {body[:200]!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NoLeader(f"the leader's API at {url} did not answer: {exc}") from exc
        return _outcome(decode_result(body))


def _outcome(result: object) -> Outcome:
    if isinstance(result, CommandError):
        raise result
    if not isinstance(result, Outcome):
        raise TypeError(f"the state machine answered {result!r}")
    return result


__all__ = ["INTERNAL_PROPOSE", "NoLeader", "Replica"]
