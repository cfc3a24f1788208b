from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.keyring import HEADER_LEN, OVERHEAD, Keyring, KeyringError, derive_key


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_seal_open_round_trip_and_purpose_binding() -> None:
    ring = Keyring.from_secret(b"s" * 32)
    gossip, raft = ring.channel(b"gossip"), ring.channel(b"raft")
    sealed = gossip.seal(b"hello")
    assert len(sealed) == len(b"hello") + OVERHEAD
    assert b"hello" not in sealed
    assert gossip.open(sealed) == b"hello"
    assert raft.open(sealed) is None
    assert raft.drops == {"bad_tag": 1}


def test_other_cluster_secret_cannot_open() -> None:
    ours = Keyring.from_secret(b"a" * 32).channel(b"gossip")
    theirs = Keyring.from_secret(b"b" * 32).channel(b"gossip")
    assert ours.open(theirs.seal(b"join me")) is None
    assert ours.drops == {"unknown_key": 1}


def test_tampered_header_or_body_is_dropped() -> None:
    ch = Keyring.from_secret(os.urandom(32)).channel(b"gossip")
    sealed = bytearray(ch.seal(b"payload"))
    for pos in (6, HEADER_LEN - 1, HEADER_LEN + 2, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[pos] ^= 1
        assert ch.open(bytes(bad)) is None
    assert ch.drops["bad_tag"] == 4
    assert ch.open(bytes(sealed)) == b"payload"


def test_rotation_install_use_remove_loses_nothing() -> None:
    old = derive_key(b"x" * 32)
    new = os.urandom(32)
    a, b = Keyring([old]), Keyring([old])
    ca, cb = a.channel(b"gossip"), b.channel(b"gossip")
    a.install(new)
    b.install(new)
    a.use(new)  # a seals with the new key before b has switched: b still opens it
    assert cb.open(ca.seal(b"1")) == b"1"
    assert ca.open(cb.seal(b"2")) == b"2"  # b still seals with the old key: a still opens it
    b.use(new)
    with pytest.raises(KeyringError, match="primary"):
        a.remove(new)
    a.remove(old)
    b.remove(old)
    assert cb.open(ca.seal(b"3")) == b"3"
    assert a.installed() == [new]


def test_key_errors() -> None:
    ring = Keyring.from_secret(b"k" * 32)
    with pytest.raises(KeyringError, match="32 bytes"):
        ring.install(b"short")
    with pytest.raises(KeyringError, match="install the key"):
        ring.use(os.urandom(32))
    with pytest.raises(KeyringError, match="no such key"):
        ring.remove(os.urandom(32))
    with pytest.raises(KeyringError, match="at least one"):
        Keyring([])


def test_replay_window_drops_replays_and_stale_packets() -> None:
    clock = Clock()
    ring = Keyring.from_secret(b"r" * 32)
    tx = ring.channel(b"gossip", clock=clock)
    rx = ring.channel(b"gossip", replay_window=30.0, clock=clock)
    sealed = tx.seal(b"ping")
    assert rx.open(sealed) == b"ping"
    assert rx.open(sealed) is None
    clock.t += 31
    assert rx.open(sealed) is None
    assert rx.open(tx.seal(b"fresh")) == b"fresh"
    assert rx.drops == {"replayed": 1, "stale": 1}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_open_and_never_raise(data: bytes) -> None:
    ch = Keyring.from_secret(b"f" * 32).channel(b"gossip", replay_window=30.0)
    assert ch.open(data) is None
    assert sum(ch.drops.values()) == 1


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=200))
def test_truncations_never_open(payload: bytes, cut: int) -> None:
    ch = Keyring.from_secret(b"t" * 32).channel(b"gossip")
    sealed = ch.seal(payload)
    cut = min(cut, len(sealed) - 1)
    assert ch.open(sealed[:cut]) is None
