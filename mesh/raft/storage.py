"""Raft's durable state: a Storage protocol, an in-memory twin, and SQLite (WAL, fsync on commit).

What the core needs back at start is a :class:`~mesh.raft.PersistentState`: hard state (term,
vote, commit), the latest snapshot, and the log after it. The driver calls ``save`` with a Ready's
hard state, entries and snapshot (all in one transaction) before sending that Ready's messages, and
``compact`` with a snapshot the core made. Semantics shared by every implementation:

* ``save(hs, entries, snapshot)``: a snapshot (installed from the leader) replaces the whole log;
  entries replace every stored entry at or after ``entries[0].index``.
* ``compact(snapshot)``: a local snapshot; entries up to its index are dropped.

SQLite: ``PRAGMA synchronous=FULL`` in WAL mode makes every commit an fsync. Each entry row keeps a
CRC32 of its contents; at open, rows are checked in index order and the first corrupt, torn or
non-contiguous row and everything after it are deleted with a logged warning, so a bad tail is
never handed to the core (the leader will send it again). Snapshot data lives in a file beside the
database, written tmp + fsync + rename + directory fsync, named in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import aiosqlite
import msgpack

from mesh.files import write_private
from mesh.raft.core import HardState, PersistentState
from mesh.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    Snapshot,
    SnapshotMeta,
    conf_from_wire,
    conf_to_wire,
)

log = logging.getLogger(__name__)


class Storage(Protocol):
    """Synchronous storage (the simulator, tests)."""

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None: ...

    def load(self) -> PersistentState: ...

    def compact(self, snapshot: Snapshot) -> None: ...


class AsyncStorage(Protocol):
    """What the asyncio driver uses; :class:`SqliteStorage` and :class:`AsyncMemoryStorage`."""

    async def save(self, hard_state: HardState | None, entries: Sequence[Entry],
                   snapshot: Snapshot | None) -> None: ...

    async def load(self) -> PersistentState: ...

    async def compact(self, snapshot: Snapshot) -> None: ...


class MemoryStorage:
    """The in-memory twin: what survives a simulated crash is exactly what was saved here."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []  # contiguous, after the snapshot

    @property
    def first_index(self) -> int:
        return (self.snapshot.meta.index if self.snapshot else 0) + 1

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        if entries:
            keep = entries[0].index - self.first_index
            if keep < 0:
                raise ValueError("entries before the snapshot")
            if keep > len(self.entries):
                raise ValueError(f"gap: have up to {self.last_index}, got {entries[0].index}")
            del self.entries[keep:]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        drop = snapshot.meta.index - self.first_index + 1
        if self.snapshot is not None and snapshot.meta.index <= self.snapshot.meta.index:
            return
        self.entries = self.entries[max(drop, 0):]
        self.snapshot = snapshot

    def load(self) -> PersistentState:
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))

    def term_at(self, index: int) -> int | None:
        if self.snapshot is not None and index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        if self.first_index <= index <= self.last_index:
            return self.entries[index - self.first_index].term
        return None


class AsyncMemoryStorage:
    """MemoryStorage behind the async protocol, for driver tests."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()

    async def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        self.inner.save(hard_state, entries, snapshot)

    async def load(self) -> PersistentState:
        return self.inner.load()

    async def compact(self, snapshot: Snapshot) -> None:
        self.inner.compact(snapshot)


def entry_crc(index: int, term: int, kind: int, data: bytes) -> int:
    return zlib.crc32(msgpack.packb([index, term, kind, data], use_bin_type=True))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS hard_state (id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL,
    vote TEXT, commit_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
    data BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_meta (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER NOT NULL,
    term INTEGER NOT NULL, conf BLOB NOT NULL, file TEXT NOT NULL, crc INTEGER NOT NULL);
"""


class SqliteStorage:
    """Raft state in ``<dir>/raft.db`` plus ``<dir>/snapshot-<term>-<index>.snap``."""

    def __init__(self, directory: Path, db: aiosqlite.Connection) -> None:
        self.directory = directory
        self._db = db
        self.truncated_from: int | None = None  # set by load() if a bad tail was cut

    @classmethod
    async def open(cls, directory: str | os.PathLike[str]) -> SqliteStorage:
        d = Path(directory)
        await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True)
        db = await aiosqlite.connect(d / "raft.db", isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(_SCHEMA)
        return cls(d, db)

    async def close(self) -> None:
        await self._db.close()

    async def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        """One transaction; returns once it is fsynced."""
        if hard_state is None and not entries and snapshot is None:
            return
        old_file = None
        if snapshot is not None:
            old_file = await self._write_snapshot_file(snapshot)
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            if snapshot is not None:
                await self._db.execute("DELETE FROM entries")
                await self._put_snapshot_meta(snapshot)
            if entries:
                await self._db.execute("DELETE FROM entries WHERE idx >= ?", (entries[0].index,))
                await self._db.executemany(
                    "INSERT INTO entries (idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)",
                    [(e.index, e.term, int(e.kind), e.data, entry_crc(e.index, e.term, int(e.kind), e.data))
                     for e in entries])
            if hard_state is not None:
                await self._db.execute(
                    "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index) VALUES (0, ?, ?, ?)",
                    (hard_state.term, hard_state.vote, hard_state.commit))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        await self._remove_old_snapshot(old_file, snapshot)

    async def _rollback(self) -> None:
        """Undo the open transaction, if there still is one. A task cancelled while it awaited
        ``COMMIT`` (the driver stopping) leaves the COMMIT queued on aiosqlite's thread, which runs it
        anyway: then there is nothing to roll back, and the original exception is what matters."""
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            log.debug("nothing to roll back: %s", exc)

    async def compact(self, snapshot: Snapshot) -> None:
        old_file = await self._write_snapshot_file(snapshot)
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._put_snapshot_meta(snapshot)
            await self._db.execute("DELETE FROM entries WHERE idx <= ?", (snapshot.meta.index,))
            await self._db.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        await self._remove_old_snapshot(old_file, snapshot)

    async def load(self) -> PersistentState:
        hs = HardState()
        async with self._db.execute("SELECT term, vote, commit_index FROM hard_state WHERE id = 0") as cur:
            row = await cur.fetchone()
            if row is not None:
                hs = HardState(int(row[0]), row[1], int(row[2]))
        snapshot = await self._read_snapshot()
        expected = (snapshot.meta.index if snapshot else 0) + 1
        entries: list[Entry] = []
        bad_from: int | None = None
        async with self._db.execute("SELECT idx, term, kind, data, crc FROM entries ORDER BY idx") as cur:
            async for idx, term, kind, data, crc in cur:
                if idx < expected:
                    continue
                ok = (idx == expected and isinstance(data, bytes) and kind in tuple(EntryKind)
                      and entry_crc(idx, term, kind, data) == crc)
                if not ok:
                    bad_from = idx if idx == expected else expected
                    log.warning("raft log: entry %d is %s; truncating the log from index %d",
                                idx, "missing" if idx != expected else "corrupt", bad_from)
                    break
                entries.append(Entry(int(term), int(idx), EntryKind(kind), bytes(data)))
                expected += 1
        if bad_from is not None:
            self.truncated_from = bad_from
            await self._db.execute("DELETE FROM entries WHERE idx >= ?", (bad_from,))
            last = expected - 1
            if hs.commit > last:
                log.warning("raft log: commit %d lies beyond the surviving log; lowering it to %d", hs.commit, last)
                hs = HardState(hs.term, hs.vote, last)
                await self._db.execute("UPDATE hard_state SET commit_index = ? WHERE id = 0", (last,))
        return PersistentState(hs, snapshot, tuple(entries))

    # ---- snapshot files ----------------------------------------------------------------------

    async def _write_snapshot_file(self, snapshot: Snapshot) -> str | None:
        name = f"snapshot-{snapshot.meta.term}-{snapshot.meta.index}.snap"
        await asyncio.to_thread(write_private, self.directory / name, snapshot.data)
        async with self._db.execute("SELECT file FROM snapshot_meta WHERE id = 0") as cur:
            row = await cur.fetchone()
        return str(row[0]) if row is not None and row[0] != name else None

    async def _put_snapshot_meta(self, snapshot: Snapshot) -> None:
        m = snapshot.meta
        await self._db.execute(
            "INSERT OR REPLACE INTO snapshot_meta (id, idx, term, conf, file, crc) VALUES (0, ?, ?, ?, ?, ?)",
            (m.index, m.term, msgpack.packb(conf_to_wire(m.conf), use_bin_type=True),
             f"snapshot-{m.term}-{m.index}.snap", zlib.crc32(snapshot.data)))

    async def _remove_old_snapshot(self, old_file: str | None, snapshot: Snapshot | None) -> None:
        if old_file and snapshot is not None:
            await asyncio.to_thread((self.directory / old_file).unlink, True)

    async def _read_snapshot(self) -> Snapshot | None:
        async with self._db.execute("SELECT idx, term, conf, file, crc FROM snapshot_meta WHERE id = 0") as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        idx, term, conf, file, crc = row
        data = await asyncio.to_thread((self.directory / file).read_bytes)
        if zlib.crc32(data) != crc:
            raise OSError(f"snapshot file {file} fails its CRC; the node must be re-seeded from a peer")
        return Snapshot(SnapshotMeta(int(idx), int(term), _conf(conf)), data)


def _conf(blob: bytes) -> ConfState:
    return conf_from_wire(msgpack.unpackb(blob, raw=False))
