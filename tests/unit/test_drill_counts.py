"""The business probe's counters over a window (agent/drill/probe.py)."""

from __future__ import annotations

from agent.drill.probe import Counts


def test_minus_subtracts_every_counter_and_keeps_only_errors_that_grew() -> None:
    later = Counts(10, 3, {"h1: timeout": 2, "overlay h1→h2": 1}, 5, 1, 6, 2)
    earlier = Counts(4, 1, {"h1: timeout": 2}, 2, 0, 1, 1)
    assert later.minus(earlier) == Counts(6, 2, {"overlay h1→h2": 1}, 3, 1, 5, 1)


def test_copy_is_independent() -> None:
    c = Counts(1, 0, {"a": 1})
    d = c.copy()
    d.errors["a"] = 5
    d.sent = 9
    assert c == Counts(1, 0, {"a": 1})
