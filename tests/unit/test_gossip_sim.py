"""Cluster scenarios in the deterministic simulator (mesh/gossip/sim.py) with Corral's LAN profile."""

from __future__ import annotations

import os
import pathlib
import random
import subprocess
import sys

import pytest

from mesh.gossip.sim import Link, Sim
from mesh.gossip.swim import MemberState, Profile


def joined_cluster(n: int, seed: int = 1, **kw: object) -> Sim:
    """``n`` nodes that join one by one through ``n0`` (the real join path), then settle."""
    sim = Sim(seed, **kw)  # type: ignore[arg-type]
    sim.add_node("n0")
    for i in range(1, n):
        sim.at(0.02 * i, lambda i=i: sim.add_node(f"n{i}", join=["n0"]))  # type: ignore[misc]
    sim.run_until(0.02 * n + 3.0)
    assert sim.converged(), f"seed {seed}: the join did not converge"
    return sim


def crash_and_detect(sim: Sim, victim: str, limit: float) -> float:
    sim.crash(victim)
    t0 = sim.now
    sim.run_for(limit, stop=lambda: sim.all_saw_dead_at(victim) is not None)
    seen = sim.all_saw_dead_at(victim)
    assert seen is not None, f"seed {sim.seed}: not every live node saw {victim} dead within {limit} s"
    return seen - t0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_five_nodes_crash_is_detected_by_all_within_target(seed: int) -> None:
    sim = joined_cluster(5, seed)
    took = crash_and_detect(sim, "n3", 10.0)
    assert took < 5.0
    assert sim.false_dead == []
    for o in ("n0", "n1", "n2", "n4"):
        assert sim.state_of(o, "n3") is MemberState.DEAD


def test_fifty_nodes_join_and_one_crash_is_detected_by_all() -> None:
    sim = joined_cluster(50, seed=7)
    took = crash_and_detect(sim, "n17", 20.0)
    # min suspicion timeout for n = 50 is 12 × log10(50) × 0.2 s ≈ 4.1 s; max 2× that.
    assert took < 10.0
    assert sim.false_dead == []


def test_restarted_node_rejoins_with_a_higher_incarnation() -> None:
    sim = joined_cluster(5, seed=4)
    crash_and_detect(sim, "n2", 10.0)
    dead_inc = sim.view("n0", "n2").incarnation  # type: ignore[union-attr]
    sim.restart("n2", join=["n4"])
    sim.run_for(2.0)
    assert sim.converged()
    for o in ("n0", "n1", "n3", "n4"):
        view = sim.view(o, "n2")
        assert view is not None and view.incarnation > dead_inc and view.state is MemberState.ALIVE
    assert sim.nodes["n2"].swim.incarnation > dead_inc


def test_partition_heals_into_one_view() -> None:
    sim = joined_cluster(10, seed=5)
    left = [f"n{i}" for i in range(5)]
    right = [f"n{i}" for i in range(5, 10)]
    sim.partition(left, right)
    sim.run_for(20.0)
    for o in left:
        assert all(sim.state_of(o, r) is MemberState.DEAD for r in right)
    for o in right:
        assert all(sim.state_of(o, r) is MemberState.DEAD for r in left)
    sim.heal()
    sim.run_for(40.0, stop=sim.converged)
    assert sim.converged(), "the two halves did not merge back into one view"
    sim.check_invariants()


def test_paused_node_is_not_declared_dead_when_it_comes_back_in_time() -> None:
    sim = Sim(11, link=Link(loss=0.05))
    names = sim.add_converged(10)
    sim.run_until(3.0)
    suspects: list[str] = []
    sim.event_hooks.append(
        lambda o, ev: suspects.append(o) if ev.kind == "suspect" and ev.member.name == "n3" else None
    )
    for start in (3.0, 9.0, 15.0):
        sim.at(start, lambda: sim.pause("n3", 2.0))
    sim.run_until(25.0)
    assert suspects, "the pause must at least have made n3 suspect (else the test shows nothing)"
    assert sim.false_dead == []
    assert sim.converged(observers=names)


def test_many_pauses_under_loss_never_kill_anyone() -> None:
    sim = Sim(12, link=Link(loss=0.05, jitter=0.002, duplicate=0.01, reorder=0.05))
    names = sim.add_converged(20)
    rng = random.Random(12)
    for k in range(12):
        victim = names[rng.randrange(len(names))]
        sim.at(2.0 + 2.5 * k, lambda v=victim: sim.pause(v, 2.0))  # type: ignore[misc]
    sim.run_until(40.0)
    assert sim.false_dead == []
    assert sim.totals("suspicions") > 0 and sim.totals("refutations") > 0
    sim.check_invariants()


def test_lossy_network_without_faults_has_no_false_dead() -> None:
    sim = Sim(13, link=Link(loss=0.2))
    sim.add_converged(10)
    sim.run_until(60.0)
    assert sim.false_dead == []
    sim.check_invariants()


def test_same_seed_same_history() -> None:
    def run(seed: int) -> tuple[str, list[str]]:
        sim = joined_cluster(8, seed, link=Link(loss=0.05, jitter=0.003, duplicate=0.02, reorder=0.05))
        sim.at(sim.now + 0.5, lambda: sim.crash("n5"))
        sim.at(sim.now + 1.0, lambda: sim.pause("n2", 1.5))
        sim.at(sim.now + 9.0, lambda: sim.restart("n5", join=["n1"]))
        sim.run_for(15.0)
        return sim.digest(), sim.log

    d1, log1 = run(21)
    d2, log2 = run(21)
    d3, _ = run(22)
    assert log1 == log2 and d1 == d2
    assert any(" dead n5 " in line for line in log1)
    assert d3 != d1


def test_history_does_not_depend_on_the_interpreter_hash_seed() -> None:
    script = (
        "from tests.unit.test_gossip_sim import joined_cluster\n"
        "from mesh.gossip.sim import Link\n"
        "sim = joined_cluster(6, 23, link=Link(loss=0.05, jitter=0.003))\n"
        "sim.at(sim.now + 0.5, lambda: sim.crash('n4'))\n"
        "sim.at(sim.now + 1.0, lambda: sim.partition(['n1', 'n2']))\n"
        "sim.at(sim.now + 8.0, sim.heal)\n"
        "sim.run_for(20.0)\n"
        "print(sim.digest())\n"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_metadata_update_reaches_everyone_fast() -> None:
    sim = Sim(14)
    names = sim.add_converged(100)
    sim.run_until(2.0)
    seen: dict[str, float] = {}
    sim.event_hooks.append(lambda o, ev: seen.setdefault(o, sim.now) if ev.kind == "updated" else None)
    t0 = sim.now
    sim.call("n0", lambda s: s.update_meta({"role": "manager"}, sim.now))
    sim.run_for(5.0, stop=lambda: len(seen) == len(names) - 1)
    assert len(seen) == len(names) - 1
    assert max(seen.values()) - t0 < 1.5
    assert all(dict(sim.view(o, "n0").meta) == {"role": "manager"} for o in names)  # type: ignore[union-attr]


def test_per_member_load_is_flat_as_n_grows() -> None:
    rates = []
    for n in (10, 100):
        sim = Sim(17, log_events=False)
        sim.add_converged(n)
        sim.run_until(1.0)
        mark = sim.mark()
        sim.run_until(6.0)
        rates.append(sim.load_since(mark))
    (p10, b10), (p100, b100) = rates
    assert p10 == pytest.approx(2 / Profile.lan().probe_interval, rel=0.05)  # a ping and an ack per interval
    assert p100 == pytest.approx(p10, rel=0.05) and b100 < 1.5 * b10


def test_memberlist_profile_detects_slower_than_lan() -> None:
    times = {}
    for label, prof in (("lan", Profile.lan()), ("memberlist", Profile.memberlist_lan())):
        sim = Sim(15, prof)
        sim.add_converged(5)
        sim.run_until(3.0)
        times[label] = crash_and_detect(sim, "n1", 60.0)
    assert times["lan"] < 5.0 < times["memberlist"]


def test_five_hundred_nodes_one_crash_detected_by_all() -> None:  # ~2 s: not marked slow
    sim = Sim(16, log_events=False)
    sim.add_converged(500)
    sim.run_until(3.0)
    took = crash_and_detect(sim, "n123", 30.0)
    assert took < 15.0
    assert sim.false_dead == []


def test_pause_tolerance_edges() -> None:
    """A 2.4 s pause is survived; a 4 s pause is not, and the member comes back by refuting."""
    sim = Sim(18, link=Link(loss=0.05))
    sim.add_converged(5)
    sim.run_until(2.0)
    sim.pause("n2", 2.4)
    sim.run_until(10.0)
    assert sim.false_dead == []
    sim.pause("n3", 4.0)
    sim.run_until(20.0)
    assert {member for _t, _o, member in sim.false_dead} == {"n3"}
    assert sim.converged()
    assert all(sim.view(o, "n3").incarnation > 0 for o in ("n0", "n1", "n2", "n4"))  # type: ignore[union-attr]
    assert sim.nodes["n3"].swim.stats["refutations"] >= 1
