"""Wire codec round trips, hostile input, and the config's rules."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.raft.config import RaftConfig, etcd_defaults, lan, local, wan
from mesh.raft.messages import (
    KIND_OF,
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    DecodeFailure,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    PreVote,
    PreVoteResponse,
    RaftMsgKind,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)

SNAP = Snapshot(SnapshotMeta(10, 3, ConfState(frozenset({"a", "b"}), frozenset({"c"}))), b"\x00state")
SAMPLES: list[Message] = [
    RequestVote("a", "b", 4, 10, 3, True),
    RequestVoteResponse("b", "a", 4, False),
    PreVote("a", "b", 5, 10, 3),
    PreVoteResponse("b", "a", 5, True),
    AppendEntries("a", "b", 4, 9, 3, (Entry(4, 10, EntryKind.NORMAL, b"x"), Entry(4, 11, EntryKind.NOOP)), 9),
    AppendEntriesResponse("b", "a", 4, 9, True, 7, 2),
    InstallSnapshot("a", "b", 4, SNAP),
    InstallSnapshotResponse("b", "a", 4, 10),
    TimeoutNow("a", "b", 4),
    Heartbeat("a", "b", 4, 9, b"ctx"),
    HeartbeatResponse("b", "a", 4, b"ctx"),
    ReadIndexRequest("b", "a", 4, b"r"),
    ReadIndexResponse("a", "b", 4, b"r", 9),
]


def test_every_kind_has_a_sample() -> None:
    assert {KIND_OF[type(m)] for m in SAMPLES} == set(RaftMsgKind)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


def test_kind_values_are_protocol() -> None:
    # Append only: these numbers are on the wire.
    assert RaftMsgKind.REQUEST_VOTE == 1 and RaftMsgKind.READ_INDEX_RESPONSE == 13
    assert (EntryKind.NORMAL, EntryKind.CONF_CHANGE, EntryKind.NOOP) == (0, 1, 2)


@pytest.mark.parametrize("raw", [
    b"", b"\xc1", b"\x93\x01", msgpack.packb([]), msgpack.packb([99, "a", "b", 1]),
    msgpack.packb([1, "a", "b", -4, 1, 1, False]), msgpack.packb([1, "a", "b", 4, 1, 1]),
    msgpack.packb([1, "", "b", 4, 1, 1, False]), msgpack.packb([1, "a", "b", 4, 1, 1, 0]),
    msgpack.packb([5, "a", "b", 4, 1, 1, [[1, 2, 9, b""]], 0]),
    msgpack.packb({"kind": 1}), msgpack.packb([7, "a", "b", 1, [1, 1, [["x"], []], "notbytes"]]),
])
def test_bad_frames_yield_a_reason_not_an_exception(raw: bytes) -> None:
    res = decode_message(raw)
    assert isinstance(res, DecodeFailure) and res.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzzed_bytes_never_raise(raw: bytes) -> None:
    res = decode_message(raw)
    assert isinstance(res, DecodeFailure) or type(res) in KIND_OF


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 200), st.integers(0, 255))
def test_flipped_bytes_never_raise(msg: Message, pos: int, byte: int) -> None:
    raw = bytearray(encode_message(msg))
    raw[pos % len(raw)] = byte
    decode_message(bytes(raw))


def test_conf_change_round_trip_and_garbage() -> None:
    cc = ConfChange(ConfChangeOp.BOOTSTRAP, "-", ("a", "b"))
    assert decode_conf_change(encode_conf_change(cc)) == cc
    assert isinstance(decode_conf_change(b"\xff"), DecodeFailure)
    assert isinstance(decode_conf_change(msgpack.packb([42, "a", []])), DecodeFailure)


def test_config_presets() -> None:
    for preset in (lan(), wan(), local(), etcd_defaults()):
        assert preset.election_ticks > preset.heartbeat_ticks
        assert preset.check_quorum and preset.pre_vote
    assert etcd_defaults().election_ticks == 10 * etcd_defaults().heartbeat_ticks
    assert etcd_defaults().election_timeout_seconds == pytest.approx(1.0)
    assert lan().election_timeout_seconds == pytest.approx(0.3)
    assert lan().heartbeat_ticks * lan().tick_seconds == pytest.approx(0.1), "etcd's heartbeat (issue 13: idle cost)"


@pytest.mark.parametrize("kw", [{"heartbeat_ticks": 0}, {"election_ticks": 1}, {"max_inflight_appends": 0}])
def test_config_rejects_nonsense(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(RaftConfig(), **kw)  # type: ignore[arg-type]
