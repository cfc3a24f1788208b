"""Overlay wire formats: the three handshake messages and transport data (WireGuard's layout).

Every datagram starts with ``kind u8 | version u8 | reserved u16`` and is little-endian:

=================  ====  ==============================================================  =====
message            kind  fields after the 4-byte prefix                                  bytes
=================  ====  ==============================================================  =====
HandshakeInit      1     sender u32, ephemeral 32, static 32+16, timestamp 12+16,        148
                         mac1 16, mac2 16
HandshakeResponse  2     sender u32, receiver u32, ephemeral 32, empty 0+16,             92
                         mac1 16, mac2 16
CookieReply        3     receiver u32, nonce 12, cookie 16+16                            52
TransportData      4     receiver u32, counter u64, AEAD(payload) ≥ 16                   ≥ 32
=================  ====  ==============================================================  =====

A keepalive is a ``TransportData`` whose sealed payload is empty (32 bytes on the wire): it must be
authenticated like data, so it is not a kind of its own (as in WireGuard).

``decode`` never raises: it returns a message or a ``DropReason``. The data path does not build
``TransportData`` objects; the session core packs and unpacks ``TRANSPORT_HEADER`` directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class MsgKind(IntEnum):
    """Wire kinds. Append only: values are protocol."""

    HANDSHAKE_INIT = 1
    HANDSHAKE_RESPONSE = 2
    COOKIE_REPLY = 3
    TRANSPORT_DATA = 4


class DropReason(IntEnum):
    """Why a datagram (or a queued packet) was dropped; the keys of ``OverlaySession.stats()``.

    Append only: values are stable so that counters can be exported by number.
    """

    TRUNCATED = 1  # shorter than its kind's fixed size
    UNKNOWN_KIND = 2  # first byte is no MsgKind (noise, or another protocol on the port)
    BAD_VERSION = 3  # a version this code does not speak
    MALFORMED = 4  # wrong length for a fixed-size message, non-zero reserved bytes
    BAD_MAC = 5  # handshake MAC1 wrong: forged, or sent to the wrong host
    AUTH_FAILED = 6  # AEAD tag did not verify (forged, corrupted, or wrong PSK / key)
    REPLAYED = 7  # transport counter already seen or older than the window
    UNKNOWN_PEER = 8  # handshake from a static key that is not a cluster host
    UNKNOWN_SESSION = 9  # receiver index matches no live keypair or handshake
    COOKIE_REQUIRED = 10  # under load and MAC2 missing/invalid: answered with a cookie reply
    RATE_LIMITED = 11  # a second initiation from one peer too soon
    STALE_TIMESTAMP = 12  # initiation timestamp not newer than the last one: replayed handshake
    EXPIRED_KEY = 13  # keypair older than reject_after_time, or counter ≥ reject_after_messages
    QUEUE_FULL = 14  # outbound packet dropped: no session yet and the per-peer queue was full
    HANDSHAKE_TIMEOUT = 15  # queued packet dropped: no session within rekey_attempt_time
    UNKNOWN_DESTINATION = 16  # send() to a peer id that was never added


PROTOCOL_VERSION = 1
MAC_LEN = 16
KEY_LEN = 32
TAG_LEN = 16
TIMESTAMP_LEN = 12
COOKIE_NONCE_LEN = 12

PREFIX = struct.Struct("<BBH")
TRANSPORT_HEADER = struct.Struct("<BBHIQ")  # kind, version, reserved (0), receiver index, counter
_INIT = struct.Struct(f"<BBHI{KEY_LEN}s{KEY_LEN + TAG_LEN}s{TIMESTAMP_LEN + TAG_LEN}s{MAC_LEN}s{MAC_LEN}s")
_RESP = struct.Struct(f"<BBHII{KEY_LEN}s{TAG_LEN}s{MAC_LEN}s{MAC_LEN}s")
_COOKIE = struct.Struct(f"<BBHI{COOKIE_NONCE_LEN}s{MAC_LEN + TAG_LEN}s")

INIT_LEN = _INIT.size
RESPONSE_LEN = _RESP.size
COOKIE_REPLY_LEN = _COOKIE.size
TRANSPORT_MIN_LEN = TRANSPORT_HEADER.size + TAG_LEN


@dataclass(frozen=True, slots=True)
class HandshakeInit:
    """Noise IK first message: the initiator's ephemeral key, its sealed static key and timestamp."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)

    def encode(self) -> bytes:
        return _INIT.pack(MsgKind.HANDSHAKE_INIT, PROTOCOL_VERSION, 0, self.sender, self.ephemeral,
                          self.encrypted_static, self.encrypted_timestamp, self.mac1, self.mac2)


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """Noise IK second message: the responder's ephemeral key and an empty sealed payload."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)

    def encode(self) -> bytes:
        return _RESP.pack(MsgKind.HANDSHAKE_RESPONSE, PROTOCOL_VERSION, 0, self.sender, self.receiver,
                          self.ephemeral, self.encrypted_nothing, self.mac1, self.mac2)


@dataclass(frozen=True, slots=True)
class CookieReply:
    """Sent instead of a response when under load: a sealed cookie the initiator must MAC2 with."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def encode(self) -> bytes:
        return _COOKIE.pack(MsgKind.COOKIE_REPLY, PROTOCOL_VERSION, 0, self.receiver, self.nonce,
                            self.encrypted_cookie)


@dataclass(frozen=True, slots=True)
class TransportData:
    """A sealed inner packet (or an empty one: a keepalive)."""

    receiver: int
    counter: int
    ciphertext: bytes

    def encode(self) -> bytes:
        return TRANSPORT_HEADER.pack(MsgKind.TRANSPORT_DATA, PROTOCOL_VERSION, 0, self.receiver,
                                     self.counter) + self.ciphertext

    @property
    def is_keepalive(self) -> bool:
        return len(self.ciphertext) == TAG_LEN


Message = HandshakeInit | HandshakeResponse | CookieReply | TransportData


def check_prefix(data: bytes | bytearray) -> MsgKind | DropReason:
    """The kind of a datagram, or why it cannot be one of ours."""
    if len(data) < PREFIX.size:
        return DropReason.TRUNCATED
    kind, version, reserved = PREFIX.unpack_from(data)
    if kind not in _FIXED_LEN:
        return DropReason.UNKNOWN_KIND
    if version != PROTOCOL_VERSION:
        return DropReason.BAD_VERSION
    if reserved:
        return DropReason.MALFORMED
    return MsgKind(kind)


def decode(data: bytes | bytearray) -> Message | DropReason:
    """Parse one datagram. Never raises: garbage gives a ``DropReason``."""
    kind = check_prefix(data)
    if isinstance(kind, DropReason):
        return kind
    n = len(data)
    fixed = _FIXED_LEN[kind]
    if n < fixed:
        return DropReason.TRUNCATED
    if kind == MsgKind.TRANSPORT_DATA:
        _k, _v, _r, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        return TransportData(receiver, counter, bytes(data[TRANSPORT_HEADER.size:]))
    if n != fixed:
        return DropReason.MALFORMED
    if kind == MsgKind.HANDSHAKE_INIT:
        _k, _v, _r, sender, eph, static, ts, mac1, mac2 = _INIT.unpack(data)
        return HandshakeInit(sender, eph, static, ts, mac1, mac2)
    if kind == MsgKind.HANDSHAKE_RESPONSE:
        _k, _v, _r, sender, receiver, eph, empty, mac1, mac2 = _RESP.unpack(data)
        return HandshakeResponse(sender, receiver, eph, empty, mac1, mac2)
    _k, _v, _r, receiver, nonce, cookie = _COOKIE.unpack(data)
    return CookieReply(receiver, nonce, cookie)


_FIXED_LEN = {
    MsgKind.HANDSHAKE_INIT: INIT_LEN,
    MsgKind.HANDSHAKE_RESPONSE: RESPONSE_LEN,
    MsgKind.COOKIE_REPLY: COOKIE_REPLY_LEN,
    MsgKind.TRANSPORT_DATA: TRANSPORT_MIN_LEN,
}

#: Offsets of the MACs: MAC1 covers everything before it, MAC2 everything before MAC2.
INIT_MAC1_OFFSET = INIT_LEN - 2 * MAC_LEN
RESPONSE_MAC1_OFFSET = RESPONSE_LEN - 2 * MAC_LEN
