"""Sliding anti-replay window: accept each message counter at most once (RFC 6479, as WireGuard).

The window remembers the highest counter accepted (``last``) and one bit per counter in
``(last − size, last]``. A counter above ``last`` slides the window forward; one at or below
``last − size`` is too old and refused, since it can no longer be told apart from a replay.

As wireguard-go's ``replay/replay.go``: a ring of 64-bit blocks, one more block than the window
needs, so sliding forward only zeroes the blocks it enters (usually none or one) and never shifts
the whole bitmap. Pure: no I/O, no clock.
"""

from __future__ import annotations

_BLOCK_LOG = 6
_BLOCK_MASK = (1 << _BLOCK_LOG) - 1


class ReplayWindow:
    """Accept each counter in ``[0, limit)`` at most once, tolerating reordering up to ``size``."""

    __slots__ = ("_last", "_limit", "_nblocks", "_ring", "size")

    def __init__(self, size: int = 8192, limit: int = (1 << 64) - (1 << 13) - 1) -> None:
        if size < 64 or size % 64:
            raise ValueError("window size must be a positive multiple of 64")
        self.size = size
        self._limit = limit
        self._nblocks = size // 64 + 1
        self._ring = [0] * self._nblocks
        self._last = -1  # nothing seen yet: counter 0 is a forward move

    @property
    def last(self) -> int:
        """Highest counter accepted so far (−1 before the first)."""
        return self._last

    def check(self, counter: int) -> bool:
        """Would ``counter`` be accepted? (No state change: a cheap pre-filter before decryption.)"""
        if counter >= self._limit or counter < 0:
            return False
        if counter > self._last:
            return True
        if self._last - counter >= self.size:
            return False
        return not (self._ring[(counter >> _BLOCK_LOG) % self._nblocks] >> (counter & _BLOCK_MASK)) & 1

    def accept(self, counter: int) -> bool:
        """Record ``counter`` if it is new and inside the window; False for a replay or a too-old one.

        Call only after the packet authenticated: a forged counter must never slide the window.
        """
        if counter >= self._limit or counter < 0:
            return False
        ring = self._ring
        n = self._nblocks
        block = counter >> _BLOCK_LOG
        if counter > self._last:
            current = self._last >> _BLOCK_LOG
            if block != current:  # entering new blocks: zero them (all of the ring on a far jump)
                if block - current >= n:
                    ring[:] = [0] * n
                else:
                    for i in range(current + 1, block + 1):
                        ring[i % n] = 0
            self._last = counter
        elif self._last - counter >= self.size:
            return False
        i = block % n
        bit = 1 << (counter & _BLOCK_MASK)
        old = ring[i]
        if old & bit:
            return False
        ring[i] = old | bit
        return True
