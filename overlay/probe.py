"""In-band self-check: probes sent through each tunnel, and what their answers say about the peer.

Pure (no I/O, no clock): the data path calls ``due``/``on_reply``/``state`` with ``now``.

A probe is an inner message sealed like any packet, so an answer proves the whole path works:
underlay, both sessions' keys and both data paths. It starts with 0xFF, which no virtio-net header
(flags 0, 1, 2 or 4) and no IP packet (version nibble 4 or 6) does, so the receiver tells it apart
with one byte compare. Wire (little-endian)::

    marker 0xFF u8 | kind u8 | flags u16 | seq u32 | echo f64 | rx_packets u64 | padding

* ``echo`` is the requester's clock, returned as is: RTT = now − echo on the requester.
* ``rx_packets`` in a reply is how many authenticated datagrams the replier has had from the
  requester; against the requester's own sent count it gives the loss rate on the path.
* A *large* request is padded past one underlay MTU, so it crosses the way sealed super-segments do
  (as GSO chunks, ``overlay/chunks.py``, or as IP fragments where UDP_SEGMENT is missing). When
  small requests are answered and large ones are not, large messages do not cross this path and the
  data path must fall back to MTU-sized packets.
* ``flags`` bit 0 in either kind: the sender accepts offloaded (GSO / partial checksum) packets.

States reported per peer: ``up`` (answers within ``timeout``), ``handshaking`` (no session yet),
``degraded`` (was up; probes unanswered or session lost: being re-handshaken), ``down`` (nothing
heard for ``down_after``, or never up and not handshaking).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

PROBE_MARKER = 0xFF
PROBE = struct.Struct("<BBHIdQ")
PROBE_LEN = PROBE.size
FLAG_ACCEPTS_OFFLOAD = 1


class ProbeKind(IntEnum):
    """Append only: values are protocol."""

    REQUEST = 1
    REPLY = 2
    LARGE_REQUEST = 3
    LARGE_REPLY = 4


@dataclass(frozen=True, slots=True)
class Probe:
    kind: ProbeKind
    flags: int
    seq: int
    echo: float
    rx_packets: int

    def encode(self, size: int = PROBE_LEN) -> bytes:
        head = PROBE.pack(PROBE_MARKER, self.kind, self.flags, self.seq, self.echo, self.rx_packets)
        return head + bytes(max(0, size - PROBE_LEN))


def decode_probe(data: bytes | bytearray | memoryview) -> Probe | None:
    """A probe, or None for anything that is not one (never raises)."""
    if len(data) < PROBE_LEN or data[0] != PROBE_MARKER:
        return None
    _m, kind, flags, seq, echo, rx = PROBE.unpack_from(data)
    try:
        return Probe(ProbeKind(kind), flags, seq, echo, rx)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    #: A request to every peer this often (s).
    interval: float = 1.0
    #: While a request is unanswered, the next one goes after this long instead (s): on a lossy path
    #: a few lost probes in a row must not look like a dead tunnel.
    retry_interval: float = 0.25
    #: Every n-th request is also sent large (past the underlay MTU) to test that large messages cross.
    large_every: int = 5
    #: Size of a large request's inner message: > one 1500-byte underlay packet.
    large_size: int = 4000
    #: No answer for this long while a session claims to work: degraded, re-handshake (s).
    timeout: float = 3.5
    #: Nothing at all for this long: down (s).
    down_after: float = 30.0
    #: Consecutive unanswered large probes (with small ones answered) before large messages count as blocked.
    large_failures: int = 3
    #: Loss estimates need at least this many packets sent between two answers.
    loss_min_packets: int = 200


class PeerHealth:
    """What the probes have taught us about one peer's tunnel."""

    def __init__(self, cfg: ProbeConfig, now: float) -> None:
        self.cfg = cfg
        self.seq = 0
        self.next_at = now
        self.last_reply: float | None = None
        #: Last time any authenticated packet came from the peer (probes aside): proof of life too.
        self.last_heard: float | None = None
        self._rx_seen = -1
        self.rtt: float | None = None
        self.rtt_min: float | None = None
        self.sent = 0
        self.answered = 0
        self.large_pending: dict[int, float] = {}
        self.large_failed = 0
        self.large_ok: bool | None = None
        self.accepts_offload = True
        self.ever_up = False
        self.last_up = float("-inf")
        self.since = now  # when this peer was added or last forced to re-handshake
        self.loss: float | None = None
        self._loss_mark: tuple[int, int] | None = None  # (our tx at request, their rx at reply)
        self._tx_at_seq: dict[int, int] = {}

    def due(self, now: float, tx_packets: int, flags: int = FLAG_ACCEPTS_OFFLOAD) -> list[tuple[Probe, int]]:
        """Requests to send now (probe, inner size); empty if none is due. ``flags``: what we accept."""
        if now < self.next_at:
            return []
        self.next_at = now + self.cfg.retry_interval  # moved to a full interval when it is answered
        self.seq += 1
        self.sent += 1
        self._tx_at_seq[self.seq] = tx_packets
        if len(self._tx_at_seq) > 16:
            del self._tx_at_seq[min(self._tx_at_seq)]
        out = [(Probe(ProbeKind.REQUEST, flags, self.seq, now, 0), PROBE_LEN)]
        if self.seq % self.cfg.large_every == 0:
            # a large request still pending from last time failed
            self.large_failed += len(self.large_pending)
            if self.large_failed >= self.cfg.large_failures and self.answered:
                self.large_ok = False
            self.large_pending = {self.seq: now}
            out.append((Probe(ProbeKind.LARGE_REQUEST, flags, self.seq, now, 0), self.cfg.large_size))
        return out

    def on_reply(self, probe: Probe, now: float) -> None:
        self.accepts_offload = bool(probe.flags & FLAG_ACCEPTS_OFFLOAD)
        if probe.kind == ProbeKind.LARGE_REPLY:
            if self.large_pending.pop(probe.seq, None) is not None:
                self.large_failed = 0
                self.large_ok = True
            return
        if probe.kind != ProbeKind.REPLY or probe.echo > now:
            return
        self.answered += 1
        self.last_reply = now
        self.next_at = max(self.next_at, probe.echo + self.cfg.interval)
        self.ever_up = True
        rtt = now - probe.echo
        self.rtt = rtt
        self.rtt_min = rtt if self.rtt_min is None else min(self.rtt_min, rtt)
        tx = self._tx_at_seq.pop(probe.seq, None)
        if tx is not None:
            if self._loss_mark is not None:
                sent = tx - self._loss_mark[0]
                got = probe.rx_packets - self._loss_mark[1]
                if sent >= self.cfg.loss_min_packets:
                    self.loss = max(0.0, min(1.0, 1.0 - got / sent))
            if self._loss_mark is None or tx - self._loss_mark[0] >= self.cfg.loss_min_packets:
                self._loss_mark = (tx, probe.rx_packets)

    def heard(self, now: float, rx_packets: int) -> None:
        """The session's count of authenticated packets from the peer: if it moved, the peer is alive
        and its packets reach us (the other direction is the peer's own probes' business)."""
        if rx_packets != self._rx_seen:
            if self._rx_seen >= 0:
                self.last_heard = now
            self._rx_seen = rx_packets

    def silent(self, now: float) -> bool:
        """Nothing came back for ``timeout``: no probe answered and no other packet from the peer,
        counted from the last of those or the last reset."""
        last = max(self.since, self.last_reply or self.since, self.last_heard or self.since)
        return now - last >= self.cfg.timeout

    def reset(self, now: float) -> None:
        """A re-handshake was forced: give the new session ``timeout`` to answer."""
        self.since = now
        self.next_at = now
        self._rx_seen = -1

    def mark_established(self, now: float) -> None:
        """The session core has a working keypair (a handshake round trip crossed the path)."""
        if not self.silent(now):
            self.ever_up = True
            self.last_up = now

    def state(self, session_state: str, now: float) -> str:
        """up / handshaking / degraded / down, from the session core's state and the probes."""
        last_good = max(self.last_reply or self.last_up, self.last_up)
        heard = now - last_good < self.cfg.down_after
        if session_state == "established" and not self.silent(now):
            return "up"
        if not self.ever_up:
            return "handshaking" if session_state in ("handshaking", "established", "none") else "down"
        return "degraded" if heard else "down"


__all__ = ["PROBE_LEN", "PROBE_MARKER", "PeerHealth", "Probe", "ProbeConfig", "ProbeKind", "decode_probe"]
