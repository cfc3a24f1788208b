"""Sealed-packet throughput of the overlay session core against raw AEAD calls.

Run: ``python -m bench.overlay_crypto [seconds-per-case]``. For each cipher and payload size
(1400 B: one MTU-sized packet; 64 KB: one TSO/GRO super-segment) it measures, in one process:

* reference: ``cryptography`` AEAD ``encrypt`` + ``decrypt`` of the payload with a fresh counter
  nonce — the floor any Python tunnel pays per packet;
* core: ``OverlaySession.send_many`` (header + seal + outbox) on one host and
  ``receive_many`` (lookup + replay window + open) on the other, batches of 64.

It prints packets/s and Gbit/s of payload for each and the ratio core/reference (1.0 = the core
adds nothing over the AEAD itself).
"""

from __future__ import annotations

import dataclasses
import os
import random
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from overlay.config import Cipher, OverlayConfig
from overlay.session import OverlaySession

BATCH = 64
_NONCE = struct.Struct("<4xQ")


def _pair(cipher: Cipher) -> tuple[OverlaySession, OverlaySession]:
    cfg = dataclasses.replace(OverlayConfig(), cipher=cipher, persistent_keepalive=0.0)
    a = OverlaySession(cfg, os.urandom(32), b"bench", rand_bytes=os.urandom, rng=random.Random(1),
                       wall_clock_offset=time.time())
    b = OverlaySession(cfg, os.urandom(32), b"bench", rand_bytes=os.urandom, rng=random.Random(2),
                       wall_clock_offset=time.time())
    a.add_peer("b", b.public_key, ("b", 4500), 0.0)
    b.add_peer("a", a.public_key, ("a", 4500), 0.0)
    a.send("b", b"x", 0.0)
    for _ in range(4):
        for src, dst, name in ((a, b, ("a", 4500)), (b, a, ("b", 4500))):
            for data, _addr in src.datagrams_to_send():
                dst.receive(data, name, 0.0)
    return a, b


def _reference(cipher: Cipher, payload: bytes, seconds: float) -> float:
    key = os.urandom(32)
    aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
    enc, dec, pack = aead.encrypt, aead.decrypt, _NONCE.pack
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(BATCH):
            nonce = pack(n)
            dec(nonce, enc(nonce, payload, None), None)
            n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def _core(cipher: Cipher, payload: bytes, seconds: float) -> float:
    a, b = _pair(cipher)
    batch = [payload] * BATCH
    n = 0
    t0 = time.perf_counter()
    while True:
        a.send_many("b", batch, 1.0)
        got = b.receive_many(a.datagrams_to_send(), 1.0)
        n += len(got)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            assert b.stats()["replayed"] == 0 and len(got) == BATCH
            return n / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print(f"overlay seal+open, one core, batches of {BATCH}; reference = raw cryptography AEAD encrypt+decrypt")
    print(f"{'cipher':<18} {'payload':>8} {'core pkt/s':>11} {'core Gbit/s':>12} {'ref pkt/s':>11} "
          f"{'ref Gbit/s':>11} {'core/ref':>9}")
    ciphers: tuple[Cipher, ...] = ("aes-256-gcm", "chacha20-poly1305")
    for cipher in ciphers:
        for size in (1400, 65536):
            payload = os.urandom(size)
            ref = _reference(cipher, payload, seconds)
            core = _core(cipher, payload, seconds)
            gbit = 8 * size / 1e9
            print(f"{cipher:<18} {size:>8} {core:>11.0f} {core * gbit:>12.2f} {ref:>11.0f} {ref * gbit:>11.2f} "
                  f"{core / ref:>9.2f}")


if __name__ == "__main__":
    main()
