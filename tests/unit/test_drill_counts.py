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


def test_a_drill_window_waits_for_an_overlay_verdict() -> None:
    """A drill shorter than one overlay round must not close its window with nothing measured."""
    import subprocess
    import threading

    from agent.drill.probe import BusinessProbe

    def docker(argv: list[str]) -> subprocess.CompletedProcess[str]:
        gate.wait(5)  # the round's `docker exec` is slow
        return subprocess.CompletedProcess(argv, 0, stdout="ok t0\n", stderr="")

    gate = threading.Event()
    probe = BusinessProbe(lambda: [], "web", lambda h: "127.0.0.1", overlay_host="h1", docker=docker)
    probe.overlay_targets = [("h2", "10.42.2.5", "web-1")]
    before = probe.snapshot()
    assert probe.probes_overlay
    assert not probe.wait_overlay_round(before, 0.2)  # the round has not returned: no verdict yet
    worker = threading.Thread(target=probe._overlay_round)
    worker.start()
    gate.set()
    assert probe.wait_overlay_round(before, 5)
    worker.join()
    counts = probe.snapshot().minus(before)
    assert (counts.overlay_rounds, counts.overlay_sent, counts.overlay_failed) == (1, 1, 0)
