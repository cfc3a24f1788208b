"""What a leader knows about one follower's log: match/next and a flow-control state.

After etcd-io/raft ``tracker/progress.go``: PROBE sends one append per heartbeat until the
follower's position is known; REPLICATE streams appends optimistically with at most
``max_inflight`` unacknowledged (pipelining); SNAPSHOT waits for an InstallSnapshot to land.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


@dataclass(slots=True)
class Progress:
    max_inflight: int
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    snapshot_ticks: int = 0
    recent_active: bool = False
    inflights: deque[int] = field(default_factory=deque)

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.inflights.clear()

    def maybe_update(self, index: int) -> bool:
        """A success ack for ``index``; False if it was stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A reject of the append whose prev index was ``rejected``; False if stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_append(self, last_index: int | None) -> None:
        """Record that an append (ending at ``last_index``, None if empty) went out."""
        if self.state == ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.append(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def free_le(self, index: int) -> None:
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True
