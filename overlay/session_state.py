"""Per-peer state of the overlay session core: keypairs, the handshake in flight, counters, status.

Plain mutable records owned by ``OverlaySession`` (``overlay/session.py``); the status types are
what the API reports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from overlay import noise
from overlay.replay import ReplayWindow

Addr = tuple[Any, ...]  # an underlay socket address, e.g. ("192.0.2.7", 4500)
Aead = AESGCM | ChaCha20Poly1305


class PeerState(StrEnum):
    NONE = "none"  # no session and none being made
    HANDSHAKING = "handshaking"  # first handshake in progress
    ESTABLISHED = "established"  # a usable keypair and the peer was heard from recently
    DEGRADED = "degraded"  # had a session; now silent or unusable, re-handshaking


@dataclass(frozen=True, slots=True)
class PeerStatus:
    peer_id: str
    state: PeerState
    addr: Addr
    last_handshake: float | None  # `now` of the last completed handshake
    handshakes: int
    handshake_rtt: float | None  # seconds from our last initiation to its response (in-band RTT sample)
    last_received: float | None  # `now` of the last authenticated packet from the peer (keepalives count)
    last_sent: float | None
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    queued: int


class Keypair:
    __slots__ = ("created", "initiator", "local_index", "peer", "recv_aead", "remote_index", "send_aead",
                 "send_counter", "window")

    def __init__(self, peer: Peer, cipher: str, send_key: bytes, recv_key: bytes, initiator: bool,
                 local_index: int, remote_index: int, created: float, window: ReplayWindow) -> None:
        factory = AESGCM if cipher == "aes-256-gcm" else ChaCha20Poly1305
        self.peer = peer
        self.send_aead: Aead = factory(send_key)
        self.recv_aead: Aead = factory(recv_key)
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.send_counter = 0
        self.window = window


@dataclass(slots=True)
class PendingHandshake:
    state: noise.InitiatorState
    local_index: int
    mac1: bytes
    sent_at: float  # `now` when this initiation left: response − sent = handshake RTT


class Peer:
    def __init__(self, peer_id: str, public: bytes, addr: Addr, ss: bytes) -> None:
        self.peer_id = peer_id
        self.public = public
        self.addr = addr
        self.ss = ss
        self.mac1_key = noise.mac1_key_for(public)
        self.cookie_key = noise.cookie_key_for(public)
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None
        self.handshake: PendingHandshake | None = None
        self.attempts = 0
        self.first_attempt_at: float | None = None
        self.retry_at: float | None = None
        self.queue: deque[bytes] = deque()
        self.cookie: bytes | None = None
        self.response_mac1 = b""  # MAC1 of our last response: a cookie reply to it is sealed with it
        self.cookie_at = 0.0
        self.last_init_ts = b""
        self.last_init_at: float | None = None
        self.new_handshake_at: float | None = None  # sent, expecting to hear back by then
        self.keepalive_at: float | None = None  # heard data, owe a keepalive by then
        self.persist_at: float | None = None
        self.stale = False
        self.ever_established = False
        self.last_handshake: float | None = None
        self.handshakes = 0
        self.handshake_rtt: float | None = None
        self.last_received: float | None = None
        self.last_sent: float | None = None
        self.rx_bytes = self.tx_bytes = self.rx_packets = self.tx_packets = 0

    def keypairs(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous, self.next) if k is not None]
