"""Raft configuration: one frozen dataclass, every duration in ticks, presets by ``replace``.

The core counts ticks; only the driver knows how long a tick is (``tick_seconds``). etcd's defaults
(heartbeat 100 ms, election timeout 1000 ms, https://etcd.io/docs/v3.5/tuning/) are a 100 ms tick
with ``heartbeat_ticks=1`` and ``election_ticks=10``: :func:`etcd_defaults`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    tick_seconds: float = 0.05
    """Wall-clock length of one tick; used by the driver only. lan(): 50 ms."""

    heartbeat_ticks: int = 1
    """A leader sends heartbeats every ``heartbeat_ticks`` ticks (about one RTT)."""

    election_ticks: int = 10
    """= 10 x heartbeat_ticks. A follower campaigns after a random timeout in
    [election_ticks, 2 x election_ticks) ticks without hearing from a leader; a CheckQuorum leader
    steps down after ``election_ticks`` without hearing from a quorum."""

    max_entries_per_append: int = 64
    """Batching: at most this many entries in one AppendEntries."""

    max_inflight_appends: int = 16
    """Pipelining: at most this many unacknowledged AppendEntries per follower in replicate state;
    throughput ~= max_inflight x max_entries / RTT."""

    snapshot_threshold: int = 8192
    """The driver snapshots and compacts once applied - snapshot index >= this many entries.

    A snapshot costs time in proportion to the whole state (every record encoded and written), so
    under a steady write load it must come rarely: at 1024, with ~7000 keys and a thousand writes a
    second, snapshots took 14-25 % of a member's CPU; at 8192 the log holds a few MB more between
    them. (etcd: 10000 before v3.2, 100000 now.)"""

    check_quorum: bool = True
    """A leader that has not heard from a quorum within ``election_ticks`` steps down, and
    followers that heard from a leader within ``election_ticks`` ignore vote requests (lease)."""

    pre_vote: bool = True
    """Campaign in two phases; the first changes no term, so a partitioned node that rejoins
    cannot depose a healthy leader."""

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must exceed heartbeat_ticks")
        if self.max_entries_per_append < 1 or self.max_inflight_appends < 1:
            raise ValueError("max_entries_per_append and max_inflight_appends must be >= 1")

    @property
    def election_timeout_seconds(self) -> float:
        return self.election_ticks * self.tick_seconds


def lan() -> RaftConfig:
    """One data centre: 50 ms tick, heartbeat 100 ms (etcd's), election timeout 300-600 ms.

    A follower campaigns after 300-600 ms without a leader: with the PreVote round that puts failover
    p99 under the 1 s target (measured by bench/raft_sim.py and bench/raft.py). A heartbeat every
    100 ms rather than every 50 ms halves an idle leader's Raft traffic (issue 13: the leader was 2.5 %
    of a core idle, 1.8 % with this); a follower that misses three in a row (10 % loss: 1 in 1000
    windows) only starts a PreVote, which the others refuse while they still hear the leader (the
    lease of CheckQuorum), so no term changes and nothing is disrupted.
    """
    return RaftConfig(heartbeat_ticks=2, election_ticks=6)


def wan() -> RaftConfig:
    """Across regions: 200 ms tick, heartbeat 200 ms, election timeout 2-4 s."""
    return dataclasses.replace(lan(), tick_seconds=0.2)


def local() -> RaftConfig:
    """Tests and the lab on one machine: 10 ms tick, small snapshot threshold."""
    return dataclasses.replace(lan(), tick_seconds=0.01, heartbeat_ticks=1, snapshot_threshold=64)


def etcd_defaults() -> RaftConfig:
    """etcd's defaults as a reference: heartbeat 100 ms, election timeout 1000 ms."""
    return dataclasses.replace(lan(), tick_seconds=0.1, heartbeat_ticks=1, election_ticks=10, snapshot_threshold=10000)
