"""Snapshots, compaction, InstallSnapshot, learners, single-server changes, leadership transfer."""

from __future__ import annotations

import pytest

from mesh.raft.core import NotLeader, Rejected, Role
from mesh.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChangeOp,
    InstallSnapshot,
    PreVote,
    RequestVote,
    TimeoutNow,
)
from tests.unit.raft_cluster import Cluster, cfg


def _fill(c: Cluster, lead: str, n: int, prefix: str = "k") -> None:
    for i in range(n):
        c.put(lead, f"{prefix}{i}", str(i))


def test_compaction_drops_the_log_prefix_and_survives_restart() -> None:
    c = Cluster(3, config=cfg(snapshot_threshold=10))
    c.elect("n1")
    _fill(c, "n1", 25)
    for nid in c.ids:
        n = c.nodes[nid]
        assert n.snapshot_index >= 10 and n.last_index - n.snapshot_index < 25
        st = c.storage[nid]
        assert st.snapshot is not None and st.snapshot.meta.index == n.snapshot_index
        assert st.first_index == n.snapshot_index + 1
    c.crash("n2")
    c.restart("n2")
    c.tick(2)
    assert c.sm["n2"].data == {f"k{i}": str(i) for i in range(25)}


def test_lagging_follower_catches_up_by_install_snapshot() -> None:
    c = Cluster(3, config=cfg(snapshot_threshold=8))
    c.elect("n1")
    c.crash("n3")
    _fill(c, "n1", 30)
    assert c.nodes["n1"].snapshot_index > c.nodes["n3"].last_index
    c.sent.clear()
    c.restart("n3")
    c.tick(3)
    snaps = [m for m in c.sent if isinstance(m, InstallSnapshot) and m.to == "n3"]
    assert len(snaps) == 1
    assert c.sm["n3"].data == c.sm["n1"].data
    assert c.nodes["n3"].commit == c.nodes["n1"].commit
    st = c.storage["n3"]
    assert st.snapshot is not None and st.snapshot.meta.index == snaps[0].snapshot.meta.index


def test_lost_snapshot_is_offered_again() -> None:
    c = Cluster(3, config=cfg(snapshot_threshold=8))
    c.elect("n1")
    c.crash("n3")
    _fill(c, "n1", 20)
    c.restart("n3")
    c.drop = lambda m: isinstance(m, InstallSnapshot)
    c.tick(5)
    assert c.sm["n3"].data != c.sm["n1"].data
    c.drop = lambda m: False
    c.tick(3 * c.config.election_ticks)
    assert c.sm["n3"].data == c.sm["n1"].data


def test_learner_catches_up_by_snapshot_but_never_votes_or_campaigns() -> None:
    c = Cluster(3, learners=1, config=cfg(snapshot_threshold=8))
    c.elect("n1")
    _fill(c, "n1", 20)
    assert c.nodes["n4"].voters == frozenset()
    idx = c.nodes["n1"].propose_conf_change(ConfChangeOp.ADD_LEARNER, "n4")
    assert isinstance(idx, int)
    c.sent.clear()
    c.tick(3)
    assert any(isinstance(m, InstallSnapshot) and m.to == "n4" for m in c.sent)
    n4 = c.nodes["n4"]
    assert n4.learners == frozenset({"n4"}) and n4.voters == frozenset({"n1", "n2", "n3"})
    assert c.sm["n4"].data == c.sm["n1"].data
    # A learner is not needed for commit and never campaigns.
    c.crash("n4")
    c.put("n1", "without", "learner")
    c.restart("n4")
    c.isolate("n4")
    c.tick(5 * c.config.election_ticks, only=["n4"])
    assert not any(isinstance(m, PreVote | RequestVote) and m.frm == "n4" for m in c.sent)
    c.heal()
    c.tick(2)
    assert c.sm["n4"].data["without"] == "learner"


def test_promote_learner_makes_it_count_toward_quorum() -> None:
    c = Cluster(3, learners=1)
    c.elect("n1")
    assert isinstance(c.nodes["n1"].propose_conf_change(ConfChangeOp.ADD_LEARNER, "n4"), int)
    c.tick(2)
    assert isinstance(c.nodes["n1"].propose_conf_change(ConfChangeOp.PROMOTE, "n4"), int)
    c.tick(2)
    for nid in c.ids:
        assert c.nodes[nid].voters == frozenset({"n1", "n2", "n3", "n4"})
    # With 4 voters a quorum is 3: two crashed nodes stop commits.
    c.crash("n3")
    c.crash("n4")
    idx = c.nodes["n1"].propose(b"x")
    c.stabilize()
    assert isinstance(idx, int) and c.nodes["n1"].commit < idx
    c.restart("n4")
    c.tick(2)
    assert c.nodes["n1"].commit >= idx


def test_remove_voter_shrinks_the_quorum_and_the_removed_node_cannot_disrupt() -> None:
    c = Cluster(3)
    c.elect("n1")
    assert isinstance(c.nodes["n1"].propose_conf_change(ConfChangeOp.REMOVE, "n3"), int)
    c.tick(2)
    assert c.nodes["n1"].voters == frozenset({"n1", "n2"})
    assert c.nodes["n3"].voters == frozenset({"n1", "n2"})
    c.isolate("n3")
    c.tick(5 * c.config.election_ticks, only=["n3"])
    assert c.nodes["n3"].role == Role.FOLLOWER  # not a voter in its own config: never campaigns
    c.heal()
    c.put("n1", "two", "voters")
    assert c.nodes["n2"].commit == c.nodes["n1"].commit


def test_demote_voter_to_learner() -> None:
    c = Cluster(3)
    c.elect("n1")
    assert isinstance(c.nodes["n1"].propose_conf_change(ConfChangeOp.DEMOTE, "n2"), int)
    c.tick(2)
    assert c.nodes["n1"].voters == frozenset({"n1", "n3"}) and c.nodes["n1"].learners == frozenset({"n2"})
    c.put("n1", "k", "v")
    assert c.sm["n2"].data == {"k": "v"}


def test_only_one_configuration_change_at_a_time() -> None:
    c = Cluster(3, learners=2)
    c.elect("n1")
    c.blocked = {("n1", "n2"), ("n1", "n3")}  # the first change cannot commit
    assert isinstance(c.nodes["n1"].propose_conf_change(ConfChangeOp.ADD_LEARNER, "n4"), int)
    res = c.nodes["n1"].propose_conf_change(ConfChangeOp.ADD_LEARNER, "n5")
    assert isinstance(res, Rejected) and "in progress" in res.reason
    c.heal()
    c.tick(2)
    assert isinstance(c.nodes["n1"].propose_conf_change(ConfChangeOp.ADD_LEARNER, "n5"), int)


@pytest.mark.parametrize(("op", "node"), [
    (ConfChangeOp.PROMOTE, "n2"),  # already a voter
    (ConfChangeOp.REMOVE, "n1"),  # the leader itself: transfer first
    (ConfChangeOp.DEMOTE, "n1"),
    (ConfChangeOp.ADD_LEARNER, "n2"),
    (ConfChangeOp.REMOVE, "n9"),
])
def test_invalid_configuration_changes_are_refused(op: ConfChangeOp, node: str) -> None:
    c = Cluster(3)
    c.elect("n1")
    assert isinstance(c.nodes["n1"].propose_conf_change(op, node), Rejected)


def test_configuration_changes_need_the_leader() -> None:
    c = Cluster(3)
    c.elect("n1")
    assert c.nodes["n2"].propose_conf_change(ConfChangeOp.REMOVE, "n3") == NotLeader("n1")


def test_transfer_leadership_to_an_up_to_date_follower() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.put("n1", "k", "v")
    term = c.nodes["n1"].term
    assert c.nodes["n1"].transfer_leadership("n2") is None
    c.stabilize()
    assert c.leader() == "n2" and c.nodes["n2"].term == term + 1
    assert c.nodes["n1"].role == Role.FOLLOWER
    c.put("n2", "k2", "v2")
    assert c.sm["n1"].data == {"k": "v", "k2": "v2"}


def test_transfer_to_a_lagging_follower_first_catches_it_up() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.blocked = {("n1", "n3")}
    _fill(c, "n1", 5)
    assert c.nodes["n3"].last_index < c.nodes["n1"].last_index
    c.heal()
    c.sent.clear()
    c.nodes["n1"].transfer_leadership("n3")
    c.stabilize()
    timeouts = [m for m in c.sent if isinstance(m, TimeoutNow)]
    first_timeout = c.sent.index(timeouts[0])
    assert any(isinstance(m, AppendEntries) and m.to == "n3" and m.entries for m in c.sent[:first_timeout])
    assert c.leader() == "n3"


def test_transfer_aborts_after_an_election_timeout() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    c.nodes["n1"].transfer_leadership("n3")
    assert isinstance(c.nodes["n1"].propose(b"x"), Rejected)
    c.tick(c.config.election_ticks, only=["n1", "n2"])
    assert c.leader() == "n1"
    assert isinstance(c.nodes["n1"].propose(b"x"), int)


def test_transfer_to_a_learner_is_refused() -> None:
    c = Cluster(2, learners=1)
    c.elect("n1")
    c.nodes["n1"].propose_conf_change(ConfChangeOp.ADD_LEARNER, "n3")
    c.tick(2)
    assert isinstance(c.nodes["n1"].transfer_leadership("n3"), Rejected)


def test_a_leader_that_applies_its_own_removal_steps_down() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.blocked = {("n1", "n3")}
    c.drop = lambda m: isinstance(m, AppendEntriesResponse) and m.frm == "n2"
    idx = c.nodes["n1"].propose_conf_change(ConfChangeOp.REMOVE, "n2")
    c.stabilize()
    assert isinstance(idx, int) and c.nodes["n2"].last_index == idx and c.nodes["n1"].commit < idx
    c.drop = lambda m: False
    c.sent.clear()
    c.nodes["n2"].step(TimeoutNow("tester", "n2", c.nodes["n2"].term))
    c.stabilize()  # n2 wins term 3, commits its no-op and with it the entry that removes n2
    assert any(isinstance(m, AppendEntries) and m.frm == "n2" and m.term == 3 for m in c.sent)
    assert c.nodes["n2"].term == 3 and c.nodes["n2"].commit >= idx
    assert c.nodes["n2"].voters == frozenset({"n1", "n3"})
    assert c.nodes["n2"].role == Role.FOLLOWER
    c.heal()
    c.tick(6 * c.config.election_ticks)
    lead = c.leader()
    assert lead in ("n1", "n3")
    c.put(lead, "after", "removal")
    assert c.sm["n3"].data == {"after": "removal"}
