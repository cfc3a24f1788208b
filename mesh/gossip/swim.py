"""SWIM + Lifeguard membership, sans-I/O: bytes and ``now`` in, bytes and events out.

Theory of operation (memberlist's ``state.go``, which this follows rule for rule):

* **Probe.** Every ``probe_interval × (health + 1)`` the node pings the next member of a shuffled
  round-robin list of alive and suspect members. No ack within ``probe_timeout × (health + 1)``: it
  asks ``indirect_checks`` random alive members to ping the target for it (they nack if they get no
  ack either) and optionally re-pings directly. No ack by the end of the interval: the target is
  *suspect*. A ping to a suspect member carries the suspect message (Lifeguard's *buddy system*).
* **Suspicion → dead.** A suspicion timer starts at ``max`` and falls towards ``min`` as independent
  suspect messages (other senders) confirm it, by memberlist's ``remainingSuspicionTime`` (Lifeguard
  *dogpile*). When it fires the member is declared *dead*.
* **Incarnations.** Every claim carries the member's incarnation. Alive beats suspect and dead only
  with a higher incarnation; suspect and dead win at an equal one. A member that hears itself
  suspected or declared dead *refutes*: it broadcasts alive at a higher incarnation.
* **Dissemination.** Every change is queued as a broadcast and piggybacked on every outgoing packet,
  fewest-sent first, each up to ``retransmit_mult × ceil(log10(n + 1))`` times; a gossip tick sends
  pending broadcasts to ``gossip_nodes`` random members (dead ones too, for ``gossip_to_the_dead_time``,
  so that a wrongly dead member learns it and refutes). Push-pull over TCP exchanges full tables on
  join and every ``push_pull_interval`` (anti-entropy).
* **Local health (Lifeguard).** The health score rises by one per missing nack (or per failed probe
  when no nacks were expected) and when this node has to refute; it falls by one per successful
  probe. It stretches the probe interval and timeout, so a starved node slows down instead of
  accusing healthy members.
* **Reconnect (Serf).** Every ``reconnect_interval`` a member push-pulls with a random dead member
  (with probability dead/alive): that is what merges the halves of a healed partition.
* **Refutation repair (Corral, ``Profile.refutation_repair``).** Holders of a suspicion ping the
  suspect with it, a refuted member answers stale accusations directly, a suspicion at a newer
  incarnation restarts the timer, and acks leave after the rest of their packet: so every member
  timing a suspicion hears the refutation, even at 20 % loss (see ``bench/gossip.py``).

State table (for a member other than this node; "≥"/">" compare the message's incarnation with ours)::

    message         ALIVE                SUSPECT                 DEAD / LEFT
    alive  inc >    update (meta→updated) alive (refuted)         joined (rejoin)
    suspect inc ≥   suspect, timer        confirm timer           -
    dead   inc ≥    dead | left           dead | left             -

The core never touches the network or the clock: the driver (``mesh/gossip/node.py``) or the simulator
(``mesh/gossip/sim.py``) feeds it packets and ``now`` and drains what it wants sent.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import heapq
import math
import random
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from mesh.gossip.awareness import Awareness
from mesh.gossip.broadcasts import MIN_MESSAGE, BroadcastQueue
from mesh.gossip.profile import (
    Profile,
    push_pull_scale,
    retransmit_limit,
    suspicion_timeout,
)
from mesh.gossip.suspicion import Suspicion
from mesh.gossip.wire import (
    DROP_REASONS,
    PACKET_OVERHEAD,
    Ack,
    Address,
    Alive,
    Dead,
    Drop,
    IndirectPing,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    WireState,
    assemble_packet,
    decode_packet,
    decode_stream,
    encode_message,
    encode_meta,
    encode_stream,
)

__all__ = ["Address", "Event", "Member", "MemberState", "Profile", "Swim"]

_INF = math.inf
_CHECK_AT = (0.3, 0.6)
"""Fractions of the minimum suspicion timeout at which a suspicion holder pings the suspect."""


class TimerKind(enum.IntEnum):
    """What a timer in the core's heap is for."""

    SUSPICION_TIMEOUT = 0
    RELAY_NACK = 1
    SUSPECT_CHECK = 2


def _frozen(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    return meta if isinstance(meta, types.MappingProxyType) else types.MappingProxyType(dict(meta))


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_ALIVE = MemberState.ALIVE
_SUSPECT = MemberState.SUSPECT
_DEAD = MemberState.DEAD
_LEFT = MemberState.LEFT
_TO_WIRE = {_ALIVE: WireState.ALIVE, _SUSPECT: WireState.SUSPECT, _DEAD: WireState.DEAD, _LEFT: WireState.LEFT}


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    address: Address
    state: MemberState
    incarnation: int
    meta: Mapping[str, Any]
    changed_at: float
    """``now`` when this node last changed its record of the member."""


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str
    """"joined" | "updated" | "suspect" | "alive" (refuted/recovered) | "dead" | "left"."""
    member: Member


class _Node:
    __slots__ = ("address", "changed_at", "incarnation", "meta", "name", "state")

    def __init__(
        self, name: str, address: Address, state: MemberState, incarnation: int, meta: Mapping[str, Any], now: float
    ) -> None:
        self.name = name
        self.address = address
        self.state = state
        self.incarnation = incarnation
        self.meta = meta
        self.changed_at = now

    def public(self) -> Member:
        return Member(self.name, self.address, self.state, self.incarnation, self.meta, self.changed_at)


class _Probe:
    __slots__ = ("end_at", "expected_nacks", "indirect", "nacks", "seq", "target", "timeout_at")

    def __init__(self, seq: int, target: str, timeout_at: float, end_at: float) -> None:
        self.seq = seq
        self.target = target
        self.timeout_at = timeout_at
        self.end_at = end_at
        self.indirect = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """An indirect ping we run for ``requester``: forward the ack, or nack at ``expires``."""

    __slots__ = ("expires", "nack", "requester", "seq")

    def __init__(self, requester: Address, seq: int, nack: bool, expires: float) -> None:
        self.requester = requester
        self.seq = seq
        self.nack = nack
        self.expires = expires


_STAT_KEYS = (
    "packets_sent",
    "bytes_sent",
    "packets_received",
    "bytes_received",
    "probes",
    "probe_failures",
    "indirect_probes",
    "indirect_relayed",
    "acks_received",
    "late_acks",
    "nacks_sent",
    "nacks_received",
    "suspicions",
    "refutations",
    "stale_accusations",
    "suspect_checks",
    "deaths_declared",
    "gossip_packets",
    "stream_requests",
    "streams_handled",
    "stream_replies",
    "stream_failures",
    "join_retries",
    "reconnects",
    "flaps",
    *DROP_REASONS,
)


class Swim:
    """One member's SWIM + Lifeguard state machine. Feed it with ``receive``, ``handle_timer``,
    ``handle_stream*`` and API calls; after each, drain ``datagrams_to_send``, ``streams_to_send`` and
    ``next_event``, and call ``handle_timer`` again at ``get_timer``."""

    def __init__(
        self,
        name: str,
        address: Address,
        meta: Mapping[str, Any],
        profile: Profile,
        rng: random.Random,
        now: float,
        *,
        incarnation: int = 0,
    ) -> None:
        self.name = name
        self.address = address
        self.profile = profile
        self._rng = rng
        self._now = now
        self._check_meta(meta)
        self._self = _Node(name, address, _ALIVE, incarnation, types.MappingProxyType(dict(meta)), now)
        self._nodes: dict[str, _Node] = {name: self._self}
        self._peers: list[str] = []  # alive and suspect members other than us, for random choices
        self._peer_index: dict[str, int] = {}
        self._recent_dead: dict[str, float] = {}  # name → when it died, for gossip to the dead
        self._probe_list: list[str] = []
        self._probe_pos = 0
        self._probe: _Probe | None = None
        self._seq = 0
        self._awareness = Awareness(profile.awareness_max_multiplier)
        self._left = False
        self._broadcasts = BroadcastQueue()
        self._suspicions: dict[str, Suspicion] = {}
        self._relays: dict[int, _Relay] = {}
        self._timers: list[tuple[float, int, TimerKind, str]] = []  # (deadline, tie, kind, key)
        self._tie = 0
        self._outgoing: list[tuple[bytes, Address]] = []
        self._acks: list[tuple[Address, int]] = []
        self._streams: list[tuple[bytes, Address]] = []
        self._events: collections.deque[Event] = collections.deque()
        self._next_probe = now + rng.uniform(0.0, profile.probe_interval)
        self._next_gossip = now + rng.uniform(0.0, profile.gossip_interval)
        self._failed: dict[str, None] = {}  # members in state DEAD (not LEFT), for reconnects
        self._next_reconnect = (
            now + rng.uniform(0.5, 1.0) * profile.reconnect_interval if profile.reconnect_interval > 0 else _INF
        )
        self._next_push_pull = (
            now + rng.uniform(0.5, 1.0) * profile.push_pull_interval if profile.push_pull_interval > 0 else _INF
        )
        self._join_seeds: list[Address] = []
        self._join_outstanding: set[Address] = set()
        self._join_retry_at = _INF
        self._join_backoff = profile.join_retry_initial
        self._joined = True
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)

    # ------------------------------------------------------------------------------------------ API

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def health_score(self) -> int:
        """Lifeguard local health multiplier (0 = healthy); timers are stretched by ``score + 1``."""
        return self._awareness.score

    @property
    def joined(self) -> bool:
        """False while a ``join`` has not yet had a push-pull reply from any seed."""
        return self._joined

    def join(self, seeds: Sequence[Address], now: float) -> None:
        """Push-pull with every seed; retried with exponential backoff until one answers."""
        self._now = now
        self._join_seeds = [s for s in seeds if s != self.address]
        if not self._join_seeds:
            return
        self._joined = False
        self._join_backoff = self.profile.join_retry_initial
        self._join_round()

    def leave(self, now: float) -> None:
        """Graceful leave: broadcast our own death (``source == node``) at a higher incarnation; the
        driver should keep running until the broadcast had a few gossip ticks, then stop."""
        self._now = now
        if self._left:
            return
        self._left = True
        me = self._self
        me.incarnation += 1
        me.state = _LEFT
        me.changed_at = now
        self._probe = None
        self._broadcast(me.name, Dead(me.name, me.incarnation, me.name))

    def update_meta(self, meta: Mapping[str, Any], now: float) -> None:
        """New metadata at a new incarnation; spreads like any other news."""
        self._now = now
        self._check_meta(meta)
        me = self._self
        me.meta = types.MappingProxyType(dict(meta))
        me.incarnation += 1
        me.changed_at = now
        self._broadcast_self_alive()

    def preload(self, members: Sequence[Member], now: float) -> None:
        """Know these members as alive without gossiping about them or emitting events, as if learned
        long ago: lets the simulator start 1000 nodes from a converged view instead of a join storm."""
        self._now = now
        nodes = self._nodes
        fresh = {
            m.name: _Node(m.name, m.address, _ALIVE, m.incarnation, _frozen(m.meta), now)
            for m in members
            if m.name not in nodes and m.state is _ALIVE
        }
        nodes.update(fresh)
        start = len(self._peers)
        self._peers.extend(fresh)
        self._peer_index.update(zip(fresh, range(start, start + len(fresh)), strict=True))

    def members(self) -> list[Member]:
        """Every member this node knows, itself included, dead and left ones too (until reaped)."""
        return [n.public() for n in self._nodes.values()]

    def member(self, name: str) -> Member | None:
        node = self._nodes.get(name)
        return None if node is None else node.public()

    def num_alive(self) -> int:
        """Alive and suspect members, this node included (memberlist's ``estNumNodes``)."""
        return len(self._peers) + 1

    def next_event(self) -> Event | None:
        """The oldest membership change not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """The UDP packets to send now, as (plaintext, destination)."""
        out, self._outgoing = self._outgoing, []
        return out

    def streams_to_send(self) -> list[tuple[bytes, Address]]:
        """Push-pull requests to make over TCP, as (request, destination); each one's reply goes to
        :meth:`handle_stream_reply`, its failure to :meth:`stream_failed`."""
        out, self._streams = self._streams, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (None: only when something arrives)."""
        t = self._timer()
        return None if t == _INF else t

    def _timer(self) -> float:
        t = self._next_probe if not self._left else _INF
        p = self._probe
        if p is not None:
            t = min(t, p.end_at if p.indirect else p.timeout_at)
        if self._timers:
            t = min(t, self._timers[0][0])
        if len(self._broadcasts):
            t = min(t, self._next_gossip)
        return min(t, self._next_push_pull, self._join_retry_at, self._next_reconnect)

    # ------------------------------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``."""
        self._now = now
        p = self._probe
        if p is not None:
            if not p.indirect and now >= p.timeout_at:
                if now >= p.end_at:
                    # We did not run for a whole probe window (a paused or starved process): give
                    # the indirect probes their share of it rather than accusing the target at once.
                    p.end_at = now + (p.end_at - p.timeout_at)
                self._probe_timeout(p, now)
            if now >= p.end_at:
                self._probe_failed(p, now)
        if now >= self._next_probe and not self._left:
            self._start_probe(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, kind, key = heapq.heappop(timers)
            if kind is TimerKind.SUSPICION_TIMEOUT:
                s = self._suspicions.get(key)
                if s is not None and s.deadline == deadline:
                    self._suspicion_expired(key, now)
            elif kind is TimerKind.SUSPECT_CHECK:
                self._check_suspect(key)
            else:
                relay = self._relays.get(int(key))
                if relay is not None and relay.expires == deadline:
                    del self._relays[int(key)]
                    if relay.nack:
                        self.stats["nacks_sent"] += 1
                        self._send(relay.requester, [encode_message(Nack(relay.seq))])
        if now >= self._next_gossip:
            interval = self.profile.gossip_interval
            self._next_gossip += interval * max(1, math.ceil((now - self._next_gossip) / interval))
            if len(self._broadcasts):
                self._gossip(now)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.profile.reconnect_interval
            self._reconnect()
        if now >= self._next_push_pull:
            self._next_push_pull = now + push_pull_scale(self.profile.push_pull_interval, self.num_alive())
            self._periodic_push_pull()
        if now >= self._join_retry_at:
            self._join_retry_at = _INF
            self.stats["join_retries"] += 1
            self._join_round()

    def _arm(self, deadline: float, kind: TimerKind, key: str) -> None:
        self._tie += 1
        heapq.heappush(self._timers, (deadline, self._tie, kind, key))

    def _next_target(self) -> _Node | None:
        """memberlist ``probe``: the next alive/suspect member of a shuffled round-robin list; the
        list is reshuffled (and old dead members reaped) each time it is exhausted."""
        for _ in range(2):
            while self._probe_pos < len(self._probe_list):
                name = self._probe_list[self._probe_pos]
                self._probe_pos += 1
                node = self._nodes.get(name)
                if node is not None and (node.state is _ALIVE or node.state is _SUSPECT):
                    return node
            self._reap(self._now)
            self._probe_list = list(self._peers)
            self._rng.shuffle(self._probe_list)
            self._probe_pos = 0
        return None

    def _start_probe(self, now: float) -> None:
        prof = self.profile
        scale = self._awareness.scale(1.0)
        self._next_probe = now + prof.probe_interval * scale
        target = self._next_target()
        if target is None:
            self._probe = None
            return
        self._seq += 1
        p = _Probe(self._seq, target.name, now + prof.probe_timeout * scale, now + prof.probe_interval * scale)
        self._probe = p
        self.stats["probes"] += 1
        self._send(target.address, self._ping_messages(p.seq, target))

    def _ping_messages(self, seq: int, target: _Node) -> list[bytes]:
        msgs = [encode_message(Ping(seq, target.name, self.name))]
        if target.state is _SUSPECT:
            # Lifeguard buddy system: the suspect learns of its suspicion from the probe itself.
            msgs.append(encode_message(Suspect(target.name, target.incarnation, self.name)))
        return msgs

    def _probe_timeout(self, p: _Probe, now: float) -> None:
        p.indirect = True
        target = self._nodes.get(p.target)
        if target is None:
            return
        k = self.profile.indirect_checks
        chosen: list[_Node] = []
        if k > 0 and self._peers:
            for name in self._rng.sample(self._peers, min(len(self._peers), k + 2)):
                node = self._nodes[name]
                if name != p.target and node.state is _ALIVE:
                    chosen.append(node)
                    if len(chosen) == k:
                        break
        ind = encode_message(IndirectPing(p.seq, target.name, target.address, self.name, True))
        for node in chosen:
            self._send(node.address, [ind])
        p.expected_nacks = len(chosen)
        self.stats["indirect_probes"] += len(chosen)
        if self.profile.direct_retry:
            self._send(target.address, self._ping_messages(p.seq, target))

    def _probe_failed(self, p: _Probe, now: float) -> None:
        """memberlist ``probeNode`` end: health rises by the missing nacks (or by one if none were
        expected), then the target is suspected."""
        self._probe = None
        self.stats["probe_failures"] += 1
        missing = p.expected_nacks - p.nacks if p.expected_nacks > 0 else 1
        self._awareness.apply_delta(max(0, missing))
        node = self._nodes.get(p.target)
        if node is not None and (node.state is _ALIVE or node.state is _SUSPECT):
            self._on_suspect(Suspect(node.name, node.incarnation, self.name), now)

    def _suspicion_expired(self, name: str, now: float) -> None:
        del self._suspicions[name]
        node = self._nodes.get(name)
        if node is not None and node.state is _SUSPECT:
            self.stats["deaths_declared"] += 1
            self._on_dead(Dead(name, node.incarnation, self.name), now)

    def _check_suspect(self, name: str) -> None:
        """Ping a member we still suspect, with the suspect message (``Profile.refutation_repair``):
        if it refuted long ago and we missed it, it answers with its alive; if it never heard of the
        suspicion, it refutes on the spot and the alive rides on its ack. One extra ping per member
        holding a suspicion at each of ``_CHECK_AT``; SWIM's gossip alone misses ~1 % of members at
        20 % loss, and a random probe order may not reach the suspect before the timer fires."""
        node = self._nodes.get(name)
        if node is None or node.state is not _SUSPECT or name not in self._suspicions:
            return
        self._seq += 1
        self.stats["suspect_checks"] += 1
        self._send(node.address, self._ping_messages(self._seq, node))

    def _gossip(self, now: float) -> None:
        """memberlist ``gossip``: pending broadcasts to ``gossip_nodes`` random members, including
        members dead for less than ``gossip_to_the_dead_time``."""
        prof = self.profile
        if self._recent_dead:
            horizon = now - prof.gossip_to_the_dead_time
            for name in [n for n, t in self._recent_dead.items() if t < horizon]:
                del self._recent_dead[name]
        dead = list(self._recent_dead)
        total = len(self._peers) + len(dead)
        if total == 0:
            return
        limit = retransmit_limit(prof.retransmit_mult, self.num_alive())
        space = prof.max_packet - PACKET_OVERHEAD
        for i in self._rng.sample(range(total), min(total, prof.gossip_nodes)):
            name = self._peers[i] if i < len(self._peers) else dead[i - len(self._peers)]
            msgs = self._broadcasts.take(space, limit)
            if not msgs:
                return
            self.stats["gossip_packets"] += 1
            self._emit(self._nodes[name].address, msgs)

    def _periodic_push_pull(self) -> None:
        if not self._peers or self._left:
            return
        node = self._nodes[self._rng.choice(self._peers)]
        self.stats["stream_requests"] += 1
        self._streams.append((encode_stream(self._local_state(reply=False, join=False)), node.address))

    def _join_round(self) -> None:
        self._join_outstanding = set(self._join_seeds)
        body = encode_stream(self._local_state(reply=False, join=True))
        for seed in self._join_seeds:
            self.stats["stream_requests"] += 1
            self._streams.append((body, seed))

    def _reconnect(self) -> None:
        """Serf ``reconnect``: push-pull with a random dead member, with probability
        ``dead / alive`` so that the cluster tries each dead member about once per interval. This
        is what merges the two halves of a healed partition (SWIM itself never probes the dead)."""
        if not self._failed or self._left:
            return
        if self._rng.random() >= len(self._failed) / self.num_alive():
            return
        node = self._nodes[self._rng.choice(list(self._failed))]
        self.stats["reconnects"] += 1
        self._streams.append((encode_stream(self._local_state(reply=False, join=False)), node.address))

    def _reap(self, now: float) -> None:
        horizon = now - self.profile.dead_reap_time
        for name in [n.name for n in self._nodes.values() if (n.state is _DEAD or n.state is _LEFT)]:
            node = self._nodes[name]
            if node.changed_at < horizon and node is not self._self:
                del self._nodes[name]
                self._failed.pop(name, None)

    # ------------------------------------------------------------------------------------------ packets

    def receive(self, data: bytes, src: Address, now: float) -> None:
        """One plaintext UDP packet. Bad packets are dropped and counted under their reason."""
        self._now = now
        self.stats["packets_received"] += 1
        self.stats["bytes_received"] += len(data)
        msgs = decode_packet(data)
        if isinstance(msgs, Drop):
            self.stats[msgs.reason] += 1
            return
        for m in msgs:
            self._dispatch[type(m)](self, src, m, now)
        if self._acks:
            # Acks go out after the whole packet is handled, so that a refutation triggered by a
            # buddy suspect message in the same packet rides on the ack (it is the freshest news).
            acks, self._acks = self._acks, []
            for dst, seq in acks:
                self._send(dst, [encode_message(Ack(seq))])

    def _on_ping(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, Ping)
        if m.target != self.name:
            self.stats["not_for_me"] += 1
            return
        if self.profile.refutation_repair:
            self._acks.append((src, m.seq))  # sent after the rest of the packet: see receive()
        else:
            self._send(src, [encode_message(Ack(m.seq))])  # memberlist acks before reading on

    def _on_indirect_ping(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, IndirectPing)
        self._seq += 1
        seq = self._seq
        relay = _Relay(src, m.seq, m.nack, now + self.profile.probe_timeout)
        self._relays[seq] = relay
        self._arm(relay.expires, TimerKind.RELAY_NACK, str(seq))
        self.stats["indirect_relayed"] += 1
        msgs = [encode_message(Ping(seq, m.target, self.name))]
        node = self._nodes.get(m.target)
        if node is not None and node.state is _SUSPECT and self.profile.refutation_repair:
            msgs.append(encode_message(Suspect(node.name, node.incarnation, self.name)))
        self._send(m.address, msgs)

    def _on_ack(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, Ack)
        p = self._probe
        if p is not None and p.seq == m.seq:
            self._probe = None
            self.stats["acks_received"] += 1
            self._awareness.apply_delta(-1)
            return
        relay = self._relays.pop(m.seq, None)
        if relay is not None:
            self._send(relay.requester, [encode_message(Ack(relay.seq))])
            return
        self.stats["late_acks"] += 1

    def _on_nack(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, Nack)
        p = self._probe
        if p is not None and p.seq == m.seq:
            p.nacks += 1
            self.stats["nacks_received"] += 1

    def _on_alive_msg(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, Alive)
        self._on_alive(m, now)

    def _on_suspect_msg(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, Suspect)
        if m.node == self.name:
            self._stale_accusation(src, m.incarnation)
        self._on_suspect(m, now)

    def _on_dead_msg(self, src: Address, m: Message, now: float) -> None:
        assert isinstance(m, Dead)
        if m.node == self.name:
            self._stale_accusation(src, m.incarnation)
        self._on_dead(m, now)

    def _stale_accusation(self, src: Address, incarnation: int) -> None:
        """An accusation we already refuted reached us again (typically a buddy ping from a member
        that missed the refutation, whose suspicion timer is still running): answer the sender with
        our current alive directly. memberlist ignores it and relies on gossip, which at high loss
        may exhaust its retransmits before that one member hears it (``Profile.refutation_repair``)."""
        me = self._self
        if incarnation < me.incarnation and not self._left and self.profile.refutation_repair:
            self.stats["stale_accusations"] += 1
            self._send(src, [encode_message(Alive(me.name, me.incarnation, me.address, me.meta))])

    _dispatch: ClassVar[dict[type, Callable[[Swim, Address, Any, float], None]]] = {
        Ping: _on_ping,
        IndirectPing: _on_indirect_ping,
        Ack: _on_ack,
        Nack: _on_nack,
        Alive: _on_alive_msg,
        Suspect: _on_suspect_msg,
        Dead: _on_dead_msg,
    }

    # ------------------------------------------------------------------------------------------ state rules

    def _on_alive(self, m: Alive, now: float) -> None:
        """memberlist ``aliveNode``."""
        if m.node == self.name:
            me = self._self
            if m.incarnation < me.incarnation or self._left:
                return
            if m.incarnation == me.incarnation and m.address == me.address and dict(m.meta) == dict(me.meta):
                return
            self._refute(m.incarnation)
            return
        node = self._nodes.get(m.node)
        if m.meta and len(encode_meta(m.meta)) > self.profile.meta_max_bytes:
            self.stats["oversized"] += 1  # would not fit in our packets; memberlist's MetaMaxSize
            return
        meta = types.MappingProxyType(dict(m.meta))
        if node is None:
            node = _Node(m.node, m.address, _ALIVE, m.incarnation, meta, now)
            self._nodes[m.node] = node
            self._add_peer(node.name)
            self._probe_list.insert(self._rng.randint(self._probe_pos, len(self._probe_list)), node.name)
            self._broadcast(m.node, m)
            self._emit_event("joined", node)
            return
        if m.incarnation <= node.incarnation:
            return
        old_state = node.state
        changed = node.address != m.address or dict(node.meta) != dict(m.meta)
        node.incarnation = m.incarnation
        node.address = m.address
        node.meta = meta
        node.state = _ALIVE
        node.changed_at = now
        self._suspicions.pop(m.node, None)
        self._broadcast(m.node, m)
        if old_state is _SUSPECT or old_state is _DEAD:  # suspected or declared dead, and alive after all
            self.stats["flaps"] += 1
        if old_state is _DEAD or old_state is _LEFT:
            self._recent_dead.pop(m.node, None)
            self._failed.pop(m.node, None)
            self._add_peer(node.name)
            self._emit_event("joined", node)
        elif old_state is _SUSPECT:
            self._emit_event("alive", node)
            if changed:
                self._emit_event("updated", node)
        elif changed:
            self._emit_event("updated", node)

    def _on_suspect(self, m: Suspect, now: float) -> None:
        """memberlist ``suspectNode``."""
        node = self._nodes.get(m.node)
        if node is None or m.incarnation < node.incarnation:
            return
        timer = self._suspicions.get(m.node)
        fresh = False
        if timer is not None:
            if m.incarnation > node.incarnation and self.profile.refutation_repair:
                # The member refuted the suspicion we time (we missed its alive) and is suspected
                # again: the old timer is void, time the new suspicion from now.
                del self._suspicions[m.node]
                fresh = True
            else:
                if timer.confirm(m.source, now):
                    self._arm(timer.deadline, TimerKind.SUSPICION_TIMEOUT, m.node)
                    self._broadcast(m.node, m)
                return
        if node.state is not _ALIVE and not fresh:
            return
        if node is self._self:
            if not self._left:
                self._refute(m.incarnation)
            return
        self._broadcast(m.node, m)
        node.incarnation = m.incarnation
        node.state = _SUSPECT
        node.changed_at = now
        self.stats["suspicions"] += 1
        prof = self.profile
        n = self.num_alive()
        k = prof.suspicion_confirmations
        if n - 2 < k:
            k = 0
        lo = suspicion_timeout(prof.suspicion_mult, n, prof.probe_interval)
        timer = Suspicion(m.source, k, lo, prof.suspicion_max_timeout_mult * lo, now)
        self._suspicions[m.node] = timer
        self._arm(timer.deadline, TimerKind.SUSPICION_TIMEOUT, m.node)
        if prof.refutation_repair:
            for frac in _CHECK_AT:
                self._arm(now + frac * lo, TimerKind.SUSPECT_CHECK, m.node)
        self._emit_event("suspect", node)

    def _on_dead(self, m: Dead, now: float) -> None:
        """memberlist ``deadNode``: ``source == node`` marks a graceful leave."""
        node = self._nodes.get(m.node)
        if node is None or m.incarnation < node.incarnation:
            return
        self._suspicions.pop(m.node, None)
        if node.state is _DEAD or node.state is _LEFT:
            return
        if node is self._self:
            if not self._left:
                self._refute(m.incarnation)
            return
        self._broadcast(m.node, m)
        node.incarnation = m.incarnation
        node.state = _LEFT if m.source == m.node else _DEAD
        node.changed_at = now
        self._remove_peer(m.node)
        self._recent_dead[m.node] = now
        if node.state is _DEAD:
            self._failed[m.node] = None
        self._emit_event("left" if node.state is _LEFT else "dead", node)

    def _refute(self, accused: int) -> None:
        """memberlist ``refute``: beat the accusation's incarnation and count it against our health."""
        me = self._self
        me.incarnation = max(me.incarnation, accused) + 1
        me.changed_at = self._now
        self.stats["refutations"] += 1
        self._awareness.apply_delta(1)
        self._broadcast_self_alive()

    # ------------------------------------------------------------------------------------------ push-pull

    def handle_stream(self, data: bytes, src: Address, now: float) -> bytes | None:
        """A push-pull request: merge it and return our full table as the reply (None if bad)."""
        self._now = now
        msg = decode_stream(data)
        if isinstance(msg, Drop):
            self.stats[msg.reason] += 1
            return None
        if msg.reply:
            self.stats["unexpected"] += 1
            return None
        self.stats["streams_handled"] += 1
        # Merge first (memberlist replies first): a member that learns from the request that it is
        # thought dead refutes at once, and the reply carries the refutation back (healing partitions).
        self._merge(msg.members, now)
        return encode_stream(self._local_state(reply=True, join=msg.join))

    def handle_stream_reply(self, data: bytes, src: Address, now: float) -> None:
        self._now = now
        msg = decode_stream(data)
        if isinstance(msg, Drop):
            self.stats[msg.reason] += 1
            return
        if not msg.reply:
            self.stats["unexpected"] += 1
            return
        self.stats["stream_replies"] += 1
        if src in self._join_outstanding or not self._joined:
            self._joined = True
            self._join_outstanding.clear()
            self._join_retry_at = _INF
        self._merge(msg.members, now)

    def stream_failed(self, dst: Address, now: float) -> None:
        """A push-pull connection failed; when every seed of a join round failed, retry with backoff."""
        self._now = now
        self.stats["stream_failures"] += 1
        if self._joined or dst not in self._join_outstanding:
            return
        self._join_outstanding.discard(dst)
        if not self._join_outstanding:
            self._join_retry_at = now + self._join_backoff * self._rng.uniform(0.75, 1.25)
            self._join_backoff = min(self._join_backoff * 2, self.profile.join_retry_max)

    def _local_state(self, *, reply: bool, join: bool) -> PushPull:
        rows = tuple(
            MemberRecord(n.name, n.address, n.incarnation, _TO_WIRE[n.state], n.meta) for n in self._nodes.values()
        )
        return PushPull(reply, join, rows)

    def _merge(self, rows: Sequence[MemberRecord], now: float) -> None:
        """memberlist ``mergeState``: a remote *dead* only makes us suspect (we check ourselves)."""
        for r in rows:
            if r.state is WireState.ALIVE:
                self._on_alive(Alive(r.name, r.incarnation, r.address, r.meta), now)
            elif r.state is WireState.LEFT:
                self._on_dead(Dead(r.name, r.incarnation, r.name), now)
            else:
                self._on_suspect(Suspect(r.name, r.incarnation, self.name), now)

    # ------------------------------------------------------------------------------------------ output

    def _broadcast(self, name: str, msg: Message) -> None:
        if not len(self._broadcasts) and self._next_gossip < self._now:
            # The gossip tick is a fixed-phase ticker (memberlist's time.Ticker) that we skip while
            # there is nothing to say; realign it rather than firing at once on news.
            interval = self.profile.gossip_interval
            self._next_gossip += interval * math.ceil((self._now - self._next_gossip) / interval)
        self._broadcasts.put(name, encode_message(msg))

    def _broadcast_self_alive(self) -> None:
        me = self._self
        self._broadcast(me.name, Alive(me.name, me.incarnation, me.address, me.meta))

    def _send(self, dst: Address, msgs: list[bytes]) -> None:
        """Send ``msgs`` with as many piggybacked broadcasts as fit in ``max_packet``."""
        space = self.profile.max_packet - PACKET_OVERHEAD - sum(len(m) for m in msgs)
        if space >= MIN_MESSAGE and len(self._broadcasts):
            msgs.extend(self._broadcasts.take(space, retransmit_limit(self.profile.retransmit_mult, self.num_alive())))
        self._emit(dst, msgs)

    def _emit(self, dst: Address, msgs: list[bytes]) -> None:
        packet = assemble_packet(msgs)
        self.stats["packets_sent"] += 1
        self.stats["bytes_sent"] += len(packet)
        self._outgoing.append((packet, dst))

    def _emit_event(self, kind: str, node: _Node) -> None:
        self._events.append(Event(kind, node.public()))

    def _add_peer(self, name: str) -> None:
        if name not in self._peer_index:
            self._peer_index[name] = len(self._peers)
            self._peers.append(name)

    def _remove_peer(self, name: str) -> None:
        i = self._peer_index.pop(name, None)
        if i is None:
            return
        last = self._peers.pop()
        if last != name:
            self._peers[i] = last
            self._peer_index[last] = i

    def _check_meta(self, meta: Mapping[str, Any]) -> None:
        size = len(encode_meta(meta))
        if size > self.profile.meta_max_bytes:
            limit = self.profile.meta_max_bytes
            raise ValueError(f"metadata is {size} bytes encoded, more than meta_max_bytes={limit}")
