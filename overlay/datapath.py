"""The data path: packets from the TUN sealed to the owning host over UDP, and back.

``Datapath`` is the engine; it owns no thread and no loop. Something calls ``on_tun_readable``,
``on_udp_readable`` and ``handle_timer(now)`` when the fds are readable or ``get_timer()`` passes (the
dialect of the sans-IO cores, SWIM's and the session's): the drivers in
``overlay/driver.py`` (``run_blocking`` for a thread or a worker process, ``attach_to_loop`` for an
asyncio loop). Which one the agent uses is ``OverlayService``'s choice, made with the numbers in
``bench/overlay.py``.

Per read of the TUN the engine moves one packet which, with TSO offload, is a TCP super-segment of up
to ~64 KB: its virtio-net header travels inside the sealed message and the peer's kernel finishes
checksum and segmentation. A sealed message larger than one underlay packet is cut into MTU-sized
chunk datagrams handed to the kernel in one ``sendmsg`` with ``UDP_SEGMENT`` (``overlay/chunks.py``),
and read back with ``UDP_GRO`` in one ``recvmsg``; without UDP_SEGMENT it leaves as one datagram the
kernel fragments. Loss amplification (one lost chunk loses the message) is bounded by the message
size: the probes measure loss per peer, and above ``loss_high`` the data path halves the largest
message (super-segments are cut in userspace, ``overlay/segment.py``), growing it back below
``loss_low``. Small datagrams of equal size to one peer also leave in one GSO ``sendmsg``. When large
messages do not cross a path (large probes unanswered) or a peer cannot take offloaded packets, TSO
is switched off on the TUN and every packet fits one underlay datagram.

Drops are counted by reason: the session core's (``auth_failed``, ``replayed``, …) plus the data
path's own (``send_eperm`` from a firewall, ``send_enobufs``, ``spoofed_source``, ``no_route``…).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from overlay import segment
from overlay.chunks import CHUNK_KIND, Reassembler, chunk_batches
from overlay.probe import PROBE_MARKER, PeerHealth, Probe, ProbeConfig, ProbeKind, decode_probe
from overlay.session import OverlaySession
from overlay.tun import EMPTY_VNET_HDR, TUN_F_CSUM, VNET_HDR_LEN, Tun
from overlay.udp import MAX_UDP_PAYLOAD, SOL_UDP, UDP_SEGMENT, enable_gro, gro_size, udp_segment_works

_U16 = struct.Struct("=H")
_SEAL_OVERHEAD = 32  # transport header + AEAD tag
#: Message size steps the loss adaptation moves along (bytes of one inner message before sealing);
#: the last step, added per data path, is what one underlay datagram holds (``Datapath.steps``).
MESSAGE_STEPS = (MAX_UDP_PAYLOAD - _SEAL_OVERHEAD, 32768, 16384, 8192, 4096, 2048)


@dataclass(frozen=True, slots=True)
class DatapathConfig:
    #: Packets taken from one fd per wake-up before the others get a turn.
    batch: int = 64
    #: The worker process polls this long (µs) after a wake-up before it sleeps (``run_blocking``).
    spin_us: int = 1000
    #: Largest inner message sealed as one datagram (≤ 65507 − 32). Bigger TSO segments are cut.
    max_message: int = MESSAGE_STEPS[0]
    #: Loss above this (probe estimate) halves the message size; below ``loss_low`` it grows back.
    loss_high: float = 0.01
    loss_low: float = 0.001
    #: Bytes of one chunk datagram when a sealed message is larger than the underlay MTU allows:
    #: underlay MTU − IP − UDP (1472 over IPv4 at 1500). 0: no chunking, let IP fragment instead.
    chunk_size: int = 1472
    #: More handshake datagrams than this in one read batch: ask initiators for cookies.
    under_load_handshakes: int = 16
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass(frozen=True, slots=True)
class PeerRoute:
    """One other host as the data path sees it."""

    peer_id: str
    subnet: IPv4Network
    addr: tuple[str, int]
    public_key: bytes


def route_keys(subnet: IPv4Network) -> list[bytes]:
    """The 3-byte /24 prefixes a subnet covers: the data path's route lookup is one dict get."""
    if subnet.prefixlen > 24:
        raise ValueError(f"overlay subnets are /24 or larger, not {subnet}")
    return [n.network_address.packed[:3] for n in subnet.subnets(new_prefix=24)]


class Datapath:
    """TUN ↔ UDP for one host. Not thread-safe: one driver calls it."""

    def __init__(self, session: OverlaySession, tun: Tun, sock: socket.socket, local_subnet: IPv4Network,
                 config: DatapathConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 set_offloads: Callable[[int], None] | None = None) -> None:
        self.session = session
        self.tun = tun
        self.sock = sock
        self.cfg = config or DatapathConfig()
        self.clock = clock
        self.local_subnet = local_subnet
        self._set_offloads = set_offloads or tun.set_offloads
        self._wanted_offloads = tun.offloads
        self._routes: dict[bytes, str] = {}
        self.peers: dict[str, PeerRoute] = {}
        self.health: dict[str, PeerHealth] = {}
        self.drops: dict[str, int] = {}
        self.counters = {"tun_rx": 0, "tun_rx_bytes": 0, "tun_tx": 0, "udp_rx": 0, "udp_tx": 0, "segments_split": 0,
                         "gso_sends": 0}
        self.max_message = self.cfg.max_message
        self._gro = enable_gro(sock)
        self._gso = udp_segment_works(sock)
        self._chunk = self.cfg.chunk_size if self._gso else 0
        #: Under heavy loss the message shrinks to one underlay datagram: then an inner packet is lost
        #: exactly when its one datagram is, never more often than on the underlay itself.
        single = (self.cfg.chunk_size or 1472) - _SEAL_OVERHEAD
        self.steps = (*(m for m in MESSAGE_STEPS if m > single), single)
        self._msg_id = 0
        self.reassembler = Reassembler()
        self._under_load_until = 0.0
        self._offload_fallback = False
        self.rehandshakes = 0
        #: Peers set_peers() could not add, and why.
        self.peer_errors: dict[str, str] = {}

    # ------------------------------------------------------------------ peers
    def set_peers(self, peers: Iterable[PeerRoute]) -> None:
        """Make the peer set exactly ``peers``: sessions added, updated or removed."""
        now = self.clock()
        wanted = {p.peer_id: p for p in peers}
        for pid in list(self.peers):
            old = self.peers[pid]
            new = wanted.get(pid)
            if new is None or new.public_key != old.public_key:
                self.session.remove_peer(pid)
                del self.peers[pid]
                self.health.pop(pid, None)
        self.peer_errors = {}
        for pid, p in wanted.items():
            try:
                self.session.add_peer(pid, p.public_key, p.addr, now)
            except ValueError as e:  # a bad or duplicated key in a host record: skip that host, say why
                self.peer_errors[pid] = str(e)
                continue
            if pid not in self.health:
                self.health[pid] = PeerHealth(self.cfg.probe, now)
            self.peers[pid] = p
        self._routes = {k: p.peer_id for p in self.peers.values() for k in route_keys(p.subnet)}
        self._flush()

    def _drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    # ------------------------------------------------------------------ TUN → UDP
    def on_tun_readable(self) -> None:
        read, fd, routes = os.read, self.tun.fd, self._routes
        off = VNET_HDR_LEN if self.tun.vnet_hdr else 0
        dst_at = off + 16
        limit = self.max_message
        batches: dict[str, list[bytes]] = {}
        n = nbytes = 0
        for _ in range(self.cfg.batch):
            try:
                pkt = read(fd, 65600)
            except BlockingIOError:
                break
            except OSError as e:
                self._drop(f"tun_read_{errno.errorcode.get(e.errno or 0, 'error').lower()}")
                break
            n += 1
            nbytes += len(pkt)
            peer = routes.get(pkt[dst_at:dst_at + 3])
            if peer is None or (pkt[off] >> 4) != 4:
                self._drop("no_route" if len(pkt) > off and pkt[off] >> 4 == 4 else "not_ipv4")
                continue
            if not off:
                pkt = EMPTY_VNET_HDR + pkt
            batch = batches.get(peer)
            if batch is None:
                batch = batches[peer] = []
            if len(pkt) > limit:
                pieces = segment.split(pkt, limit)
                if pieces is None:
                    self._drop("oversize")
                    continue
                self.counters["segments_split"] += 1
                batch.extend(pieces)
            else:
                batch.append(pkt)
        if not n:
            return
        self.counters["tun_rx"] += n
        self.counters["tun_rx_bytes"] += nbytes
        now = self.clock()
        send_many = self.session.send_many
        for peer, pkts in batches.items():
            send_many(peer, pkts, now)
        self._flush()

    def _flush(self) -> None:
        out = self.session.datagrams_to_send()
        if not out:
            return
        sendto = self.sock.sendto
        i, n = 0, len(out)
        chunk = self._chunk
        while i < n:
            data, addr = out[i]
            size = len(data)
            j = i + 1
            if chunk and size > chunk:
                self._send_chunked(data, addr)
                i = j
                continue
            if self._gso and size <= (chunk or 1400):  # a run of equal small datagrams to one peer: one sendmsg
                while j < n and j - i < 64 and out[j][1] == addr and len(out[j][0]) == size:
                    j += 1
            try:
                if j - i > 1:
                    self.sock.sendmsg([d for d, _a in out[i:j]], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, addr)
                    self.counters["gso_sends"] += 1
                else:
                    sendto(data, addr)
                self.counters["udp_tx"] += j - i
            except BlockingIOError:
                if self._wait_writable():
                    continue  # retry the same run
                self._drop("send_eagain", j - i)
            except OSError as e:  # EPERM: a firewall; ENOBUFS: qdisc full; EMSGSIZE; unreachable…
                self._drop(f"send_{errno.errorcode.get(e.errno or 0, 'error').lower()}", j - i)
            i = j

    def _send_chunked(self, data: bytes | bytearray, addr: tuple[Any, ...]) -> None:
        """One sealed message as chunk datagrams, each batch in one GSO sendmsg (``overlay/chunks.py``)."""
        self._msg_id = mid = (self._msg_id + 1) & 0xFFFFFFFF
        seg = self._chunk
        cmsg = [(SOL_UDP, UDP_SEGMENT, _U16.pack(seg))]
        for iov in chunk_batches(data, mid, seg):
            while True:
                try:
                    self.sock.sendmsg(iov, cmsg, 0, addr)
                    self.counters["udp_tx"] += len(iov) // 2
                    self.counters["gso_sends"] += 1
                except BlockingIOError:
                    if self._wait_writable():
                        continue
                    self._drop("send_eagain")
                except OSError as e:
                    self._drop(f"send_{errno.errorcode.get(e.errno or 0, 'error').lower()}")
                break

    def _wait_writable(self) -> bool:
        """Blocking drivers wait a little for socket buffer space; an event loop must not."""
        if not self.blocking_send:
            return False
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLOUT)
        return bool(p.poll(20))

    blocking_send = False

    # ------------------------------------------------------------------ UDP → TUN
    def on_udp_readable(self) -> None:
        sock = self.sock
        dgrams: list[tuple[Any, Any]] = []
        handshakes = 0
        now = self.clock()
        reasm = self.reassembler
        for _ in range(self.cfg.batch):
            try:
                if self._gro:
                    data, anc, _flags, addr = sock.recvmsg(65535, 64)
                else:
                    data, addr = sock.recvfrom(65535)
                    anc = None
            except BlockingIOError:
                break
            except OSError as e:  # e.g. ECONNREFUSED from an earlier ICMP: keep reading
                self._drop(f"recv_{errno.errorcode.get(e.errno or 0, 'error').lower()}")
                continue
            if not data:
                continue
            if anc:
                seg = gro_size(anc)
                if seg and seg < len(data):
                    if data[0] == CHUNK_KIND:
                        reasm.feed_buffer(data, seg, addr, now, dgrams)
                    else:
                        mv = memoryview(data)
                        dgrams.extend((mv[k:k + seg], addr) for k in range(0, len(data), seg))
                    continue
            if data[0] == CHUNK_KIND:
                reasm.feed(data, addr, now, dgrams)
                continue
            if data[0] in (1, 2):
                handshakes += 1
            dgrams.append((data, addr))
        if not dgrams:
            return
        self.counters["udp_rx"] += len(dgrams)
        if handshakes > self.cfg.under_load_handshakes:
            self._under_load_until = now + 1.0
        self.session.set_under_load(now < self._under_load_until)
        opened = self.session.receive_many(dgrams, now)
        write, fd, routes = os.write, self.tun.fd, self._routes
        vnet = self.tun.vnet_hdr
        src_at = VNET_HDR_LEN + 12
        written = 0
        for peer_id, plain in opened:
            if plain[0] == PROBE_MARKER:
                self._on_probe(peer_id, plain, now)
                continue
            if routes.get(plain[src_at:src_at + 3]) != peer_id or len(plain) < VNET_HDR_LEN + 20:
                self._drop("spoofed_source")
                continue
            try:
                if vnet:
                    write(fd, plain)
                elif plain[:VNET_HDR_LEN] == EMPTY_VNET_HDR:
                    write(fd, memoryview(plain)[VNET_HDR_LEN:])
                else:
                    self._drop("offload_unsupported")
                    continue
                written += 1
            except OSError as e:
                self._drop(f"tun_write_{errno.errorcode.get(e.errno or 0, 'error').lower()}")
        self.counters["tun_tx"] += written
        self._flush()

    # ------------------------------------------------------------------ probes and timers
    def _on_probe(self, peer_id: str, plain: bytes, now: float) -> None:
        probe = decode_probe(plain)
        health = self.health.get(peer_id)
        if probe is None or health is None:
            self._drop("bad_probe")
            return
        flags = 1 if self.tun.vnet_hdr else 0
        if probe.kind in (ProbeKind.REQUEST, ProbeKind.LARGE_REQUEST):
            health.accepts_offload = bool(probe.flags & 1)
            kind = ProbeKind.REPLY if probe.kind == ProbeKind.REQUEST else ProbeKind.LARGE_REPLY
            rx = self.session.peer_status(peer_id, now).rx_packets
            self.session.send(peer_id, Probe(kind, flags, probe.seq, probe.echo, rx).encode(), now)
        else:
            health.on_reply(probe, now)

    def get_timer(self) -> float:
        """When :meth:`handle_timer` is next due (the session's timer or a probe), on ``self.clock``."""
        t = self.session.get_timer()
        probe_at = min((h.next_at for h in self.health.values()), default=None)
        cands = [x for x in (t, probe_at) if x is not None]
        return min(cands) if cands else self.clock() + 1.0

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now``: the session's timers, the probes, the message-size adaptation."""
        timer = self.session.get_timer()
        if timer is not None and now >= timer:
            self.session.handle_timer(now)
        for pid, health in self.health.items():
            st = self.session.peer_status(pid, now)
            health.heard(now, st.rx_packets)
            if st.state == "established":
                health.mark_established(now)
                for probe, size in health.due(now, st.tx_packets, 1 if self.tun.vnet_hdr else 0):
                    self.session.send(pid, probe.encode(size), now)
            elif now >= health.next_at:
                health.next_at = now + health.cfg.interval
            if health.ever_up and health.silent(now) and st.state == "established":
                self._rehandshake(pid, now)  # the core still trusts a session nothing comes back on
        self._adapt()
        self._flush()

    def _rehandshake(self, pid: str, now: float) -> None:
        """Probes unanswered: drop the session's keys and start over (the core's own timers are slower)."""
        p = self.peers[pid]
        self.session.remove_peer(pid)
        self.session.add_peer(pid, p.public_key, p.addr, now)
        self.health[pid].reset(now)
        self.rehandshakes += 1

    def _adapt(self) -> None:
        """Fragments blocked or offload refused on some path → MTU-sized packets; loss → smaller messages."""
        fallback = any(h.large_ok is False or not h.accepts_offload for h in self.health.values())
        if fallback != self._offload_fallback and self._wanted_offloads:
            self._offload_fallback = fallback
            self._set_offloads(TUN_F_CSUM & self._wanted_offloads if fallback else self._wanted_offloads)
        losses = [h.loss for h in self.health.values() if h.loss is not None]
        if not losses:
            return
        worst = max(losses)
        steps = self.steps
        idx = min(range(len(steps)), key=lambda k: abs(steps[k] - self.max_message))
        if worst > self.cfg.loss_high and idx + 1 < len(steps):
            self.max_message = steps[idx + 1]
        elif worst < self.cfg.loss_low and idx > 0 and self.max_message < self.cfg.max_message:
            self.max_message = steps[idx - 1]

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        now = self.clock()
        peers: dict[str, Any] = {}
        for pid, p in self.peers.items():
            st = self.session.peer_status(pid, now)
            h = self.health[pid]
            peers[pid] = {
                "state": h.state(str(st.state), now),
                "session": str(st.state),
                "underlay": f"{p.addr[0]}:{p.addr[1]}",
                "subnet": str(p.subnet),
                "last_handshake_ago": None if st.last_handshake is None else round(now - st.last_handshake, 3),
                "handshakes": st.handshakes,
                "rtt_ms": None if h.rtt is None else round(h.rtt * 1000, 3),
                "rtt_min_ms": None if h.rtt_min is None else round(h.rtt_min * 1000, 3),
                "probes_sent": h.sent, "probes_answered": h.answered,
                "last_probe_reply_ago": None if h.last_reply is None else round(now - h.last_reply, 3),
                "large_messages_ok": h.large_ok, "loss": h.loss,
                "bytes_in": st.rx_bytes, "bytes_out": st.tx_bytes,
                "packets_in": st.rx_packets, "packets_out": st.tx_packets, "queued": st.queued,
            }
        drops = {k: v for k, v in self.session.stats().items() if v}
        for k, v in (*self.drops.items(), *self.reassembler.drops.items()):
            drops[k] = drops.get(k, 0) + v
        tun = self.tun.describe()
        return {"peers": peers, "drops": drops, "counters": dict(self.counters), "tun": tun,
                "offload_fallback": self._offload_fallback, "max_message": self.max_message,
                "udp_gro": self._gro, "chunk_size": self._chunk, "forced_rehandshakes": self.rehandshakes,
                "peer_errors": dict(self.peer_errors)}


__all__ = ["MESSAGE_STEPS", "Datapath", "DatapathConfig", "PeerRoute", "route_keys"]
