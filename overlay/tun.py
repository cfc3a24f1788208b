"""The TUN device: open it with the offloads this kernel has, and the virtio-net header it speaks.

With ``IFF_VNET_HDR`` every read and write carries a 10-byte ``struct virtio_net_hdr`` in front of
the IP packet. Once ``TUNSETOFFLOAD`` enables CSUM and TSO4/TSO6, the kernel hands over TCP
super-segments of up to ~64 KB (``gso_type``/``gso_size`` say how to cut them) with the checksum
left partial (``flags`` = NEEDS_CSUM, ``csum_start``/``csum_offset``), and accepts the same on write:
one Python iteration then moves tens of kilobytes instead of one MTU. The header is carried, unchanged,
inside the sealed message to the peer, whose kernel finishes the job (or segments for its bridge).

What the kernel supports is found out at open time and degrades cleanly: no ``IFF_VNET_HDR`` →
plain MTU-sized packets; ``TUNSETOFFLOAD`` refusing USO → CSUM/TSO only; refusing TSO → CSUM only
or nothing. The result is recorded in ``Tun.offloads`` for the status API.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

# linux/virtio_net.h
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size  # 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
#: A header for a packet that needs nothing from the kernel (what a sender without vnet headers uses).
EMPTY_VNET_HDR = bytes(VNET_HDR_LEN)

_OFFLOAD_NAMES = {TUN_F_CSUM: "csum", TUN_F_TSO4: "tso4", TUN_F_TSO6: "tso6", TUN_F_TSO_ECN: "tso_ecn",
                  TUN_F_USO4: "uso4", TUN_F_USO6: "uso6"}
#: Offload sets tried in order; the first the kernel accepts wins.
OFFLOAD_LADDER = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
    0,
)


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & ~GSO_ECN) != GSO_NONE


def parse_vnet_header(data: bytes | bytearray | memoryview) -> VnetHeader | None:
    """The virtio-net header in front of a packet, or None if it is too short to hold one."""
    if len(data) < VNET_HDR_LEN:
        return None
    return VnetHeader(*VNET_HDR.unpack_from(data))


def offload_names(flags: int) -> list[str]:
    return [name for bit, name in _OFFLOAD_NAMES.items() if flags & bit]


class Tun:
    """One queue of an open TUN device (non-blocking fd)."""

    def __init__(self, fd: int, name: str, vnet_hdr: bool, offloads: int, multi_queue: bool) -> None:
        self.fd = fd
        self.name = name
        #: Reads and writes carry a virtio-net header.
        self.vnet_hdr = vnet_hdr
        #: TUN_F_* flags the kernel accepted.
        self.offloads = offloads
        self.multi_queue = multi_queue

    @property
    def segmentation(self) -> bool:
        """The kernel hands over (and takes) TCP super-segments."""
        return bool(self.offloads & (TUN_F_TSO4 | TUN_F_TSO6))

    def set_offloads(self, wanted: int) -> int:
        """Enable the first subset of ``wanted`` on the ladder the kernel accepts; returns it."""
        if not self.vnet_hdr:
            self.offloads = 0
            return 0
        for flags in OFFLOAD_LADDER:
            flags &= wanted
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                    continue
                raise
            self.offloads = flags
            return flags
        self.offloads = 0
        return 0

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "vnet_hdr": self.vnet_hdr, "offloads": offload_names(self.offloads),
                "multi_queue": self.multi_queue}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def kernel_features() -> int:
    """IFF_* flags the TUN driver supports (TUNGETFEATURES), 0 if /dev/net/tun cannot be opened."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError:
        return 0
    try:
        buf = fcntl.ioctl(fd, TUNGETFEATURES, b"\0\0\0\0")
        return int(struct.unpack("I", buf)[0])
    except OSError:
        return IFF_TUN | IFF_NO_PI
    finally:
        os.close(fd)


def open_tun(name: str, *, vnet_hdr: bool = True, offloads: bool = True, multi_queue: bool = False) -> Tun:
    """Create (or attach to) TUN ``name``; use vnet headers and offloads where the kernel has them.

    The device is created non-persistent: it disappears when the last fd closes, so a crashed agent
    leaves no device behind (routes through it go with it).
    """
    if len(name.encode()) > 15:
        raise ValueError(f"interface name {name!r} longer than 15 bytes")
    features = kernel_features()
    use_vnet = vnet_hdr and bool(features & IFF_VNET_HDR)
    use_mq = multi_queue and bool(features & IFF_MULTI_QUEUE)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if use_vnet else 0) | (IFF_MULTI_QUEUE if use_mq else 0)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), flags)
        try:
            out = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            if not use_vnet or e.errno != errno.EINVAL:
                raise
            use_vnet = False  # the driver refused the header: plain packets
            out = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags & ~IFF_VNET_HDR))
        real = out[:16].rstrip(b"\0").decode()
        if use_vnet:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
        os.set_blocking(fd, False)
    except BaseException:
        os.close(fd)
        raise
    tun = Tun(fd, real, use_vnet, 0, use_mq)
    if use_vnet and offloads:
        tun.set_offloads(OFFLOAD_LADDER[0])
    return tun


__all__ = ["EMPTY_VNET_HDR", "VNET_HDR", "VNET_HDR_LEN", "Tun", "VnetHeader", "kernel_features", "offload_names",
           "open_tun", "parse_vnet_header"]
