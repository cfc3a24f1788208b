"""Values kept in the replicated state that only members may read: sealed with AES-256-GCM under a key
derived (HKDF-SHA256) from the cluster secret and a purpose, so one purpose's key opens nothing else.
(The Raft log and snapshots are plain SQLite on every manager's disk; what is sealed here is never in
them in the clear.)"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealError(ValueError):
    """The value cannot be opened with this secret (another cluster's, or tampered with)."""


def _key(cluster_secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"corral " + purpose + b" v1").derive(
        cluster_secret)


def seal(cluster_secret: bytes, purpose: bytes, plain: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(_key(cluster_secret, purpose)).encrypt(nonce, plain, purpose)


def seal_deterministic(cluster_secret: bytes, purpose: bytes, plain: bytes) -> bytes:
    """As :func:`seal`, with the nonce derived from the plaintext (HMAC-SHA256 under a key of its own):
    the same value seals to the same bytes, so a replicated record of it does not change when the
    value is sent again (a secret deployed twice). It shows which values are equal, nothing more."""
    mac = hmac.HMAC(_key(cluster_secret, purpose + b" nonce"), hashes.SHA256())
    mac.update(plain)
    nonce = mac.finalize()[:12]
    return nonce + AESGCM(_key(cluster_secret, purpose)).encrypt(nonce, plain, purpose)


def open_sealed(cluster_secret: bytes, purpose: bytes, sealed: bytes) -> bytes:
    try:
        return AESGCM(_key(cluster_secret, purpose)).decrypt(sealed[:12], sealed[12:], purpose)
    except Exception as exc:  # InvalidTag, or too short
        raise SealError(f"the sealed {purpose.decode()} cannot be opened with this cluster's secret") from exc


__all__ = ["SealError", "open_sealed", "seal", "seal_deterministic"]
