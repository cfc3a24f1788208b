"""The one validator of decoded wire values (mesh/wirecheck.py), and both decoders speaking through it."""

from __future__ import annotations

import msgpack
import pytest

from mesh import wirecheck as wc
from mesh.gossip import wire
from mesh.raft import messages


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (wc.uint, [0, 7, wc.U64_MAX], [-1, wc.U64_MAX + 1, True, 1.0, "1", None]),
        (wc.flag, [True, False], [0, 1, "true", None]),
        (wc.blob, [b"", b"x"], ["x", bytearray(b"x"), None]),
        (wc.text, ["a", "x" * 256], ["", "x" * 257, b"a", 1]),
        (wc.items, [[], [1, 2]], [(1,), {}, "ab", None]),
        (wc.string_map, [{}, {"a": 1}], [{1: "a"}, [], None]),
    ],
)
def test_each_check_returns_what_it_accepts_and_says_why_it_refuses(check, good, bad) -> None:
    for v in good:
        assert check(v) is v
    for v in bad:
        with pytest.raises(wc.Malformed, match="expected"):
            check(v)


def test_bounds_and_counts() -> None:
    assert wc.uint(65535, 65535) == 65535
    with pytest.raises(wc.Malformed, match=r"0\.\.65535, got int 65536"):
        wc.uint(65536, 65535)
    with pytest.raises(wc.Malformed, match="list of 3, got 2 items"):
        wc.items([1, 2], 3)
    with pytest.raises(wc.Malformed, match=r"1\.\.4 characters"):
        wc.text("hello", 4)


def test_raft_frames_report_the_reason() -> None:
    ok = messages.encode_message(messages.Heartbeat("a", "b", 3, 9, b""))
    assert isinstance(messages.decode_message(ok), messages.Heartbeat)
    frame = msgpack.unpackb(ok)
    frame[3] = -1  # the term
    got = messages.decode_message(msgpack.packb(frame))
    assert isinstance(got, messages.DecodeFailure) and "got int -1" in got.reason
    frame[3], frame[1] = 3, ""  # an empty node id
    got = messages.decode_message(msgpack.packb(frame))
    assert isinstance(got, messages.DecodeFailure) and "string of 1..256" in got.reason


def test_gossip_packets_are_dropped_as_malformed() -> None:
    good = wire.encode_packet([wire.Alive("n1", 2, ("10.0.0.1", 7946), {"api": "x"})])
    assert wire.decode_packet(good) == [wire.Alive("n1", 2, ("10.0.0.1", 7946), {"api": "x"})]
    for alive in ([wire.Kind.ALIVE, "n1", 2, "10.0.0.1", 0, {}],  # port 0
                  [wire.Kind.ALIVE, "n1", 2, "10.0.0.1", 7946, {1: 2}],  # a map key not a string
                  [wire.Kind.ALIVE, "n1", True, "10.0.0.1", 7946, {}],  # a bool for the incarnation
                  [wire.Kind.ALIVE, "n1", 2, "10.0.0.1", 7946]):  # a field short
        packet = bytes([wire.VERSION]) + msgpack.packb([alive])
        assert wire.decode_packet(packet) == wire.Drop("malformed")
