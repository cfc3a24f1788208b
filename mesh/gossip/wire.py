"""SWIM wire format: frozen message dataclasses and a versioned msgpack codec that never raises.

A UDP packet (plaintext; the driver seals it with the keyring) is::

    VERSION (1 byte) | msgpack array of messages, each ``[kind, *fields]``

so one packet is always a *compound* of one or more messages: the probe message first, then as many
piggybacked broadcasts as fit (memberlist's ``makeCompoundMessage``). Each message is encoded once
(:func:`encode_message`) and packets are assembled by concatenation (:func:`assemble_packet`), so the
broadcast queue can keep its entries pre-encoded and measure them in bytes.

A push-pull stream message (TCP, one request and one reply) is::

    VERSION (1 byte) | msgpack ``[kind, join, [[name, ip, port, incarnation, state, meta], ...]]``

Decoding checks the version, the size, every field's type and the kind, and returns a :class:`Drop`
naming the reason instead of raising: these bytes come off the network.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from mesh.wirecheck import Malformed, flag, items, string_map, text, uint

VERSION = 1
"""Protocol version, the first byte of every packet and stream message. Bump on incompatible change."""

MAX_PACKET = 1400
"""Largest UDP payload accepted on receive (memberlist's ``UDPBufferSize``); anything larger is dropped."""

MAX_STREAM = 8 * 1024 * 1024
"""Largest push-pull message accepted (a 10 000-member table fits with room to spare)."""

MAX_MESSAGES = 256
"""Most messages one packet may carry (a 1400-byte packet holds at most ~200 of the smallest)."""

DROP_REASONS = (
    "truncated",
    "oversized",
    "bad_version",
    "bad_kind",
    "malformed",
    "not_for_me",
    "unexpected",
)
"""Every reason :func:`decode_packet`, :func:`decode_stream` and the core count a drop under."""

Address = tuple[str, int]


class Kind(enum.IntEnum):
    """Message kinds. Append only: values are protocol."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    PUSH_PULL = 8
    PUSH_PULL_REPLY = 9


class WireState(enum.IntEnum):
    """Member states in push-pull tables. Append only: values are protocol."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe. ``target`` is the name the sender thinks it is pinging (memberlist checks it, so a
    restarted host on a reused address does not ack for somebody else)."""

    seq: int
    target: str
    source: str


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask the receiver to ping ``target`` at ``address`` for ``source`` and relay the ack (or a nack
    after the probe timeout when ``nack`` is set: Lifeguard)."""

    seq: int
    target: str
    address: Address
    source: str
    nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Alive:
    node: str
    incarnation: int
    address: Address
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Suspect:
    node: str
    incarnation: int
    source: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``source == node`` means the member left gracefully (memberlist's convention)."""

    node: str
    incarnation: int
    source: str


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One row of a push-pull table."""

    name: str
    address: Address
    incarnation: int
    state: WireState
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PushPull:
    reply: bool
    join: bool
    members: tuple[MemberRecord, ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a packet or stream message was dropped: one of :data:`DROP_REASONS`."""

    reason: str


# ---------------------------------------------------------------------------------------------- encode

_VERSION_BYTE = bytes([VERSION])


def encode_message(msg: Message) -> bytes:
    """One message as msgpack ``[kind, *fields]``; concatenate with :func:`assemble_packet`."""
    obj: list[Any]
    if isinstance(msg, Ping):
        obj = [Kind.PING, msg.seq, msg.target, msg.source]
    elif isinstance(msg, Ack):
        obj = [Kind.ACK, msg.seq]
    elif isinstance(msg, Alive):
        obj = [Kind.ALIVE, msg.node, msg.incarnation, msg.address[0], msg.address[1], dict(msg.meta)]
    elif isinstance(msg, Suspect):
        obj = [Kind.SUSPECT, msg.node, msg.incarnation, msg.source]
    elif isinstance(msg, Dead):
        obj = [Kind.DEAD, msg.node, msg.incarnation, msg.source]
    elif isinstance(msg, IndirectPing):
        obj = [Kind.INDIRECT_PING, msg.seq, msg.target, msg.address[0], msg.address[1], msg.source, msg.nack]
    else:
        obj = [Kind.NACK, msg.seq]
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big")


PACKET_OVERHEAD = 1 + 3
"""Bytes a packet adds around its messages: the version byte and (at most) an array16 header."""


def assemble_packet(encoded: Sequence[bytes]) -> bytes:
    """A packet from pre-encoded messages (:func:`encode_message`)."""
    return _VERSION_BYTE + _array_header(len(encoded)) + b"".join(encoded)


def encode_packet(msgs: Sequence[Message]) -> bytes:
    return assemble_packet([encode_message(m) for m in msgs])


def encode_meta(meta: Mapping[str, Any]) -> bytes:
    """Meta as it travels (to measure it against ``Profile.meta_max_bytes``); raises on unencodable values."""
    out: bytes = msgpack.packb(dict(meta), use_bin_type=True)
    return out


def encode_stream(msg: PushPull) -> bytes:
    rows = [[r.name, r.address[0], r.address[1], r.incarnation, int(r.state), dict(r.meta)] for r in msg.members]
    kind = Kind.PUSH_PULL_REPLY if msg.reply else Kind.PUSH_PULL
    body: bytes = msgpack.packb([kind, msg.join, rows], use_bin_type=True)
    return _VERSION_BYTE + body


# ---------------------------------------------------------------------------------------------- decode


def _addr(ip: Any, port: Any) -> Address:
    if uint(port, 65535) == 0:
        raise Malformed("port 0")
    return (text(ip, 64), port)


def _ping(f: list[Any]) -> Message:
    _, seq, target, source = items(f, 4)
    return Ping(uint(seq), text(target), text(source))


def _indirect(f: list[Any]) -> Message:
    _, seq, target, ip, port, source, nack = items(f, 7)
    return IndirectPing(uint(seq), text(target), _addr(ip, port), text(source), flag(nack))


def _ack(f: list[Any]) -> Message:
    _, seq = items(f, 2)
    return Ack(uint(seq))


def _nack(f: list[Any]) -> Message:
    _, seq = items(f, 2)
    return Nack(uint(seq))


def _alive(f: list[Any]) -> Message:
    _, name, incarnation, ip, port, meta = items(f, 6)
    return Alive(text(name), uint(incarnation), _addr(ip, port), string_map(meta))


def _suspect(f: list[Any]) -> Message:
    _, name, incarnation, source = items(f, 4)
    return Suspect(text(name), uint(incarnation), text(source))


def _dead(f: list[Any]) -> Message:
    _, name, incarnation, source = items(f, 4)
    return Dead(text(name), uint(incarnation), text(source))


_DECODERS = {
    Kind.PING: _ping,
    Kind.INDIRECT_PING: _indirect,
    Kind.ACK: _ack,
    Kind.NACK: _nack,
    Kind.ALIVE: _alive,
    Kind.SUSPECT: _suspect,
    Kind.DEAD: _dead,
}
_PACKET_KINDS = {int(k): fn for k, fn in _DECODERS.items()}


def _unpack(data: bytes, max_size: int) -> Any:
    """Check framing and unpack the msgpack body; returns the object or a :class:`Drop`."""
    if len(data) > max_size:
        return Drop("oversized")
    if len(data) < 2:
        return Drop("truncated")
    if data[0] != VERSION:
        return Drop("bad_version")
    try:
        return msgpack.unpackb(
            data[1:],
            raw=False,
            strict_map_key=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size,
        )
    except msgpack.ExtraData:
        return Drop("malformed")
    except ValueError as e:
        # msgpack reports a short buffer as a bare ValueError("Unpack failed: incomplete input").
        return Drop("truncated" if "incomplete" in str(e) else "malformed")
    except Exception:  # the decoder never raises, whatever msgpack does
        return Drop("malformed")


def decode_packet(data: bytes, max_size: int = MAX_PACKET) -> list[Message] | Drop:
    """The messages of one packet, or why it was dropped. Never raises."""
    obj = _unpack(data, max_size)
    if isinstance(obj, Drop):
        return obj
    if type(obj) is not list or not obj or len(obj) > MAX_MESSAGES:
        return Drop("malformed")
    out: list[Message] = []
    try:
        for f in obj:
            if type(f) is not list or not f or type(f[0]) is not int:
                return Drop("malformed")
            fn = _PACKET_KINDS.get(f[0])
            if fn is None:
                return Drop("bad_kind")
            out.append(fn(f))
    except Malformed:
        return Drop("malformed")
    return out


def decode_stream(data: bytes, max_size: int = MAX_STREAM) -> PushPull | Drop:
    """A push-pull request or reply, or why it was dropped. Never raises."""
    obj = _unpack(data, max_size)
    if isinstance(obj, Drop):
        return obj
    if type(obj) is not list or len(obj) != 3 or type(obj[0]) is not int:
        return Drop("malformed")
    if obj[0] not in (Kind.PUSH_PULL, Kind.PUSH_PULL_REPLY):
        return Drop("bad_kind")
    if type(obj[1]) is not bool or type(obj[2]) is not list:
        return Drop("malformed")
    rows: list[MemberRecord] = []
    try:
        for r in obj[2]:
            name, ip, port, incarnation, state, meta = items(r, 6)
            rows.append(MemberRecord(text(name), _addr(ip, port), uint(incarnation),
                                     WireState(uint(state, max(WireState))), string_map(meta)))
    except Malformed:
        return Drop("malformed")
    return PushPull(obj[0] == Kind.PUSH_PULL_REPLY, obj[1], tuple(rows))
