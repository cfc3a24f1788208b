"""Per-source handshake token bucket."""

from __future__ import annotations

from overlay.ratelimit import HandshakeRateLimiter


def test_burst_then_rate() -> None:
    r = HandshakeRateLimiter(rate=10.0, burst=3)
    assert [r.allow("x", 0.0) for _ in range(4)] == [True, True, True, False]
    assert r.allow("y", 0.0)  # another source has its own bucket
    assert not r.allow("x", 0.05)
    assert r.allow("x", 0.15)
    assert not r.allow("x", 0.15)
    assert [r.allow("x", 10.0) for _ in range(4)] == [True, True, True, False]  # refill caps at the burst


def test_source_table_is_bounded() -> None:
    r = HandshakeRateLimiter(rate=1.0, burst=1, max_sources=100)
    for i in range(1000):
        assert r.allow(i, float(i) * 0.001)
    assert len(r) <= 100
