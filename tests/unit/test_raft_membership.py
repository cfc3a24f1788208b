"""The leader's membership decisions: learners for everyone alive, voters up to the target."""

from __future__ import annotations

from mesh.raft.membership import Candidate, next_change
from mesh.raft.messages import ConfChangeOp

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


def test_a_dead_manager_is_replaced_only_when_asked_and_a_caught_up_learner_exists() -> None:
    from mesh.raft.messages import ConfChangeOp

    voters, learners = frozenset({"h1", "h2", "h3"}), frozenset({"h4"})
    members = {"h1": Candidate(True, match=100), "h2": Candidate(True, match=100),
               "h3": Candidate(False, match=90, dead_for=120.0), "h4": Candidate(True, match=100)}
    assert next_change(voters, learners, members, commit=100) is None  # off by default
    assert next_change(voters, learners, members, commit=100, replace_dead_after=300.0) is None  # not yet
    assert next_change(voters, learners, members, commit=100, replace_dead_after=60.0) == (ConfChangeOp.DEMOTE, "h3")
    # then, with h3 a learner, the healthy learner is promoted
    after = next_change(frozenset({"h1", "h2"}), frozenset({"h3", "h4"}), members, commit=101,
                        replace_dead_after=60.0)
    assert after == (ConfChangeOp.PROMOTE, "h4")
    lagging = {**members, "h4": Candidate(True, match=10)}
    assert next_change(voters, learners, lagging, commit=100, replace_dead_after=60.0) is None  # no one ready
