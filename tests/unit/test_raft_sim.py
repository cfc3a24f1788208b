"""The simulator: invariants on every step over many seeds, and proof that its checks can fail."""

from __future__ import annotations

from collections import Counter

import pytest

from mesh.raft import sim as raft_sim
from mesh.raft.core import RaftNode, Ready
from mesh.raft.sim import Faults, InvariantViolation, Simulator, _Pending, run_random

CALM = Faults(loss=0, duplicate=0, crash=0, restart=0, partition=0, heal=0, crash_mid_ready=0)


def test_calm_cluster_serves_clients_linearizably() -> None:
    sim = Simulator(1, faults=CALM)
    sim.run_ticks(200, clients=True)
    sim.run_ticks(20)
    assert not sim.pending  # every operation finished: none lost, none stuck
    sim.check_linearizable()
    done = [op for op in sim.history if op.complete is not None]
    assert len(done) > 60
    assert {op.kind for op in done} == {"put", "get", "cas", "delete"}
    assert all(op.complete is not None for op in sim.history)
    assert len(sim.leaders) == 1  # one election, never disturbed


def test_same_seed_same_run() -> None:
    a, b = run_random(42), run_random(42)
    assert a.history == b.history and a.leaders == b.leaders and a.stats == b.stats
    assert run_random(43).history != a.history


def test_five_node_cluster_with_faults() -> None:
    for seed in range(30):
        sim = run_random(seed, ticks=150, n=5)
        assert sim.max_commit > 0


@pytest.mark.slow
def test_one_thousand_randomized_seeds_keep_every_invariant() -> None:
    """Crash (also between persisting and sending), restart, partitions, loss, duplication,
    reordering, and (odd seeds) slow fsyncs during which nodes keep stepping; invariants after every
    step, then the clients' history must be linearizable."""
    totals: Counter[str] = Counter()
    for seed in range(1000):
        sim = run_random(seed, ticks=120, disk_delay=6 * (seed % 2))
        totals.update(sim.stats)
        totals["elections"] += len(sim.leaders)
        totals["ops"] += len(sim.history)
        totals["indeterminate"] += sum(1 for op in sim.history if op.complete is None)
        totals["reads"] += sum(1 for op in sim.history if op.kind == "get" and op.complete is not None)
        # After healing, everything restarts and the cluster converges on one applied state.
        live = [n for n in sim.nodes.values()]
        if sim.leader() is not None:
            lead = sim.leader()
            assert lead is not None
            assert all(n.sm.data == lead.sm.data for n in live if n.core.applied == lead.core.applied)
            totals["converged"] += all(n.core.applied == lead.core.applied for n in live)
    # The faults really happened, so the invariants were really exercised.
    for key in ("crashes", "restarts", "partitions", "snapshots_installed", "crash_mid_ready", "transfers"):
        assert totals[key] > 20, (key, totals)
    assert totals["elections"] > 1500 and totals["ops"] > 30000 and totals["reads"] > 10000
    assert totals["indeterminate"] > 100
    assert totals["linearizability_unknown"] == 0
    assert totals["converged"] > 900
    assert totals["sent_before_persisting"] > 1000, "leaders replicated while their own disk wrote"


# ---- the checks can fail: break the core or the client on purpose ------------------------------


def _first_violation(seeds: range) -> str | None:
    for seed in seeds:
        try:
            run_random(seed)
        except InvariantViolation as exc:
            return str(exc)
    return None


def test_stale_local_reads_are_caught_by_the_linearizability_check(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Simulator._invoke

    def local_read(self: Simulator, client: int, node, kind, key: str) -> None:  # type: ignore[no-untyped-def]
        if kind != "get":
            original(self, client, node, kind, key)
            return
        p = _Pending(client, "get", key, None, None, self.now, node.id)
        self.pending[client] = p
        self._finish(p, node.sm.data.get(key))  # served from whatever this replica has applied

    monkeypatch.setattr(Simulator, "_invoke", local_read)
    msg = _first_violation(range(200))
    assert msg is not None and "not linearizable" in msg and "seed=" in msg


def test_committing_without_a_quorum_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def commit_alone(self: RaftNode) -> bool:
        me = self._progress[self.id].match
        if me > self.commit and self.term_at(me) == self.term:
            self.commit = me
            return True
        return False

    monkeypatch.setattr(RaftNode, "_maybe_commit", commit_alone)
    msg = _first_violation(range(200))
    assert msg is not None and "seed=" in msg


def test_voting_for_out_of_date_candidates_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RaftNode, "_is_up_to_date", lambda self, i, t: True)
    msg = _first_violation(range(300))
    assert msg is not None and "seed=" in msg


def test_two_leaders_in_one_term_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = RaftNode._handle_vote_request

    def vote_twice(self: RaftNode, m) -> None:  # type: ignore[no-untyped-def]
        self.vote = None  # forget whom we voted for
        self.leader = None
        original(self, m)

    monkeypatch.setattr(RaftNode, "_handle_vote_request", vote_twice)
    msg = _first_violation(range(300))
    assert msg is not None and "seed=" in msg


@pytest.mark.slow
def test_membership_churn_under_faults_keeps_every_invariant() -> None:
    """Two spare nodes; the leader keeps adding, promoting, demoting and removing members while
    nodes crash and the network splits. (The quorum-durability check is off: quorums move.)"""
    totals: Counter[str] = Counter()
    sizes: set[int] = set()
    for seed in range(150):
        sim = run_random(seed, ticks=200, spares=2, churn=0.05, disk_delay=6 * (seed % 2))
        totals.update(sim.stats)
        lead = sim.leader()
        if lead is not None:
            sizes.add(len(lead.core.voters))
            members = lead.core.voters | lead.core.learners
            for nid in members:  # every member converged on the leader's configuration
                n = sim.nodes[nid].core
                if n.applied == lead.core.applied:
                    assert (n.voters, n.learners) == (lead.core.voters, lead.core.learners)
    for op in ("add_learner", "promote", "demote", "remove"):
        assert totals[f"conf_{op}"] > 50, totals
    assert sizes >= {2, 3, 4}


def test_acknowledging_before_the_entries_are_durable_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a leader may send while its disk writes: a follower that did would acknowledge entries it
    could still lose, and the simulator's durability check must see a commit held by too few disks."""
    def everyone_early(core: RaftNode, rd: Ready, durable: object) -> bool:
        return rd.snapshot is None and rd.hard_state is None

    monkeypatch.setattr(raft_sim, "sends_before_persisting", everyone_early)
    msg = None
    for seed in range(1, 200, 2):
        try:
            run_random(seed, ticks=120, disk_delay=6)
        except InvariantViolation as exc:
            msg = str(exc)
            break
    assert msg is not None and "disks" in msg, msg


def test_a_leader_sending_before_persisting_keeps_every_invariant_under_slow_disks() -> None:
    sent_early = 0
    for seed in range(1, 120, 2):
        sim = run_random(seed, ticks=120, disk_delay=8)
        sent_early += sim.stats["sent_before_persisting"]
    assert sent_early > 200
