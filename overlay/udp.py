"""The underlay UDP socket: bound to the advertised address, big buffers, GSO/GRO where the kernel has them."""

from __future__ import annotations

import socket
import struct

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: one sendmsg leaves as several datagrams of this size
UDP_GRO = 104  # one recvmsg returns several datagrams of one flow, cmsg = their size
MAX_UDP_PAYLOAD = 65507
_U16 = struct.Struct("=H")
_I32 = struct.Struct("=i")


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def udp_segment_works(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)  # 0: no default segmentation; only probes support
        return True
    except OSError:
        return False


def gro_size(anc: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in anc:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
            return _U16.unpack_from(data)[0] if len(data) < 4 else int(_I32.unpack_from(data)[0])
    return 0


def open_udp(addr: str, port: int, bufsize: int = 8 << 20) -> socket.socket:
    """The underlay socket, bound to the advertised address so replies leave from it on multi-homed hosts.

    Fragmentation is allowed (DF off): without UDP_SEGMENT a sealed TSO segment crosses as IP fragments.
    """
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for opt, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):  # SO_SNDBUFFORCE, SO_RCVBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, bufsize)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, opt, bufsize)
    if fam == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
    sock.bind((addr, port))
    sock.setblocking(False)
    return sock


__all__ = ["MAX_UDP_PAYLOAD", "SOL_UDP", "UDP_GRO", "UDP_SEGMENT", "enable_gro", "gro_size", "open_udp",
           "udp_segment_works"]
