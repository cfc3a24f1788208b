"""The broadcast queue (memberlist's ``TransmitLimitedQueue``, ``queue.go``).

One pending broadcast per member name (news about a member replaces older news), handed out
fewest-transmits first, newest first among equals, each until it has been sent ``limit`` times
(:func:`~mesh.gossip.profile.retransmit_limit`). Pure.
"""

from __future__ import annotations

MIN_MESSAGE = 12
"""No broadcast is smaller than this; stop filling a packet with less room left."""


class BroadcastQueue:
    def __init__(self) -> None:
        self._transmits: dict[str, int] = {}
        self._buckets: list[dict[str, bytes]] = []

    def __len__(self) -> int:
        return len(self._transmits)

    def put(self, key: str, payload: bytes) -> None:
        old = self._transmits.get(key)
        if old is not None:
            del self._buckets[old][key]
        if not self._buckets:
            self._buckets.append({})
        self._buckets[0][key] = payload
        self._transmits[key] = 0

    def take(self, space: int, limit: int) -> list[bytes]:
        """As many broadcasts as fit in ``space`` bytes; each counts one transmit."""
        if not self._transmits:
            return []
        out: list[bytes] = []
        moved: list[tuple[int, str, bytes]] = []
        for t, bucket in enumerate(self._buckets):
            if not bucket:
                continue
            for key in reversed(bucket):
                payload = bucket[key]
                if len(payload) <= space:
                    out.append(payload)
                    moved.append((t, key, payload))
                    space -= len(payload)
                    if space < MIN_MESSAGE:
                        break
            if space < MIN_MESSAGE:
                break
        for t, key, payload in moved:
            del self._buckets[t][key]
            if t + 1 >= limit:
                del self._transmits[key]
                continue
            if t + 1 == len(self._buckets):
                self._buckets.append({})
            self._buckets[t + 1][key] = payload
            self._transmits[key] = t + 1
        return out


__all__ = ["MIN_MESSAGE", "BroadcastQueue"]
