"""A Raft node's view of its log: the latest snapshot, the entries after it, and what is on disk.

After etcd-io/raft ``log.go``/``log_unstable.go``, folded into one list: entries with index
<= ``stable`` have been handed to storage (their Ready was advanced); the rest, and an installed
snapshot not yet persisted, go into the next Ready.
"""

from __future__ import annotations

from collections.abc import Iterable

from mesh.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta


class RaftLog:
    def __init__(self) -> None:
        self.snap = SnapshotMeta(0, 0, ConfState())
        self.snap_data: Snapshot | None = None  # the image we can send to lagging followers
        self.unstable_snapshot: Snapshot | None = None  # installed from the leader, not yet persisted
        self.entries: list[Entry] = []  # indices snap.index + 1 ... last_index
        self.stable = 0

    def load(self, snapshot: Snapshot | None, entries: Iterable[Entry]) -> None:
        """Start from storage: everything given is already stable; a gap ends the log."""
        if snapshot is not None:
            self.snap, self.snap_data = snapshot.meta, snapshot
        expected = self.snap.index + 1
        for e in entries:
            if e.index < expected:
                continue
            if e.index != expected:
                break
            self.entries.append(e)
            expected += 1
        self.stable = self.last_index

    @property
    def last_index(self) -> int:
        return self.snap.index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap.term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the log."""
        if index == self.snap.index:
            return self.snap.term
        if self.snap.index < index <= self.last_index:
            return self.entries[index - self.snap.index - 1].term
        return None

    def slice(self, lo: int, max_count: int) -> list[Entry]:
        start = lo - self.snap.index - 1
        return self.entries[start:start + max_count]

    def unstable(self) -> list[Entry]:
        return self.slice(self.stable + 1, self.last_index - self.stable)

    def append(self, entries: Iterable[Entry]) -> None:
        """Append, first cutting off any suffix the new entries overlap (the caller has checked
        that nothing committed is cut)."""
        for e in entries:
            idx = e.index - self.snap.index - 1
            if idx < len(self.entries):
                del self.entries[idx:]
                self.stable = min(self.stable, e.index - 1)
            self.entries.append(e)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (or the snapshot index):
        where a follower and a leader can next agree (fast backtracking)."""
        while index > self.snap.index:
            t = self.term_at(index)
            if t is not None and t <= term:
                break
            index -= 1
        return index

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate's log at least as up to date as ours (Raft §5.4.1)?"""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def compact(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        term = self.term_at(index)
        if term is None or index <= self.snap.index or index > self.stable:
            raise ValueError(f"cannot compact at {index}: snapshot {self.snap.index}, stable {self.stable}")
        meta = SnapshotMeta(index, term, conf)
        del self.entries[:index - self.snap.index]
        self.snap, self.snap_data = meta, Snapshot(meta, data)
        return self.snap_data

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader (persisted with the next Ready)."""
        self.entries = []
        self.snap, self.snap_data, self.unstable_snapshot = snapshot.meta, snapshot, snapshot
        self.stable = snapshot.meta.index

    def stable_to(self, entries: tuple[Entry, ...], snapshot: Snapshot | None) -> None:
        """A Ready holding these was persisted; entries replaced since then stay unstable."""
        if snapshot is not None:
            self.stable = max(self.stable, snapshot.meta.index)
            if self.unstable_snapshot is snapshot:
                self.unstable_snapshot = None
        for e in reversed(entries):  # the longest persisted prefix that is still our log
            if self.term_at(e.index) == e.term:
                self.stable = max(self.stable, e.index)
                break
