"""The overlay's peer matrix from each host's /v1/overlay answer."""

from __future__ import annotations

from typing import Any

from agent.ui.matrix import Cell, build


def peer(state: str, rtt: float | None, loss: float = 0.0, handshakes: int = 1) -> dict[str, Any]:
    return {"state": state, "rtt_ms": rtt, "loss": loss, "handshakes": handshakes, "last_handshake_ago": 3.5}


def test_every_pair_as_each_side_sees_it() -> None:
    answers = {
        "h1": {"peers": {"h2": peer("up", 0.41), "h3": peer("degraded", 2.5, 0.2)}, "drops": {"replay": 2, "x": 1}},
        "h2": {"peers": {"h1": peer("up", 0.39)}},  # no tunnel to h3
        "h3": "agent at https://10.77.0.13:8080 did not answer: timeout",
    }
    m = build(["h3", "h1", "h2"], answers)
    assert m.hosts == ("h1", "h2", "h3")
    h1, h2, h3 = m.rows
    assert h1.cells == (None, Cell("up", 0.41, 0.0, 1, 3.5), Cell("degraded", 2.5, 0.2, 1, 3.5))
    assert h1.overlay == "running" and h1.drops == 3
    assert h2.cells[2] == Cell("absent") and h2.cells[1] is None
    assert h3.overlay == "unreachable" and "did not answer" in (h3.error or "")
    assert h3.cells == (Cell("unknown"), Cell("unknown"), None)
    assert m.counts() == {"up": 2, "handshaking": 0, "degraded": 1, "down": 0, "absent": 1, "unknown": 2}
    assert h1.cells[2] is not None and h1.cells[2].title() == "degraded, RTT 2.5 ms, loss 20%, 1 handshakes"


def test_an_overlay_that_is_off_or_retrying_says_so() -> None:
    m = build(["h1", "h2"], {"h1": {"state": "off", "error": None},
                             "h2": {"state": "retrying", "error": "no TUN device"}})
    assert [(r.overlay, r.error) for r in m.rows] == [("off", None), ("retrying", "no TUN device")]


def test_malformed_answers_do_not_break_the_page() -> None:
    m = build(["h1", "h2"], {"h1": {"peers": {"h2": {"state": "weird", "rtt_ms": "fast", "handshakes": "x"}}},
                             "h2": {"peers": {"h1": "not a map"}}})
    assert m.rows[0].cells[1] == Cell("unknown") and m.rows[1].cells[0] == Cell("absent")
    assert build([], {}).rows == ()
