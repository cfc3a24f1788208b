"""Raft: a sans-I/O core (etcd-raft's Ready/Advance), its storage, transport and asyncio driver.

    core        RaftNode: PreVote, CheckQuorum, learners, single-server changes, transfer, ReadIndex, snapshots
    log         the in-memory log the core works on
    progress    a leader's view of each follower
    messages    the messages, frozen dataclasses, and their codec
    membership  which membership change the leader should make next (pure)
    config      RaftConfig and its presets
    storage     the durable state: SQLite (WAL, fsync) and an in-memory twin
    transport   sealed, length-prefixed frames over TCP
    driver      the asyncio driver: ticks, persist, send, apply, advance
    sim         the deterministic simulator with a linearizability check
    design.md   the role table
"""

__all__ = ["config", "core", "driver", "log", "membership", "messages", "progress", "sim", "storage", "transport"]
