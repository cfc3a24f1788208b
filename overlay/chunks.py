"""Carry one sealed message larger than the underlay MTU as MTU-sized UDP datagrams, sent with GSO.

Why not let IP fragment it? A 64 KB datagram over a 1500-byte underlay is 45 fragments, each its own
packet through every device and a reassembly queue at the end. Instead the data path cuts the
*sealed* message into chunks that each fit one underlay packet, and hands all of them to the kernel
in one ``sendmsg`` with ``UDP_SEGMENT``: one GSO packet crosses veths and bridges as one unit, is
cut (in software or by the NIC) only where it has to be, and reaches the peer's socket with
``UDP_GRO`` as one buffer again. Paths that drop IP fragments are no longer a problem either.

Chunk datagram (little-endian, 8 bytes then data)::

    kind 0x20 u8 | index u8 | count u8 | reserved u8 | message id u32 | chunk of the sealed message

The chunk header is not authenticated and needs not be: the reassembled message goes to the session
core, whose AEAD rejects any change (``auth_failed``). 0x20 is no ``MsgKind``, so the session core
never sees a chunk. Reassembly holds at most ``max_partial`` incomplete messages for ``timeout``
seconds; the oldest is evicted first (``reassembly_evicted``) and stale ones expire
(``reassembly_timeout``), so garbage cannot grow memory.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any

CHUNK_KIND = 0x20
CHUNK_HEADER = struct.Struct("<BBBBI")
CHUNK_HEADER_LEN = CHUNK_HEADER.size
MAX_CHUNKS = 255
#: Largest UDP payload of one GSO sendmsg (65535 − IPv4 20 − UDP 8).
MAX_GSO_BYTES = 65507
#: Segments per GSO sendmsg the kernel accepts everywhere (UDP_MAX_SEGMENTS was 64 before 6.9).
MAX_GSO_SEGMENTS = 64


def chunk_batches(data: bytes | bytearray, msg_id: int, seg_size: int) -> list[list[Any]]:
    """iovecs for ``sendmsg``: ``data`` as chunks of ``seg_size`` bytes (header included), in batches
    that each fit one GSO send. No copy of ``data``: the iovecs are memoryview slices of it."""
    payload = seg_size - CHUNK_HEADER_LEN
    count = -(-len(data) // payload)
    if count > MAX_CHUNKS:
        raise ValueError(f"{len(data)} bytes need {count} chunks of {payload}; at most {MAX_CHUNKS}")
    per_batch = min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES // seg_size)
    mv = memoryview(data)
    pack = CHUNK_HEADER.pack
    batches: list[list[Any]] = []
    for first in range(0, count, per_batch):
        iov: list[Any] = []
        for i in range(first, min(first + per_batch, count)):
            iov.append(pack(CHUNK_KIND, i, count, 0, msg_id))
            iov.append(mv[i * payload:(i + 1) * payload])
        batches.append(iov)
    return batches


class Reassembler:
    """Chunks back into sealed messages. Pure: the caller passes ``now``."""

    def __init__(self, max_partial: int = 256, timeout: float = 2.0) -> None:
        self.max_partial = max_partial
        self.timeout = timeout
        # (addr, message id) → (first seen, chunk count, {first index of a run: its payloads}, [chunks held])
        self._partial: OrderedDict[tuple[Any, int],
                                   tuple[float, int, dict[int, list[bytes | memoryview]], list[int]]] = OrderedDict()
        self.drops: dict[str, int] = {}

    def _drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def feed_buffer(self, buf: bytes, seg: int, addr: Any, now: float, out: list[Any]) -> None:
        """A (possibly GRO-coalesced) buffer of chunk datagrams of ``seg`` bytes each (last may be shorter).

        Complete messages are appended to ``out`` as ``(message, addr)``. The common case, a run of
        consecutive chunks of one message (one GSO send), is checked by its first and last headers
        and joined in one go; anything else goes chunk by chunk.
        """
        n = len(buf)
        m = -(-n // seg)
        if n >= CHUNK_HEADER_LEN and m > 1:
            kind, index, count, reserved, mid = CHUNK_HEADER.unpack_from(buf)
            last = (m - 1) * seg
            if (kind == CHUNK_KIND and not reserved and index + m <= count and n - last > CHUNK_HEADER_LEN
                    and CHUNK_HEADER.unpack_from(buf, last) == (CHUNK_KIND, index + m - 1, count, 0, mid)):
                mv = memoryview(buf)
                run: list[bytes | memoryview] = [mv[k + CHUNK_HEADER_LEN:k + seg] for k in range(0, n, seg)]
                if m == count:
                    out.append((b"".join(run), addr))
                else:  # one GSO send of several: keep the slices, join once when complete
                    self._add(addr, mid, index, m, count, run, now, out)
                return
        mv = memoryview(buf)
        for k in range(0, n, seg):
            if buf[k] == CHUNK_KIND:
                self.feed(mv[k:k + seg], addr, now, out)
            else:  # GRO may coalesce an ordinary datagram of the same size with chunks
                out.append((mv[k:k + seg], addr))

    def feed(self, chunk: bytes | memoryview, addr: Any, now: float, out: list[Any]) -> None:
        """One chunk datagram."""
        if len(chunk) <= CHUNK_HEADER_LEN:
            self._drop("chunk_truncated")
            return
        kind, index, count, reserved, mid = CHUNK_HEADER.unpack_from(chunk)
        if kind != CHUNK_KIND or reserved or not count or index >= count:
            self._drop("chunk_malformed")
            return
        self._add(addr, mid, index, 1, count, [chunk[CHUNK_HEADER_LEN:]], now, out)

    def _add(self, addr: Any, mid: int, index: int, n: int, count: int, data: list[bytes | memoryview], now: float,
             out: list[Any]) -> None:
        """Chunks ``index … index+n−1`` of message ``mid`` (their payloads, in order, in ``data``)."""
        key = (addr, mid)
        entry = self._partial.get(key)
        if entry is None:
            self._expire(now)
            if len(self._partial) >= self.max_partial:
                self._partial.popitem(last=False)
                self._drop("reassembly_evicted")
            entry = (now, count, {}, [0])
            self._partial[key] = entry
        _t, want, runs, have = entry
        if want != count:
            self._drop("chunk_malformed")
            return
        if index in runs:
            self._drop("chunk_duplicate")
            return
        runs[index] = data
        have[0] += n
        if have[0] >= count:
            del self._partial[key]
            if have[0] != count:  # overlapping runs: someone is playing games
                self._drop("chunk_malformed")
                return
            out.append((b"".join([part for i in sorted(runs) for part in runs[i]]), addr))

    def _expire(self, now: float) -> None:
        while self._partial:
            key, (t, _count, _runs, _have) = next(iter(self._partial.items()))
            if now - t < self.timeout:
                return
            del self._partial[key]
            self._drop("reassembly_timeout")

    @property
    def pending(self) -> int:
        return len(self._partial)


__all__ = ["CHUNK_HEADER", "CHUNK_HEADER_LEN", "CHUNK_KIND", "Reassembler", "chunk_batches"]
