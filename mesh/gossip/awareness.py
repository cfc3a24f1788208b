"""Lifeguard's local health (memberlist ``awareness.go``).

The score rises by one per missing nack (or per failed probe when no nacks were expected) and when
this node has to refute an accusation; it falls by one per successful probe. Timers are stretched by
``score + 1``, so a starved node slows down instead of accusing healthy members. Pure.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        """``ApplyDelta``: clamp to ``[0, max_multiplier − 1]``."""
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, timeout: float) -> float:
        """``ScaleTimeout``: ``timeout × (score + 1)``."""
        return timeout * (self.score + 1)


__all__ = ["Awareness"]
