"""Per-source token bucket for handshake messages under load (wireguard-go ``ratelimiter``).

A cookie proves an initiator owns its source address, not that it is polite: under load, each
source address may make the responder do handshake work (four X25519 operations) at most ``rate``
times per second with bursts of ``burst``. Pure: time is an argument.
"""

from __future__ import annotations

from collections.abc import Hashable


class HandshakeRateLimiter:
    __slots__ = ("_buckets", "_burst", "_max_sources", "_rate")

    def __init__(self, rate: float = 20.0, burst: int = 5, max_sources: int = 65536) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_sources = max_sources
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # source → (tokens, last refill)

    def allow(self, source: Hashable, now: float) -> bool:
        """Take one token for ``source``; False when its bucket is empty."""
        tokens, last = self._buckets.get(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return False
        if len(self._buckets) >= self._max_sources and source not in self._buckets:
            self._prune(now)
        self._buckets[source] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        """Forget sources whose bucket has refilled: they are indistinguishable from new ones."""
        full = self._burst / self._rate
        self._buckets = {s: v for s, v in self._buckets.items() if now - v[1] < full}
        if len(self._buckets) >= self._max_sources:  # still full of active sources: forget the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[len(self._buckets) // 2:]
            self._buckets = dict(keep)

    def __len__(self) -> int:
        return len(self._buckets)
