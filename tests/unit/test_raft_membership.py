"""The leader's membership decisions: learners for everyone alive, voters up to the target."""

from __future__ import annotations

from mesh.raft_membership import Candidate, next_change
from mesh.raft_messages import ConfChangeOp

ADD, PROMOTE = ConfChangeOp.ADD_LEARNER, ConfChangeOp.PROMOTE


def test_new_members_become_learners_first() -> None:
    members = {"h1": Candidate(True), "h2": Candidate(True), "h3": Candidate(False)}
    assert next_change(frozenset({"h1"}), frozenset(), members, commit=5) == (ADD, "h2")


def test_caught_up_learners_are_promoted_until_three_voters() -> None:
    members = {f"h{i}": Candidate(True, match=100) for i in range(1, 6)}
    learners = frozenset({"h2", "h3", "h4", "h5"})
    assert next_change(frozenset({"h1"}), learners, members, commit=100) == (PROMOTE, "h2")
    assert next_change(frozenset({"h1", "h2", "h3"}), frozenset({"h4", "h5"}), members, commit=100) is None


def test_lagging_or_dead_learners_wait() -> None:
    members = {"h1": Candidate(True, match=500), "h2": Candidate(True, match=10), "h3": Candidate(False, match=500)}
    assert next_change(frozenset({"h1"}), frozenset({"h2", "h3"}), members, commit=500) is None
    members["h2"] = Candidate(True, match=490)
    assert next_change(frozenset({"h1"}), frozenset({"h2", "h3"}), members, commit=500) == (PROMOTE, "h2")


def test_nodes_started_as_managers_are_preferred() -> None:
    members = {"h1": Candidate(True, True, 9), "h2": Candidate(True, False, 9), "h3": Candidate(True, True, 9)}
    assert next_change(frozenset({"h1"}), frozenset({"h2", "h3"}), members, commit=9) == (PROMOTE, "h3")
    members["h3"] = Candidate(False, True, 9)
    assert next_change(frozenset({"h1"}), frozenset({"h2", "h3"}), members, commit=9) is None
