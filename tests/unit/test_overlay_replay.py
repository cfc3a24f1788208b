"""Anti-replay window: table tests of the edges, and a model check against a plain set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.replay import ReplayWindow

W = 2048
LIMIT = (1 << 64) - (1 << 13) - 1


@pytest.mark.parametrize(
    ("name", "sequence", "expected"),
    [
        ("first packet is counter 0", [0], [True]),
        ("counter 0 twice", [0, 0], [True, False]),
        ("first packet may be any counter", [5000], [True]),
        ("in order", [0, 1, 2, 3], [True, True, True, True]),
        ("duplicate after others", [0, 1, 2, 1], [True, True, True, False]),
        ("reordered inside the window", [10, 3, 9, 3], [True, True, True, False]),
        ("last slot of the window", [W, 1], [True, True]),
        ("just past the window edge", [W, 0], [True, False]),
        ("window edge duplicate", [W, 1, 1], [True, True, False]),
        ("far jump forgets everything old", [0, 1, 10 * W, 1, 10 * W - W + 1, 10 * W], [True, True, True, False,
                                                                                        True, False]),
        ("exactly the window size behind", [5 + W, 5], [True, False]),
        ("one short of the window size behind", [4 + W, 5, 5], [True, True, False]),
        ("fresh counters survive a slide", [5, 6 + W, 7, 5], [True, True, True, False]),
        ("max accepted counter", [LIMIT - 1, LIMIT - 1], [True, False]),
        ("counter at the limit is refused", [LIMIT], [False]),
        ("counter 2^64 - 1 is refused", [(1 << 64) - 1], [False]),
        ("negative counter is refused", [-1], [False]),
        ("after the max, older in-window still ok", [LIMIT - 1, LIMIT - 100, LIMIT - 100], [True, True, False]),
    ],
)
def test_edges(name: str, sequence: list[int], expected: list[bool]) -> None:
    w = ReplayWindow(W, LIMIT)
    assert [w.accept(c) for c in sequence] == expected, name


def test_check_does_not_change_state() -> None:
    w = ReplayWindow(W, LIMIT)
    assert w.check(7) and w.check(7)
    assert w.accept(7)
    assert not w.check(7)
    assert w.check(6) and w.last == 7


def test_default_window_is_at_least_2048() -> None:
    w = ReplayWindow()
    assert w.size >= 2048
    assert w.accept(w.size) and w.accept(1) and not w.accept(0)


def test_every_counter_accepted_once_in_a_long_run() -> None:
    w = ReplayWindow(W, LIMIT)
    assert all(w.accept(c) for c in range(10 * W))
    assert not any(w.accept(c) for c in range(9 * W, 10 * W))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6000), max_size=300), st.sampled_from([2048, 4096]))
def test_matches_a_model(counters: list[int], size: int) -> None:
    """Accepted iff never seen and strictly within `size` of the highest counter accepted so far."""
    w = ReplayWindow(size, LIMIT)
    seen: set[int] = set()
    top = -1
    for c in counters:
        want = c not in seen and (c > top or top - c < size)
        assert w.accept(c) == want
        if want:
            seen.add(c)
            top = max(top, c)
