"""Scenario tests of the Raft core: election, replication, PreVote, CheckQuorum, ReadIndex, flow control."""

from __future__ import annotations

import random

import pytest

from mesh.raft.core import HardState, NotLeader, RaftNode, Rejected, Role
from mesh.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    PreVote,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    encode_conf_change,
)
from tests.unit.raft_cluster import Cluster, cfg


def test_single_node_elects_itself_and_commits() -> None:
    c = Cluster(1)
    c.elect("n1")
    n = c.nodes["n1"]
    assert n.role == Role.LEADER and n.term == 2
    idx = c.put("n1", "k", "v")
    assert n.commit == idx and n.applied == idx
    assert c.sm["n1"].data == {"k": "v"}


def test_three_nodes_elect_exactly_one_leader_and_followers_know_it() -> None:
    c = Cluster(3, seed=7)
    c.tick(3 * c.config.election_ticks)
    assert len(c.leaders()) == 1
    lead = c.leader()
    for nid in c.ids:
        assert c.nodes[nid].leader == lead
        assert c.nodes[nid].term == c.nodes[lead].term


def test_election_timeouts_are_randomized_within_one_to_two_timeouts() -> None:
    seen = set()
    for seed in range(40):
        node = RaftNode("n1", cfg(), random.Random(seed), voters=["n1", "n2", "n3"])
        seen.add(node._randomized_timeout)
        assert cfg().election_ticks <= node._randomized_timeout < 2 * cfg().election_ticks
    assert len(seen) > 5


def test_replication_commits_in_order_on_every_node() -> None:
    c = Cluster(3)
    c.elect("n1")
    idxs = [c.put("n1", f"k{i}", str(i)) for i in range(5)]
    assert idxs == list(range(idxs[0], idxs[0] + 5))
    for nid in c.ids:
        assert c.nodes[nid].commit == idxs[-1]
        assert c.sm[nid].data == {f"k{i}": str(i) for i in range(5)}
        assert [e.index for e in c.applied[nid]] == list(range(1, idxs[-1] + 1))


def test_follower_refuses_proposals_with_a_leader_hint() -> None:
    c = Cluster(3)
    c.elect("n1")
    assert c.nodes["n2"].propose(b"x") == NotLeader("n1")


def test_commit_needs_a_quorum() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    idx = c.nodes["n1"].propose(b"lonely")
    c.stabilize()
    assert isinstance(idx, int) and c.nodes["n1"].commit < idx


def test_entries_of_an_old_term_commit_only_with_one_of_the_current_term() -> None:
    # n1 leads term 2 and appends an entry only it and n2 hold; n2 would count it toward a quorum
    # of two, but a later leader must not commit it by counting replicas alone (Raft §5.4.2).
    c = Cluster(3)
    c.elect("n1")
    c.blocked = {("n1", "n2"), ("n1", "n3")}
    idx = c.nodes["n1"].propose(b"old")
    c.stabilize()
    assert c.nodes["n1"].last_index == idx
    c.crash("n1")
    c.heal()
    c.elect("n2")
    n2 = c.nodes["n2"]
    assert n2.commit == n2.last_index and n2.term_at(n2.commit) == n2.term  # its no-op committed


def test_leader_crash_elects_a_new_leader_that_keeps_committed_writes() -> None:
    c = Cluster(3, seed=1)
    c.elect("n1")
    for i in range(3):
        c.put("n1", f"k{i}", "v")
    c.crash("n1")
    c.tick(3 * c.config.election_ticks)
    lead = c.leader()
    assert lead != "n1" and c.nodes[lead].term > 2
    c.put(lead, "after", "crash")
    assert c.sm[lead].data == {"k0": "v", "k1": "v", "k2": "v", "after": "crash"}
    c.restart("n1")
    c.tick(2)
    assert c.sm["n1"].data == c.sm[lead].data
    assert c.nodes["n1"].role == Role.FOLLOWER


def test_restart_from_storage_recovers_term_vote_and_log() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.put("n1", "a", "1")
    before = c.nodes["n2"]
    hs = c.storage["n2"].load().hard_state
    assert hs == HardState(before.term, "n1", before.commit)
    c.crash("n2")
    c.restart("n2")
    after = c.nodes["n2"]
    assert (after.term, after.vote, after.last_index) == (before.term, before.vote, before.last_index)


def test_prevote_keeps_a_partitioned_follower_from_disrupting_the_leader() -> None:
    c = Cluster(3)
    c.elect("n1")
    term = c.nodes["n1"].term
    c.isolate("n3")
    c.tick(5 * c.config.election_ticks)
    assert c.nodes["n3"].term == term  # PreVote never bumps the term
    assert c.nodes["n3"].role == Role.PRE_CANDIDATE
    c.heal()
    c.tick(3)
    assert c.leader() == "n1" and c.nodes["n1"].term == term
    assert c.nodes["n3"].leader == "n1"


def test_without_prevote_the_rejoining_follower_does_disrupt() -> None:
    # The control for the test above: the same scenario without PreVote/CheckQuorum deposes n1.
    c = Cluster(3, config=cfg(pre_vote=False, check_quorum=False))
    c.elect("n1")
    term = c.nodes["n1"].term
    c.isolate("n3")
    c.tick(5 * c.config.election_ticks)
    assert c.nodes["n3"].term > term
    c.heal()
    c.tick(2 * c.config.election_ticks)
    assert c.nodes["n1"].term > term


def test_check_quorum_leader_steps_down_and_the_majority_elects_another() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    c.tick(c.config.election_ticks - 1, only=["n1"])
    assert c.nodes["n1"].role == Role.LEADER  # peers were active in the first window
    c.tick(c.config.election_ticks + 1, only=["n1"])
    assert c.nodes["n1"].role == Role.FOLLOWER
    c.tick(6 * c.config.election_ticks, only=["n2", "n3"])
    assert c.leader() in ("n2", "n3")


def test_leader_lease_ignores_vote_requests_while_the_leader_is_heard() -> None:
    c = Cluster(3)
    c.elect("n1")
    n2 = c.nodes["n2"]
    term = n2.term
    n2.step(RequestVote("n3", "n2", term + 5, 100, term + 4))
    assert n2.term == term and n2.leader == "n1"
    n2.step(PreVote("n3", "n2", term + 1, 100, term))
    assert not n2.has_ready() or all(not isinstance(m, PreVote) for m in n2.ready().messages)


def test_read_index_on_leader_and_follower_returns_the_commit_index() -> None:
    c = Cluster(3)
    c.elect("n1")
    idx = c.put("n1", "k", "v")
    assert c.nodes["n1"].read_index(b"r1") is None
    c.stabilize()
    assert [(r.index, r.context) for r in c.reads["n1"]] == [(idx, b"r1")]
    assert c.nodes["n2"].read_index(b"r2") is None
    c.stabilize()
    assert [(r.index, r.context) for r in c.reads["n2"]] == [(idx, b"r2")]


def test_read_index_needs_a_quorum_of_heartbeat_acks() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    c.nodes["n1"].read_index(b"stale")
    c.tick(2 * c.config.election_ticks + 1, only=["n1"])
    assert c.reads["n1"] == []
    assert c.nodes["n1"].role == Role.FOLLOWER


def test_stale_leader_never_serves_a_read_after_a_new_leader_commits() -> None:
    c = Cluster(3, config=cfg(check_quorum=False))
    c.elect("n1")
    c.isolate("n1")
    c.elect("n2")
    c.put("n2", "k", "new")
    assert c.nodes["n1"].role == Role.LEADER  # still believes it leads
    c.nodes["n1"].read_index(b"stale")
    c.tick(5, only=["n1"])
    assert c.reads["n1"] == []
    c.heal()
    c.tick(2)
    assert c.reads["n1"] == [] and c.nodes["n1"].role == Role.FOLLOWER


def test_read_index_waits_until_the_new_leader_commits_in_its_term() -> None:
    c = Cluster(3)
    c.drop = lambda m: isinstance(m, AppendEntries) and m.frm == "n1" and any(
        e.kind == EntryKind.NOOP for e in m.entries)
    c.elect("n1")
    n1 = c.nodes["n1"]
    assert n1.term_at(n1.commit) != n1.term
    n1.read_index(b"early")
    c.tick(3)
    assert c.reads["n1"] == []
    c.drop = lambda m: False
    c.tick(3)
    assert [r.context for r in c.reads["n1"]] == [b"early"]
    assert c.reads["n1"][0].index == n1.commit and n1.term_at(n1.commit) == n1.term


def test_fast_backtracking_skips_a_divergent_term_in_few_round_trips() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.put("n1", "base", "1")
    c.isolate("n1")
    for i in range(40):  # 40 uncommitted entries of the old term on n1
        c.nodes["n1"].propose(f"old{i}".encode())
    c.stabilize()
    c.elect("n2")
    for i in range(5):
        c.put("n2", f"new{i}", "v")
    c.elect("n3")  # a leader whose first probe to n1 lands deep inside n1's divergent suffix
    c.sent.clear()
    c.heal()
    c.tick(4)
    rejects = [m for m in c.sent if isinstance(m, AppendEntriesResponse) and m.frm == "n1" and m.reject]
    assert len(rejects) == 1  # one entry at a time would take 7
    assert c.sm["n1"].data == c.sm["n2"].data
    assert c.nodes["n1"].last_index == c.nodes["n2"].last_index


def test_batching_packs_many_proposals_into_one_append() -> None:
    c = Cluster(3, config=cfg(max_entries_per_append=8))
    c.elect("n1")
    c.sent.clear()
    for i in range(20):
        c.nodes["n1"].propose(f"e{i}".encode())
    c.stabilize()
    appends = [m for m in c.sent if isinstance(m, AppendEntries) and m.to == "n2" and m.entries]
    assert max(len(m.entries) for m in appends) == 8
    assert len(appends) == 3  # 20 entries: 8 + 8 + 4
    assert c.nodes["n2"].commit == c.nodes["n1"].last_index


def test_pipelining_stops_at_the_inflight_window() -> None:
    c = Cluster(3, config=cfg(max_entries_per_append=1, max_inflight_appends=4))
    c.elect("n1")
    c.drop = lambda m: isinstance(m, AppendEntriesResponse) and m.frm == "n2"
    c.sent.clear()
    for i in range(10):
        c.nodes["n1"].propose(f"e{i}".encode())
        c.stabilize()
    to_n2 = [m for m in c.sent if isinstance(m, AppendEntries) and m.to == "n2" and m.entries]
    assert len(to_n2) == 4  # window full: no more until acks come back
    to_n3 = [m for m in c.sent if isinstance(m, AppendEntries) and m.to == "n3" and m.entries]
    assert len(to_n3) == 10
    c.drop = lambda m: False
    c.tick(3)
    assert c.nodes["n2"].last_index == c.nodes["n1"].last_index


def test_heartbeats_go_out_every_heartbeat_tick_and_carry_the_commit() -> None:
    c = Cluster(3, config=cfg(heartbeat_ticks=2, election_ticks=20))
    c.elect("n1")
    c.sent.clear()
    c.tick(6)
    hbs = [m for m in c.sent if isinstance(m, Heartbeat) and m.to == "n2"]
    assert len(hbs) == 3
    assert all(m.commit == c.nodes["n1"].commit for m in hbs)


def test_stale_term_append_is_answered_so_the_old_leader_steps_down() -> None:
    c = Cluster(3)
    c.elect("n1")
    term = c.nodes["n2"].term
    c.nodes["n2"].step(AppendEntries("n3", "n2", term - 1, 0, 0, (), 0))
    msgs = c.nodes["n2"].ready().messages
    assert any(isinstance(m, AppendEntriesResponse) and m.term == term and m.to == "n3" for m in msgs)


def test_proposals_are_refused_during_leadership_transfer() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.blocked = {("n1", "n2")}
    c.put("n1", "k", "v")
    assert c.nodes["n1"].transfer_leadership("n2") is None
    assert isinstance(c.nodes["n1"].propose(b"x"), Rejected)


@pytest.mark.parametrize("seed", range(5))
def test_split_votes_resolve(seed: int) -> None:
    c = Cluster(5, seed=seed, config=cfg(pre_vote=False))
    c.tick(6 * c.config.election_ticks)
    assert len(c.leaders()) == 1


# ---- inputs that arrive while a Ready is being persisted (the asyncio driver does this) ---------


def _fresh_follower() -> RaftNode:
    n = RaftNode("n2", cfg(), random.Random(1), voters=["n1", "n2", "n3"])
    n.advance(n.ready())
    return n


def test_entries_replaced_while_a_ready_is_in_flight_are_persisted_again() -> None:
    n = _fresh_follower()
    n.step(AppendEntries("n1", "n2", 2, 1, 1, (Entry(2, 2, EntryKind.NORMAL, b"old"),), 1))
    rd1 = n.ready()
    assert [e.term for e in rd1.entries] == [2]
    n.step(AppendEntries("n3", "n2", 3, 1, 1, (Entry(3, 2, EntryKind.NORMAL, b"new"),), 1))
    n.advance(rd1)
    rd2 = n.ready()
    assert rd2.entries == (Entry(3, 2, EntryKind.NORMAL, b"new"),)
    assert [m.to for m in rd1.messages] == ["n1"] and [m.to for m in rd2.messages] == ["n3"]
    assert rd2.hard_state is not None and rd2.hard_state.term == 3


def test_a_snapshot_installed_while_a_ready_is_in_flight_wins_over_older_conf_changes() -> None:
    n = _fresh_follower()
    remove = Entry(2, 2, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(ConfChangeOp.REMOVE, "n3")))
    n.step(AppendEntries("n1", "n2", 2, 1, 1, (remove,), 2))
    rd1 = n.ready()
    assert rd1.committed_entries == (remove,)
    conf = ConfState(frozenset({"n1", "n2", "n3", "n4"}), frozenset())
    n.step(InstallSnapshot("n1", "n2", 2, Snapshot(SnapshotMeta(5, 2, conf), b"image")))
    n.advance(rd1)
    rd2 = n.ready()
    assert rd2.snapshot is not None and rd2.snapshot.meta.index == 5
    n.advance(rd2)
    assert (n.voters, n.applied, n.commit) == (conf.voters, 5, 5)


def test_a_committed_prefix_stays_stable_when_its_uncommitted_tail_is_replaced_in_flight() -> None:
    n = _fresh_follower()
    batch = (Entry(2, 2, EntryKind.NORMAL, b"a"), Entry(2, 3, EntryKind.NORMAL, b"b"))
    n.step(AppendEntries("n1", "n2", 2, 1, 1, batch, 2))  # index 2 committed, 3 not
    rd1 = n.ready()
    assert rd1.entries == batch and rd1.committed_entries == batch[:1]
    n.step(AppendEntries("n3", "n2", 3, 2, 2, (Entry(3, 3, EntryKind.NORMAL, b"c"),), 2))
    n.advance(rd1)
    assert n.applied == 2
    snap = n.compact(2, b"image")  # needs index 2 to count as persisted
    assert snap.meta.index == 2
    assert n.ready().entries == (Entry(3, 3, EntryKind.NORMAL, b"c"),)
