"""Pure parts of the TUN layer and the segment cutter: virtio-net headers, checksums, splitting."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay import segment
from overlay.config import OverlayConfig
from overlay.tun import (
    GSO_TCPV4,
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_USO4,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR,
    offload_names,
    parse_vnet_header,
)

SRC, DST = bytes([10, 42, 1, 2]), bytes([10, 42, 2, 2])


def _reference_tcp_checksum(src: bytes, dst: bytes, l4: bytes) -> int:
    """Checksum computed from scratch (field zeroed), as a receiver verifies it."""
    zeroed = l4[:16] + b"\0\0" + l4[18:]
    return ~segment.ones_complement_sum(src + dst + b"\0\x06" + struct.pack("!H", len(l4)) + zeroed) & 0xFFFF


def _kernel_finish(l4: bytes) -> int:
    """What the kernel does with NEEDS_CSUM: sum from csum_start over the seeded field, complement."""
    return ~segment.ones_complement_sum(l4) & 0xFFFF


def _gso_packet(payload: bytes, mss: int, seq: int = 1000, flags: int = 0x18, ip_id: int = 7) -> bytes:
    """A TSO super-segment as the kernel hands it over: vnet header + IPv4 + TCP, partial checksum."""
    tcp_len = 20 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, ip_id, 0x4000, 64, 6, 0, SRC, DST))
    struct.pack_into("!H", ip, 10, segment.ipv4_header_checksum(ip))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5001, seq, 1, 5 << 4, flags, 512, 0, 0))
    struct.pack_into("!H", tcp, 16, segment.pseudo_header_sum(SRC, DST, 6, tcp_len))
    vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, GSO_TCPV4, 40, mss, 20, 16)
    return vnet + bytes(ip) + bytes(tcp) + payload


def test_vnet_header_parses_and_short_input_is_none() -> None:
    h = parse_vnet_header(VNET_HDR.pack(1, GSO_TCPV4, 54, 1388, 34, 16) + b"rest")
    assert h is not None and h.is_gso and h.gso_size == 1388 and h.csum_offset == 16
    assert parse_vnet_header(b"\0" * 9) is None
    plain = parse_vnet_header(bytes(10))
    assert plain is not None and not plain.is_gso


def test_offload_names() -> None:
    assert offload_names(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_USO4) == ["csum", "tso4", "uso4"]
    assert offload_names(0) == []


@pytest.mark.parametrize(("underlay", "v6", "tun"), [(1500, False, 1430), (1500, True, 1410), (9000, False, 8930)])
def test_tun_mtu_from_underlay(underlay: int, v6: bool, tun: int) -> None:
    assert OverlayConfig().tun_mtu(underlay, v6) == tun


def test_checksum_helpers_match_rfc1071_example() -> None:
    # RFC 1071 §3 example bytes: one's complement sum 0xddf2
    assert segment.ones_complement_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    hdr = bytearray(bytes.fromhex("450000730000400040110000c0a80001c0a800c7"))
    assert segment.ipv4_header_checksum(hdr) == 0xB861


def test_split_small_packet_is_untouched() -> None:
    pkt = _gso_packet(b"x" * 1000, 1400)
    assert segment.split(pkt, 65000) == [pkt]


@given(st.integers(min_value=1, max_value=46), st.sampled_from([536, 1388, 1400, 1448]),
       st.sampled_from([4096, 8192, 16384, 32768]), st.integers(min_value=0, max_value=(1 << 32) - 1),
       st.booleans())
def test_split_pieces_are_valid_gso_packets_covering_the_payload(segs: int, mss: int, limit: int, seq: int,
                                                                 fin: bool) -> None:
    payload = bytes(range(256)) * (segs * mss // 256 + 1)
    payload = payload[:min(segs * mss - (mss // 3 if segs > 1 else 0), 65535 - 40)]  # IP total length is 16 bits
    pkt = _gso_packet(payload, mss, seq=seq, flags=0x19 if fin else 0x18)
    pieces = segment.split(pkt, limit)
    if len(pkt) <= limit:
        assert pieces == [pkt]
        return
    if limit - 50 < mss:
        assert pieces is None
        return
    assert pieces is not None and len(pieces) > 1
    joined = b""
    for i, piece in enumerate(pieces):
        assert len(piece) <= limit
        flags, gso_type, _hl, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(piece)
        ip, tcp = piece[10:30], piece[30:]
        body = tcp[20:]
        assert struct.unpack_from("!H", ip, 2)[0] == 20 + len(tcp)
        assert segment.ones_complement_sum(ip) == 0xFFFF  # header checksum valid
        assert struct.unpack_from("!I", tcp, 4)[0] == (seq + len(joined)) & 0xFFFFFFFF
        last = i == len(pieces) - 1
        assert bool(tcp[13] & 0x01) == (fin and last) and bool(tcp[13] & 0x08) == last
        assert (gso_type, gso_size) == ((GSO_TCPV4, mss) if len(body) > mss else (0, 0))
        assert (flags, csum_start, csum_offset) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, 20, 16)
        # the kernel finishing the seeded partial checksum gives the true TCP checksum of the piece
        assert _kernel_finish(tcp) == _reference_tcp_checksum(SRC, DST, tcp)
        if len(body) > mss:
            assert len(body) % mss == 0 or last
        joined += body
    assert joined == payload


def test_split_refuses_what_it_cannot_cut() -> None:
    pkt = bytearray(_gso_packet(b"y" * 20000, 1400))
    pkt[1] = 0  # not GSO
    assert segment.split(bytes(pkt), 8192) is None
    pkt = bytearray(_gso_packet(b"y" * 20000, 1400))
    pkt[0] = 0  # no partial checksum
    assert segment.split(bytes(pkt), 8192) is None
    assert segment.split(b"\x01" * 5, 2) is None


def test_a_full_sized_inner_packet_sealed_fits_one_underlay_datagram() -> None:
    """TUN MTU + virtio-net header + transport header + tag = the UDP payload one underlay packet holds."""
    for underlay, v6 in ((1500, False), (1500, True), (9000, False)):
        mtu = OverlayConfig().tun_mtu(underlay, v6)
        udp_payload = underlay - (40 if v6 else 20) - 8
        assert mtu + 10 + 16 + 16 == udp_payload


def test_pieces_at_the_one_datagram_step_carry_one_full_segment_each() -> None:
    """Heavy loss shrinks messages to one datagram (1440 B before sealing): a TSO segment of
    full-MSS packets (TUN MTU 1430 − IP 20 − TCP 20) is cut into one-segment pieces that fit it."""
    mss = 1430 - 40
    pkt = _gso_packet(bytes(range(256)) * 40, mss)  # 10240 bytes: 8 segments
    pieces = segment.split(pkt, 1472 - 32)
    assert pieces is not None and len(pieces) == -(-10240 // mss)
    assert all(len(p) <= 1440 for p in pieces)
    assert b"".join(p[10 + 40:] for p in pieces) == bytes(range(256)) * 40
