"""A suspicion timer (memberlist ``suspicion.go``): it starts at the maximum timeout and falls
towards the minimum as independent members confirm the suspicion (Lifeguard's *dogpile*), by
:func:`~mesh.gossip.profile.remaining_suspicion_time`. Pure: the caller passes ``now``.
"""

from __future__ import annotations

from mesh.gossip.profile import remaining_suspicion_time


class Suspicion:
    """The timer of one suspected member; ``deadline`` is when it is declared dead."""

    __slots__ = ("confirmations", "deadline", "k", "max", "min", "start")

    def __init__(self, source: str, k: int, min_timeout: float, max_timeout: float, now: float) -> None:
        self.start = now
        self.k = k
        self.min = min_timeout
        self.max = max_timeout
        self.confirmations = {source}
        self.deadline = now + (min_timeout if k < 1 else max_timeout)

    def confirm(self, source: str, now: float) -> bool:
        """Count an independent confirmation; True if it was new (and should be re-broadcast)."""
        if len(self.confirmations) - 1 >= self.k or source in self.confirmations:
            return False
        self.confirmations.add(source)
        n = len(self.confirmations) - 1
        self.deadline = now + remaining_suspicion_time(n, self.k, now - self.start, self.min, self.max)
        return True


__all__ = ["Suspicion"]
