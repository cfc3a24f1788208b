"""lossy-network's verdict: a failure rate against its floor, beyond chance (agent/drill/drills.py)."""

from __future__ import annotations

from agent.drill.drills import above_floor


def test_the_same_rate_is_not_worse() -> None:
    worse, z = above_floor(30, 600, 30, 600)
    assert not worse and z < 0


def test_a_floor_that_saw_no_failure_by_luck_does_not_fail_a_small_sample() -> None:
    # 5 of 70 against 0 of 30: a 7 % rate and a floor that saw nothing — within chance at 10 % loss
    assert not above_floor(5, 70, 0, 30)[0]


def test_a_real_excess_fails() -> None:
    # what the drill measured while forced re-handshakes cut flows: 17.4 % of 144 against 6.1 % of 66
    worse, z = above_floor(25, 144, 4, 66)
    assert worse and z > 1.645
    assert above_floor(75, 432, 12, 198)[0]  # the same rates with three times the samples: clearer still


def test_the_margin_is_respected() -> None:
    # 3 points over the floor with thousands of samples: only 1 point beyond the 2-point margin
    assert above_floor(800, 10000, 500, 10000)[0]
    assert not above_floor(650, 10000, 500, 10000)[0]  # 1.5 points over: inside the margin


def test_nothing_sent_is_a_failure() -> None:
    assert above_floor(0, 0, 0, 100)[0]
    assert above_floor(0, 100, 0, 0)[0]
