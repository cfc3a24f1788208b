"""The overlay's one frozen configuration, with WireGuard's timers as defaults.

Every limit is a field so that tests can reach it in milliseconds (a reject limit of 50 messages,
a rekey time of 2 s) while production keeps the figures of the WireGuard paper (§6.1, and
wireguard-go ``device/constants.go``). Presets are built with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Cipher = Literal["aes-256-gcm", "chacha20-poly1305"]

#: Bytes added to every inner packet on the wire: the transport header (kind, version, 2 reserved,
#: receiver index u32, counter u64) and the AEAD tag.
TRANSPORT_HEADER_LEN = 16
AEAD_TAG_LEN = 16
UDP_HEADER_LEN = 8
IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
#: The virtio-net header every inner packet carries inside its sealed message (``overlay/tun.py``).
INNER_HEADER_LEN = 10


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    """Knobs of the overlay session core (``overlay/session.py``) and its data path."""

    #: UDP port every host listens on for overlay datagrams (DESIGN.md defaults).
    port: int = 4500
    #: Transport AEAD. AES-256-GCM is ~2.5× faster than ChaCha20-Poly1305 on AES-NI hardware.
    #: Both ends must agree: the name is mixed into the handshake, so a mismatch fails the handshake.
    cipher: Cipher = "aes-256-gcm"
    #: A sender starts a new handshake once a keypair has sealed this many messages (WG: 2^60).
    rekey_after_messages: int = 1 << 60
    #: No keypair ever seals or opens a counter ≥ this (WG: 2^64 − 2^13 − 1): a nonce is never reused.
    reject_after_messages: int = (1 << 64) - (1 << 13) - 1
    #: The initiator of a keypair rekeys when it sends on one older than this (WG: 120 s).
    rekey_after_time: float = 120.0
    #: A keypair older than this is never used to seal or open (WG: 180 s).
    reject_after_time: float = 180.0
    #: First handshake retransmit after this; doubled each retry (WG's REKEY_TIMEOUT: 5 s).
    rekey_timeout: float = 5.0
    #: Cap on the retry backoff (rekey_timeout · 2^n, capped here).
    handshake_backoff_max: float = 30.0
    #: Uniform jitter added to each retry, in [0, this) (WG: 1/3 s).
    handshake_jitter: float = 1.0 / 3.0
    #: Queued packets of a peer whose handshake has failed for this long are dropped (WG: 90 s).
    rekey_attempt_time: float = 90.0
    #: After receiving data, answer with a keepalive if nothing was sent for this long (WG: 10 s).
    keepalive_timeout: float = 10.0
    #: In-band self-check: send a keepalive to every peer at least this often (0 = off). A peer that
    #: sends but hears nothing for keepalive_timeout + rekey_timeout is re-handshaken and degraded.
    persistent_keepalive: float = 10.0
    #: A responder ignores a second initiation from one peer within this interval (WG: 1/50 s).
    min_initiation_interval: float = 1.0 / 50.0
    #: Under load, handshake messages (with a valid cookie) each source address may make us process
    #: per second, and the burst allowed (WG's ratelimiter: 20/s, burst 5).
    handshake_rate: float = 20.0
    handshake_burst: int = 5
    #: Secret binding cookies to an address is rotated this often (WG: 120 s).
    cookie_refresh_time: float = 120.0
    #: Packets waiting for a session, per peer; the oldest are dropped beyond (WG: 1024).
    queue_limit: int = 1024
    #: Anti-replay window in packets (WG: 2048 − 64); must be a multiple of 64 and ≥ 2048.
    replay_window: int = 8192

    def __post_init__(self) -> None:
        if self.replay_window < 2048 or self.replay_window % 64:
            raise ValueError("replay_window must be a multiple of 64 and >= 2048")
        if not 0 < self.rekey_after_messages <= self.reject_after_messages <= (1 << 64) - 1:
            raise ValueError("need 0 < rekey_after_messages <= reject_after_messages < 2^64")
        if not 0 < self.rekey_after_time < self.reject_after_time:
            raise ValueError("need 0 < rekey_after_time < reject_after_time")
        if self.cipher not in ("aes-256-gcm", "chacha20-poly1305"):
            raise ValueError(f"unknown cipher {self.cipher!r}")
        if self.queue_limit < 1 or self.rekey_timeout <= 0:
            raise ValueError("queue_limit and rekey_timeout must be positive")

    def tun_mtu(self, underlay_mtu: int, ipv6_underlay: bool = False) -> int:
        """The TUN MTU that keeps one sealed inner packet inside one underlay packet.

        underlay MTU − IP header (20, or 40 for IPv6) − UDP (8) − transport header (16) − tag (16) −
        the inner packet's virtio-net header (10): 1500 → 1430 over IPv4, 1410 over IPv6. (Without the
        last 10 bytes a full-sized inner packet took two underlay datagrams, doubling its loss.)
        """
        ip = IPV6_HEADER_LEN if ipv6_underlay else IPV4_HEADER_LEN
        mtu = underlay_mtu - ip - UDP_HEADER_LEN - TRANSPORT_HEADER_LEN - AEAD_TAG_LEN - INNER_HEADER_LEN
        if mtu < 576:
            raise ValueError(f"underlay MTU {underlay_mtu} leaves {mtu} < 576 bytes for the overlay")
        return mtu


def lan() -> OverlayConfig:
    """Production defaults (WireGuard's timers)."""
    return OverlayConfig()


def local() -> OverlayConfig:
    """One-machine lab: quicker retries and self-check so drills converge in seconds."""
    return dataclasses.replace(OverlayConfig(), rekey_timeout=1.0, handshake_backoff_max=5.0, persistent_keepalive=2.0,
                               keepalive_timeout=2.0)
