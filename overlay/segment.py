"""Cut one offloaded super-segment (virtio-net header + IPv4 + TCP/UDP) into smaller super-segments.

Why: a sealed 64 KB message crosses the underlay as ~45 IP fragments, and losing any one loses all
of it. Cutting a TSO segment into pieces of at most ``limit`` bytes, each still a valid GSO packet
with the same ``gso_size``, bounds that amplification while keeping one Python iteration per piece
instead of per MTU packet. The receiving kernel still segments and checksums each piece.

Each piece gets a copy of the IP and L4 headers with: IP total length, IP id (advanced by the
segments before it) and header checksum; TCP sequence number advanced by the payload before it, FIN
and PSH only on the last piece, CWR only on the first; and the L4 checksum field re-seeded with the
pseudo-header sum for the piece's own length (``NEEDS_CSUM``: the kernel finishes it, as for
the original, see ``tcp_v4_send_check``). UDP pieces (USO) get their own length likewise.
"""

from __future__ import annotations

import struct

from overlay.tun import GSO_ECN, GSO_TCPV4, GSO_UDP_L4, VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR, VNET_HDR_LEN

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_IP_HDR = struct.Struct("!BBHHHBBH4s4s")


def ones_complement_sum(data: bytes | bytearray | memoryview) -> int:
    """16-bit one's complement sum (not inverted) of ``data``, zero-padded to an even length."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_checksum(header: bytes | bytearray) -> int:
    """Checksum of an IPv4 header whose checksum field is zero."""
    return ~ones_complement_sum(header) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """What a CHECKSUM_PARTIAL packet's L4 checksum field holds: the folded pseudo-header sum."""
    return ones_complement_sum(src + dst + bytes((0, proto)) + _H.pack(length))


def split(pkt: bytes, limit: int) -> list[bytes] | None:
    """``pkt`` (vnet header + IPv4 GSO packet) as pieces of at most ``limit`` bytes, or None if it cannot be cut.

    Only TCPv4 and UDP-L4 (USO) GSO packets with a partial checksum can be cut; anything else returns None.
    """
    if len(pkt) <= limit:
        return [pkt]
    if len(pkt) < VNET_HDR_LEN + 20:
        return None
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(pkt)
    kind = gso_type & ~GSO_ECN
    if kind not in (GSO_TCPV4, GSO_UDP_L4) or not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or gso_size <= 0:
        return None
    ip = VNET_HDR_LEN
    vihl = pkt[ip]
    if vihl >> 4 != 4:
        return None
    ihl = (vihl & 0xF) * 4
    l4 = ip + ihl
    proto = pkt[ip + 9]
    if kind == GSO_TCPV4:
        if proto != 6 or len(pkt) < l4 + 20:
            return None
        end = l4 + (pkt[l4 + 12] >> 4) * 4
    else:
        if proto != 17:
            return None
        end = l4 + 8
    if csum_start != l4 - VNET_HDR_LEN or len(pkt) <= end:
        return None
    head_len = end  # vnet + IP + L4 headers
    per_piece = (limit - head_len) // gso_size * gso_size
    if per_piece <= 0:
        return None
    payload = memoryview(pkt)[end:]
    ip_id = _H.unpack_from(pkt, ip + 4)[0]
    src, dst = pkt[ip + 12:ip + 16], pkt[ip + 16:ip + 20]
    seq = _I.unpack_from(pkt, l4 + 4)[0] if kind == GSO_TCPV4 else 0
    tcp_flags = pkt[l4 + 13] if kind == GSO_TCPV4 else 0
    template = bytearray(pkt[:end])
    pieces: list[bytes] = []
    total = len(payload)
    for off in range(0, total, per_piece):
        chunk = payload[off:off + per_piece]
        last = off + per_piece >= total
        h = bytearray(template)
        ip_len = end - ip + len(chunk)
        l4_len = end - l4 + len(chunk)
        _H.pack_into(h, ip + 2, ip_len)
        _H.pack_into(h, ip + 4, (ip_id + off // gso_size) & 0xFFFF)
        _H.pack_into(h, ip + 10, 0)
        _H.pack_into(h, ip + 10, ipv4_header_checksum(h[ip:l4]))
        if kind == GSO_TCPV4:
            _I.pack_into(h, l4 + 4, (seq + off) & 0xFFFFFFFF)
            f = tcp_flags
            if not last:
                f &= ~0x09  # FIN, PSH only on the last piece
            if off:
                f &= ~0x80  # CWR only on the first
            h[l4 + 13] = f
        else:
            _H.pack_into(h, l4 + 4, l4_len)
        _H.pack_into(h, l4 + csum_offset, pseudo_header_sum(src, dst, proto, l4_len))
        if len(chunk) <= gso_size:  # one segment left: no longer a GSO packet
            h[1] = 0  # gso_type NONE, gso_size 0 (the header is little-endian)
            h[4] = h[5] = 0
        pieces.append(bytes(h) + chunk)
    return pieces


__all__ = ["ipv4_header_checksum", "ones_complement_sum", "pseudo_header_sum", "split"]
