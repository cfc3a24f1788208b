"""Chunking of sealed messages for GSO sends, and their reassembly (pure)."""

from __future__ import annotations

import os
import random

from hypothesis import given
from hypothesis import strategies as st

from overlay.chunks import CHUNK_HEADER, CHUNK_HEADER_LEN, CHUNK_KIND, MAX_GSO_BYTES, Reassembler, chunk_batches

ADDR = ("10.78.0.2", 4500)


def datagrams(batches: list[list[object]]) -> list[list[bytes]]:
    """What the kernel cuts each GSO send into: header + chunk per datagram."""
    out = []
    for iov in batches:
        out.append([bytes(iov[i]) + bytes(iov[i + 1]) for i in range(0, len(iov), 2)])  # type: ignore[call-overload]
    return out


def test_batches_fit_one_gso_send_and_cover_the_message() -> None:
    msg = os.urandom(65475)
    batches = chunk_batches(msg, 7, 1472)
    sends = datagrams(batches)
    assert [len(s) for s in sends] == [44, 1]  # 45 chunks of 1464 bytes; 44 per send fit 65507 bytes
    for s in sends:
        assert sum(len(d) for d in s) <= MAX_GSO_BYTES
        assert all(len(d) == 1472 for d in s[:-1])
    flat = [d for s in sends for d in s]
    assert [CHUNK_HEADER.unpack_from(d)[1:3] for d in flat] == [(i, 45) for i in range(45)]
    assert b"".join(d[CHUNK_HEADER_LEN:] for d in flat) == msg


def test_gro_buffers_are_joined_whole_or_by_runs() -> None:
    r = Reassembler()
    msg = os.urandom(65475)
    out: list[tuple[bytes, object]] = []
    sends = datagrams(chunk_batches(msg, 1, 1472))
    r.feed_buffer(b"".join(sends[0]), 1472, ADDR, 0.0, out)
    assert out == [] and r.pending == 1
    r.feed_buffer(b"".join(sends[1]), 1472, ADDR, 0.0, out)  # one datagram: the slow path
    assert out == [(msg, ADDR)] and r.pending == 0
    small = os.urandom(20000)
    (one,) = datagrams(chunk_batches(small, 2, 1472))
    r.feed_buffer(b"".join(one), 1472, ADDR, 0.0, out)
    assert out[-1] == (small, ADDR)


def test_out_of_order_duplicates_and_interleaved_messages() -> None:
    r = Reassembler()
    a, b = os.urandom(9000), os.urandom(7000)
    da = [d for s in datagrams(chunk_batches(a, 10, 1472)) for d in s]
    db = [d for s in datagrams(chunk_batches(b, 11, 1472)) for d in s]
    mixed = da + db + da[:2]
    random.Random(3).shuffle(mixed)
    out: list[tuple[bytes, object]] = []
    for d in mixed:
        r.feed(d, ADDR, 0.0, out)
    assert sorted(m for m, _ in out) == sorted([a, b])
    assert r.pending <= 1  # a late duplicate may start a new partial that will expire


def test_partials_are_bounded_and_expire() -> None:
    r = Reassembler(max_partial=4, timeout=1.0)
    out: list[tuple[bytes, object]] = []
    for mid in range(6):
        r.feed(CHUNK_HEADER.pack(CHUNK_KIND, 0, 2, 0, mid) + b"x" * 10, ADDR, 0.0, out)
    assert r.pending == 4 and r.drops["reassembly_evicted"] == 2
    r.feed(CHUNK_HEADER.pack(CHUNK_KIND, 0, 2, 0, 99) + b"x", ADDR, 5.0, out)
    assert r.pending == 1 and r.drops["reassembly_timeout"] == 4
    assert out == []


def test_same_id_from_two_hosts_does_not_mix() -> None:
    r = Reassembler()
    out: list[tuple[bytes, object]] = []
    r.feed(CHUNK_HEADER.pack(CHUNK_KIND, 0, 2, 0, 5) + b"A0", ("h1", 1), 0.0, out)
    r.feed(CHUNK_HEADER.pack(CHUNK_KIND, 1, 2, 0, 5) + b"B1", ("h2", 1), 0.0, out)
    r.feed(CHUNK_HEADER.pack(CHUNK_KIND, 1, 2, 0, 5) + b"A1", ("h1", 1), 0.0, out)
    assert out == [(b"A0A1", ("h1", 1))]


@given(st.lists(st.binary(max_size=80), max_size=30), st.integers(min_value=16, max_value=200))
def test_garbage_never_raises_and_memory_stays_bounded(items: list[bytes], seg: int) -> None:
    r = Reassembler(max_partial=8)
    out: list[tuple[bytes, object]] = []
    for data in items:
        r.feed(bytes([CHUNK_KIND]) + data, ADDR, 0.0, out)
        r.feed_buffer(bytes([CHUNK_KIND]) + data * 3, seg, ADDR, 0.0, out)
    assert r.pending <= 8
