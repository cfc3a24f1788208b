"""Noise_IKpsk2 handshake maths for the overlay (WireGuard's construction, BLAKE2s + X25519).

Pure functions over bytes; randomness (ephemeral keys, indices) comes in as arguments. ::

    <- s                                     (the responder's static key is known: host record)
    -> e, es, s, ss, {timestamp}             HandshakeInit
    <- e, ee, se, psk, {}                    HandshakeResponse
    T_i→r, T_r→i = KDF2(ck, "")              transport keys, one per direction

The PSK is derived from the cluster secret: without it the responder's ``{}`` does not open and no
transport key can be computed, so a stolen host key alone does not let an outsider in. The transport
cipher's name is mixed into the identifier, so two hosts configured with different ciphers fail
the handshake instead of failing every packet.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from overlay.session_messages import MAC_LEN, DropReason, HandshakeInit, HandshakeResponse

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"corral overlay v1 "
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
LABEL_PSK = b"corral overlay psk v1"
_ZERO_NONCE = bytes(12)


def blake2s(*parts: bytes) -> bytes:
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s-128: MAC1, MAC2 and the cookie itself."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "blake2s")


def kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    """HKDF with HMAC-BLAKE2s, n outputs of 32 bytes (Noise's HKDF)."""
    prk = _hmac(key, data)
    out: list[bytes] = []
    prev = b""
    for i in range(1, n + 1):
        prev = _hmac(prk, prev + bytes([i]))
        out.append(prev)
    return out


def psk_from_cluster_secret(secret: bytes) -> bytes:
    return blake2s(LABEL_PSK, secret)


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (what the host record publishes)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: X25519PrivateKey, public: bytes) -> bytes | None:
    """X25519, or None for a low-order point (all-zero output) or a malformed key."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return None


def _seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, ad)


def _open(key: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, ad)
    except InvalidTag:
        return None


@dataclass(frozen=True, slots=True)
class Identity:
    """One host's static key and what is derived from it once."""

    private: X25519PrivateKey
    public: bytes
    mac1_key: bytes  # key under which peers MAC1 messages to us
    cookie_key: bytes  # key sealing the cookies we hand out
    initial_ck: bytes
    initial_h: bytes  # HASH(HASH(ck ‖ identifier ‖ cipher) ‖ our public): a responder's starting hash

    @classmethod
    def from_private(cls, private_bytes: bytes, cipher: str) -> Identity:
        priv = X25519PrivateKey.from_private_bytes(private_bytes)
        pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ck = blake2s(CONSTRUCTION)
        return cls(priv, pub, mac1_key_for(pub), blake2s(LABEL_COOKIE, pub), ck,
                   blake2s(blake2s(ck, IDENTIFIER, cipher.encode()), pub))


def mac1_key_for(public: bytes) -> bytes:
    return blake2s(LABEL_MAC1, public)


def cookie_key_for(public: bytes) -> bytes:
    return blake2s(LABEL_COOKIE, public)


def initial_hash(cipher: str, responder_public: bytes) -> bytes:
    return blake2s(blake2s(blake2s(CONSTRUCTION), IDENTIFIER, cipher.encode()), responder_public)


@dataclass(frozen=True, slots=True)
class InitiatorState:
    """What the initiator keeps between sending HandshakeInit and consuming the response."""

    ephemeral: X25519PrivateKey
    h: bytes
    ck: bytes


def create_initiation(ident: Identity, cipher: str, peer_public: bytes, static_static: bytes,
                      ephemeral_bytes: bytes, sender: int, timestamp: bytes) -> tuple[HandshakeInit, InitiatorState]:
    """Build the first message (MACs left zero; the caller adds them over the encoded bytes)."""
    eph = X25519PrivateKey.from_private_bytes(ephemeral_bytes)
    eph_pub = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ck = ident.initial_ck
    h = initial_hash(cipher, peer_public)
    (ck,) = kdf(ck, eph_pub, 1)
    h = blake2s(h, eph_pub)
    es = dh(eph, peer_public)
    if es is None:
        raise ValueError("peer public key is not a valid X25519 key")
    ck, k = kdf(ck, es, 2)
    enc_static = _seal(k, ident.public, h)
    h = blake2s(h, enc_static)
    ck, k = kdf(ck, static_static, 2)
    enc_ts = _seal(k, timestamp, h)
    h = blake2s(h, enc_ts)
    return HandshakeInit(sender, eph_pub, enc_static, enc_ts), InitiatorState(eph, h, ck)


@dataclass(frozen=True, slots=True)
class ConsumedInitiation:
    peer_public: bytes
    timestamp: bytes
    ephemeral: bytes
    h: bytes
    ck: bytes


def consume_initiation(ident: Identity, msg: HandshakeInit, static_static_of: dict[bytes, bytes]
                       ) -> ConsumedInitiation | DropReason:
    """Open the initiator's static key and timestamp; ``static_static_of`` maps known peer keys to DH(s, s)."""
    ck = ident.initial_ck
    h = ident.initial_h
    (ck,) = kdf(ck, msg.ephemeral, 1)
    h = blake2s(h, msg.ephemeral)
    es = dh(ident.private, msg.ephemeral)
    if es is None:
        return DropReason.MALFORMED
    ck, k = kdf(ck, es, 2)
    peer_public = _open(k, msg.encrypted_static, h)
    if peer_public is None:
        return DropReason.AUTH_FAILED
    h = blake2s(h, msg.encrypted_static)
    ss = static_static_of.get(peer_public)
    if ss is None:
        return DropReason.UNKNOWN_PEER
    ck, k = kdf(ck, ss, 2)
    ts = _open(k, msg.encrypted_timestamp, h)
    if ts is None:
        return DropReason.AUTH_FAILED
    h = blake2s(h, msg.encrypted_timestamp)
    return ConsumedInitiation(peer_public, ts, msg.ephemeral, h, ck)


def create_response(init: ConsumedInitiation, psk: bytes, ephemeral_bytes: bytes, sender: int, receiver: int
                    ) -> tuple[HandshakeResponse, bytes, bytes] | DropReason:
    """Answer an initiation: the response (MACs zero) and the responder's (send key, receive key)."""
    eph = X25519PrivateKey.from_private_bytes(ephemeral_bytes)
    eph_pub = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ck, h = init.ck, init.h
    (ck,) = kdf(ck, eph_pub, 1)
    h = blake2s(h, eph_pub)
    ee = dh(eph, init.ephemeral)
    se = dh(eph, init.peer_public)
    if ee is None or se is None:
        return DropReason.MALFORMED
    (ck,) = kdf(ck, ee, 1)
    (ck,) = kdf(ck, se, 1)
    ck, t, k = kdf(ck, psk, 3)
    h = blake2s(h, t)
    empty = _seal(k, b"", h)
    t_init_send, t_resp_send = kdf(ck, b"", 2)
    return HandshakeResponse(sender, receiver, eph_pub, empty), t_resp_send, t_init_send


def consume_response(ident: Identity, state: InitiatorState, psk: bytes, msg: HandshakeResponse
                     ) -> tuple[bytes, bytes] | DropReason:
    """Finish the handshake as initiator: (send key, receive key), or why not (wrong PSK → AUTH_FAILED)."""
    ck, h = state.ck, state.h
    (ck,) = kdf(ck, msg.ephemeral, 1)
    h = blake2s(h, msg.ephemeral)
    ee = dh(state.ephemeral, msg.ephemeral)
    se = dh(ident.private, msg.ephemeral)
    if ee is None or se is None:
        return DropReason.MALFORMED
    (ck,) = kdf(ck, ee, 1)
    (ck,) = kdf(ck, se, 1)
    ck, t, k = kdf(ck, psk, 3)
    h = blake2s(h, t)
    if _open(k, msg.encrypted_nothing, h) is None:
        return DropReason.AUTH_FAILED
    t_init_send, t_resp_send = kdf(ck, b"", 2)
    return t_init_send, t_resp_send


def seal_cookie(cookie_key: bytes, nonce: bytes, cookie: bytes, mac1: bytes) -> bytes:
    """Cookie replies are sealed to the initiator under a key from our public key, bound to its MAC1."""
    return ChaCha20Poly1305(cookie_key).encrypt(nonce, cookie, mac1)


def open_cookie(cookie_key: bytes, nonce: bytes, sealed: bytes, mac1: bytes) -> bytes | None:
    try:
        return ChaCha20Poly1305(cookie_key).decrypt(nonce, sealed, mac1)
    except InvalidTag:
        return None


def macs_ok(key: bytes, data: bytes, offset: int, mac_value: bytes) -> bool:
    return hmac.compare_digest(mac(key, data[:offset]), mac_value)
