"""Three Raft drivers on loopback sockets with SQLite storage: elect, replicate, fail over, restart.

Real TCP on 127.0.0.1, real fsynced SQLite, real AES-GCM sealing; only the lab's namespaces are
missing (the lab tests add those).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.model.commands import KvPut, Outcome, encode
from agent.model.state import ClusterState
from mesh.raft import config as raft_config
from mesh.raft.core import RaftNode, Role
from mesh.raft.driver import NotLeaderError, RaftDriver
from mesh.raft.storage import SqliteStorage
from mesh.raft.transport import RaftTransport
from mesh.waiting import until_async

BASE_PORT = 27947


class AesSealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, None)

    def open(self, sealed: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], None)
        except Exception:
            return None


@dataclasses.dataclass
class Member:
    name: str
    driver: RaftDriver
    storage: SqliteStorage
    transport: RaftTransport
    state: ClusterState


NAMES = ("n1", "n2", "n3")
KEY = b"k" * 32


async def start_member(name: str, data: Path, seed: int) -> Member:
    storage = await SqliteStorage.open(data / name)
    persistent = await storage.load()
    cfg = dataclasses.replace(raft_config.local(), snapshot_threshold=20)
    core = RaftNode(name, cfg, random.Random(seed), state=persistent, voters=NAMES)
    state = ClusterState()
    holder: dict[str, RaftDriver] = {}
    port = BASE_PORT + NAMES.index(name)
    transport = RaftTransport(("127.0.0.1", port), AesSealer(KEY), lambda m: holder["d"].deliver(m))
    driver = RaftDriver(core, storage, state, transport, cfg.tick_seconds)
    holder["d"] = driver
    await transport.start()
    for i, peer in enumerate(NAMES):
        if peer != name:
            transport.set_peer(peer, ("127.0.0.1", BASE_PORT + i))
    await driver.start(persistent.snapshot.data if persistent.snapshot else None)
    return Member(name, driver, storage, transport, state)


async def stop_member(m: Member) -> None:
    await m.driver.stop()
    await m.transport.close()
    await m.storage.close()


async def leader_of(members: list[Member], timeout: float = 10.0) -> Member:
    def single_leader() -> Member | None:
        leaders = [m for m in members if m.driver.core.role == Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    return await until_async("a single leader", single_leader, timeout)


async def put(leader: Member, key: str, value: str) -> bool:
    """Whether the state machine took the write (its Outcome, not an error)."""
    result = await leader.driver.propose(encode(KvPut(key, value)))
    return isinstance(result, Outcome)


async def settled(members: list[Member], what: str) -> tuple[Member, dict[str, int]]:
    """The leader once a first write has committed and the members have heard of it, and each one's term."""
    leader = await leader_of(members)
    assert await put(leader, "before", what)
    await asyncio.sleep(0.2)
    return leader, {m.name: m.driver.core.term for m in members}


def assert_kept(members: list[Member], leader: Member, terms: dict[str, int]) -> None:
    """Nobody campaigned: the same terms, and everyone follows the same leader."""
    assert {m.name: m.driver.core.term for m in members} == terms, "nobody campaigned"
    assert all(m.driver.core.leader == leader.name for m in members)
    assert leader.driver.core.role == Role.LEADER


async def test_elect_replicate_fail_over_and_catch_up(tmp_path: Path) -> None:
    members = [await start_member(n, tmp_path, seed=i) for i, n in enumerate(NAMES)]
    try:
        leader = await leader_of(members)
        for i in range(30):
            assert await put(leader, f"k{i}", str(i))
        follower = next(m for m in members if m is not leader)
        with pytest.raises(NotLeaderError) as err:
            await follower.driver.propose(encode(KvPut("x", "y")))
        assert err.value.leader == leader.name
        index = await follower.driver.read_barrier()
        assert follower.state.kv["k29"].value == "29" and index >= 30

        timed = next(x.value for x in leader.driver.commit_seconds.collect()[0].samples if x.name.endswith("_count"))
        assert timed >= 30, "every put's commit was timed"
        assert follower.driver.leader_contact is not None, "a follower knows when it last heard from its leader"
        changes = {m.name: m.driver.leader_changes for m in members}

        await stop_member(leader)  # the leader dies
        rest = [m for m in members if m is not leader]
        new_leader = await leader_of(rest)
        assert new_leader is not leader
        assert await put(new_leader, "after", "failover")
        others = [m for m in rest if m is not new_leader]
        assert all(m.driver.leader_changes > changes[m.name] for m in others), "the follower saw its leader change"

        revived = await start_member(leader.name, tmp_path, seed=9)  # restarts from its SQLite log
        members = [*rest, revived]
        assert await revived.driver.wait_applied(new_leader.driver.applied, timeout=10)
        assert revived.state.kv["after"].value == "failover"
        assert revived.state.kv["k0"].value == "0"
        assert revived.driver.core.role != Role.LEADER or new_leader.driver.core.role != Role.LEADER
        snapshots = [m.driver.core.status()["snapshot_index"] for m in members]
        assert max(snapshots) > 0, "the log was compacted into a snapshot"
    finally:
        for m in members:
            with contextlib.suppress(Exception):
                await stop_member(m)


async def test_frames_sealed_with_another_key_are_dropped(tmp_path: Path) -> None:
    members = [await start_member(n, tmp_path, seed=i) for i, n in enumerate(NAMES)]
    try:
        await leader_of(members)
        _, writer = await asyncio.open_connection("127.0.0.1", BASE_PORT)
        bogus = AesSealer(b"x" * 32).seal(b"hello")
        writer.write(len(bogus).to_bytes(4, "big") + bogus + b"\x00\x00\x00\x03abc")
        await writer.drain()
        await asyncio.sleep(0.2)
        assert members[0].transport.drops["unsealed"] == 2
        writer.close()
        assert await put(await leader_of(members), "still", "works")
    finally:
        for m in members:
            await stop_member(m)


async def test_an_idle_follower_wakes_at_its_election_timeout_not_every_tick(tmp_path: Path) -> None:
    """Ticks are counted by time, so a follower that hears heartbeats need not wake per tick to count
    them; the leader still ticks (heartbeats) every tick, and a follower whose leader died still
    campaigns on time (the failover of the test above)."""
    members = [await start_member(n, tmp_path, seed=i) for i, n in enumerate(NAMES)]
    try:
        leader = await leader_of(members)
        await asyncio.sleep(0.3)
        before = {m.name: m.driver.ticker_wakeups for m in members}
        await asyncio.sleep(1.0)
        woke = {m.name: m.driver.ticker_wakeups - before[m.name] for m in members}
        followers = [woke[m.name] for m in members if m is not leader]
        assert woke[leader.name] >= 50, woke  # 10 ms ticks: every one a heartbeat
        assert max(followers) * 3 < woke[leader.name], woke
        assert all(m.driver.core.leader == leader.name for m in members), "nobody campaigned meanwhile"
    finally:
        for m in members:
            await stop_member(m)


async def test_a_loop_stalled_for_several_election_timeouts_keeps_its_leader(tmp_path: Path) -> None:
    """A member whose loop could not run (its process had no CPU) wakes with its peers' messages unread:
    that stall is not their silence. Before, the leader stepped down (CheckQuorum) and the followers
    campaigned the moment the loop ran again; now nobody does, and a dead leader is still replaced."""
    import time

    members = [await start_member(n, tmp_path, seed=i) for i, n in enumerate(NAMES)]
    try:
        leader, terms = await settled(members, "stall")
        timeout = leader.driver.core.cfg.election_ticks * leader.driver.tick_interval
        for _ in range(3):
            time.sleep(6 * timeout)  # the whole loop stalls: every member at once, as a starved process
            await asyncio.sleep(4 * timeout)
        assert all(m.driver.stalls >= 3 for m in members), {m.name: m.driver.stalls for m in members}
        assert_kept(members, leader, terms)
        assert await put(leader, "after", "stall")

        await stop_member(leader)  # a leader really gone is still replaced
        rest = [m for m in members if m is not leader]
        new_leader = await leader_of(rest)
        assert new_leader is not leader and await put(new_leader, "after", "failover")
    finally:
        for m in members:
            with contextlib.suppress(Exception):
                await stop_member(m)


async def test_a_slow_disk_holds_back_no_heartbeat(tmp_path: Path) -> None:
    """Every member's disk takes four election timeouts per write while writes keep coming (a disk busy
    with the engines' unpacking: 0.3-0.5 s per fsync was measured in the lab, against election timeouts of
    0.3-0.6 s). Heartbeats and their answers leave while the writes are on the way, so nobody campaigns and
    the leader keeps its quorum; every write still commits. (Held back until each write was on disk, as
    before, the followers campaigned and writes timed out: 3 runs of 3.)"""
    members = [await start_member(n, tmp_path, seed=i) for i, n in enumerate(NAMES)]
    try:
        leader, terms = await settled(members, "slow disk")
        delay = 4 * leader.driver.core.cfg.election_ticks * leader.driver.tick_interval
        for m in members:
            real = m.storage.save

            async def slow(hs: object, entries: object, snap: object, real: Any = real) -> None:
                if hs is not None or entries or snap is not None:  # a real write: fsynced
                    await asyncio.sleep(delay)
                await real(hs, entries, snap)

            m.storage.save = slow  # type: ignore[method-assign]

        async def writer(n: int) -> None:
            for i in range(6):
                assert await put(leader, f"slow-{n}-{i}", "x")

        await asyncio.gather(*(writer(n) for n in range(3)))
        assert_kept(members, leader, terms)
        assert all(m.driver.heartbeats_unheld > 0 for m in members), \
            {m.name: m.driver.heartbeats_unheld for m in members}
        assert leader.driver.persist_seconds.collect()[0].samples, "the writes were timed"
        assert "slow-2-5" in leader.state.kv
    finally:
        for m in members:
            with contextlib.suppress(Exception):
                await stop_member(m)


class _SilentTransport:
    def send(self, msg: object) -> None:
        pass


@pytest.mark.parametrize("late_ticks", [2, 3, 10])
def test_a_follower_late_at_every_wake_still_times_out(late_ticks: int) -> None:
    """The other half of the rule: a stall goes uncounted only when at least as much time (or an election
    timeout) was counted since the last one, so a follower whose every wake comes late (starved all the
    time) still campaigns when its leader is silent, at worst about twice as late. (Forgiving every
    stall, it never would.)"""
    cfg = raft_config.lan()
    core = RaftNode("n1", cfg, random.Random(1), voters=NAMES)
    core.advance(core.ready())  # the bootstrap's configuration applied: n1 is a voter
    assert core.voters == frozenset(NAMES)
    driver = RaftDriver(core, None, ClusterState(), _SilentTransport(), cfg.tick_seconds)  # type: ignore[arg-type]
    tick = cfg.tick_seconds
    now = 1000.0
    driver._ticked_at = now
    on_time = None
    while core.role == Role.FOLLOWER and now < 1060.0:
        ticks = driver._replan()
        if on_time is None:
            on_time = driver._plan  # when it would campaign, woken on time
        now = driver._plan + late_ticks * tick  # every wake this late
        driver._catch_up_ticks(now)
        stalls = driver.stalls
        driver._catch_up_ticks(now)  # a message read at the same moment: the same stall, not a second
        assert driver.stalls == stalls and driver._ticked_at <= now + 1e-9, "time never runs ahead"
    assert core.role != Role.FOLLOWER, "a follower stalled at every wake never campaigned"
    assert on_time is not None and now - on_time <= cfg.election_ticks * 2 * tick + 2 * late_ticks * tick, \
        (now - on_time, ticks)
    assert driver.stalls >= 1
