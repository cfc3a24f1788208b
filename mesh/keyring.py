"""The cluster keyring: AES-256-GCM sealing for gossip and Raft, with keys that rotate without downtime.

As memberlist's keyring: one *primary* key seals, every installed key is tried to open, so a rotation
is ``install`` everywhere → ``use`` (make primary) everywhere → ``remove`` the old one everywhere,
and no packet is lost in between. The first key is derived from the cluster secret (HKDF-SHA256), so
a node without the join token cannot seal or open a single packet.

Sealed layout (all authenticated; the header is the AEAD's associated data)::

    version (1) ‖ key id (4) ‖ timestamp ms (8, big-endian) ‖ nonce (12) ‖ ciphertext ‖ tag (16)

The key id (first 4 bytes of SHA-256 of the key) picks the key to try first, so opening costs one
AEAD call, not one per installed key; a packet whose id matches no key is dropped as ``unknown_key``
without any decryption. The *purpose* (``b"gossip"``, ``b"raft"``, …) is bound into the associated
data, so a packet sealed for one channel does not open on another.

Replay (``replay_window`` > 0): a packet older than the window (by the sealer's wall clock) is
dropped as ``stale``; within the window each nonce opens once (``replayed``). Gossip uses this;
the Raft stream does not (its messages are idempotent by term and index, and its rate would make the
nonce set large).
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
KEY_BYTES = 32
_HEADER = struct.Struct(">B4sQ12s")
HEADER_LEN = _HEADER.size
TAG_LEN = 16
OVERHEAD = HEADER_LEN + TAG_LEN
MAX_REPLAY_ENTRIES = 200_000


class KeyringError(ValueError):
    """A key operation that cannot be done (wrong length, removing the primary, unknown key)."""


def derive_key(secret: bytes, purpose: bytes = b"keyring") -> bytes:
    """A 32-byte key from the cluster secret, one per purpose."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=b"corral cluster v1", info=purpose)
    return hkdf.derive(secret)


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


class Keyring:
    """The installed keys and which one is primary; shared by every channel that seals with them."""

    def __init__(self, keys: Iterable[bytes], primary: bytes | None = None) -> None:
        self._keys: dict[bytes, AESGCM] = {}
        self._raw: dict[bytes, bytes] = {}
        for key in keys:
            self._add(key)
        if not self._keys:
            raise KeyringError("a keyring needs at least one key")
        first = next(iter(self._raw.values()))
        self._primary = key_id(primary if primary is not None else first)
        if self._primary not in self._keys:
            raise KeyringError("the primary key is not installed")

    @classmethod
    def from_secret(cls, secret: bytes) -> Keyring:
        return cls([derive_key(secret)])

    def channel(self, purpose: bytes, *, replay_window: float = 0.0, clock: Callable[[], float] = time.time,
                rand: Callable[[int], bytes] = os.urandom) -> Channel:
        return Channel(self, purpose, replay_window=replay_window, clock=clock, rand=rand)

    def _add(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyringError(f"a key must be {KEY_BYTES} bytes, got {len(key)}")
        kid = key_id(key)
        self._keys[kid] = AESGCM(key)
        self._raw[kid] = key

    def installed(self) -> list[bytes]:
        """Installed keys, primary first."""
        return [self._raw[self._primary]] + [k for kid, k in self._raw.items() if kid != self._primary]

    @property
    def primary(self) -> bytes:
        return self._raw[self._primary]

    @property
    def primary_id(self) -> bytes:
        return self._primary

    def aead(self, kid: bytes) -> AESGCM | None:
        return self._keys.get(kid)

    def install(self, key: bytes) -> None:
        self._add(key)

    def use(self, key: bytes) -> None:
        kid = key_id(key)
        if kid not in self._keys:
            raise KeyringError("install the key before making it primary")
        self._primary = kid

    def remove(self, key: bytes) -> None:
        kid = key_id(key)
        if kid == self._primary:
            raise KeyringError("the primary key cannot be removed; make another key primary first")
        if kid not in self._keys:
            raise KeyringError("no such key installed")
        del self._keys[kid]
        del self._raw[kid]


class Channel:
    """Seals and opens for one purpose (gossip, raft, …) with the keyring's current keys."""

    def __init__(self, ring: Keyring, purpose: bytes, *, replay_window: float = 0.0,
                 clock: Callable[[], float] = time.time, rand: Callable[[int], bytes] = os.urandom) -> None:
        self.ring = ring
        self.purpose = purpose
        self.replay_window = replay_window
        self._clock = clock
        self._rand = rand
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self.drops: dict[str, int] = {}
        self.opened = 0
        self.sealed = 0

    def seal(self, plaintext: bytes) -> bytes:
        kid = self.ring.primary_id
        header = _HEADER.pack(VERSION, kid, int(self._clock() * 1000), self._rand(12))
        aead = self.ring.aead(kid)
        assert aead is not None
        self.sealed += 1
        return header + aead.encrypt(header[-12:], plaintext, header + self.purpose)

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def open(self, sealed: bytes | bytearray | memoryview) -> bytes | None:
        """The plaintext, or None (counted in ``drops`` by reason) for anything not sealed by us."""
        if len(sealed) < OVERHEAD:
            self._drop("truncated")
            return None
        data = bytes(sealed)
        version, kid, stamp_ms, nonce = _HEADER.unpack_from(data)
        if version != VERSION:
            self._drop("bad_version")
            return None
        aead = self.ring.aead(kid)
        if aead is None:
            self._drop("unknown_key")
            return None
        header = data[:HEADER_LEN]
        try:
            plaintext = aead.decrypt(nonce, data[HEADER_LEN:], header + self.purpose)
        except InvalidTag:
            self._drop("bad_tag")
            return None
        if self.replay_window > 0 and not self._fresh(nonce, stamp_ms / 1000.0):
            return None
        self.opened += 1
        return plaintext

    def _fresh(self, nonce: bytes, stamp: float) -> bool:
        now = self._clock()
        if abs(now - stamp) > self.replay_window:
            self._drop("stale")
            return False
        if nonce in self._seen:
            self._drop("replayed")
            return False
        self._seen[nonce] = stamp
        horizon = now - self.replay_window
        while self._seen and (len(self._seen) > MAX_REPLAY_ENTRIES or next(iter(self._seen.values())) < horizon):
            self._seen.popitem(last=False)
        return True
