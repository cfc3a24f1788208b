"""SqliteStorage against a real temp file, with MemoryStorage as the reference it must match."""

from __future__ import annotations

import dataclasses
import logging
import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import msgpack
import pytest

from mesh.raft.config import local
from mesh.raft.core import HardState, RaftNode, Role
from mesh.raft.messages import ConfState, Entry, EntryKind, Snapshot, SnapshotMeta
from mesh.raft.sim import KVStateMachine
from mesh.raft.storage import MemoryStorage, SqliteStorage
from tests.unit.raft_cluster import Cluster, cfg


def E(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term, index, EntryKind.NORMAL, data or f"e{index}".encode())


def SNAP(index: int, term: int, data: bytes = b"image") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(frozenset({"n1", "n2", "n3"}), frozenset({"n4"}))), data)


async def test_empty_store_loads_empty(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path / "raft")
    st = await s.load()
    assert st.hard_state == HardState() and st.snapshot is None and st.entries == ()
    await s.close()


async def test_save_load_round_trip_across_reopen(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(HardState(3, "n2", 2), [E(1, 1), E(2, 3), E(3, 3)], None)
    await s.close()
    s = await SqliteStorage.open(tmp_path)
    st = await s.load()
    assert st.hard_state == HardState(3, "n2", 2)
    assert st.entries == (E(1, 1), E(2, 3), E(3, 3))
    await s.close()


async def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path)
    async with s._db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"  # type: ignore[index]
    async with s._db.execute("PRAGMA synchronous") as cur:
        assert (await cur.fetchone())[0] == 2  # type: ignore[index]  # FULL
    await s.close()


async def test_new_entries_replace_the_conflicting_suffix(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(None, [E(1, 1), E(2, 1), E(3, 1), E(4, 1)], None)
    await s.save(HardState(2, None, 0), [E(3, 2, b"new")], None)
    st = await s.load()
    assert st.entries == (E(1, 1), E(2, 1), E(3, 2, b"new"))
    await s.close()


async def test_installed_snapshot_replaces_the_log_and_is_a_file(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(HardState(1, None, 0), [E(1, 1), E(2, 1), E(3, 1)], None)
    await s.save(HardState(4, None, 10), [E(11, 4)], SNAP(10, 4))
    st = await s.load()
    assert st.snapshot == SNAP(10, 4) and st.entries == (E(11, 4),)
    assert [p.name for p in tmp_path.glob("*.snap")] == ["snapshot-4-10.snap"]
    await s.save(None, [], SNAP(20, 5, b"newer"))
    assert [p.name for p in tmp_path.glob("*.snap")] == ["snapshot-5-20.snap"]  # the old file is gone
    assert not list(tmp_path.glob("*.tmp"))
    await s.close()


async def test_compact_keeps_the_tail(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(HardState(2, "n1", 5), [E(i, 2) for i in range(1, 8)], None)
    await s.compact(SNAP(5, 2))
    st = await s.load()
    assert st.snapshot == SNAP(5, 2) and [e.index for e in st.entries] == [6, 7]
    await s.close()


async def _corrupt(path: Path, sql: str) -> None:
    con = sqlite3.connect(path / "raft.db")
    con.execute(sql)
    con.commit()
    con.close()


async def test_corrupt_tail_is_truncated_with_a_warning_and_never_returned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(HardState(2, "n1", 5), [E(i, 2) for i in range(1, 7)], None)
    await s.close()
    await _corrupt(tmp_path, "UPDATE entries SET data = x'deadbeef' WHERE idx = 5")  # torn write: CRC fails
    s = await SqliteStorage.open(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mesh.raft.storage"):
        st = await s.load()
    assert [e.index for e in st.entries] == [1, 2, 3, 4]
    assert s.truncated_from == 5
    assert st.hard_state.commit == 4  # commit may not point past the surviving log
    assert any("truncating" in r.getMessage() for r in caplog.records)
    await s.close()
    s = await SqliteStorage.open(tmp_path)  # the truncation itself was durable
    st = await s.load()
    assert [e.index for e in st.entries] == [1, 2, 3, 4] and s.truncated_from is None
    await s.close()


async def test_gap_in_the_log_truncates_from_the_gap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(HardState(2, "n1", 2), [E(i, 2) for i in range(1, 7)], None)
    await s.close()
    await _corrupt(tmp_path, "DELETE FROM entries WHERE idx = 3")
    s = await SqliteStorage.open(tmp_path)
    with caplog.at_level(logging.WARNING):
        st = await s.load()
    assert [e.index for e in st.entries] == [1, 2] and st.hard_state.commit == 2
    assert s.truncated_from == 3
    await s.close()


async def test_a_corrupt_snapshot_file_is_refused(tmp_path: Path) -> None:
    s = await SqliteStorage.open(tmp_path)
    await s.save(HardState(4, None, 10), [], SNAP(10, 4))
    await s.close()
    (tmp_path / "snapshot-4-10.snap").write_bytes(b"imagf")
    s = await SqliteStorage.open(tmp_path)
    with pytest.raises(OSError, match="CRC"):
        await s.load()
    await s.close()


class RecordingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        self.calls.append(("save", (hard_state, tuple(entries), snapshot)))
        super().save(hard_state, entries, snapshot)

    def compact(self, snapshot: Snapshot) -> None:
        self.calls.append(("compact", (snapshot,)))
        super().compact(snapshot)


async def test_sqlite_matches_memory_storage_on_a_real_raft_run(tmp_path: Path) -> None:
    """Replay every save/compact a real cluster's node made (elections, appends, a crash, an
    InstallSnapshot, compactions) into SQLite: the stores must load identically."""
    c = Cluster(3, config=cfg(snapshot_threshold=6), storage_factory=RecordingStorage)
    c.elect("n1")
    for i in range(15):
        c.put("n1", f"k{i}", "v")
    c.crash("n3")
    for i in range(20):
        c.put("n1", f"j{i}", "v")
    c.restart("n3")
    c.tick(3)
    assert c.sm["n3"].data == c.sm["n1"].data
    for nid in ("n1", "n3"):
        rec = c.storage[nid]
        assert isinstance(rec, RecordingStorage)
        sq = await SqliteStorage.open(tmp_path / nid)
        for kind, args in rec.calls:
            if kind == "save":
                await sq.save(*args)  # type: ignore[arg-type]
            else:
                await sq.compact(*args)  # type: ignore[arg-type]
        await sq.close()
        sq = await SqliteStorage.open(tmp_path / nid)
        got = await sq.load()
        assert got == rec.load()
        rebuilt = RaftNode(nid, local(), random.Random(1), state=got)
        live = c.nodes[nid]
        assert (rebuilt.term, rebuilt.vote, rebuilt.commit, rebuilt.last_index, rebuilt.snapshot_index) == (
            live.term, live.vote, live.commit, live.last_index, live.snapshot_index)
        await sq.close()
    assert any(k == "save" and args[2] is not None for k, args in c.storage["n3"].calls)  # type: ignore[attr-defined]


async def _drive(node: RaftNode, store: SqliteStorage, sm: KVStateMachine) -> None:
    """The driver's loop, in etcd's order: persist, send (nothing to send alone), apply, advance."""
    while node.has_ready():
        rd = node.ready()
        await store.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.snapshot is not None:
            sm.restore(rd.snapshot.data)
        for e in rd.committed_entries:
            sm.apply(e)
        node.advance(rd)
        if node.wants_snapshot():
            await store.compact(node.compact(node.applied, sm.snapshot()))


async def test_single_node_driver_on_sqlite_survives_restart_with_compaction(tmp_path: Path) -> None:
    config = dataclasses.replace(local(), snapshot_threshold=16)
    store = await SqliteStorage.open(tmp_path)
    node = RaftNode("n1", config, random.Random(3), voters=["n1"])
    sm = KVStateMachine()
    await _drive(node, store, sm)
    for _ in range(3 * config.election_ticks):
        node.tick()
        await _drive(node, store, sm)
    assert node.role == Role.LEADER
    for i in range(40):
        assert isinstance(node.propose(msgpack.packb([0, i, "put", f"k{i % 7}", str(i), None])), int)
        await _drive(node, store, sm)
    assert node.snapshot_index >= 16 and node.commit == node.last_index
    await store.close()

    store = await SqliteStorage.open(tmp_path)
    state = await store.load()
    again = RaftNode("n1", config, random.Random(4), state=state)
    sm2 = KVStateMachine()
    assert state.snapshot is not None
    sm2.restore(state.snapshot.data)
    await _drive(again, store, sm2)
    assert sm2.data == sm.data and again.applied == node.applied and again.term == node.term
    await store.close()


async def test_a_save_cancelled_while_its_commit_is_queued_raises_cancelled_and_keeps_the_commit(
        tmp_path: Path) -> None:
    """The driver stopping cancels a save awaiting COMMIT; aiosqlite's thread still runs the COMMIT.
    The save must end in CancelledError (not a failed ROLLBACK's OperationalError, which made the
    driver's stop raise) and the store must hold the whole write."""
    import asyncio

    s = await SqliteStorage.open(tmp_path)
    real = s._db.execute

    async def execute(sql: str, *args: object) -> object:
        if sql == "COMMIT":
            queued = asyncio.ensure_future(real(sql, *args))
            await asyncio.sleep(0)  # the COMMIT is on the thread's queue now
            queued.cancel()  # as the driver's stop would: the await is cancelled, the COMMIT is not
            raise asyncio.CancelledError
        return await real(sql, *args)

    s._db.execute = execute  # type: ignore[assignment,method-assign]
    try:
        with pytest.raises(asyncio.CancelledError):
            await s.save(HardState(2, "n1", 0), [E(1, 1), E(2, 2)], None)
    finally:
        s._db.execute = real  # type: ignore[method-assign]
        await s.close()  # aiosqlite's thread would otherwise keep the test process alive
    s = await SqliteStorage.open(tmp_path)
    st = await s.load()
    assert st.hard_state == HardState(2, "n1", 0) and st.entries == (E(1, 1), E(2, 2))
    await s.close()
