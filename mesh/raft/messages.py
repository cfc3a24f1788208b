"""Raft messages: frozen dataclasses, one wire kind each, and a msgpack codec that never raises.

Every message carries ``frm``, ``to`` and ``term`` first, so the core can apply the term rules
(step down on a higher term, answer a stale one) before it looks at the kind. The codec encodes a
message as ``[kind, *fields]``; decoding checks every field's type and returns a
:class:`DecodeFailure` with a reason instead of raising, because the bytes come off the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from mesh.wirecheck import Malformed, blob, flag, items, text, uint

NodeId = str


class EntryKind(IntEnum):
    """Kinds of log entries. Append only: values are protocol."""

    NORMAL = 0
    CONF_CHANGE = 1
    NOOP = 2


class ConfChangeOp(IntEnum):
    """Single-server membership changes. Append only: values are protocol."""

    BOOTSTRAP = 0  # data carries the initial voter list; only ever at index 1
    ADD_LEARNER = 1
    PROMOTE = 2  # learner -> voter
    DEMOTE = 3  # voter -> learner
    REMOVE = 4  # voter or learner -> gone


class RaftMsgKind(IntEnum):
    """Wire kinds. Append only: values are protocol."""

    REQUEST_VOTE = 1
    REQUEST_VOTE_RESPONSE = 2
    PRE_VOTE = 3
    PRE_VOTE_RESPONSE = 4
    APPEND_ENTRIES = 5
    APPEND_ENTRIES_RESPONSE = 6
    INSTALL_SNAPSHOT = 7
    INSTALL_SNAPSHOT_RESPONSE = 8
    TIMEOUT_NOW = 9
    HEARTBEAT = 10
    HEARTBEAT_RESPONSE = 11
    READ_INDEX = 12
    READ_INDEX_RESPONSE = 13


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to Raft except for conf-change entries."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class ConfState:
    """Membership as of some log index."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """State-machine image covering every entry up to ``meta.index``."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: ConfChangeOp
    node: NodeId
    voters: tuple[NodeId, ...] = ()  # only for BOOTSTRAP


@dataclass(frozen=True, slots=True)
class RequestVote:
    frm: NodeId
    to: NodeId
    term: int
    last_index: int
    last_term: int
    transfer: bool = False  # campaign caused by TimeoutNow: voters ignore their leader lease


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    frm: NodeId
    to: NodeId
    term: int
    reject: bool


@dataclass(frozen=True, slots=True)
class PreVote:
    """Sent with ``term`` = candidate's term + 1; nobody changes term because of it."""

    frm: NodeId
    to: NodeId
    term: int
    last_index: int
    last_term: int


@dataclass(frozen=True, slots=True)
class PreVoteResponse:
    frm: NodeId
    to: NodeId
    term: int
    reject: bool


@dataclass(frozen=True, slots=True)
class AppendEntries:
    frm: NodeId
    to: NodeId
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """``index`` is the follower's last matching index on success, the rejected ``prev_index`` on
    reject; then ``reject_hint``/``hint_term`` let the leader skip a whole term (fast backtracking)."""

    frm: NodeId
    to: NodeId
    term: int
    index: int
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    frm: NodeId
    to: NodeId
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    frm: NodeId
    to: NodeId
    term: int
    index: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    frm: NodeId
    to: NodeId
    term: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``commit`` is min(follower match, leader commit); ``context`` carries a ReadIndex round."""

    frm: NodeId
    to: NodeId
    term: int
    commit: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    frm: NodeId
    to: NodeId
    term: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower forwards a linearizable read to its leader."""

    frm: NodeId
    to: NodeId
    term: int
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    frm: NodeId
    to: NodeId
    term: int
    context: bytes
    index: int


Message = (
    RequestVote
    | RequestVoteResponse
    | PreVote
    | PreVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
    | Heartbeat
    | HeartbeatResponse
    | ReadIndexRequest
    | ReadIndexResponse
)

KIND_OF: dict[type[Any], RaftMsgKind] = {
    RequestVote: RaftMsgKind.REQUEST_VOTE,
    RequestVoteResponse: RaftMsgKind.REQUEST_VOTE_RESPONSE,
    PreVote: RaftMsgKind.PRE_VOTE,
    PreVoteResponse: RaftMsgKind.PRE_VOTE_RESPONSE,
    AppendEntries: RaftMsgKind.APPEND_ENTRIES,
    AppendEntriesResponse: RaftMsgKind.APPEND_ENTRIES_RESPONSE,
    InstallSnapshot: RaftMsgKind.INSTALL_SNAPSHOT,
    InstallSnapshotResponse: RaftMsgKind.INSTALL_SNAPSHOT_RESPONSE,
    TimeoutNow: RaftMsgKind.TIMEOUT_NOW,
    Heartbeat: RaftMsgKind.HEARTBEAT,
    HeartbeatResponse: RaftMsgKind.HEARTBEAT_RESPONSE,
    ReadIndexRequest: RaftMsgKind.READ_INDEX,
    ReadIndexResponse: RaftMsgKind.READ_INDEX_RESPONSE,
}
CLASS_OF: dict[RaftMsgKind, type[Any]] = {v: k for k, v in KIND_OF.items()}


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why some bytes were not a message; the driver logs it and drops the frame."""

    reason: str


# ---- plain values <-> nested lists -------------------------------------------------------------


def entry_to_wire(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.kind), e.data]


def conf_to_wire(c: ConfState) -> list[Any]:
    return [sorted(c.voters), sorted(c.learners)]


def snapshot_to_wire(s: Snapshot) -> list[Any]:
    return [s.meta.index, s.meta.term, conf_to_wire(s.meta.conf), s.data]


def _node(v: Any) -> NodeId:
    return text(v)


def entry_from_wire(v: Any) -> Entry:
    term, index, kind, data = items(v, 4)
    try:
        k = EntryKind(uint(kind))
    except ValueError as exc:
        raise Malformed("unknown entry kind") from exc
    return Entry(uint(term), uint(index), k, blob(data))


def conf_from_wire(v: Any) -> ConfState:
    voters, learners = items(v, 2)
    return ConfState(frozenset(_node(x) for x in items(voters)), frozenset(_node(x) for x in items(learners)))


def snapshot_from_wire(v: Any) -> Snapshot:
    index, term, conf, data = items(v, 4)
    return Snapshot(SnapshotMeta(uint(index), uint(term), conf_from_wire(conf)), blob(data))


def _entries(v: Any) -> tuple[Entry, ...]:
    return tuple(entry_from_wire(x) for x in items(v))


_FIELD_DECODERS: dict[str, Callable[[Any], Any]] = {
    "frm": _node,
    "to": _node,
    "term": uint,
    "last_index": uint,
    "last_term": uint,
    "transfer": flag,
    "reject": flag,
    "prev_index": uint,
    "prev_term": uint,
    "entries": _entries,
    "commit": uint,
    "index": uint,
    "reject_hint": uint,
    "hint_term": uint,
    "snapshot": snapshot_from_wire,
    "context": blob,
}
_FIELD_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "entries": lambda es: [entry_to_wire(e) for e in es],
    "snapshot": snapshot_to_wire,
}


_FIELD_NAMES: dict[object, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def encode_message(msg: Message) -> bytes:
    """``[kind, *fields]`` as msgpack; the inverse of :func:`decode_message`."""
    out: list[Any] = [int(KIND_OF[type(msg)])]
    for name in _field_names(type(msg)):
        value = getattr(msg, name)
        enc = _FIELD_ENCODERS.get(name)
        out.append(enc(value) if enc else value)
    return bytes(msgpack.packb(out, use_bin_type=True))


def decode_message(data: bytes) -> Message | DecodeFailure:
    """Parse one frame; any malformed input yields a DecodeFailure, never an exception."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        return DecodeFailure(f"not msgpack: {type(exc).__name__}")
    try:
        frame = items(raw)
        if not frame:
            raise Malformed("empty frame")
        try:
            kind = RaftMsgKind(uint(frame[0]))
        except ValueError as exc:
            raise Malformed(f"unknown kind {frame[0]!r}") from exc
        cls = CLASS_OF[kind]
        names = _field_names(cls)
        if len(frame) - 1 != len(names):
            raise Malformed(f"{kind.name}: expected {len(names)} fields, got {len(frame) - 1}")
        kwargs = {name: _FIELD_DECODERS[name](v) for name, v in zip(names, frame[1:], strict=True)}
        msg: Message = cls(**kwargs)
        return msg
    except Malformed as exc:
        return DecodeFailure(str(exc))


def encode_conf_change(cc: ConfChange) -> bytes:
    return bytes(msgpack.packb([int(cc.op), cc.node, list(cc.voters)], use_bin_type=True))


def decode_conf_change(data: bytes) -> ConfChange | DecodeFailure:
    try:
        raw = msgpack.unpackb(data, raw=False)
        op, node, voters = items(raw, 3)
        try:
            kind = ConfChangeOp(uint(op))
        except ValueError as exc:
            raise Malformed("unknown conf change op") from exc
        return ConfChange(kind, str(node) if kind == ConfChangeOp.BOOTSTRAP else _node(node),
                          tuple(_node(v) for v in items(voters)))
    except Malformed as exc:
        return DecodeFailure(str(exc))
    except Exception as exc:
        return DecodeFailure(f"not msgpack: {type(exc).__name__}")
