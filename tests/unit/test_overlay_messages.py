"""Overlay wire formats: round trips, sizes, and decoders that never raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.session_messages import (
    COOKIE_REPLY_LEN,
    INIT_LEN,
    RESPONSE_LEN,
    TRANSPORT_MIN_LEN,
    CookieReply,
    DropReason,
    HandshakeInit,
    HandshakeResponse,
    Message,
    MsgKind,
    TransportData,
    check_prefix,
    decode,
)

u32 = st.integers(0, 2**32 - 1)


def b(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(HandshakeInit, u32, b(32), b(48), b(28), b(16), b(16)),
    st.builds(HandshakeResponse, u32, u32, b(32), b(16), b(16), b(16)),
    st.builds(CookieReply, u32, b(12), b(32)),
    st.builds(TransportData, u32, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=200)),
)


def test_sizes_match_wireguard_layout() -> None:
    assert (INIT_LEN, RESPONSE_LEN, COOKIE_REPLY_LEN, TRANSPORT_MIN_LEN) == (148, 92, 52, 32)


def test_kinds_are_protocol() -> None:
    assert [int(k) for k in MsgKind] == [1, 2, 3, 4]


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: Message) -> None:
    assert decode(msg.encode()) == msg


def test_keepalive_is_empty_transport() -> None:
    k = TransportData(7, 9, bytes(16))
    assert k.is_keepalive and len(k.encode()) == 32
    assert not TransportData(7, 9, bytes(17)).is_keepalive


def test_drop_reasons() -> None:
    init = HandshakeInit(1, bytes(32), bytes(48), bytes(28)).encode()
    assert decode(b"") == DropReason.TRUNCATED
    assert decode(b"\x01\x01\x00") == DropReason.TRUNCATED
    assert decode(b"\x09\x01\x00\x00" + bytes(200)) == DropReason.UNKNOWN_KIND
    assert decode(b"\x00\x01\x00\x00") == DropReason.UNKNOWN_KIND
    assert decode(init[:1] + b"\x02" + init[2:]) == DropReason.BAD_VERSION
    assert decode(init[:2] + b"\x01\x00" + init[4:]) == DropReason.MALFORMED
    assert decode(init[:-1]) == DropReason.TRUNCATED
    assert decode(init + b"x") == DropReason.MALFORMED
    t = TransportData(1, 2, bytes(16)).encode()
    assert decode(t[:31]) == DropReason.TRUNCATED
    assert isinstance(decode(t + b"more"), TransportData)
    assert check_prefix(t) == MsgKind.TRANSPORT_DATA


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises(data: bytes) -> None:
    out = decode(data)
    assert isinstance(out, DropReason | HandshakeInit | HandshakeResponse | CookieReply | TransportData)


@settings(max_examples=300, deadline=None)
@given(messages, st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_decode_never_raises_on_mutations(msg: Message, pos: int, junk: bytes) -> None:
    data = bytearray(msg.encode())
    cut = pos % (len(data) + 1)
    mutated = bytes(data[:cut]) + junk + bytes(data[cut + len(junk):])
    out = decode(mutated)
    if isinstance(out, DropReason):
        assert out in DropReason
    else:
        assert out.encode() == mutated


def test_tun_mtu_subtracts_every_header() -> None:
    import pytest

    from overlay.config import OverlayConfig

    cfg = OverlayConfig()
    assert cfg.tun_mtu(1500) == 1500 - 20 - 8 - 16 - 16 - 10 == 1430
    assert cfg.tun_mtu(1500, ipv6_underlay=True) == 1410
    assert cfg.tun_mtu(9000) == 8930
    with pytest.raises(ValueError):
        cfg.tun_mtu(600)
    with pytest.raises(ValueError):
        OverlayConfig(replay_window=1000)
    with pytest.raises(ValueError):
        OverlayConfig(rekey_after_messages=10, reject_after_messages=5)
