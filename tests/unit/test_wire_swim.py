"""SWIM wire codec: round trips, and a decoder that never raises on hostile bytes (hypothesis)."""

from __future__ import annotations

import random

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.gossip import wire
from mesh.gossip.swim import MemberState, Profile, Swim
from tests.unit.test_swim_core import deadline

names = st.text(min_size=1, max_size=40)
ints = st.integers(min_value=0, max_value=2**32)
addrs = st.tuples(st.from_regex(r"10\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True), st.integers(1, 65535))
metas = st.dictionaries(st.text(max_size=10), st.one_of(st.integers(-100, 100), st.text(max_size=20)), max_size=5)

messages = st.one_of(
    st.builds(wire.Ping, ints, names, names),
    st.builds(wire.IndirectPing, ints, names, addrs, names, st.booleans()),
    st.builds(wire.Ack, ints),
    st.builds(wire.Nack, ints),
    st.builds(wire.Alive, names, ints, addrs, metas),
    st.builds(wire.Suspect, names, ints, names),
    st.builds(wire.Dead, names, ints, names),
)
records = st.builds(wire.MemberRecord, names, addrs, ints, st.sampled_from(list(wire.WireState)), metas)


@given(st.lists(messages, min_size=1, max_size=20))
def test_packet_round_trip(msgs: list[wire.Message]) -> None:
    data = wire.encode_packet(msgs)
    assert wire.decode_packet(data, max_size=len(data)) == msgs


@given(st.builds(wire.PushPull, st.booleans(), st.booleans(), st.lists(records, max_size=20).map(tuple)))
def test_stream_round_trip(msg: wire.PushPull) -> None:
    assert wire.decode_stream(wire.encode_stream(msg)) == msg


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    out = wire.decode_packet(data)
    assert isinstance(out, wire.Drop | list)
    if isinstance(out, wire.Drop):
        assert out.reason in wire.DROP_REASONS
    s = wire.decode_stream(data)
    assert isinstance(s, wire.Drop | wire.PushPull)


@given(st.lists(messages, min_size=1, max_size=10), st.data())
def test_truncations_are_dropped_as_truncated(msgs: list[wire.Message], data: st.DataObject) -> None:
    packet = wire.encode_packet(msgs)
    cut = data.draw(st.integers(min_value=0, max_value=len(packet) - 1))
    out = wire.decode_packet(packet[:cut])
    assert isinstance(out, wire.Drop) and out.reason == "truncated"


@given(st.lists(messages, min_size=1, max_size=10), st.integers(0, 255))
def test_other_versions_are_dropped(msgs: list[wire.Message], version: int) -> None:
    packet = wire.encode_packet(msgs)
    out = wire.decode_packet(bytes([version]) + packet[1:])
    if version == wire.VERSION:
        assert out == msgs
    else:
        assert out == wire.Drop("bad_version")


@given(st.integers().filter(lambda k: k not in {int(x) for x in wire.Kind}), st.lists(st.integers(0, 9), max_size=6))
def test_unknown_kinds_are_dropped(kind: int, fields: list[int]) -> None:
    body = msgpack.packb([kind, *fields]) if -(2**63) <= kind < 2**64 else b"\xc0"
    out = wire.decode_packet(wire.assemble_packet([body]))
    assert isinstance(out, wire.Drop) and out.reason in ("bad_kind", "malformed")


any_field = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.none(), st.booleans(), st.binary(max_size=5)
)


@given(st.lists(any_field))
def test_wrong_field_types_are_malformed(fields: list[object]) -> None:
    for kind in wire.Kind:
        if kind in (wire.Kind.PUSH_PULL, wire.Kind.PUSH_PULL_REPLY):
            continue
        out = wire.decode_packet(wire.assemble_packet([msgpack.packb([int(kind), *fields])]))
        assert isinstance(out, wire.Drop | list)
        if isinstance(out, list):  # only if the fields happened to be well typed
            assert wire.encode_packet(out)


def test_oversized_packet_is_dropped() -> None:
    big = wire.encode_packet([wire.Alive("x", 1, ("10.0.0.1", 1), {"k": "v" * 1500})])
    assert wire.decode_packet(big) == wire.Drop("oversized")
    assert wire.decode_packet(big, max_size=len(big)) != wire.Drop("oversized")


def test_packet_of_a_non_list_or_empty_list_is_malformed() -> None:
    for body in (msgpack.packb({"a": 1}), msgpack.packb([]), msgpack.packb([[]]), msgpack.packb(3)):
        assert wire.decode_packet(b"\x01" + body) == wire.Drop("malformed")


# Messages about a small set of names (the core's own among them), so that hypothesis reaches the
# state rules (refutation, suspicion, rejoin), not only "unknown member".
few = st.sampled_from(["me", "a", "b", "c"])
about_few = st.one_of(
    st.builds(wire.Ping, st.integers(0, 5), few, few),
    st.builds(wire.IndirectPing, st.integers(0, 5), few, addrs, few, st.booleans()),
    st.builds(wire.Ack, st.integers(0, 5)),
    st.builds(wire.Nack, st.integers(0, 5)),
    st.builds(wire.Alive, few, st.integers(0, 5), addrs, metas),
    st.builds(wire.Suspect, few, st.integers(0, 5), few),
    st.builds(wire.Dead, few, st.integers(0, 5), few),
)
tables = st.builds(
    wire.PushPull,
    st.booleans(),
    st.booleans(),
    st.lists(st.builds(wire.MemberRecord, few, addrs, st.integers(0, 5), st.sampled_from(list(wire.WireState)), metas),
             max_size=5).map(tuple),
).map(wire.encode_stream)
inputs = st.one_of(st.binary(max_size=300), st.lists(about_few, min_size=1, max_size=4).map(wire.encode_packet), tables)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150, deadline=None)
@given(st.lists(inputs, max_size=20))
def test_core_receive_never_raises(packets: list[bytes]) -> None:
    swim = Swim("me", ("10.0.0.1", 7946), {}, Profile.local(), random.Random(1), 0.0)
    now = 0.0
    for p in packets:
        swim.receive(p, ("10.0.0.2", 7946), now)
        swim.handle_stream(p, ("10.0.0.2", 7946), now)
        swim.handle_stream_reply(p, ("10.0.0.2", 7946), now)
        now += 0.05
        while deadline(swim) <= now:
            swim.handle_timer(now)
        assert all(len(d) <= swim.profile.max_packet for d, _a in swim.datagrams_to_send())
        me = swim.member("me")
        assert me is not None and me.state is MemberState.ALIVE  # it never believes itself dead
    assert swim.stats["packets_received"] == len(packets)
